"""Decision overhead of each policy against the number of streams.

The streams cycle through ResNet-20, -32 and -56 with rates 3:2:1 within each group of three,
every exit allowed and max batch 10. For n such streams the simulator serves a Poisson trace
at 0.9 of the final-exit capacity, so the queues hold what they hold under load. The
scheduler times every `decide` call with `time.perf_counter` (`Scheduler.decision_times_s`).
The p50 and p99 of those times are reported per policy and stream count. The action space of
EdgeServing is n streams x 3 exits x 10 batch sizes.

Wall-clock times include the time the process spends preempted. On a shared machine with a
4 ms scheduler tick, one preemption during a 100 us decision shows up as a 4 ms outlier, so
the p99 of a few hundred decisions measures the machine's load as much as the policy. The
thread's CPU time per decision (`time.thread_time_ns`) is reported beside it: it leaves out
preemption, but also any time the policy itself waits.
"""

import dataclasses
import time

from edgeserving_ros import workloads
from edgeserving_ros.bench.experiments import MAX_BATCH, MODELS, SLO_MS, _map
from edgeserving_ros.config import StreamConfig
from edgeserving_ros.metrics import percentile
from edgeserving_ros.policies import make_policy
from edgeserving_ros.policies.base import Policy
from edgeserving_ros.profile import LatencyModel, Profile, load_profile
from edgeserving_ros.simulator import ProfileLatencySampler, simulate

OVERHEAD_LOAD = 0.9
RATE_WEIGHTS = (3.0, 2.0, 1.0)


def stream_set(count: int, profile: Profile, load: float) -> tuple[dict, dict[str, float]]:
    """Return `count` stream configurations and their rates (Hz) summing to `load`.

    Load is measured against the final exit at max batch: a stream of rate r on model m
    takes r x L_p50(m, final, max_batch) / max_batch of each second.
    """
    latency = LatencyModel(profile, 'p50')
    streams = {}
    weights = {}
    for index in range(count):
        model = MODELS[index % len(MODELS)]
        name = f'stream{index:02d}'
        streams[name] = StreamConfig(name=name, topic=f'/{name}/image_raw', model=model,
                                     slo_ms=SLO_MS, max_batch=MAX_BATCH, queue_depth=30)
        weights[name] = RATE_WEIGHTS[index % len(RATE_WEIGHTS)]
    work_per_unit = sum(
        weights[name] * latency.uncorrected_s(config.model, profile.exit_count(config.model) - 1,
                                              MAX_BATCH) / MAX_BATCH
        for name, config in streams.items())
    scale = load / work_per_unit
    rates = {name: weight * scale for name, weight in weights.items()}
    streams = {name: dataclasses.replace(config, expected_rate_hz=rates[name])
               for name, config in streams.items()}
    return streams, rates


class CpuTimedPolicy(Policy):
    """Wraps a policy and records the thread CPU time of every `decide` call, in seconds."""

    def __init__(self, inner: Policy):
        self.inner = inner
        self.name = inner.name
        self.drops_doomed = inner.drops_doomed
        self.cpu_times_s: list[float] = []

    def decide(self, now, queues, context):
        started_ns = time.thread_time_ns()
        action = self.inner.decide(now, queues, context)
        self.cpu_times_s.append((time.thread_time_ns() - started_ns) / 1e9)
        return action

    def is_doomed(self, request, now, context):
        return self.inner.is_doomed(request, now, context)

    def reset(self):
        self.inner.reset()


@dataclasses.dataclass(frozen=True)
class OverheadSpec:
    streams: int
    policies: tuple[str, ...]
    duration_s: float
    profile_path: str
    seed: int = 0


def measure_overhead(spec: OverheadSpec) -> list[dict]:
    """Return the decision-time quantiles of every policy at one stream count."""
    profile = load_profile(spec.profile_path)
    streams, rates = stream_set(spec.streams, profile, OVERHEAD_LOAD)
    trace = workloads.merge(*[
        workloads.poisson(name, rate, spec.duration_s, seed=spec.seed + index)
        for index, (name, rate) in enumerate(rates.items())])
    rows = []
    for policy_name in spec.policies:
        sampler = ProfileLatencySampler(profile, noise=True, seed=spec.seed)
        queued = []

        def observe(now, batch, scheduler, queued=queued):
            queued.append(scheduler.pending() + len(batch.requests))

        policy = CpuTimedPolicy(make_policy(policy_name, seed=spec.seed))
        result = simulate(trace, streams, profile, policy, service_time=sampler,
                          seed=spec.seed, observer=observe)
        times_s = list(result.scheduler.decision_times_s)
        cpu_s = policy.cpu_times_s
        exits = max(profile.exit_count(config.model) for config in streams.values())
        rows.append({
            'policy': policy_name,
            'streams': spec.streams,
            'actions': spec.streams * exits * MAX_BATCH,
            'decisions': len(times_s),
            'p50_us': percentile(times_s, 0.50) * 1e6 if times_s else None,
            'p99_us': percentile(times_s, 0.99) * 1e6 if times_s else None,
            'cpu_p50_us': percentile(cpu_s, 0.50) * 1e6 if cpu_s else None,
            'cpu_p99_us': percentile(cpu_s, 0.99) * 1e6 if cpu_s else None,
            'mean_queued': sum(queued) / len(queued) if queued else 0.0,
        })
    return rows


def run_overhead(profile_path: str, stream_counts: tuple[int, ...], policies: tuple[str, ...],
                 duration_s: float, jobs: int = 1, progress: bool = True) -> dict:
    """Measure decision overhead for every stream count; return the rows."""
    specs = [OverheadSpec(count, tuple(policies), duration_s, str(profile_path))
             for count in stream_counts]
    rows = []
    for spec_rows in _map(measure_overhead, specs, jobs, progress, 'decision overhead'):
        rows.extend(spec_rows)
    return {'load': OVERHEAD_LOAD, 'duration_s': duration_s, 'rows': rows}
