"""The benchmark page (Markdown) and the target check, generated from the results document.

Nothing on the page is typed by hand: every number, every "met" or "not met" and the list of
cells where EdgeServing loses are computed here from the results of one benchmark run.
"""

import math
import pathlib

from edgeserving_ros.bench.experiments import ABLATIONS, BASELINES

MAIN = 'edgeserving'
TARGET_MIN_LOAD = 0.8
TARGET_VIOLATION_FACTOR = 0.5
TARGET_DECISION_P99_US = 200.0
TARGET_OVERHEAD_STREAMS = 3
# Tolerances of the target check, so seed noise does not decide a cell: delivered accuracy
# counts as equal within 0.005 (half a percentage point), P95 as no worse within 1 %.
ACCURACY_TOLERANCE = 0.005
P95_TOLERANCE = 0.01


def compare_cell(cells: list[dict]) -> dict | None:
    """Compare EdgeServing with the best baseline in one (regime, arrival, load) cell.

    The best baseline has the fewest violations (ties: higher delivered accuracy). The target
    is met when EdgeServing has at most half its violations (zero when it has zero), at least
    its delivered accuracy and a P95 no worse, within the tolerances above. `dominated_by`
    lists baselines with no more violations and no lower delivered accuracy, and better on one
    of them (accuracy beyond the tolerance).
    Returns None when EdgeServing or every baseline is missing from the cell.
    """
    by_policy = {cell['policy']: cell for cell in cells}
    main = by_policy.get(MAIN)
    baselines = [by_policy[name] for name in BASELINES if name in by_policy]
    if main is None or not baselines:
        return None
    best = min(baselines, key=lambda cell: (cell['violation_ratio'],
                                            -(cell['delivered_accuracy'] or 0.0)))

    main_violations = main['violation_ratio']
    best_violations = best['violation_ratio']
    ratio = main_violations / best_violations if best_violations > 0 else None
    if best_violations > 0:
        violations_met = main_violations <= TARGET_VIOLATION_FACTOR * best_violations
    else:
        violations_met = main_violations == 0
    main_accuracy = main['delivered_accuracy']
    best_accuracy = best['delivered_accuracy']
    accuracy_met = (best_accuracy is None
                    or (main_accuracy is not None
                        and main_accuracy >= best_accuracy - ACCURACY_TOLERANCE))
    main_p95 = main['p95_ms']
    best_p95 = best['p95_ms']
    p95_met = (best_p95 is None
               or (main_p95 is not None and main_p95 <= best_p95 * (1 + P95_TOLERANCE)))

    dominated_by = []
    for cell in baselines:
        accuracy = cell['delivered_accuracy'] or 0.0
        no_worse = (cell['violation_ratio'] <= main_violations
                    and accuracy >= (main_accuracy or 0.0) - ACCURACY_TOLERANCE)
        better = (cell['violation_ratio'] < main_violations
                  or accuracy > (main_accuracy or 0.0) + ACCURACY_TOLERANCE)
        if no_worse and better:
            dominated_by.append(cell['policy'])

    reasons = []
    if not violations_met:
        reasons.append('violations')
    if not accuracy_met:
        reasons.append('accuracy')
    if not p95_met:
        reasons.append('P95')
    return {
        'regime': main['regime'], 'arrival': main['arrival'], 'load': main['load'],
        'best_baseline': best['policy'],
        'violation_ratio': main_violations, 'best_violation_ratio': best_violations,
        'violation_ratio_vs_best': ratio,
        'delivered_accuracy': main_accuracy, 'best_delivered_accuracy': best_accuracy,
        'p95_ms': main_p95, 'best_p95_ms': best_p95,
        'violations_met': violations_met, 'accuracy_met': accuracy_met, 'p95_met': p95_met,
        'met': violations_met and accuracy_met and p95_met,
        'reasons': reasons,
        'dominated_by': dominated_by,
        'target_load': main['load'] >= TARGET_MIN_LOAD - 1e-9,
    }


