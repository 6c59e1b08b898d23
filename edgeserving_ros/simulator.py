"""Discrete-event simulator: drives any policy through the scheduler with profiled latencies.

One batch is in service at a time, as on the node's device. Arrivals that happen while a batch
runs are queued (with their own arrival times) when it finishes, the instant the next decision
is made. The node behaves the same way, because its inference thread decides only between
batches.
"""

import bisect
import dataclasses
import math
import random
import typing

from edgeserving_ros.config import StreamConfig
from edgeserving_ros.metrics import MetricsRecorder
from edgeserving_ros.policies.base import Policy, SchedulingContext
from edgeserving_ros.profile import LatencyModel, Profile
from edgeserving_ros.requests import Request, StreamQueue
from edgeserving_ros.scheduler import Batch, Scheduler


@dataclasses.dataclass(frozen=True)
class Arrival:
    """One frame of a workload trace: when it arrives (s) and on which stream."""

    time_s: float
    stream: str


class ProfileLatencySampler:
    """Service times drawn from a profile.

    With `noise` off every batch takes the profiled `quantile`. With it on, a latency is drawn
    from the piecewise-linear distribution through the profiled p50, p95 and p99. Below the
    median the tail mirrors the p50-to-p95 gap, floored at 80 % of p50, and the top 1 % extends
    to 1.2 x p99. This shape is an estimate, and real tails can be heavier. `slowdown`
    multiplies every latency, to emulate a device slower than the one profiled.
    """

    def __init__(self, profile: Profile, noise: bool = False, quantile: str = 'p50',
                 seed: int = 0, slowdown: float = 1.0):
        self.profile = profile
        self.noise = noise
        self.slowdown = slowdown
        self._exact = LatencyModel(profile, quantile)
        self._p50 = LatencyModel(profile, 'p50')
        self._p95 = LatencyModel(profile, 'p95')
        self._p99 = LatencyModel(profile, 'p99')
        self._rng = random.Random(seed)

    def __call__(self, model: str, exit_index: int, batch_size: int) -> float:
        if not self.noise:
            return self._exact.uncorrected_s(model, exit_index, batch_size) * self.slowdown
        p50 = self._p50.uncorrected_s(model, exit_index, batch_size)
        p95 = max(self._p95.uncorrected_s(model, exit_index, batch_size), p50)
        p99 = max(self._p99.uncorrected_s(model, exit_index, batch_size), p95)
        low = max(p50 - (p95 - p50), 0.8 * p50)
        points = [(0.0, low), (0.5, p50), (0.95, p95), (0.99, p99), (1.0, 1.2 * p99)]
        u = self._rng.random()
        index = bisect.bisect_right([p for p, _ in points], u)
        (u0, v0), (u1, v1) = points[index - 1], points[min(index, len(points) - 1)]
        value = v0 if u1 == u0 else v0 + (v1 - v0) * (u - u0) / (u1 - u0)
        return value * self.slowdown


@dataclasses.dataclass
class SimulationResult:
    metrics: MetricsRecorder
    scheduler: Scheduler
    end_s: float
    batches: int


DecisionObserver = typing.Callable[[float, Batch, Scheduler], None]


def simulate(trace: typing.Sequence[Arrival], streams: typing.Mapping[str, StreamConfig],
             profile: Profile, policy: Policy,
             service_time: typing.Callable[[str, int, int], float] | None = None,
             latency_quantile: str = 'p95', drop_doomed: bool = True, warmup_s: float = 0.0,
             wait_step_s: float = 0.0005, decision_delay_s: float = 0.0, seed: int = 0,
             online_correction: bool = True, max_idle_wait_s: float = 60.0,
             observer: DecisionObserver | None = None) -> SimulationResult:
    """Serve `trace` (sorted by time) with `policy` and return the recorded metrics.

    `service_time(model, exit, batch)` gives each batch's duration in seconds (default: the
    profile's p50). When the policy waits although requests are queued (Triton-style batching
    delay), the simulator advances by `wait_step_s` or to the next arrival, whichever is first.
    `decision_delay_s` adds a fixed gap before each decision, to model a timer-driven node.
    `observer` is called after every decision with the time, the batch and the scheduler.
    A policy that keeps waiting for `max_idle_wait_s` after the last arrival while requests are
    queued raises RuntimeError rather than looping forever. A trace with a non-finite or
    decreasing time, or with a stream missing from `streams`, raises ValueError.
    """
    _check_trace(trace, streams)
    if service_time is None:
        service_time = ProfileLatencySampler(profile)
    queues = {name: StreamQueue(name, config.queue_depth) for name, config in streams.items()}
    context = SchedulingContext(streams, profile, LatencyModel(profile, latency_quantile),
                                seed=seed)
    metrics = MetricsRecorder(warmup_s=warmup_s)
    policy.reset()
    scheduler = Scheduler(policy, context, queues, metrics, drop_doomed=drop_doomed)

    now = 0.0
    next_index = 0
    batches = 0
    while next_index < len(trace) or scheduler.pending():
        while next_index < len(trace) and trace[next_index].time_s <= now:
            arrival = trace[next_index]
            config = streams[arrival.stream]
            scheduler.submit(Request(stream=arrival.stream, arrival_s=arrival.time_s,
                                     deadline_s=arrival.time_s + config.slo_s,
                                     receive_s=arrival.time_s))
            next_index += 1

        batch = scheduler.next_batch(now) if scheduler.pending() else None
        if batch is not None:
            duration_s = service_time(batch.model, batch.exit_index, len(batch.requests))
            finish_s = now + duration_s
            scheduler.complete(batch, finish_s, duration_s if online_correction else None)
            if observer is not None:
                observer(now, batch, scheduler)
            batches += 1
            now = finish_s + decision_delay_s
            continue

        next_arrival_s = trace[next_index].time_s if next_index < len(trace) else None
        if scheduler.pending():
            if next_arrival_s is None and trace and now - trace[-1].time_s > max_idle_wait_s:
                raise RuntimeError(f'policy {policy.name!r} kept {scheduler.pending()} requests '
                                   f'queued without serving them for {max_idle_wait_s} s')
            step_s = now + wait_step_s
            now = step_s if next_arrival_s is None else min(step_s, next_arrival_s)
        elif next_arrival_s is not None:
            now = max(now, next_arrival_s)
    return SimulationResult(metrics=metrics, scheduler=scheduler, end_s=now, batches=batches)


def _check_trace(trace: typing.Sequence[Arrival],
                 streams: typing.Mapping[str, StreamConfig]) -> None:
    """Raise ValueError on the first arrival that is not finite, out of order or on no stream.

    A NaN time would never be reached by the clock and loop forever, and an earlier time after
    a later one would be served late without notice.
    """
    previous_s = -math.inf
    for index, arrival in enumerate(trace):
        if not math.isfinite(arrival.time_s):
            problem = 'has a non-finite time'
        elif arrival.time_s < previous_s:
            problem = f'is earlier than the arrival before it ({previous_s} s)'
        elif arrival.stream not in streams:
            problem = f'is on an unknown stream; known streams: {", ".join(sorted(streams))}'
        else:
            previous_s = arrival.time_s
            continue
        raise ValueError(f'invalid trace: arrival {index} (time {arrival.time_s} s, stream '
                         f'{arrival.stream!r}) {problem}')
