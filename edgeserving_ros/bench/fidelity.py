"""Fidelity of the stability score: predicted misses of each decision against realised misses.

For every decision of the `edgeserving` policy, the score's `predicted_misses` of the chosen
action (misses now plus misses caused, from `score_breakdown`) is recorded before the scheduler
pops the batch. The realised misses of that decision are defined as:

    the requests queued at decision time (the chosen batch included) that end late or dropped,
    and whose outcome is settled by one of the next `horizon` decisions (this one included).

A request's outcome is settled by the decision that serves it (late when its batch finishes
after its deadline) or, for a dropped request (doomed or pushed out of a full queue), by the
first later decision that finds it in no queue. Requests still pending after `horizon`
decisions are not counted, so the figure is a local one, like the score.

The agreement is reported as the Spearman rank correlation over all decisions and as a
calibration table: decisions binned by predicted misses, with the mean realised misses per bin.
"""

import dataclasses
import math
import statistics

from edgeserving_ros.bench.experiments import (Regime, WorkloadSpec, accuracy_regimes,
                                               build_workload, _map)
from edgeserving_ros.policies import make_policy
from edgeserving_ros.policies.base import Policy
from edgeserving_ros.profile import load_profile
from edgeserving_ros.simulator import ProfileLatencySampler, simulate

DEFAULT_HORIZON = 10


class RecordingPolicy(Policy):
    """Wraps an EdgeServing policy and records the score breakdown of every chosen action.

    The breakdown is computed in `decide`, before the scheduler pops the batch, on the same
    queue state the policy decided on. Request outcomes are tracked per request object.
    """

    def __init__(self, inner: Policy):
        self.inner = inner
        self.name = inner.name
        self.drops_doomed = inner.drops_doomed
        self.decisions: list[dict] = []
        self.settled: dict[int, tuple[int, bool]] = {}  # id(request) -> (decision, missed)
        self._pending: dict[int, object] = {}
        self._keep: list = []  # keeps request objects alive so their ids stay unique

    def decide(self, now, queues, context):
        index = len(self.decisions)
        queued = {id(request): request for queue in queues.values() for request in queue}
        for key in self._pending.keys() - queued.keys():
            if key not in self.settled:
                self.settled[key] = (index, True)
        self._pending = dict(queued)
        self._keep.extend(queued.values())

        action = self.inner.decide(now, queues, context)
        if action is None:
            return None
        breakdown = self.inner.score_breakdown(now, queues, context, action)
        self.decisions.append({
            'now_s': now,
            'queued': list(queued),
            'predicted_misses': float(breakdown['predicted_misses']),
            'breakdown': {key: float(value) for key, value in breakdown.items()
                          if isinstance(value, (int, float))},
        })
        return action

    def is_doomed(self, request, now, context):
        return self.inner.is_doomed(request, now, context)

    def reset(self):
        self.inner.reset()

    def record_batch(self, batch, finish_s: float) -> None:
        """Settle the requests of a batch that was just served (observer hook)."""
        index = len(self.decisions) - 1
        for request in batch.requests:
            self.settled[id(request)] = (index, finish_s > request.deadline_s)
            self._pending.pop(id(request), None)

    def finish(self) -> None:
        """Settle requests that vanished after the last decision: they were dropped."""
        index = len(self.decisions)
        for key in self._pending:
            if key not in self.settled:
                self.settled[key] = (index, True)
        self._pending = {}

    def realised_misses(self, horizon: int) -> list[int]:
        """Return the realised misses of each decision (see the module docstring)."""
        realised = []
        for index, decision in enumerate(self.decisions):
            count = 0
            for key in decision['queued']:
                settled = self.settled.get(key)
                if settled is None:
                    continue
                settled_index, missed = settled
                if missed and settled_index < index + horizon:
                    count += 1
            realised.append(count)
        return realised