def compare_all(results: dict) -> list[dict]:
    """Run `compare_cell` on every (regime, arrival, load) of the sweep."""
    groups: dict[tuple, list[dict]] = {}
    for cell in results['sweep']['cells']:
        groups.setdefault((cell['regime'], cell['arrival'], cell['load']), []).append(cell)
    comparisons = []
    for key in sorted(groups, key=lambda k: (_regime_order(results, k[0]), k[1], k[2])):
        comparison = compare_cell(groups[key])
        if comparison is not None:
            comparisons.append(comparison)
    return comparisons


def overhead_target(results: dict) -> dict | None:
    """Return EdgeServing's decision p99 at the target stream count and whether it is met.

    The target is judged on wall-clock time; the CPU-time verdict is reported beside it.
    """
    overhead = results.get('overhead') or {}
    for row in overhead.get('rows', []):
        if row['policy'] == MAIN and row['streams'] == TARGET_OVERHEAD_STREAMS:
            cpu_p99_us = row.get('cpu_p99_us')
            return {'p99_us': row['p99_us'], 'met': row['p99_us'] <= TARGET_DECISION_P99_US,
                    'cpu_p99_us': cpu_p99_us,
                    'cpu_met': cpu_p99_us is not None
                    and cpu_p99_us <= TARGET_DECISION_P99_US}
    return None


def _regime_order(results: dict, name: str) -> int:
    names = [regime['name'] for regime in results['sweep']['regimes']]
    return names.index(name) if name in names else len(names)


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 'n/a'
    return f'{value:.{digits}f}'


def _with_spread(cell: dict, name: str, digits: int) -> str:
    value = cell.get(name)
    if value is None:
        return 'n/a'
    spread = cell.get(name + '_std') or 0.0
    if cell.get('seeds', 1) > 1:
        return f'{value:.{digits}f} ± {spread:.{digits}f}'
    return f'{value:.{digits}f}'


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines.extend('| ' + ' | '.join(row) + ' |' for row in rows)
    return lines


def _policy_order(results: dict) -> list[str]:
    present = list(dict.fromkeys(cell['policy'] for cell in results['sweep']['cells']))
    order = [MAIN, *BASELINES, *ABLATIONS]
    return [name for name in order if name in present] + \
        [name for name in present if name not in order]


def sweep_tables(results: dict, regime: str, arrival: str,
                 comparisons: list[dict]) -> list[str]:
    """Return the tables of one (regime, arrival): violations, accuracy, P95, bound distance."""
    cells = [cell for cell in results['sweep']['cells']
             if cell['regime'] == regime and cell['arrival'] == arrival]
    loads = sorted({cell['load'] for cell in cells})
    index = {(cell['policy'], cell['load']): cell for cell in cells}
    header = ['policy'] + [f'load {load}' for load in loads]
    lines = []
    for title, name, digits in (('SLO violation ratio', 'violation_ratio', 3),
                                ('Delivered accuracy', 'delivered_accuracy', 3),
                                ('P95 latency of completed requests (ms)', 'p95_ms', 1),
                                ('Distance to the bound (share of offered requests)',
                                 'bound_gap_ratio', 3)):
        rows = []
        for policy in _policy_order(results):
            row = [f'**{policy}**' if policy == MAIN else policy]
            row += [_with_spread(index[(policy, load)], name, digits)
                    if (policy, load) in index else '' for load in loads]
            rows.append(row)
        if name == 'violation_ratio':
            ratios = {c['load']: c for c in comparisons
                      if c['regime'] == regime and c['arrival'] == arrival}
            row = ['edgeserving / best baseline']
            for load in loads:
                comparison = ratios.get(load)
                if comparison is None:
                    row.append('')
                elif comparison['violation_ratio_vs_best'] is None:
                    row.append(f'best 0 ({comparison["best_baseline"]})')
                else:
                    row.append(f'{comparison["violation_ratio_vs_best"]:.2f} '
                               f'({comparison["best_baseline"]})')
            rows.append(row)
        lines += [f'*{title}*', '']
        lines += _table(header, rows)
        lines.append('')
    return lines


