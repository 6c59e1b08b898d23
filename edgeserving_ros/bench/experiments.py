"""Simulated load sweeps: every policy on the paper-like mix, per accuracy regime and arrival.

One workload is a seeded trace of the paper-like mix (three models of increasing depth, rates
3:2:1, SLO 50 ms, max batch 10) at one load, under one arrival process and one accuracy regime.
Every policy serves the same trace in the simulator, with service times drawn from the profile
(`ProfileLatencySampler` with noise), and the upper bound on on-time requests is computed once
per trace. A run produces one row of figures per policy; `aggregate` averages rows over seeds.
"""

import dataclasses
import math
import multiprocessing
import pathlib
import random
import statistics
import typing

from edgeserving_ros import workloads
from edgeserving_ros.bound import on_time_upper_bound
from edgeserving_ros.data_paths import data_path
from edgeserving_ros.metrics import percentile
from edgeserving_ros.policies import make_policy
from edgeserving_ros.profile import Profile, load_profile
from edgeserving_ros.simulator import Arrival, ProfileLatencySampler, simulate

MODELS = ('resnet20', 'resnet32', 'resnet56')
SLO_MS = 50.0
MAX_BATCH = 10
BAG_RELATIVE_PATH = 'duckiebot-digit-crops-bag/collected_digit.bag'

# Competitors of EdgeServing in the target check; ablations of EdgeServing are reported, not
# compared against.
BASELINES = ('reference', 'fifo', 'round_robin', 'edf', 'clockwork', 'triton', 'greedy_exit')
ABLATIONS = ('edgeserving_no_exit', 'edgeserving_random', 'edgeserving_no_misses_now',
             'edgeserving_no_misses_caused', 'edgeserving_no_pressure',
             'edgeserving_no_accuracy')
ALL_POLICIES = ('edgeserving',) + BASELINES + ABLATIONS

# Arrival processes: name -> (kind passed to workloads.paper_mix, Gamma CV or None).
ARRIVALS = {
    'poisson': ('poisson', None),
    'bursty_cv2': ('bursty', 2.0),
    'bursty_cv4': ('bursty', 4.0),
    'periodic': ('periodic', None),
    'bag_replay': ('bag', None),
}

# Latency quantiles (percent) stored per run for the latency CDF plot.
CDF_PERCENTS = tuple(range(0, 101))


@dataclasses.dataclass(frozen=True)
class Regime:
    """An accuracy regime: the `min_accuracy` set on every stream."""

    name: str
    min_accuracy: float
    description: str


def accuracy_regimes(profile: Profile, models: typing.Sequence[str] = MODELS) -> list[Regime]:
    """Derive the three accuracy regimes from the profiled exit accuracies.

    `deep_exits` puts the minimum halfway between the best first-exit accuracy and the worst
    second-exit accuracy, so every model loses its first exit and keeps the others.
    `final_only` puts it halfway between the best second-to-last and the worst final accuracy.
    Raises ValueError when the profile's accuracies do not separate the exits that way.
    """
    accuracies = []
    for model in models:
        values = [profile.accuracy(model, index) for index in range(profile.exit_count(model))]
        if any(value is None for value in values) or len(values) < 3:
            raise ValueError(f'model {model!r} needs at least three exits with measured '
                             f'accuracy in the profile; found {values}')
        accuracies.append(values)

    first_max = max(values[0] for values in accuracies)
    second_min = min(values[1] for values in accuracies)
    before_final_max = max(values[-2] for values in accuracies)
    final_min = min(values[-1] for values in accuracies)
    if not first_max < second_min or not before_final_max < final_min:
        raise ValueError('profiled exit accuracies overlap between exits; cannot derive the '
                         f'accuracy regimes from {accuracies}')

    deep = round((first_max + second_min) / 2.0, 3)
    final = round((before_final_max + final_min) / 2.0, 3)
    return [
        Regime('all_exits', 0.0, 'every exit allowed (min_accuracy 0)'),
        Regime('deep_exits', deep, f'min_accuracy {deep}: first exits forbidden'),
        Regime('final_only', final, f'min_accuracy {final}: final exits only'),
    ]


@dataclasses.dataclass(frozen=True)
class WorkloadSpec:
    """One seeded trace on which every policy of the sweep runs."""

    regime: Regime
    arrival: str
    load: float
    seed: int
    duration_s: float
    policies: tuple[str, ...]
    profile_path: str
    keep_cdf: bool = False
    warmup_s: float = 0.5


