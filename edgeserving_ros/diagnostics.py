"""/diagnostics content of the node, with diagnostic_updater's semantics.

One DiagnosticStatus per stream (`edgeserving: stream <name>`), per model
(`edgeserving: model <name>`) and one for the scheduler, each with a level (OK, WARN, ERROR),
a one-line message giving the worst problem, and key/value details.

While the node holds the scheduler lock, `take_snapshot` copies what the statuses need into a
`ServingSnapshot`: counters and at most `LATENCY_SAMPLES` latencies per stream, which is quick.
`DiagnosticsBuilder.build` then computes quantiles and levels without the lock, so diagnostics
hold up the inference thread no longer than the copy takes.

Levels of a stream, judged over the last `window_s` seconds (rates and ratios of the window,
not since start): ERROR when the SLO violation ratio reaches `error_ratio` or requests are queued
but no result came for `stall_s`; WARN when the violation ratio reaches `warn_ratio`, frames
were rejected as invalid, or no frame arrived; else OK. A model is ERROR when an inference
failed in the window and WARN when its backbone weights are random or an exit's measured latency
is off the profile by more than `correction_warn_factor` times either way.
"""

import collections
import dataclasses
import math
import typing

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from edgeserving_ros.metrics import percentile

LATENCY_SAMPLES = 1000

OK = DiagnosticStatus.OK
WARN = DiagnosticStatus.WARN
ERROR = DiagnosticStatus.ERROR


@dataclasses.dataclass
class StreamSnapshot:
    """Counters of one stream since start, its queue and its latest latencies."""

    name: str
    topic: str
    model: str
    slo_ms: float
    max_batch: int
    min_accuracy: float
    queue_length: int
    queue_depth: int
    offered: int
    on_time: int
    late: int
    dropped_doomed: int
    dropped_overflow: int
    failed: int
    rejected_inputs: int
    latest_latencies_s: list[float]
    exit_counts: dict[str, int]
    delivered_accuracy: float | None
    last_result_s: float

    @property
    def violated(self) -> int:
        return self.late + self.dropped_doomed + self.dropped_overflow + self.failed


@dataclasses.dataclass
class ModelSnapshot:
    """State of one model: weights, exit use and online latency correction."""

    name: str
    architecture: str
    exit_names: list[str]
    weights_trained: bool
    heads_trained: bool
    exit_counts: dict[str, int]
    correction_factors: list[float]
    correction_samples: list[int]
    batches: int
    failed_batches: int


@dataclasses.dataclass
class ServingSnapshot:
    """Everything one diagnostics message reports, copied at one instant."""

    now_s: float
    streams: list[StreamSnapshot]
    models: list[ModelSnapshot]
    policy: str
    device: str
    profile_path: str
    profile_device: str
    queued: int
    decision_times_s: list[float]


def take_snapshot(scheduler, now_s: float, model_state: typing.Mapping[str, dict],
                  last_result_s: typing.Mapping[str, float], policy: str, device: str,
                  profile_path: str) -> ServingSnapshot:
    """Copy the figures diagnostics need; call it while holding the scheduler lock.

    `model_state` maps each model name to `weights_trained`, `heads_trained`, `batches` and
    `failed_batches`, which the node counts itself. `last_result_s` maps each stream to the time
    of its latest result, or of the node's start before the first one.
    """
    context = scheduler.context
    streams = []
    for name, stream_config in context.streams.items():
        metrics = scheduler.metrics.streams[name]
        queue = scheduler.queues[name]
        streams.append(StreamSnapshot(
            name=name, topic=stream_config.topic, model=stream_config.model,
            slo_ms=stream_config.slo_ms, max_batch=stream_config.max_batch,
            min_accuracy=stream_config.min_accuracy, queue_length=len(queue),
            queue_depth=queue.max_depth, offered=metrics.offered, on_time=metrics.on_time,
            late=metrics.late, dropped_doomed=metrics.dropped_doomed,
            dropped_overflow=metrics.dropped_overflow, failed=metrics.failed,
            rejected_inputs=metrics.rejected_inputs,
            latest_latencies_s=metrics.latencies_s[-LATENCY_SAMPLES:],
            exit_counts=dict(metrics.exit_counts),
            delivered_accuracy=metrics.delivered_accuracy(),
            last_result_s=last_result_s[name]))

    models = []
    correction = context.latency.correction
    for name, state in model_state.items():
        exit_names = context.profile.exit_names(name)
        exit_counts = collections.Counter()
        for stream in streams:
            if stream.model == name:
                exit_counts.update(stream.exit_counts)
        models.append(ModelSnapshot(
            name=name, architecture=context.profile.model(name).architecture,
            exit_names=exit_names, weights_trained=state['weights_trained'],
            heads_trained=state['heads_trained'], exit_counts=dict(exit_counts),
            correction_factors=[correction.factor(name, i) for i in range(len(exit_names))],
            correction_samples=[correction.samples(name, i) for i in range(len(exit_names))],
            batches=state['batches'], failed_batches=state['failed_batches']))

    return ServingSnapshot(
        now_s=now_s, streams=streams, models=models, policy=policy, device=device,
        profile_path=profile_path, profile_device=context.profile.device,
        queued=scheduler.pending(), decision_times_s=list(scheduler.decision_times_s)[-1000:])


