"""`edgeserving-bench`: simulated load sweeps, score fidelity, decision overhead, real run, report.

A run writes `results.json`, the figures (`plots/*.png`) and the page (`benchmarks.md`) to
`--output`. With `--docs` it also regenerates docs/benchmarks.md, docs/benchmarks/*.png and
docs/benchmarks/results.json. `--report-only` redraws figures and pages from an existing
`results.json` without simulating.
"""

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import shlex
import shutil
import sys
import tempfile
import time

from edgeserving_ros.bench import experiments, fidelity, overhead, plots, report
from edgeserving_ros.policies import POLICY_NAMES
from edgeserving_ros.profile import ProfileError, load_profile

RESULTS_SCHEMA = 'edgeserving-bench-results'
RESULTS_SCHEMA_VERSION = 1
_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
DEFAULT_PROFILE = _REPO_ROOT / 'config' / 'profile_cpu.json'
DEFAULT_OUTPUT = pathlib.Path('results/bench')
OVERHEAD_STREAMS = (1, 2, 3, 4, 6, 8, 12, 16)
OVERHEAD_POLICIES = ('edgeserving', 'reference', 'clockwork', 'edf', 'fifo', 'round_robin',
                     'triton', 'greedy_exit')


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'invalid integer {text!r}') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'{value} is out of range: expected at least 1')
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'invalid number {text!r}') from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f'{text} is out of range: expected a finite number above 0')
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='edgeserving-bench',
        description='Benchmark the scheduling policies in the simulator (and optionally on '
                    'the real node) and write results, figures and a Markdown report.')
    parser.add_argument('--quick', action='store_true',
                        help='tiny run (2 loads, 1 seed, 5 policies, 2 s traces), for tests')
    parser.add_argument('--output', type=pathlib.Path, default=DEFAULT_OUTPUT,
                        help='folder for results.json, plots/ and benchmarks.md '
                             '(default: %(default)s)')
    parser.add_argument('--profile', type=pathlib.Path, default=DEFAULT_PROFILE,
                        help='latency and accuracy profile (default: config/profile_cpu.json)')
    parser.add_argument('--docs', action='store_true',
                        help='also regenerate docs/benchmarks.md and docs/benchmarks/')
    parser.add_argument('--docs-dir', type=pathlib.Path, default=_REPO_ROOT / 'docs',
                        help='docs folder used by --docs (default: the repository\'s docs/)')
    parser.add_argument('--real', action='store_true',
                        help='also serve the workload with the real node over DDS (needs '
                             'tools/run-isolated, the data folder and torch)')
    parser.add_argument('--real-duration-s', type=float, default=20.0,
                        help='seconds of traffic per policy in the real run (default: '
                             '%(default)s)')
    parser.add_argument('--real-load', type=float, default=0.8,
                        help='load of the real run, x final-exit capacity (default: '
                             '%(default)s)')
    parser.add_argument('--seeds', type=_positive_int, default=None,
                        help='number of seeds per cell (default: 3, quick: 1)')
    parser.add_argument('--duration-s', type=_positive_float, default=None,
                        help='simulated seconds per trace (default: 6, quick: 2)')
    parser.add_argument('--loads', type=_positive_float, nargs='+', default=None,
                        help='loads to sweep, x final-exit capacity')
    parser.add_argument('--policies', nargs='+', default=None, choices=POLICY_NAMES,
                        metavar='POLICY',
                        help='policies to sweep (default: all; quick: 5); known policies: '
                             f'{", ".join(POLICY_NAMES)}')
    parser.add_argument('--arrivals', nargs='+', default=None,
                        choices=list(experiments.ARRIVALS), help='arrival processes to sweep')
    parser.add_argument('--jobs', type=int, default=1,
                        help='worker processes for the simulations (default: 1)')
    parser.add_argument('--skip', nargs='+', default=[],
                        choices=('fidelity', 'overhead'), help='parts of the run to leave out')
    parser.add_argument('--report-only', action='store_true',
                        help='redraw figures and pages from OUTPUT/results.json')
    parser.add_argument('--no-progress', action='store_true', help='hide progress bars')
    return parser


def sweep_config(options: argparse.Namespace) -> experiments.SweepConfig:
    config = experiments.SweepConfig.quick() if options.quick else experiments.SweepConfig()
    if options.seeds is not None:
        config.seeds = tuple(range(options.seeds))
    if options.duration_s is not None:
        config.duration_s = options.duration_s
    if options.loads:
        config.loads = tuple(options.loads)
    if options.policies:
        config.policies = tuple(options.policies)
    if options.arrivals:
        config.arrivals = tuple(options.arrivals)
    return config