def target_matrix(results: dict, comparisons: list[dict]) -> list[str]:
    """Return a table: one row per (regime, arrival), one column per load, met or not met."""
    loads = sorted({c['load'] for c in comparisons})
    keys = list(dict.fromkeys((c['regime'], c['arrival']) for c in comparisons))
    index = {(c['regime'], c['arrival'], c['load']): c for c in comparisons}
    rows = []
    for regime, arrival in keys:
        row = [regime, arrival]
        for load in loads:
            comparison = index.get((regime, arrival, load))
            if comparison is None:
                row.append('')
            elif comparison['met']:
                row.append('met')
            else:
                row.append('not met: ' + ', '.join(comparison['reasons']))
        rows.append(row)
    header = ['regime', 'arrival'] + [f'load {load}' + (' *' if load >= TARGET_MIN_LOAD else '')
                                      for load in loads]
    return _table(header, rows)


def losses_section(comparisons: list[dict]) -> list[str]:
    """Return the list of cells where EdgeServing misses the target, with the figures."""
    losing = [c for c in comparisons if not c['met']]
    if not losing:
        return ['EdgeServing met the target in every cell of this run.', '']
    rows = []
    for c in losing:
        rows.append([
            c['regime'], c['arrival'], str(c['load']), c['best_baseline'],
            f'{_number(c["violation_ratio"])} vs {_number(c["best_violation_ratio"])}',
            f'{_number(c["delivered_accuracy"])} vs {_number(c["best_delivered_accuracy"])}',
            f'{_number(c["p95_ms"], 1)} vs {_number(c["best_p95_ms"], 1)}',
            ', '.join(c['reasons']),
            ', '.join(c['dominated_by']) or '-',
        ])
    lines = [f'{len(losing)} of {len(comparisons)} cells miss the target '
             f'({sum(1 for c in losing if c["target_load"])} of them at load >= '
             f'{TARGET_MIN_LOAD}). Figures are EdgeServing vs the best baseline; '
             '"dominated by" lists baselines with no more violations, no lower delivered '
             'accuracy and an advantage in one of them (accuracy by more than '
             f'{ACCURACY_TOLERANCE}).', '']
    lines += _table(['regime', 'arrival', 'load', 'best baseline', 'violation ratio',
                     'delivered accuracy', 'P95 (ms)', 'missed on', 'dominated by'], rows)
    lines.append('')
    return lines


def fidelity_section(results: dict, images: dict[str, str]) -> list[str]:
    fidelity = results.get('fidelity')
    if not fidelity:
        return ['Not run.', '']
    lines = [f'Definition: {fidelity["definition"]}. Predicted misses are the score\'s '
             '`predicted_misses` (misses now + misses caused) of the chosen action, computed '
             f'before the batch is popped. Loads {fidelity["loads"]}, seeds '
             f'{fidelity["seeds"]}, {fidelity["duration_s"]} s per trace.', '']
    rows = []
    for group in fidelity['groups'] + [dict(fidelity['overall'], regime='all', arrival='all')]:
        rows.append([group['regime'], group['arrival'], str(group['decisions']),
                     _number(group['rho']), _number(group['p_value'], 4)])
    lines += _table(['regime', 'arrival', 'decisions', 'Spearman rho', 'p-value'], rows)
    lines += ['', 'n/a: the predictions or the outcomes were constant in that group (for '
              'example no miss predicted and none realised), so no rank correlation exists.', '']
    calibration = fidelity['overall']['calibration']
    lines += ['Calibration over all decisions (bins by predicted misses):', '']
    lines += _table(['predicted bin', 'decisions', 'mean predicted', 'mean realised'],
                    [[str(row['bin']), str(row['decisions']), _number(row['mean_predicted'], 2),
                      _number(row['mean_realised'], 2)] for row in calibration])
    lines.append('')
    if 'fidelity' in images:
        lines += [f'![fidelity calibration]({images["fidelity"]})', '']
    return lines


