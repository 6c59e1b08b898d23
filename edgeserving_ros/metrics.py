"""Per-stream service metrics: SLO violations, latency quantiles, throughput, exit mix.

The SLO violation ratio counts a request as violated when it completed after its deadline or
was dropped (doomed, pushed out of a full queue, or lost to a failed inference), over all
requests offered. Dropped
requests stay in the denominator, so a policy cannot look better by dropping.
"""

import collections
import dataclasses
import math
import typing

OUTCOME_ON_TIME = 'on_time'
OUTCOME_LATE = 'late'
OUTCOME_DROPPED_DOOMED = 'dropped_doomed'
OUTCOME_DROPPED_OVERFLOW = 'dropped_overflow'
OUTCOME_FAILED = 'failed'


def percentile(values: typing.Sequence[float], fraction: float) -> float:
    """Return the linearly interpolated percentile (`fraction` in [0, 1]); nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclasses.dataclass
class StreamMetrics:
    """Counters and samples of one stream since the last reset."""

    offered: int = 0
    on_time: int = 0
    late: int = 0
    dropped_doomed: int = 0
    dropped_overflow: int = 0
    failed: int = 0
    rejected_inputs: int = 0
    latencies_s: list = dataclasses.field(default_factory=list)
    exit_counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    on_time_accuracy_sum: float = 0.0
    on_time_accuracy_count: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_doomed + self.dropped_overflow + self.failed

    @property
    def completed(self) -> int:
        return self.on_time + self.late

    def violation_ratio(self) -> float:
        if self.offered == 0:
            return 0.0
        return (self.late + self.dropped) / self.offered

    def delivered_accuracy(self) -> float | None:
        if self.on_time_accuracy_count == 0:
            return None
        return self.on_time_accuracy_sum / self.on_time_accuracy_count


class MetricsRecorder:
    """Records request outcomes per stream; requests that arrive before `warmup_s` are ignored.

    Latency samples are bounded per stream (`max_samples`, oldest discarded) so a node that
    serves for days keeps constant memory; counters are exact.
    """

    def __init__(self, warmup_s: float = float('-inf'), max_samples: int = 100_000):
        self.warmup_s = warmup_s
        self.max_samples = max_samples
        self.streams: dict[str, StreamMetrics] = collections.defaultdict(StreamMetrics)
        self.first_arrival_s: float | None = None
        self.last_event_s: float | None = None

    def reset(self) -> None:
        self.streams.clear()
        self.first_arrival_s = None
        self.last_event_s = None

    def counts(self, arrival_s: float) -> bool:
        return arrival_s >= self.warmup_s

    def record_offered(self, stream: str, arrival_s: float) -> None:
        if not self.counts(arrival_s):
            return
        self.streams[stream].offered += 1
        if self.first_arrival_s is None or arrival_s < self.first_arrival_s:
            self.first_arrival_s = arrival_s
        self._touch(arrival_s)

    def record_rejected_input(self, stream: str) -> None:
        self.streams[stream].rejected_inputs += 1

    def record_dropped(self, stream: str, arrival_s: float, reason: str, now_s: float) -> None:
        if not self.counts(arrival_s):
            return
        metrics = self.streams[stream]
        if reason == OUTCOME_DROPPED_OVERFLOW:
            metrics.dropped_overflow += 1
        elif reason == OUTCOME_FAILED:
            metrics.failed += 1
        else:
            metrics.dropped_doomed += 1
        self._touch(now_s)

    def record_completed(self, stream: str, arrival_s: float, finish_s: float, deadline_s: float,
                         exit_name: str, accuracy: float | None) -> bool:
        """Record one served request; return whether it met its deadline."""
        on_time = finish_s <= deadline_s
        if not self.counts(arrival_s):
            return on_time
        metrics = self.streams[stream]
        if on_time:
            metrics.on_time += 1
            if accuracy is not None:
                metrics.on_time_accuracy_sum += accuracy
                metrics.on_time_accuracy_count += 1
        else:
            metrics.late += 1
        metrics.latencies_s.append(finish_s - arrival_s)
        if len(metrics.latencies_s) > self.max_samples:
            del metrics.latencies_s[:len(metrics.latencies_s) - self.max_samples]
        metrics.exit_counts[exit_name] += 1
        self._touch(finish_s)
        return on_time

    def summary(self, stream_order: typing.Iterable[str] | None = None) -> list[dict]:
        """Return one JSON-ready dict per stream (latencies in ms, rates in Hz)."""
        names = list(stream_order) if stream_order is not None else sorted(self.streams)
        duration_s = self.duration_s()
        rows = []
        for name in names:
            metrics = self.streams[name]
            completed = metrics.completed
            rows.append({
                'name': name,
                'offered': metrics.offered,
                'on_time': metrics.on_time,
                'late': metrics.late,
                'dropped': metrics.dropped,
                'dropped_doomed': metrics.dropped_doomed,
                'dropped_overflow': metrics.dropped_overflow,
                'failed': metrics.failed,
                'rejected_inputs': metrics.rejected_inputs,
                'violation_ratio': metrics.violation_ratio(),
                'p50_ms': _ms(percentile(metrics.latencies_s, 0.50)),
                'p95_ms': _ms(percentile(metrics.latencies_s, 0.95)),
                'p99_ms': _ms(percentile(metrics.latencies_s, 0.99)),
                'throughput_hz': completed / duration_s if duration_s > 0 else 0.0,
                'exit_mix': {exit_name: count / completed
                             for exit_name, count in sorted(metrics.exit_counts.items())}
                if completed else {},
                'delivered_accuracy': metrics.delivered_accuracy(),
            })
        return rows

    def totals(self) -> dict:
        """Return the system-wide figures over all streams."""
        offered = sum(m.offered for m in self.streams.values())
        violated = sum(m.late + m.dropped for m in self.streams.values())
        latencies = [x for m in self.streams.values() for x in m.latencies_s]
        accuracy_sum = sum(m.on_time_accuracy_sum for m in self.streams.values())
        accuracy_count = sum(m.on_time_accuracy_count for m in self.streams.values())
        return {
            'offered': offered,
            'on_time': sum(m.on_time for m in self.streams.values()),
            'late': sum(m.late for m in self.streams.values()),
            'dropped': sum(m.dropped for m in self.streams.values()),
            'violation_ratio': violated / offered if offered else 0.0,
            'p50_ms': _ms(percentile(latencies, 0.50)),
            'p95_ms': _ms(percentile(latencies, 0.95)),
            'p99_ms': _ms(percentile(latencies, 0.99)),
            'delivered_accuracy': accuracy_sum / accuracy_count if accuracy_count else None,
        }

    def duration_s(self) -> float:
        if self.first_arrival_s is None or self.last_event_s is None:
            return 0.0
        return max(self.last_event_s - self.first_arrival_s, 0.0)

    def _touch(self, time_s: float) -> None:
        if self.last_event_s is None or time_s > self.last_event_s:
            self.last_event_s = time_s


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else seconds * 1000.0