def machine_description() -> dict:
    """Return CPU model, core count and software versions of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as stream:
            for line in stream:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        torch_version = importlib.metadata.version('torch')
    except importlib.metadata.PackageNotFoundError:
        torch_version = 'not installed'
    return {'cpu': cpu, 'cores': os.cpu_count(), 'python': platform.python_version(),
            'torch': torch_version, 'platform': platform.platform()}


def run_benchmark(options: argparse.Namespace) -> dict:
    """Run every selected part and return the results document."""
    started = time.monotonic()
    profile = load_profile(options.profile)
    progress = not options.no_progress
    config = sweep_config(options)
    results = {
        'schema': RESULTS_SCHEMA,
        'schema_version': RESULTS_SCHEMA_VERSION,
        'command': 'edgeserving-bench ' + ' '.join(shlex.quote(a) for a in options.argv),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'machine': machine_description(),
        'profile': {'path': _display_path(options.profile), 'device': profile.device,
                    'date': profile.date, 'torch': profile.torch, 'threads': profile.threads},
    }
    results['sweep'] = experiments.run_sweep(config, options.profile, options.jobs, progress)

    if 'fidelity' not in options.skip:
        fidelity_loads = (1.0,) if options.quick else (0.8, 1.0, 1.2)
        results['fidelity'] = fidelity.run_fidelity(
            str(options.profile), loads=fidelity_loads, seeds=config.seeds[:1],
            duration_s=config.duration_s,
            arrivals=('poisson',) if options.quick else ('poisson', 'bursty_cv2'),
            regimes=config.regimes, jobs=options.jobs, progress=progress)
    if 'overhead' not in options.skip:
        counts = (1, 3) if options.quick else OVERHEAD_STREAMS
        policies = ('edgeserving', 'reference') if options.quick else OVERHEAD_POLICIES
        results['overhead'] = overhead.run_overhead(
            str(options.profile), counts, policies, duration_s=1.0 if options.quick else 8.0,
            jobs=options.jobs, progress=progress)
    if options.real:
        from edgeserving_ros.bench import real_run

        try:
            results['real'] = real_run.run_real(
                options.profile, duration_s=options.real_duration_s, load=options.real_load,
                work_dir=options.output / 'real', progress=progress)
        except real_run.RealRunError as error:
            # Keep the simulated results; the report states why the real run is missing.
            print(f'edgeserving-bench: {error}', file=sys.stderr)
            results['real'] = {'skipped': str(error)}
    results['elapsed_s'] = time.monotonic() - started
    return results


def write_outputs(results: dict, options: argparse.Namespace) -> list[pathlib.Path]:
    """Write results.json, figures and pages; return the page paths.

    Every file is first written to a temporary folder beside its destination folder, and the
    files replace those in OUTPUT (and the docs folder) only after all of them were written,
    so a failure leaves the previous files in place. Other files in those folders are kept.
    """
    # Targets are checked on the rounded figures that the JSON stores, so the page, the JSON
    # and a later --report-only agree.
    results = _json_ready(results)
    results['targets'] = {'cells': report.compare_all(results),
                          'decision_overhead': report.overhead_target(results)}
    destinations = [options.output] + ([options.docs_dir] if options.docs else [])
    staging = {}
    try:
        for folder in destinations:
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging[folder] = pathlib.Path(tempfile.mkdtemp(
                prefix=f'.{folder.name}.', suffix='.tmp', dir=folder.parent))

        output = staging[options.output]
        _write_json(results, output / 'results.json')
        images = plots.draw_all(results, output / 'plots')
        report.write_report(results, output / 'benchmarks.md', images)
        if options.docs:
            docs = staging[options.docs_dir]
            # The per-seed rows stay in OUTPUT/results.json; the docs keep the per-cell figures.
            summary = dict(results, sweep={key: value for key, value in results['sweep'].items()
                                           if key != 'runs'})
            _write_json(summary, docs / 'benchmarks' / 'results.json')
            images = plots.draw_all(results, docs / 'benchmarks')
            report.write_report(results, docs / 'benchmarks.md', images)

        for folder, staged in staging.items():
            _move_files(staged, folder)
    finally:
        for staged in staging.values():
            shutil.rmtree(staged, ignore_errors=True)
    return [folder / 'benchmarks.md' for folder in destinations]


def _move_files(source: pathlib.Path, destination: pathlib.Path) -> None:
    """Move every file under `source` to the same relative path under `destination`."""
    for path in sorted(source.rglob('*')):
        if path.is_file():
            target = destination / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)


def _write_json(results: dict, path: pathlib.Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as stream:
        json.dump(_json_ready(results), stream, separators=(',', ':'), allow_nan=False)
        stream.write('\n')


def _json_ready(value):
    """Round floats to 6 significant digits and replace NaN and infinities by None."""
    if isinstance(value, float):
        return float(f'{value:.6g}') if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


def _display_path(path: pathlib.Path) -> str:
    try:
        return path.resolve().relative_to(_REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def main(args: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if args is None else args)
    parser = build_parser()
    options = parser.parse_args(argv)
    options.argv = argv
    if options.output.exists() and not options.output.is_dir():
        parser.error(f'--output {options.output} exists and is not a folder')
    if options.docs and options.docs_dir.exists() and not options.docs_dir.is_dir():
        parser.error(f'--docs-dir {options.docs_dir} exists and is not a folder')
    if options.jobs < 1:
        print('edgeserving-bench: --jobs must be at least 1', file=sys.stderr)
        return 2
    if options.real and os.environ.get('EDGESERVING_ISOLATED') != '1':
        print('edgeserving-bench: --real starts ROS 2 processes; run it inside '
              'tools/run-isolated (EDGESERVING_ISOLATED=1 is not set)', file=sys.stderr)
        return 2

    if options.report_only:
        source = options.output / 'results.json'
        try:
            with open(source, encoding='utf-8') as stream:
                results = json.load(stream)
        except (OSError, json.JSONDecodeError) as error:
            print(f'edgeserving-bench: cannot read {source}: {error}', file=sys.stderr)
            return 1
    else:
        try:
            results = run_benchmark(options)
        except ProfileError as error:
            print(f'edgeserving-bench: {error} (choose a profile with --profile)',
                  file=sys.stderr)
            return 1
    pages = write_outputs(results, options)
    print(f'edgeserving-bench: wrote {", ".join(str(page) for page in pages)} and '
          f'{options.output / "results.json"}')
    return 0