def overhead_section(results: dict, images: dict[str, str]) -> list[str]:
    overhead = results.get('overhead')
    if not overhead:
        return ['Not run.', '']
    counts = sorted({row['streams'] for row in overhead['rows']})
    policies = list(dict.fromkeys(row['policy'] for row in overhead['rows']))
    index = {(row['policy'], row['streams']): row for row in overhead['rows']}
    rows = []
    for policy in policies:
        row = [policy]
        for count in counts:
            entry = index.get((policy, count))
            row.append('' if entry is None else
                       f'{_number(entry["p50_us"], 0)} / {_number(entry["p99_us"], 0)} / '
                       f'{_number(entry.get("cpu_p99_us"), 0)}')
        rows.append(row)
    lines = ['Decision time of `decide` per policy in us: wall-clock p50 / wall-clock p99 / '
             'thread CPU-time p99. Wall-clock times come from time.perf_counter '
             '(Scheduler.decision_times_s), CPU times from time.thread_time_ns. Poisson '
             f'arrivals at load {overhead["load"]}, {overhead["duration_s"]} s per stream '
             'count, every exit allowed, max batch 10. On this shared machine a decision that '
             'is preempted once takes about 4 ms of wall-clock time (one scheduler tick), so '
             'the wall-clock p99 reflects the load of other processes; the CPU-time p99 leaves '
             'preemption out.', '']
    lines += _table(['policy'] + [f'{count} streams' for count in counts], rows)
    lines.append('')
    queued = [index[(MAIN, count)]['mean_queued'] for count in counts if (MAIN, count) in index]
    if queued:
        lines += ['Mean queued requests at an EdgeServing decision: '
                  + ', '.join(f'{count} streams: {value:.1f}'
                              for count, value in zip(counts, queued)) + '.', '']
    if 'overhead' in images:
        lines += [f'![decision overhead]({images["overhead"]})', '']
    return lines


def real_section(results: dict, images: dict[str, str]) -> list[str]:
    real = results.get('real')
    if not real:
        return ['Not run in this benchmark run (`--real`, inside tools/run-isolated).', '']
    if real.get('skipped'):
        return [f'Skipped: {real["skipped"]}', '']
    lines = [real.get('description', ''), '']
    rows = []
    for row in real['rows']:
        rows.append([row['policy'],
                     _number(row['real']['violation_ratio']),
                     _number(row['simulated']['violation_ratio']),
                     _number(row['real']['p95_ms'], 1), _number(row['simulated']['p95_ms'], 1),
                     _number(row['real'].get('delivered_accuracy')),
                     _number(row['simulated'].get('delivered_accuracy')),
                     str(row['real'].get('offered', ''))])
    lines += _table(['policy', 'violations real', 'violations sim', 'P95 real (ms)',
                     'P95 sim (ms)', 'accuracy real', 'accuracy sim', 'offered (real)'], rows)
    lines.append('')
    if 'real' in images:
        lines += [f'![real vs simulated]({images["real"]})', '']
    return lines


