"""Choose the stability score's default weights on training seeds; report them on other seeds.

Every (w_pressure, w_accuracy) pair of a grid serves the paper-like mix in the simulator: three
models of increasing depth, rates 3:2:1, SLO 50 ms, max batch 10. It runs in every cell
(accuracy regime x arrival process x load) of the training set, on the training seeds. A cell
compares EdgeServing with the best competitor, the one with the fewest violations, with the
benchmark's own target check (`report.compare_cell`): at most half its violations, its
delivered accuracy and a P95 no worse, within the benchmark's tolerances. The chosen pair
meets the target in the most cells; ties go to the lowest geometric mean of EdgeServing's
violations over the best competitor's. The chosen pair and the current defaults are then run
on evaluation seeds that the choice never saw, with one load and one arrival process that
training did not use either, and both tables are written to results/.

Run: .venv/bin/python -m edgeserving_ros.bench.weight_sweep [--quick] [--profile PATH]
The full sweep runs sequentially on one core; it took about 15 minutes on one core of the
development machine (a shared 2-core VM).
"""

import argparse
import bisect
import dataclasses
import json
import math
import pathlib
import statistics
import sys
import time
import typing

from edgeserving_ros.bench import experiments
from edgeserving_ros.bench.report import compare_cell
from edgeserving_ros.policies import make_policy
from edgeserving_ros.policies.base import Action, Policy, Queues, SchedulingContext
from edgeserving_ros.policies.edgeserving import (DEFAULT_W_ACCURACY, DEFAULT_W_PRESSURE,
                                                  EdgeServingPolicy)
from edgeserving_ros.profile import Profile, load_profile
from edgeserving_ros.requests import Request, StreamQueue
from edgeserving_ros.simulator import Arrival, ProfileLatencySampler, simulate

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_PROFILE = REPO_ROOT / 'config' / 'profile_cpu.json'
DEFAULT_OUTPUT = REPO_ROOT / 'results'
# Violation ratios below this floor count as equal to it in the geometric mean, so a cell
# where both policies have (almost) no violations cannot dominate the tie-break.
RATIO_FLOOR = 0.002


@dataclasses.dataclass
class SweepPlan:
    """Grid, cells and seeds of one weight sweep."""

    w_pressure: tuple[float, ...] = (0.5, 0.7, 1.0, 1.5, 2.0, 3.0)
    w_accuracy: tuple[float, ...] = (0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0)
    regimes: tuple[str, ...] = ('all_exits', 'deep_exits', 'final_only')
    train_arrivals: tuple[str, ...] = ('poisson', 'bursty_cv2', 'bursty_cv4')
    train_loads: tuple[float, ...] = (0.8, 1.0, 1.2, 1.5)
    train_seeds: tuple[int, ...] = (100, 101)
    eval_arrivals: tuple[str, ...] = ('poisson', 'bursty_cv2', 'bursty_cv4', 'periodic')
    eval_loads: tuple[float, ...] = (0.8, 0.9, 1.0, 1.2, 1.5)
    eval_seeds: tuple[int, ...] = (0, 1, 2)
    duration_s: float = 8.0
    competitors: tuple[str, ...] = experiments.BASELINES

    @classmethod
    def quick(cls) -> 'SweepPlan':
        return cls(w_pressure=(0.5, 1.0), w_accuracy=(0.2, 0.5),
                   regimes=('all_exits', 'final_only'), train_arrivals=('poisson',),
                   train_loads=(1.0, 1.5), train_seeds=(100,),
                   eval_arrivals=('bursty_cv2',), eval_loads=(1.2,), eval_seeds=(0,),
                   duration_s=2.0, competitors=('reference', 'clockwork', 'greedy_exit'))


