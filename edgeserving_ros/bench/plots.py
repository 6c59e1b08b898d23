"""Benchmark figures (PNG, matplotlib's Agg backend) drawn from the results document.

Every function takes the results document written by the CLI and an output folder, draws one
figure and returns its path, or None when the results lack the data the figure needs.
"""

import pathlib

import matplotlib

matplotlib.use('Agg')
import matplotlib.patches  # noqa: E402  (the backend must be chosen first)
import matplotlib.pyplot as plt  # noqa: E402

from edgeserving_ros.bench.experiments import (  # noqa: E402
    ABLATIONS, BASELINES, CDF_PERCENTS)

DPI = 90
MAIN = 'edgeserving'
_COLORS = matplotlib.colormaps['tab20'].colors
_EXIT_COLORS = ('tab:red', 'tab:orange', 'tab:blue', 'tab:green', 'tab:purple')


def _style(policy: str) -> dict:
    """Return line properties: EdgeServing bold black, every other policy a fixed colour."""
    if policy == MAIN:
        return {'color': 'black', 'linewidth': 2.4, 'zorder': 5}
    order = [*BASELINES, *ABLATIONS]
    index = order.index(policy) if policy in order else len(order)
    return {'color': _COLORS[index % len(_COLORS)], 'linewidth': 1.2}


def _cells(results: dict, **match) -> list[dict]:
    return [cell for cell in results['sweep']['cells']
            if all(cell[key] == value for key, value in match.items())]


def _policies(results: dict, group: str = 'main') -> list[str]:
    """Return the policies of the results: 'main' (EdgeServing and baselines), 'ablations'
    (EdgeServing and its ablations) or 'all'."""
    present = list(dict.fromkeys(cell['policy'] for cell in results['sweep']['cells']))
    if group == 'all':
        return present
    if group == 'ablations':
        return [name for name in present if name == MAIN or name in ABLATIONS]
    return [name for name in present if name == MAIN or name in BASELINES]


def _regimes(results: dict) -> list[dict]:
    return results['sweep']['regimes']


def _series(results: dict, regime: str, arrival: str, policy: str, figure: str):
    cells = sorted(_cells(results, regime=regime, arrival=arrival, policy=policy),
                   key=lambda cell: cell['load'])
    return ([cell['load'] for cell in cells],
            [cell[figure] for cell in cells],
            [cell.get(figure + '_std') or 0.0 for cell in cells])


def _save(figure, path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, bbox_inches='tight')
    plt.close(figure)
    return path


def _panels(count: int, width_in: float = 4.2, height_in: float = 3.4):
    figure, axes = plt.subplots(1, count, figsize=(width_in * count, height_in), squeeze=False)
    return figure, list(axes[0])


def plot_figure_vs_load(results: dict, arrival: str, figure_name: str, ylabel: str,
                        path: pathlib.Path, group: str = 'main',
                        log_y: bool = False) -> pathlib.Path | None:
    """Draw one figure (mean over seeds, bars = spread) against load, one panel per regime."""
    regimes = _regimes(results)
    if not _cells(results, arrival=arrival):
        return None
    figure, axes = _panels(len(regimes))
    for axis, regime in zip(axes, regimes):
        for policy in _policies(results, group):
            loads, values, spreads = _series(results, regime['name'], arrival, policy,
                                             figure_name)
            if not loads or all(value is None for value in values):
                continue
            points = [(x, y, s) for x, y, s in zip(loads, values, spreads) if y is not None]
            axis.errorbar([p[0] for p in points], [p[1] for p in points],
                          yerr=[p[2] for p in points], label=policy, marker='o', markersize=3,
                          capsize=2, **_style(policy))
        axis.set_title(f'{regime["name"]} (min_accuracy {regime["min_accuracy"]})', fontsize=9)
        axis.set_xlabel('load (x final-exit capacity)')
        axis.set_ylabel(ylabel)
        if log_y:
            axis.set_yscale('symlog', linthresh=1e-3)
        axis.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    figure.suptitle(f'{ylabel} vs load, {arrival} arrivals', fontsize=10)
    return _save(figure, path)


def plot_latency_cdf(results: dict, arrival: str, path: pathlib.Path) -> pathlib.Path | None:
    """Draw the latency CDF of completed requests at the sweep's CDF load, per regime."""
    regimes = _regimes(results)
    load = results['sweep']['config']['cdf_load']
    cells = [cell for cell in _cells(results, arrival=arrival) if cell.get('latency_cdf_ms')]
    if not cells:
        return None
    figure, axes = _panels(len(regimes))
    fractions = [p / 100.0 for p in CDF_PERCENTS]
    for axis, regime in zip(axes, regimes):
        for policy in _policies(results):
            match = [cell for cell in cells
                     if cell['regime'] == regime['name'] and cell['policy'] == policy]
            if not match:
                continue
            curve = match[0]['latency_cdf_ms']
            points = [(x, y) for x, y in zip(curve, fractions) if x is not None]
            axis.plot([p[0] for p in points], [p[1] for p in points], label=policy,
                      **_style(policy))
        slo_ms = 50.0
        axis.axvline(slo_ms, color='grey', linestyle='--', linewidth=1)
        axis.set_title(f'{regime["name"]}', fontsize=9)
        axis.set_xlabel('latency of completed requests (ms)')
        axis.set_ylabel('fraction')
        axis.set_xlim(left=0)
        axis.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    figure.suptitle(f'Latency CDF at load {load}, {arrival} arrivals (dashed: SLO)', fontsize=10)
    return _save(figure, path)