@dataclasses.dataclass
class SweepConfig:
    """Scope of a sweep: loads, seeds, trace length, policies, arrivals and regimes.

    `quick()` returns the tiny variant that the test runs.
    """

    loads: tuple[float, ...] = (0.3, 0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.5)
    seeds: tuple[int, ...] = (0, 1, 2)
    duration_s: float = 6.0
    policies: tuple[str, ...] = ALL_POLICIES
    arrivals: tuple[str, ...] = tuple(ARRIVALS)
    regimes: tuple[str, ...] = ('all_exits', 'deep_exits', 'final_only')
    cdf_load: float = 1.0

    @classmethod
    def quick(cls) -> 'SweepConfig':
        return cls(loads=(0.5, 1.0), seeds=(0,), duration_s=2.0,
                   policies=('edgeserving', 'reference', 'clockwork', 'greedy_exit', 'fifo'),
                   arrivals=('poisson', 'bursty_cv2'), regimes=('all_exits', 'final_only'),
                   cdf_load=1.0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def workload_specs(config: SweepConfig, profile: Profile,
                   profile_path: str) -> tuple[list[WorkloadSpec], list[str]]:
    """Expand a sweep into workloads; also return notes on arrivals that were skipped."""
    notes = []
    arrivals = list(config.arrivals)
    if 'bag_replay' in arrivals and data_path(BAG_RELATIVE_PATH) is None:
        arrivals.remove('bag_replay')
        notes.append(f'bag_replay skipped: {BAG_RELATIVE_PATH} not found under the data '
                     'folder (set EDGESERVING_DATA)')
    regimes = {regime.name: regime for regime in accuracy_regimes(profile)}
    specs = []
    for regime_name in config.regimes:
        for arrival in arrivals:
            for load in config.loads:
                for seed in config.seeds:
                    specs.append(WorkloadSpec(
                        regime=regimes[regime_name], arrival=arrival, load=load, seed=seed,
                        duration_s=config.duration_s, policies=tuple(config.policies),
                        profile_path=profile_path,
                        keep_cdf=math.isclose(load, config.cdf_load)))
    return specs, notes


_PROFILE_CACHE: dict[str, Profile] = {}


def _profile(path: str) -> Profile:
    if path not in _PROFILE_CACHE:
        _PROFILE_CACHE[path] = load_profile(path)
    return _PROFILE_CACHE[path]


def build_workload(spec: WorkloadSpec, profile: Profile):
    """Return (trace, streams) of a workload, with the regime's min_accuracy on every stream."""
    kind, cv = ARRIVALS[spec.arrival]
    options = {'cv': cv} if cv is not None else {}
    paper_kind = 'poisson' if kind == 'bag' else kind
    trace, streams = workloads.paper_mix(
        spec.load, spec.duration_s, spec.seed, arrival=paper_kind, profile=profile,
        models=MODELS, slo_ms=SLO_MS, max_batch=MAX_BATCH,
        min_accuracy=spec.regime.min_accuracy, **options)
    if kind == 'bag':
        trace = bag_replay_trace(streams, spec.duration_s, spec.seed)
    return trace, streams


_BAG_STAMPS: list[float] = []


def bag_replay_trace(streams: dict, duration_s: float, seed: int) -> list:
    """Replay the recorded bag's message times on every stream, compressed to its rate.

    The bag (one camera topic, 1402 frames in 636 s with gaps up to 12.8 s) is sped up so its
    mean rate equals each stream's `expected_rate_hz`. Each stream starts at its own seeded
    offset into the recording and wraps around at its end, so the streams do not burst in step.
    """
    if not _BAG_STAMPS:
        stamps = workloads.replay_bag_stamps(data_path(BAG_RELATIVE_PATH))
        _BAG_STAMPS.extend(arrival.time_s for arrival in stamps)
    span_s = _BAG_STAMPS[-1]
    gaps_s = [b - a for a, b in zip(_BAG_STAMPS, _BAG_STAMPS[1:])]
    # The wrap-around gap is the mean gap, so the looped recording keeps its mean rate.
    gaps_s.append(span_s / (len(_BAG_STAMPS) - 1))
    rng = random.Random(seed)
    traces = []
    for name, config in streams.items():
        speed = config.expected_rate_hz * span_s / (len(_BAG_STAMPS) - 1)
        index = rng.randrange(len(gaps_s))
        time_s = 0.0
        arrivals = []
        while time_s < duration_s:
            arrivals.append(Arrival(time_s, name))
            time_s += gaps_s[index] / speed
            index = (index + 1) % len(gaps_s)
        traces.append(arrivals)
    return workloads.merge(*traces)


def run_workload(spec: WorkloadSpec) -> list[dict]:
    """Serve one workload with every policy of the spec; return one row per policy."""
    profile = _profile(spec.profile_path)
    trace, streams = build_workload(spec, profile)
    # The noisy sampler draws batch latencies down to 0.8 x p50, so the bound scales by 0.8.
    bound = on_time_upper_bound(trace, streams, profile, latency_scale=0.8,
                                warmup_s=spec.warmup_s)
    rows = []
    for policy_name in spec.policies:
        policy = make_policy(policy_name, seed=spec.seed)
        sampler = ProfileLatencySampler(profile, noise=True, seed=spec.seed)
        result = simulate(trace, streams, profile, policy, service_time=sampler,
                          warmup_s=spec.warmup_s, seed=spec.seed)
        row = {
            'regime': spec.regime.name,
            'min_accuracy': spec.regime.min_accuracy,
            'arrival': spec.arrival,
            'load': spec.load,
            'seed': spec.seed,
            'policy': policy_name,
            'requests': len(trace),
            'bound_on_time': bound,
        }
        row.update(run_figures(result, streams, profile, bound))
        if spec.keep_cdf:
            latencies = [x for m in result.metrics.streams.values() for x in m.latencies_s]
            row['latency_cdf_ms'] = [percentile(latencies, p / 100.0) * 1000.0
                                     if latencies else None for p in CDF_PERCENTS]
        rows.append(row)
    return rows


def run_figures(result, streams, profile: Profile, bound: int) -> dict:
    """Return the per-run figures: violations, P95, delivered accuracy, exit mix, bound gap."""
    totals = result.metrics.totals()
    offered = totals['offered']
    exit_counts: dict[int, int] = {}
    for name, metrics in result.metrics.streams.items():
        exit_names = profile.exit_names(streams[name].model)
        for exit_name, count in metrics.exit_counts.items():
            index = exit_names.index(exit_name)
            exit_counts[index] = exit_counts.get(index, 0) + count
    completed = sum(exit_counts.values())
    exit_mix = {str(index): count / completed for index, count in sorted(exit_counts.items())}
    gap = bound - totals['on_time']
    decisions = list(result.scheduler.decision_times_s)
    return {
        'offered': offered,
        'on_time': totals['on_time'],
        'late': totals['late'],
        'dropped': totals['dropped'],
        'violation_ratio': totals['violation_ratio'],
        'p50_ms': totals['p50_ms'],
        'p95_ms': totals['p95_ms'],
        'p99_ms': totals['p99_ms'],
        'delivered_accuracy': totals['delivered_accuracy'],
        'exit_mix': exit_mix,
        'mean_batch': completed / result.batches if result.batches else 0.0,
        'bound_gap': gap,
        'bound_gap_ratio': gap / offered if offered else 0.0,
        'decision_p50_us': percentile(decisions, 0.50) * 1e6 if decisions else None,
        'decision_p99_us': percentile(decisions, 0.99) * 1e6 if decisions else None,
    }


def run_sweep(config: SweepConfig, profile_path: str | pathlib.Path, jobs: int = 1,
              progress: bool = True) -> dict:
    """Run every workload of the sweep; return rows, per-cell aggregates and notes."""
    profile_path = str(profile_path)
    profile = _profile(profile_path)
    specs, notes = workload_specs(config, profile, profile_path)
    rows = []
    for workload_rows in _map(run_workload, specs, jobs, progress, 'load sweep'):
        rows.extend(workload_rows)
    return {
        'config': config.to_dict(),
        'regimes': [dataclasses.asdict(regime) for regime in accuracy_regimes(profile)
                    if regime.name in config.regimes],
        'notes': notes,
        'runs': rows,
        'cells': aggregate(rows),
    }


# Figures averaged over seeds in `aggregate`.
AVERAGED = ('violation_ratio', 'p95_ms', 'p99_ms', 'delivered_accuracy', 'bound_gap',
            'bound_gap_ratio', 'mean_batch', 'on_time', 'bound_on_time', 'offered')


def aggregate(rows: list[dict]) -> list[dict]:
    """Average each figure over seeds per (regime, arrival, load, policy); keep the spread."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row['regime'], row['arrival'], row['load'], row['policy'])
        groups.setdefault(key, []).append(row)

    cells = []
    for (regime, arrival, load, policy), group in groups.items():
        cell = {'regime': regime, 'arrival': arrival, 'load': load, 'policy': policy,
                'seeds': len(group)}
        for name in AVERAGED:
            values = [row[name] for row in group if row[name] is not None]
            cell[name] = statistics.fmean(values) if values else None
            cell[name + '_std'] = statistics.pstdev(values) if len(values) > 1 else 0.0
        exits = sorted({index for row in group for index in row['exit_mix']})
        cell['exit_mix'] = {
            index: statistics.fmean(row['exit_mix'].get(index, 0.0) for row in group)
            for index in exits}
        curves = [row['latency_cdf_ms'] for row in group if row.get('latency_cdf_ms')]
        if curves:
            cell['latency_cdf_ms'] = [
                statistics.fmean(c[i] for c in curves if c[i] is not None)
                if any(c[i] is not None for c in curves) else None
                for i in range(len(CDF_PERCENTS))]
        cells.append(cell)
    return cells


def _map(function, items: list, jobs: int, progress: bool, label: str):
    """Yield function(item) for every item, in order, on `jobs` processes with a progress bar."""
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc=label, disable=not progress, unit='run')
    try:
        if jobs <= 1:
            for item in items:
                yield function(item)
                bar.update()
            return
        with multiprocessing.get_context('spawn').Pool(jobs) as pool:
            for result in pool.imap(function, items):
                yield result
                bar.update()
    finally:
        bar.close()