def run_cell_policy(policy_name: str, options: dict, regime: experiments.Regime, arrival: str,
                    load: float, seeds: tuple[int, ...], profile: Profile, profile_path: str,
                    duration_s: float) -> dict:
    """Serve one cell on every seed; return the figures averaged over the seeds."""
    rows = []
    for seed in seeds:
        spec = experiments.WorkloadSpec(regime=regime, arrival=arrival, load=load, seed=seed,
                                        duration_s=duration_s, policies=(policy_name,),
                                        profile_path=profile_path)
        trace, streams = experiments.build_workload(spec, profile)
        result = simulate(trace, streams, profile, make_policy(policy_name, **options),
                          service_time=ProfileLatencySampler(profile, noise=True, seed=seed),
                          warmup_s=spec.warmup_s, seed=seed)
        rows.append(result.metrics.totals())
    accuracies = [row['delivered_accuracy'] for row in rows
                  if row['delivered_accuracy'] is not None]
    p95s = [row['p95_ms'] for row in rows if row['p95_ms'] is not None]
    return {
        'policy': policy_name, 'regime': regime.name, 'arrival': arrival, 'load': load,
        'violation_ratio': statistics.fmean(row['violation_ratio'] for row in rows),
        'delivered_accuracy': statistics.fmean(accuracies) if accuracies else None,
        'p95_ms': statistics.fmean(p95s) if p95s else None,
    }


def cells_of(plan: SweepPlan, profile: Profile, training: bool) -> list[tuple]:
    regimes = {regime.name: regime for regime in experiments.accuracy_regimes(profile)}
    arrivals = plan.train_arrivals if training else plan.eval_arrivals
    loads = plan.train_loads if training else plan.eval_loads
    return [(regimes[name], arrival, load) for name in plan.regimes for arrival in arrivals
            for load in loads]


def competitor_figures(plan: SweepPlan, cells: list[tuple], seeds: tuple[int, ...],
                       profile: Profile, profile_path: str) -> dict[tuple, list[dict]]:
    figures = {}
    for regime, arrival, load in cells:
        figures[(regime.name, arrival, load)] = [
            run_cell_policy(name, {}, regime, arrival, load, seeds, profile, profile_path,
                            plan.duration_s)
            for name in plan.competitors]
    return figures


def score_weights(options: dict, cells: list[tuple], seeds: tuple[int, ...],
                  competitors: dict[tuple, list[dict]], profile: Profile, profile_path: str,
                  duration_s: float) -> dict:
    """Run EdgeServing with `options` on every cell; return per-cell comparisons and totals."""
    comparisons = []
    for regime, arrival, load in cells:
        main = run_cell_policy('edgeserving', options, regime, arrival, load, seeds, profile,
                               profile_path, duration_s)
        comparison = compare_cell([main] + competitors[(regime.name, arrival, load)])
        comparisons.append(comparison)
    ratios = [max(c['violation_ratio'], RATIO_FLOOR)
              / max(c['best_violation_ratio'], RATIO_FLOOR) for c in comparisons]
    return {
        'options': options,
        'cells_met': sum(1 for c in comparisons if c['met']),
        'cells': len(comparisons),
        'geomean_ratio': math.exp(statistics.fmean(math.log(r) for r in ratios)),
        'comparisons': comparisons,
    }


def choose(scored: list[dict]) -> dict:
    """Return the entry meeting the target in the most cells, then with the lowest ratio."""
    return min(scored, key=lambda entry: (-entry['cells_met'], entry['geomean_ratio']))


