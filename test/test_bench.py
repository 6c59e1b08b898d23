"""The benchmark CLI: a quick run writes a valid results document, figures and a report."""

import json
import math
import pathlib

import pytest

from edgeserving_ros.bench import cli, report
from edgeserving_ros.bench.experiments import accuracy_regimes
from edgeserving_ros.profile import ExitProfile, LatencyStats, ModelProfile, Profile, save_profile

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
REPO_PROFILE = pathlib.Path(__file__).resolve().parent.parent / 'config' / 'profile_cpu.json'

# Batch-1 and batch-10 p50 latencies (ms) per exit and the exit accuracies of CIFAR
# ResNet-20/32/56 on one CPU thread. The test uses them when config/profile_cpu.json is absent.
_FALLBACK_FIGURES = {
    'resnet20': ((1.1, 1.9, 2.6), (5.1, 8.4, 11.2), (0.40, 0.57, 0.81)),
    'resnet32': ((1.9, 3.5, 4.9), (9.8, 16.2, 22.0), (0.42, 0.58, 0.83)),
    'resnet56': ((2.8, 5.1, 7.3), (14.5, 24.0, 32.7), (0.43, 0.60, 0.83)),
}


def _fallback_profile() -> Profile:
    models = {}
    for name, (batch1, batch10, accuracies) in _FALLBACK_FIGURES.items():
        exits = []
        for index, exit_name in enumerate(('stage1', 'stage2', 'final')):
            latency = {}
            for batch in (1, 10):
                p50 = batch1[index] if batch == 1 else batch10[index]
                latency[batch] = LatencyStats(p50=p50, p95=1.15 * p50, p99=1.4 * p50)
            exits.append(ExitProfile(exit_name, latency, accuracies[index], 5000))
        models[name] = ModelProfile(architecture=f'cifar_{name}', exits=exits, input_size=32)
    return Profile(models=models, device='test figures', threads=1, date='test')


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
    """Run `edgeserving-bench --quick` once into a temporary folder."""
    folder = tmp_path_factory.mktemp('bench')
    profile_path = REPO_PROFILE
    if not profile_path.is_file():
        profile_path = folder / 'profile.json'
        save_profile(_fallback_profile(), profile_path)
    output = folder / 'out'
    code = cli.main(['--quick', '--no-progress', '--output', str(output),
                     '--profile', str(profile_path)])
    return code, output


def _numbers(value):
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)


def test_quick_run_exits_zero(quick_run):
    code, _ = quick_run
    assert code == 0


def test_results_schema(quick_run):
    _, output = quick_run
    results = json.loads((output / 'results.json').read_text(encoding='utf-8'))
    assert results['schema'] == cli.RESULTS_SCHEMA
    for key in ('command', 'machine', 'profile', 'sweep', 'fidelity', 'overhead', 'targets',
                'elapsed_s'):
        assert key in results, key
    assert results['sweep']['runs']
    assert results['sweep']['cells']
    for key in ('violation_ratio', 'p95_ms', 'delivered_accuracy', 'exit_mix', 'bound_on_time',
                'bound_gap', 'bound_gap_ratio', 'on_time', 'offered'):
        assert key in results['sweep']['runs'][0], key


def test_results_numbers_finite(quick_run):
    _, output = quick_run
    results = json.loads((output / 'results.json').read_text(encoding='utf-8'))
    for number in _numbers(results):
        assert math.isfinite(number)


def test_violation_ratios_in_unit_interval(quick_run):
    _, output = quick_run
    results = json.loads((output / 'results.json').read_text(encoding='utf-8'))
    for run in results['sweep']['runs']:
        assert 0.0 <= run['violation_ratio'] <= 1.0, run
        assert run['offered'] > 0, run


def test_bound_not_below_on_time(quick_run):
    _, output = quick_run
    results = json.loads((output / 'results.json').read_text(encoding='utf-8'))
    for run in results['sweep']['runs']:
        assert run['bound_on_time'] >= run['on_time'], run


def test_every_policy_served_every_cell(quick_run):
    _, output = quick_run
    results = json.loads((output / 'results.json').read_text(encoding='utf-8'))
    config = results['sweep']['config']
    cells = {(c['regime'], c['arrival'], c['load'], c['policy'])
             for c in results['sweep']['cells']}
    expected = {(regime, arrival, load, policy) for regime in config['regimes']
                for arrival in config['arrivals'] for load in config['loads']
                for policy in config['policies']}
    assert cells == expected


def test_plots_are_png(quick_run):
    _, output = quick_run
    for name in ('violations_poisson.png', 'latency_cdf.png', 'exit_mix.png', 'bound_gap.png',
                 'pareto_poisson.png', 'fidelity_calibration.png', 'decision_overhead.png'):
        path = output / 'plots' / name
        assert path.is_file(), path
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path


def test_report_links_existing_images(quick_run):
    _, output = quick_run
    page = (output / 'benchmarks.md').read_text(encoding='utf-8')
    assert '## Where EdgeServing loses' in page
    links = [line.split('](', 1)[1].rstrip(')') for line in page.splitlines()
             if line.startswith('![')]
    assert links
    for link in links:
        assert (output / link).is_file(), link


def test_report_only_redraws_from_json(quick_run):
    _, output = quick_run
    (output / 'benchmarks.md').unlink()
    assert cli.main(['--report-only', '--output', str(output)]) == 0
    assert (output / 'benchmarks.md').is_file()