def plot_exit_mix(results: dict, arrival: str, path: pathlib.Path) -> pathlib.Path | None:
    """Draw EdgeServing's exit mix (share of completed requests per exit) against load."""
    regimes = _regimes(results)
    if not _cells(results, arrival=arrival, policy=MAIN):
        return None
    figure, axes = _panels(len(regimes))
    for axis, regime in zip(axes, regimes):
        cells = sorted(_cells(results, regime=regime['name'], arrival=arrival, policy=MAIN),
                       key=lambda cell: cell['load'])
        exits = sorted({index for cell in cells for index in cell['exit_mix']}, key=int)
        loads = [cell['load'] for cell in cells]
        shares = [[cell['exit_mix'].get(index, 0.0) for cell in cells] for index in exits]
        if loads:
            labels = [f'exit {int(index) + 1}' for index in exits]
            colors = [_EXIT_COLORS[int(index) % len(_EXIT_COLORS)] for index in exits]
            axis.stackplot(loads, shares, labels=labels, colors=colors, alpha=0.8)
        axis.set_title(f'{regime["name"]}', fontsize=9)
        axis.set_xlabel('load (x final-exit capacity)')
        axis.set_ylabel('share of completed requests')
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
    present = sorted({int(index) for cell in _cells(results, arrival=arrival, policy=MAIN)
                      for index in cell['exit_mix']})
    handles = [matplotlib.patches.Patch(color=_EXIT_COLORS[index % len(_EXIT_COLORS)],
                                        alpha=0.8, label=f'exit {index + 1}')
               for index in present]
    axes[-1].legend(handles=handles, fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    figure.suptitle(f'EdgeServing exit mix vs load, {arrival} arrivals (last exit = final)',
                    fontsize=10)
    return _save(figure, path)


def plot_pareto(results: dict, arrival: str, path: pathlib.Path,
                min_load: float = 0.8) -> pathlib.Path | None:
    """Draw every policy on the violations-accuracy plane: rows are regimes, columns loads."""
    regimes = _regimes(results)
    loads = sorted({cell['load'] for cell in _cells(results, arrival=arrival)
                    if cell['load'] >= min_load})
    if not loads:
        return None
    figure, grid = plt.subplots(len(regimes), len(loads), squeeze=False,
                                figsize=(3.0 * len(loads), 2.7 * len(regimes)))
    for row, regime in enumerate(regimes):
        for column, load in enumerate(loads):
            axis = grid[row][column]
            for policy in _policies(results, 'all'):
                match = _cells(results, regime=regime['name'], arrival=arrival, load=load,
                               policy=policy)
                if not match or match[0]['delivered_accuracy'] is None:
                    continue
                cell = match[0]
                if policy == MAIN:
                    marker, size = '*', 90
                elif policy in BASELINES:
                    marker, size = 'o', 22
                else:
                    marker, size = 'x', 22
                axis.scatter(cell['delivered_accuracy'], cell['violation_ratio'],
                             marker=marker, s=size, label=policy,
                             color=_style(policy)['color'], zorder=5)
            axis.set_title(f'{regime["name"]}, load {load}', fontsize=8)
            axis.tick_params(labelsize=7)
            axis.grid(alpha=0.3)
            if row == len(regimes) - 1:
                axis.set_xlabel('delivered accuracy', fontsize=8)
            if column == 0:
                axis.set_ylabel('SLO violation ratio', fontsize=8)
    handles, labels = grid[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, fontsize=7, loc='upper left', bbox_to_anchor=(1.0, 0.95))
    figure.suptitle(f'Violations-accuracy plane, {arrival} arrivals (lower right is better)',
                    fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def plot_fidelity(results: dict, path: pathlib.Path) -> pathlib.Path | None:
    """Draw the calibration of predicted misses against realised misses, per group."""
    fidelity = results.get('fidelity')
    if not fidelity or not fidelity.get('groups'):
        return None
    figure, axes = _panels(1, width_in=5.5, height_in=4.2)
    axis = axes[0]
    top = 1.0
    for group in fidelity['groups']:
        table = group['calibration']
        xs = [row['mean_predicted'] for row in table]
        ys = [row['mean_realised'] for row in table]
        rho = group['rho']
        label = (f'{group["regime"]}, {group["arrival"]} '
                 f'(rho {rho:.2f})' if rho is not None else f'{group["regime"]}, '
                 f'{group["arrival"]} (rho n/a)')
        axis.plot(xs, ys, marker='o', markersize=3, label=label)
        top = max([top] + xs + ys)
    axis.plot([0, top], [0, top], color='grey', linestyle='--', linewidth=1, label='y = x')
    axis.set_xlabel('predicted misses of the chosen action (bin mean)')
    axis.set_ylabel(f'realised misses within {fidelity["horizon_decisions"]} decisions')
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.suptitle('Stability-score fidelity: calibration', fontsize=10)
    return _save(figure, path)


def plot_overhead(results: dict, path: pathlib.Path) -> pathlib.Path | None:
    """Draw wall-clock p50 and p99 and CPU-time p99 per decision against the stream count."""
    overhead = results.get('overhead')
    if not overhead or not overhead.get('rows'):
        return None
    figure, axes = _panels(3)
    policies = list(dict.fromkeys(row['policy'] for row in overhead['rows']))
    titles = {'p50_us': 'wall-clock p50', 'p99_us': 'wall-clock p99',
              'cpu_p99_us': 'thread CPU-time p99'}
    for axis, quantile in zip(axes, titles):
        for policy in policies:
            rows = sorted((row for row in overhead['rows'] if row['policy'] == policy),
                          key=lambda row: row['streams'])
            axis.plot([row['streams'] for row in rows], [row.get(quantile) for row in rows],
                      marker='o', markersize=3, label=policy,
                      **_style(policy))
        axis.axhline(200.0, color='grey', linestyle='--', linewidth=1)
        axis.set_yscale('log')
        axis.set_xlabel('streams (x 3 exits x 10 batch sizes)')
        axis.set_ylabel(f'decision time, {titles[quantile]} (us)')
        axis.grid(alpha=0.3, which='both')
    axes[-1].legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    figure.suptitle('Decision overhead per policy (dashed: 200 us target)', fontsize=10)
    return _save(figure, path)


def plot_real_vs_simulated(results: dict, path: pathlib.Path) -> pathlib.Path | None:
    """Draw the real node's violation ratio and P95 next to the simulated ones, per policy."""
    real = results.get('real')
    if not real or not real.get('rows'):
        return None
    rows = real['rows']
    names = [row['policy'] for row in rows]
    positions = range(len(names))
    figure, axes = _panels(2)
    for axis, figure_name, label in ((axes[0], 'violation_ratio', 'SLO violation ratio'),
                                     (axes[1], 'p95_ms', 'P95 latency (ms)')):
        real_values = [row['real'][figure_name] or 0.0 for row in rows]
        sim_values = [row['simulated'][figure_name] or 0.0 for row in rows]
        axis.bar([p - 0.2 for p in positions], real_values, width=0.4, label='real node')
        axis.bar([p + 0.2 for p in positions], sim_values, width=0.4, label='simulator')
        axis.set_xticks(list(positions))
        axis.set_xticklabels(names, rotation=30, fontsize=8)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3, axis='y')
    axes[0].legend(fontsize=8)
    figure.suptitle('Real node on this CPU vs the simulator, same workload', fontsize=10)
    return _save(figure, path)


def draw_all(results: dict, folder: pathlib.Path) -> dict[str, pathlib.Path]:
    """Draw every figure the results support into `folder`; return name -> path."""
    folder = pathlib.Path(folder)
    arrivals = list(dict.fromkeys(cell['arrival'] for cell in results['sweep']['cells']))
    main_arrival = 'poisson' if 'poisson' in arrivals else arrivals[0]
    drawn = {}
    for arrival in arrivals:
        drawn[f'violations_{arrival}'] = plot_figure_vs_load(
            results, arrival, 'violation_ratio', 'SLO violation ratio',
            folder / f'violations_{arrival}.png')
        drawn[f'pareto_{arrival}'] = plot_pareto(results, arrival,
                                                 folder / f'pareto_{arrival}.png')
    drawn['ablations'] = plot_figure_vs_load(
        results, main_arrival, 'violation_ratio', 'SLO violation ratio',
        folder / 'ablations.png', group='ablations')
    drawn['latency_cdf'] = plot_latency_cdf(results, main_arrival, folder / 'latency_cdf.png')
    drawn['exit_mix'] = plot_exit_mix(results, main_arrival, folder / 'exit_mix.png')
    drawn['bound_gap'] = plot_figure_vs_load(
        results, main_arrival, 'bound_gap_ratio', 'distance to bound (share of offered)',
        folder / 'bound_gap.png')
    drawn['fidelity'] = plot_fidelity(results, folder / 'fidelity_calibration.png')
    drawn['overhead'] = plot_overhead(results, folder / 'decision_overhead.png')
    drawn['real'] = plot_real_vs_simulated(results, folder / 'real_vs_simulated.png')
    return {name: path for name, path in drawn.items() if path is not None}