def markdown_tables(training: list[dict], chosen: dict, evaluation: dict,
                    defaults: dict, plan: SweepPlan) -> str:
    lines = ['Training (seeds ' + ', '.join(map(str, plan.train_seeds)) + '; '
             f'{training[0]["cells"]} cells), best 8 weight pairs:', '',
             '| w_pressure | w_accuracy | cells meeting target | geomean violations / best |',
             '|---:|---:|---:|---:|']
    for entry in sorted(training, key=lambda e: (-e['cells_met'], e['geomean_ratio']))[:8]:
        options = entry['options']
        lines.append(f'| {options["w_pressure"]} | {options["w_accuracy"]} | '
                     f'{entry["cells_met"]} of {entry["cells"]} | '
                     f'{entry["geomean_ratio"]:.3f} |')
    lines += ['', f'Chosen: w_pressure {chosen["options"]["w_pressure"]}, w_accuracy '
              f'{chosen["options"]["w_accuracy"]}. Evaluation (seeds '
              + ', '.join(map(str, plan.eval_seeds)) + f'): {evaluation["cells_met"]} of '
              f'{evaluation["cells"]} cells meet the target, geomean violations / best '
              f'{evaluation["geomean_ratio"]:.3f}; with the defaults in the code '
              f'({defaults["options"]["w_pressure"]}, {defaults["options"]["w_accuracy"]}): '
              f'{defaults["cells_met"]} of {defaults["cells"]}.', '',
              '| regime | arrival | load | EdgeServing viol. / acc. / P95 ms | best other | '
              'its viol. / acc. / P95 ms | ratio | met |',
              '|---|---|---:|---|---|---|---:|---|']
    for c in evaluation['comparisons']:
        ours = _figures(c['violation_ratio'], c['delivered_accuracy'], c['p95_ms'])
        best = _figures(c['best_violation_ratio'], c['best_delivered_accuracy'],
                        c['best_p95_ms'])
        verdict = 'yes' if c['met'] else 'no: ' + ', '.join(c['reasons'])
        lines.append(f'| {c["regime"]} | {c["arrival"]} | {c["load"]} | {ours} | '
                     f'{c["best_baseline"]} | {best} | '
                     f'{_ratio(c["violation_ratio_vs_best"])} | {verdict} |')
    return '\n'.join(lines) + '\n'


def _figures(violations: float, accuracy: float | None, p95_ms: float | None) -> str:
    accuracy_text = '-' if accuracy is None else f'{accuracy:.3f}'
    p95_text = '-' if p95_ms is None else f'{p95_ms:.1f}'
    return f'{violations:.3f} / {accuracy_text} / {p95_text}'


def _ratio(ratio: float | None) -> str:
    return '-' if ratio is None else f'{ratio:.2f}'


class ClairvoyantRollout(Policy):
    """EdgeServing plus a one-step lookahead that reads future arrivals (offline only).

    No online policy can know future arrivals; this one does, so it bounds what better single
    decisions could gain in the same action space. At each decision the `candidates` actions
    with the lowest stability score are rolled out: the action, then EdgeServing's own choices
    for `horizon_s` of simulated time, with the trace's real arrivals and the predicted
    (context quantile) latencies. A rollout costs the requests it misses (served late, pushed
    out of a full queue, or doomed by the end of the horizon) plus w_accuracy times the
    accuracy it loses. The policy takes the first action of the cheapest rollout.
    """

    name = 'clairvoyant_rollout'
    drops_doomed = True

    def __init__(self, trace: typing.Sequence[Arrival], streams: dict, candidates: int = 8,
                 horizon_s: float = 0.1, **options):
        self.base = EdgeServingPolicy(**options)
        self.trace = list(trace)
        self.times_s = [arrival.time_s for arrival in self.trace]
        self.streams = streams
        self.candidates = candidates
        self.horizon_s = horizon_s

    def is_doomed(self, request: Request, now: float, context: SchedulingContext) -> bool:
        return self.base.is_doomed(request, now, context)

    def decide(self, now: float, queues: Queues, context: SchedulingContext) -> Action | None:
        rows = sorted(self.base.candidate_terms(now, queues, context),
                      key=lambda row: row[1]['score'])[:self.candidates]
        if len(rows) <= 1:
            return rows[0][0] if rows else None
        first = bisect.bisect_right(self.times_s, now)
        last = bisect.bisect_right(self.times_s, now + self.horizon_s)
        future = self.trace[first:last]
        costs = [(self._rollout_cost(now, queues, context, action, future), index)
                 for index, (action, _) in enumerate(rows)]
        return rows[min(costs)[1]][0]

    def _rollout_cost(self, now: float, queues: Queues, context: SchedulingContext,
                      action: Action, future: list[Arrival]) -> float:
        copies = {name: StreamQueue(name, queue.max_depth) for name, queue in queues.items()}
        for name, queue in queues.items():
            for request in queue:
                copies[name].push(Request(request.stream, request.arrival_s,
                                          request.deadline_s))
        clock_s = now
        end_s = now + self.horizon_s
        arrived = 0
        misses = 0
        lost_accuracy = 0.0
        while action is not None or clock_s < end_s:
            if action is not None:
                served = copies[action.stream].pop_most_urgent(action.batch_size)
                clock_s += context.latency_s(action.stream, action.exit_index, len(served))
                misses += sum(1 for request in served if request.deadline_s < clock_s)
                final = context.final_exit(action.stream)
                lost_accuracy += len(served) * max(
                    0.0, (context.accuracy(action.stream, final) or 1.0)
                    - (context.accuracy(action.stream, action.exit_index) or 0.0))
                action = None
            if clock_s >= end_s:
                break
            while arrived < len(future) and future[arrived].time_s <= clock_s:
                arrival = future[arrived]
                pushed_out = copies[arrival.stream].push(Request(
                    arrival.stream, arrival.time_s,
                    arrival.time_s + self.streams[arrival.stream].slo_s))
                misses += pushed_out is not None
                arrived += 1
            for queue in copies.values():
                doomed = [r for r in queue if self.base.is_doomed(r, clock_s, context)]
                queue.remove(doomed)
                misses += len(doomed)
            if any(copies.values()):
                action = self.base.decide(clock_s, copies, context)
            elif arrived < len(future):
                clock_s = max(clock_s, future[arrived].time_s)
            else:
                break
        for queue in copies.values():
            misses += sum(1 for r in queue if self.base.is_doomed(r, clock_s, context))
        return misses + self.base.w_accuracy * lost_accuracy