def test_real_run_rejected_outside_namespace(monkeypatch, tmp_path):
    monkeypatch.delenv('EDGESERVING_ISOLATED', raising=False)
    assert cli.main(['--real', '--quick', '--output', str(tmp_path)]) == 2
    assert not (tmp_path / 'results.json').exists()


def test_regimes_separate_exits():
    regimes = {regime.name: regime.min_accuracy for regime in accuracy_regimes(
        _fallback_profile())}
    assert regimes['all_exits'] == 0.0
    assert 0.43 < regimes['deep_exits'] < 0.57
    assert 0.60 < regimes['final_only'] < 0.81


def _cell(policy, violations, accuracy, p95_ms):
    return {'regime': 'r', 'arrival': 'a', 'load': 1.0, 'policy': policy,
            'violation_ratio': violations, 'delivered_accuracy': accuracy, 'p95_ms': p95_ms}


def test_target_met_with_half_violations():
    comparison = report.compare_cell([_cell('edgeserving', 0.05, 0.80, 40.0),
                                      _cell('clockwork', 0.10, 0.80, 45.0),
                                      _cell('fifo', 0.50, 0.82, 90.0)])
    assert comparison['best_baseline'] == 'clockwork'
    assert comparison['met']


def test_target_missed_on_accuracy():
    comparison = report.compare_cell([_cell('edgeserving', 0.01, 0.70, 40.0),
                                      _cell('greedy_exit', 0.10, 0.80, 40.0)])
    assert not comparison['met']
    assert comparison['reasons'] == ['accuracy']


def test_target_missed_when_dominated():
    comparison = report.compare_cell([_cell('edgeserving', 0.08, 0.80, 40.0),
                                      _cell('reference', 0.06, 0.81, 39.0)])
    assert not comparison['met']
    assert comparison['dominated_by'] == ['reference']


def _profile_path(folder: pathlib.Path) -> pathlib.Path:
    if REPO_PROFILE.is_file():
        return REPO_PROFILE
    path = folder / 'profile.json'
    save_profile(_fallback_profile(), path)
    return path


@pytest.mark.parametrize('arguments, message', [
    (['--seeds', '0'], 'argument --seeds: 0 is out of range: expected at least 1'),
    (['--duration-s', '0'], 'argument --duration-s: 0 is out of range'),
    (['--duration-s', '-2'], 'argument --duration-s: -2 is out of range'),
    (['--duration-s', 'nan'], 'argument --duration-s: nan is out of range'),
    (['--loads', '0.5', '-1'], 'argument --loads: -1 is out of range'),
    (['--policies', 'fifo', 'nope'], "argument --policies: invalid choice: 'nope'"),
])
def test_invalid_options_exit_two(arguments, message, tmp_path, capsys):
    output = tmp_path / 'out'
    with pytest.raises(SystemExit) as exit_info:
        cli.main(['--quick', '--no-progress', '--skip', 'fidelity', 'overhead',
                  '--profile', str(_profile_path(tmp_path)), '--output', str(output),
                  *arguments])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert message in error
    assert 'Traceback' not in error
    assert not output.exists()


def test_unknown_policy_lists_known_names(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(['--policies', 'nope', '--output', str(tmp_path / 'out')])
    error = capsys.readouterr().err
    assert 'edgeserving' in error
    assert 'round_robin' in error


def test_output_that_is_a_file_rejected(tmp_path, capsys):
    output = tmp_path / 'results'
    output.write_text('keep me\n', encoding='utf-8')
    with pytest.raises(SystemExit) as exit_info:
        cli.main(['--quick', '--output', str(output)])
    assert exit_info.value.code == 2
    assert 'exists and is not a folder' in capsys.readouterr().err
    assert output.read_text(encoding='utf-8') == 'keep me\n'


def test_failed_write_keeps_previous_output(quick_run, tmp_path, monkeypatch):
    _, source = quick_run
    output = tmp_path / 'out'
    (output / 'plots').mkdir(parents=True)
    results_text = (source / 'results.json').read_text(encoding='utf-8')
    (output / 'results.json').write_text(results_text, encoding='utf-8')
    (output / 'plots' / 'exit_mix.png').write_bytes(b'previous figure')
    (output / 'notes.txt').write_text('not written by the benchmark\n', encoding='utf-8')

    def fail_to_write_report(*_):
        raise OSError('disk full')

    monkeypatch.setattr(report, 'write_report', fail_to_write_report)
    with pytest.raises(OSError, match='disk full'):
        cli.main(['--report-only', '--output', str(output)])

    assert (output / 'plots' / 'exit_mix.png').read_bytes() == b'previous figure'
    assert (output / 'results.json').read_text(encoding='utf-8') == results_text
    assert not (output / 'benchmarks.md').exists()
    assert (output / 'notes.txt').is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ['out']


def test_write_keeps_unrelated_files(quick_run, tmp_path):
    _, source = quick_run
    output = tmp_path / 'out'
    output.mkdir()
    (output / 'results.json').write_bytes((source / 'results.json').read_bytes())
    (output / 'notes.txt').write_text('not written by the benchmark\n', encoding='utf-8')

    assert cli.main(['--report-only', '--output', str(output)]) == 0

    assert (output / 'notes.txt').is_file()
    assert (output / 'benchmarks.md').is_file()
    assert (output / 'plots' / 'exit_mix.png').read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(path.name for path in tmp_path.iterdir()) == ['out']