class DiagnosticsBuilder:
    """Builds DiagnosticArray messages from snapshots and keeps the window they are judged on."""

    def __init__(self, node_name: str, hardware_id: str, window_s: float = 10.0,
                 warn_ratio: float = 0.05, error_ratio: float = 0.5, stall_s: float = 5.0,
                 correction_warn_factor: float = 2.0):
        self.node_name = node_name
        self.hardware_id = hardware_id
        self.window_s = window_s
        self.warn_ratio = warn_ratio
        self.error_ratio = error_ratio
        self.stall_s = stall_s
        self.correction_warn_factor = correction_warn_factor
        self._history: collections.deque = collections.deque()

    def build(self, snapshot: ServingSnapshot, stamp) -> DiagnosticArray:
        """Return the DiagnosticArray for `snapshot`; `stamp` is a builtin_interfaces/Time."""
        baseline = self._window_start(snapshot)
        array = DiagnosticArray()
        array.header.stamp = stamp
        array.status.append(self._scheduler_status(snapshot))
        for stream in snapshot.streams:
            array.status.append(self._stream_status(stream, baseline.get('streams', {}),
                                                    snapshot.now_s, baseline['now_s']))
        for model in snapshot.models:
            array.status.append(self._model_status(model, baseline.get('models', {})))
        return array

    def _window_start(self, snapshot: ServingSnapshot) -> dict:
        """Record this snapshot's counters; return the oldest record inside the window."""
        record = {
            'now_s': snapshot.now_s,
            'streams': {s.name: (s.offered, s.violated, s.rejected_inputs)
                        for s in snapshot.streams},
            'models': {m.name: m.failed_batches for m in snapshot.models},
        }
        # A clock that jumped back (simulated time restarted) invalidates the history.
        if self._history and self._history[-1]['now_s'] > snapshot.now_s:
            self._history.clear()
        self._history.append(record)
        while len(self._history) > 1 and \
                snapshot.now_s - self._history[1]['now_s'] >= self.window_s:
            self._history.popleft()
        if len(self._history) == 1:
            # First report: the window starts at zero counts.
            return {'now_s': snapshot.now_s - self.window_s}
        return self._history[0]

    def _scheduler_status(self, snapshot: ServingSnapshot) -> DiagnosticStatus:
        decision_p95_s = percentile(snapshot.decision_times_s, 0.95)
        message = f'{snapshot.policy} policy on {snapshot.device}, {snapshot.queued} queued'
        values = [
            ('policy', snapshot.policy),
            ('device', snapshot.device),
            ('profile_path', snapshot.profile_path),
            ('profile_device', snapshot.profile_device),
            ('queued_requests', snapshot.queued),
            ('decision_time_p95_us', _format_number(decision_p95_s * 1e6)),
        ]
        return self._status('scheduler', OK, message, values)

    def _stream_status(self, stream: StreamSnapshot, baseline: dict, now_s: float,
                       window_start_s: float) -> DiagnosticStatus:
        window_s = now_s - window_start_s
        offered_before, violated_before, rejected_before = baseline.get(stream.name, (0, 0, 0))
        offered = stream.offered - offered_before
        violated = stream.violated - violated_before
        rejected = stream.rejected_inputs - rejected_before
        window_ratio = min(violated / offered, 1.0) if offered > 0 else 0.0
        total_ratio = stream.violated / stream.offered if stream.offered else 0.0
        p50_s = percentile(stream.latest_latencies_s, 0.50)
        p95_s = percentile(stream.latest_latencies_s, 0.95)
        idle_result_s = max(now_s - stream.last_result_s, 0.0)

        window = f'over the last {window_s:.0f} s'
        if stream.queue_length and idle_result_s >= self.stall_s:
            level, message = ERROR, (f'no result for {idle_result_s:.1f} s while '
                                     f'{stream.queue_length} requests are queued')
        elif offered and window_ratio >= self.error_ratio:
            level, message = ERROR, f'SLO violation ratio {window_ratio:.0%} {window}'
        elif offered and window_ratio >= self.warn_ratio:
            level, message = WARN, f'SLO violation ratio {window_ratio:.0%} {window}'
        elif rejected:
            level, message = WARN, f'{rejected} invalid frames rejected {window}'
        elif not offered:
            level, message = WARN, f'no frames received {window}'
        else:
            level, message = OK, (f'{offered / max(window_s, 1e-9):.1f} Hz, violation ratio '
                                  f'{window_ratio:.0%}, p95 {_format_number(p95_s * 1e3)} ms')

        completed = stream.on_time + stream.late
        exit_mix = ' '.join(f'{name}:{count / completed:.2f}'
                            for name, count in sorted(stream.exit_counts.items())) \
            if completed else ''
        values = [
            ('topic', stream.topic),
            ('model', stream.model),
            ('slo_ms', _format_number(stream.slo_ms)),
            ('max_batch', stream.max_batch),
            ('min_accuracy', _format_number(stream.min_accuracy)),
            ('input_rate_hz', _format_number(offered / window_s if window_s > 0 else math.nan)),
            ('violation_ratio_window', _format_number(window_ratio)),
            ('violation_ratio', _format_number(total_ratio)),
            ('latency_p50_ms', _format_number(p50_s * 1e3)),
            ('latency_p95_ms', _format_number(p95_s * 1e3)),
            ('queue_length', stream.queue_length),
            ('queue_depth', stream.queue_depth),
            ('offered', stream.offered),
            ('on_time', stream.on_time),
            ('late', stream.late),
            ('dropped_doomed', stream.dropped_doomed),
            ('dropped_overflow', stream.dropped_overflow),
            ('failed', stream.failed),
            ('rejected_inputs', stream.rejected_inputs),
            ('exit_mix', exit_mix),
            ('delivered_accuracy', _format_number(stream.delivered_accuracy)),
        ]
        return self._status(f'stream {stream.name}', level, message, values)

    def _model_status(self, model: ModelSnapshot, baseline: dict) -> DiagnosticStatus:
        failed = model.failed_batches - baseline.get(model.name, 0)
        off_profile = [
            (name, factor) for name, factor, samples in
            zip(model.exit_names, model.correction_factors, model.correction_samples)
            if samples and not (1.0 / self.correction_warn_factor <= factor
                                <= self.correction_warn_factor)]

        if failed:
            level, message = ERROR, f'{failed} inference batches failed over {self.window_s:g} s'
        elif not model.weights_trained:
            level, message = WARN, 'random backbone weights: labels are meaningless'
        elif off_profile:
            name, factor = max(off_profile, key=lambda item: abs(math.log(item[1])))
            level, message = WARN, (f'exit {name} runs {factor:.2f}x its profiled latency: '
                                    'profile this device again')
        else:
            level, message = OK, f'{model.batches} batches served'

        served = sum(model.exit_counts.values())
        values = [
            ('architecture', model.architecture),
            ('weights_trained', model.weights_trained),
            ('heads_trained', model.heads_trained),
            ('batches', model.batches),
            ('failed_batches', model.failed_batches),
        ]
        for name, factor, samples in zip(model.exit_names, model.correction_factors,
                                         model.correction_samples):
            share = model.exit_counts.get(name, 0) / served if served else 0.0
            values.append((f'exit_mix.{name}', _format_number(share)))
            values.append((f'latency_correction.{name}', _format_number(factor)))
            values.append((f'latency_correction_samples.{name}', samples))
        return self._status(f'model {model.name}', level, message, values)

    def _status(self, subject: str, level: int, message: str,
                values: typing.Iterable[tuple[str, typing.Any]]) -> DiagnosticStatus:
        status = DiagnosticStatus()
        status.level = level
        status.name = f'{self.node_name}: {subject}'
        status.message = message
        status.hardware_id = self.hardware_id
        status.values = [KeyValue(key=key, value=_format_value(value)) for key, value in values]
        return status


def _format_value(value: typing.Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def _format_number(value: float | None) -> str:
    """Format a figure for a KeyValue: 4 significant digits, 'nan' when there is no sample."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 'nan'
    return f'{value:.4g}'