def headroom(plan: SweepPlan, options: dict, comparisons: list[dict], profile: Profile,
             profile_path: str, max_cells: int = 8) -> list[dict]:
    """Run ClairvoyantRollout on evaluation cells that miss the target on violations only."""
    regimes = {regime.name: regime for regime in experiments.accuracy_regimes(profile)}
    cells = [c for c in comparisons if c['reasons'] == ['violations']][:max_cells]
    seeds = plan.eval_seeds[:2]
    rows = []
    for cell in cells:
        ratios = []
        for seed in seeds:
            spec = experiments.WorkloadSpec(
                regime=regimes[cell['regime']], arrival=cell['arrival'], load=cell['load'],
                seed=seed, duration_s=plan.duration_s, policies=(),
                profile_path=profile_path)
            trace, streams = experiments.build_workload(spec, profile)
            policy = ClairvoyantRollout(trace, streams, **options)
            result = simulate(trace, streams, profile, policy,
                              service_time=ProfileLatencySampler(profile, noise=True,
                                                                 seed=seed),
                              warmup_s=spec.warmup_s, seed=seed)
            ratios.append(result.metrics.totals()['violation_ratio'])
        rows.append({'regime': cell['regime'], 'arrival': cell['arrival'],
                     'load': cell['load'], 'seeds': list(seeds),
                     'clairvoyant_violation_ratio': statistics.fmean(ratios),
                     'edgeserving_violation_ratio': cell['violation_ratio'],
                     'best_baseline': cell['best_baseline'],
                     'best_violation_ratio': cell['best_violation_ratio']})
    return rows


def headroom_table(rows: list[dict]) -> str:
    lines = ['Clairvoyant one-step rollout on cells that miss the target on violations '
             '(violation ratios; rollout on the first two evaluation seeds):', '',
             '| regime | arrival | load | EdgeServing | clairvoyant rollout | best other | '
             'half of best other |', '|---|---|---:|---:|---:|---|---:|']
    for row in rows:
        lines.append(f'| {row["regime"]} | {row["arrival"]} | {row["load"]} | '
                     f'{row["edgeserving_violation_ratio"]:.3f} | '
                     f'{row["clairvoyant_violation_ratio"]:.3f} | {row["best_baseline"]} '
                     f'{row["best_violation_ratio"]:.3f} | '
                     f'{row["best_violation_ratio"] / 2:.3f} |')
    return '\n'.join(lines) + '\n'