def render(results: dict, images: dict[str, str]) -> str:
    """Return the Markdown page; `images` maps figure names to paths relative to the page."""
    comparisons = compare_all(results)
    command = results['command']
    if results.get('real', {}).get('rows'):
        command = 'tools/run-isolated ' + command
    sweep = results['sweep']
    config = sweep['config']
    machine = results['machine']
    profile = results['profile']
    lines = [
        '# Benchmarks',
        '',
        'Generated by `edgeserving_ros.bench` from the results of one run; do not edit by '
        'hand. Regenerate with the command below.',
        '',
        '## Run',
        '',
        f'- Command: `{command}`',
        f'- Machine: {machine["cpu"]}, {machine["cores"]} cores, Python {machine["python"]}, '
        f'torch {machine["torch"]}; wall time {results["elapsed_s"]:.0f} s.',
        f'- Profile: `{profile["path"]}`, measured on {profile["device"]} '
        f'({profile["threads"]} thread(s), torch {profile["torch"] or "n/a"}) on '
        f'{profile["date"]}.',
        '- Workload: paper-like mix of three streams (ResNet-20, -32, -56 on CIFAR-10) at '
        'rates 3:2:1, SLO 50 ms, max batch 10, queue depth 30. Load 1.0 is the final-exit '
        'capacity: the rate at which full batches at the final exit keep the device busy '
        '(profiled p50).',
        f'- Loads {list(config["loads"])}, seeds {list(config["seeds"])}, '
        f'{config["duration_s"]} s per trace (first 0.5 s not counted), '
        f'arrivals: {", ".join(dict.fromkeys(c["arrival"] for c in sweep["cells"]))}.',
        '- Service times drawn from the profile (`ProfileLatencySampler` with noise: '
        'piecewise-linear through p50/p95/p99); policies predict with p95 and the online '
        'correction.',
        '',
    ]
    for note in sweep.get('notes', []):
        lines += [f'- Note: {note}']
    lines += ['', '## Definitions', '',
              '- SLO violation ratio: (late + dropped) / offered requests. Dropped requests '
              '(doomed, queue overflow) count as violations.',
              '- Delivered accuracy: mean profiled accuracy of the exits that produced on-time '
              'results.',
              '- P95: 95th percentile latency of completed requests (dropped ones have none).',
              '- Distance to the bound: (upper bound on on-time requests - on-time requests) / '
              'offered. The bound is the LP relaxation of preemptive single-machine scheduling '
              'with each request\'s cheapest per-request cost (edgeserving_ros.bound), with '
              'latencies scaled by 0.8 because the noisy service times reach down to 0.8 x p50.',
              '- Accuracy regimes (min_accuracy on every stream): '
              + '; '.join(f'`{r["name"]}`: {r["description"]}' for r in sweep['regimes']) + '.',
              '- Baselines compared against: ' + ', '.join(BASELINES) + '. The EdgeServing '
              'ablations (' + ', '.join(ABLATIONS) + ') are reported but not compared against.',
              '']

    lines += ['## Target', '',
              f'At every load >= {TARGET_MIN_LOAD}: at most {TARGET_VIOLATION_FACTOR:g} x the '
              'violations of the best baseline (fewest violations), at equal or better '
              f'delivered accuracy (tolerance {ACCURACY_TOLERANCE}), P95 no worse (tolerance '
              f'{P95_TOLERANCE:.0%}); decision p99 <= {TARGET_DECISION_P99_US:.0f} us at '
              f'{TARGET_OVERHEAD_STREAMS} streams x 3 exits x 10 batch sizes. Loads marked * '
              'are target loads; lower loads are shown for completeness.', '']
    lines += target_matrix(results, comparisons)
    lines.append('')
    overhead = overhead_target(results)
    if overhead is not None:
        lines += [f'Decision p99 of edgeserving at {TARGET_OVERHEAD_STREAMS} streams: '
                  f'{overhead["p99_us"]:.0f} us wall-clock: '
                  f'{"met" if overhead["met"] else "not met"}; '
                  f'{_number(overhead["cpu_p99_us"], 0)} us thread CPU time: '
                  f'{"met" if overhead["cpu_met"] else "not met"}.', '']
    target_cells = [c for c in comparisons if c['target_load']]
    met = sum(1 for c in target_cells if c['met'])
    lines += [f'Cells at target loads meeting the target: {met} of {len(target_cells)}.', '']

    lines += ['## Where EdgeServing loses', '']
    lines += losses_section(comparisons)

    lines += ['## Load sweeps', '']
    for regime in sweep['regimes']:
        arrivals = list(dict.fromkeys(c['arrival'] for c in sweep['cells']
                                      if c['regime'] == regime['name']))
        for arrival in arrivals:
            lines += [f'### {regime["name"]}, {arrival}', '']
            lines += sweep_tables(results, regime['name'], arrival, comparisons)
    lines += ['## Figures', '']
    captions = {
        'latency_cdf': 'Latency CDF at one load',
        'exit_mix': 'EdgeServing exit mix vs load',
        'bound_gap': 'Distance to the bound vs load',
        'ablations': 'EdgeServing and its ablations',
    }
    for name, path in images.items():
        if name.startswith('violations_'):
            caption = f'SLO violations vs load, {name[len("violations_"):]} arrivals'
        elif name.startswith('pareto_'):
            caption = f'Violations-accuracy plane, {name[len("pareto_"):]} arrivals'
        elif name in captions:
            caption = captions[name]
        else:
            continue
        lines += [f'![{caption}]({path})', '']

    lines += ['## Score fidelity', '']
    lines += fidelity_section(results, images)
    lines += ['## Decision overhead', '']
    lines += overhead_section(results, images)
    lines += ['## Real node vs simulator', '']
    lines += real_section(results, images)
    return '\n'.join(lines).rstrip() + '\n'


def write_report(results: dict, page: pathlib.Path, images: dict[str, pathlib.Path]) -> None:
    """Write the page, with image links relative to its folder."""
    page = pathlib.Path(page)
    relative = {name: pathlib.Path(path).resolve().relative_to(page.parent.resolve()).as_posix()
                for name, path in images.items()}
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(render(results, relative), encoding='utf-8')