class _TimedSampler:
    """Service-time sampler that remembers the last duration it returned."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.last_s = 0.0

    def __call__(self, model, exit_index, batch_size):
        self.last_s = self.sampler(model, exit_index, batch_size)
        return self.last_s


@dataclasses.dataclass(frozen=True)
class FidelitySpec:
    regime: Regime
    arrival: str
    load: float
    seed: int
    duration_s: float
    profile_path: str
    horizon: int = DEFAULT_HORIZON


def run_fidelity_workload(spec: FidelitySpec) -> dict:
    """Simulate edgeserving on one workload and return its (predicted, realised) pairs."""
    profile = load_profile(spec.profile_path)
    trace, streams = build_workload(
        WorkloadSpec(regime=spec.regime, arrival=spec.arrival, load=spec.load, seed=spec.seed,
                     duration_s=spec.duration_s, policies=('edgeserving',),
                     profile_path=spec.profile_path), profile)

    recorder = RecordingPolicy(make_policy('edgeserving'))
    sampler = _TimedSampler(ProfileLatencySampler(profile, noise=True, seed=spec.seed))

    def observe(now, batch, scheduler):
        recorder.record_batch(batch, now + sampler.last_s)

    simulate(trace, streams, profile, recorder, service_time=sampler, seed=spec.seed,
             observer=observe)
    recorder.finish()
    return {
        'regime': spec.regime.name,
        'arrival': spec.arrival,
        'load': spec.load,
        'seed': spec.seed,
        'predicted': [d['predicted_misses'] for d in recorder.decisions],
        'realised': recorder.realised_misses(spec.horizon),
    }


def calibration(predicted: list[float], realised: list[int], bins: int = 8) -> list[dict]:
    """Bin decisions by predicted misses; return per bin the mean predicted and realised misses.

    Integer predictions up to `bins - 2` get a bin each and larger ones share the last bin,
    because most decisions predict 0 or 1 miss.
    """
    groups: dict[int, list[tuple[float, int]]] = {}
    for p, r in zip(predicted, realised):
        key = min(int(math.floor(p + 1e-9)), bins - 1)
        groups.setdefault(key, []).append((p, r))
    table = []
    for key in sorted(groups):
        pairs = groups[key]
        table.append({
            'bin': key if key < bins - 1 else f'>={bins - 1}',
            'decisions': len(pairs),
            'mean_predicted': statistics.fmean(p for p, _ in pairs),
            'mean_realised': statistics.fmean(r for _, r in pairs),
        })
    return table


def spearman(predicted: list[float], realised: list[int]) -> dict:
    """Return the Spearman rank correlation and its p-value; None when either side is constant."""
    from scipy.stats import spearmanr

    if len(set(predicted)) < 2 or len(set(realised)) < 2:
        return {'rho': None, 'p_value': None}
    result = spearmanr(predicted, realised)
    return {'rho': float(result.statistic), 'p_value': float(result.pvalue)}


def run_fidelity(profile_path: str, loads: tuple[float, ...], seeds: tuple[int, ...],
                 duration_s: float, arrivals: tuple[str, ...] = ('poisson', 'bursty_cv2'),
                 regimes: tuple[str, ...] = ('all_exits', 'deep_exits', 'final_only'),
                 horizon: int = DEFAULT_HORIZON, jobs: int = 1, progress: bool = True) -> dict:
    """Measure score fidelity per (regime, arrival), pooled over loads and seeds."""
    profile = load_profile(profile_path)
    regime_by_name = {regime.name: regime for regime in accuracy_regimes(profile)}
    specs = [FidelitySpec(regime_by_name[regime], arrival, load, seed, duration_s,
                          str(profile_path), horizon)
             for regime in regimes for arrival in arrivals for load in loads for seed in seeds]
    pooled: dict[tuple[str, str], dict] = {}
    for result in _map(run_fidelity_workload, specs, jobs, progress, 'fidelity'):
        group = pooled.setdefault((result['regime'], result['arrival']),
                                  {'predicted': [], 'realised': []})
        group['predicted'].extend(result['predicted'])
        group['realised'].extend(result['realised'])

    groups = []
    all_predicted: list[float] = []
    all_realised: list[int] = []
    for (regime, arrival), group in pooled.items():
        all_predicted.extend(group['predicted'])
        all_realised.extend(group['realised'])
        groups.append({'regime': regime, 'arrival': arrival,
                       'decisions': len(group['predicted']),
                       **spearman(group['predicted'], group['realised']),
                       'calibration': calibration(group['predicted'], group['realised'])})
    return {
        'horizon_decisions': horizon,
        'loads': list(loads),
        'seeds': list(seeds),
        'duration_s': duration_s,
        'definition': ('realised misses of a decision: requests queued at decision time '
                       '(chosen batch included) that end late or dropped, settled within the '
                       f'next {horizon} decisions'),
        'groups': groups,
        'overall': {'decisions': len(all_predicted), **spearman(all_predicted, all_realised),
                    'calibration': calibration(all_predicted, all_realised)},
    }