def run(plan: SweepPlan, profile_path: pathlib.Path, output_dir: pathlib.Path,
        with_headroom: bool = False, log=print) -> dict:
    """Run the sweep and the evaluation; write JSON and Markdown; return the document."""
    profile = load_profile(profile_path)
    started = time.monotonic()

    train_cells = cells_of(plan, profile, training=True)
    log(f'training: {len(train_cells)} cells x {len(plan.train_seeds)} seeds, '
        f'{len(plan.w_pressure) * len(plan.w_accuracy)} weight pairs')
    train_competitors = competitor_figures(plan, train_cells, plan.train_seeds, profile,
                                           str(profile_path))
    training = []
    for w_pressure in plan.w_pressure:
        for w_accuracy in plan.w_accuracy:
            entry = score_weights({'w_pressure': w_pressure, 'w_accuracy': w_accuracy},
                                  train_cells, plan.train_seeds, train_competitors, profile,
                                  str(profile_path), plan.duration_s)
            training.append(entry)
            log(f'  w_pressure {w_pressure} w_accuracy {w_accuracy}: '
                f'{entry["cells_met"]}/{entry["cells"]} met, '
                f'geomean ratio {entry["geomean_ratio"]:.3f}')
    chosen = choose(training)

    eval_cells = cells_of(plan, profile, training=False)
    log(f'evaluation: {len(eval_cells)} cells x {len(plan.eval_seeds)} seeds')
    eval_competitors = competitor_figures(plan, eval_cells, plan.eval_seeds, profile,
                                          str(profile_path))
    evaluation = score_weights(chosen['options'], eval_cells, plan.eval_seeds,
                               eval_competitors, profile, str(profile_path), plan.duration_s)
    default_options = {'w_pressure': DEFAULT_W_PRESSURE, 'w_accuracy': DEFAULT_W_ACCURACY}
    if default_options == chosen['options']:
        defaults = evaluation
    else:
        defaults = score_weights(default_options, eval_cells, plan.eval_seeds,
                                 eval_competitors, profile, str(profile_path), plan.duration_s)

    headroom_rows = []
    if with_headroom:
        log('headroom: clairvoyant rollout on cells that miss the target on violations')
        headroom_rows = headroom(plan, chosen['options'], evaluation['comparisons'], profile,
                                 str(profile_path))

    document = {
        'plan': dataclasses.asdict(plan),
        'profile': str(profile_path),
        'profile_device': profile.device,
        'chosen': chosen['options'],
        'training': training,
        'evaluation': evaluation,
        'defaults_evaluation': defaults,
        'headroom': headroom_rows,
        'elapsed_s': time.monotonic() - started,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / 'weight_sweep.json', 'w', encoding='utf-8') as stream:
        json.dump(document, stream, indent=1)
        stream.write('\n')
    table = markdown_tables(training, chosen, evaluation, defaults, plan)
    if headroom_rows:
        table += '\n' + headroom_table(headroom_rows)
    (output_dir / 'weight_sweep.md').write_text(table, encoding='utf-8')
    log(table)
    log(f'wrote {output_dir / "weight_sweep.json"} and {output_dir / "weight_sweep.md"} '
        f'in {document["elapsed_s"]:.0f} s')
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog='python -m edgeserving_ros.bench.weight_sweep',
        description='Choose w_pressure and w_accuracy of the stability score by a simulated '
                    'sweep on training seeds and report them on evaluation seeds.')
    parser.add_argument('--quick', action='store_true',
                        help='tiny grid and cells (about a minute), to check the pipeline')
    parser.add_argument('--profile', type=pathlib.Path, default=DEFAULT_PROFILE,
                        help='profile JSON the simulator draws latencies from '
                             '(default: config/profile_cpu.json)')
    parser.add_argument('--output-dir', type=pathlib.Path, default=DEFAULT_OUTPUT,
                        help='folder for weight_sweep.json and weight_sweep.md '
                             '(default: results/)')
    parser.add_argument('--headroom', action='store_true',
                        help='also run a clairvoyant rollout (reads future arrivals) on the '
                             'evaluation cells that miss the target on violations, to see '
                             'whether better single decisions could reach it')
    args = parser.parse_args(argv)
    if not args.profile.exists():
        print(f'profile not found: {args.profile}; create it with edgeserving-profile or '
              'pass --profile', file=sys.stderr)
        return 2
    plan = SweepPlan.quick() if args.quick else SweepPlan()
    run(plan, args.profile, args.output_dir, with_headroom=args.headroom)
    return 0


if __name__ == '__main__':
    sys.exit(main())
