"""Tests of the end-to-end demo: its pure parts, the isolation check and short real runs.

The runs start the node and the player as processes, so they need the private network namespace
of tools/run-isolated (`make test`). Outside it they fail instead of talking DDS on the host.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from edgeserving_ros import demo
from edgeserving_ros.data_paths import DATA_ENV_VAR, require_data

REQUIRED_STREAM_KEYS = ('name', 'model', 'offered', 'on_time', 'late', 'dropped',
                        'violation_ratio', 'p95_ms', 'exit_mix', 'published')
REQUIRED_TOP_KEYS = ('streams', 'policy', 'weights_trained', 'data_root', 'duration_s',
                     'published', 'notes')
DEMO_TIMEOUT_S = 240


def _run_demo(tmp_path, duration_s, extra_env=None):
    output = tmp_path / 'demo_summary.json'
    env = dict(os.environ, **(extra_env or {}))
    completed = subprocess.run(
        [sys.executable, '-m', 'edgeserving_ros.demo', '--duration-s', str(duration_s),
         '--output', str(output)],
        capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, env=env)
    assert completed.returncode == 0, (
        f'demo failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}\n'
        f'{demo._tail(tmp_path / "demo_node.log", 40)}')
    return completed.stdout, json.loads(output.read_text())


def _check_report(stdout, report, duration_s):
    for key in REQUIRED_TOP_KEYS:
        assert key in report, f'missing key {key!r}'
    assert report['duration_s'] == duration_s
    assert [row['name'] for row in report['streams']] == ['cam_fast', 'cam_medium', 'cam_slow']
    for row in report['streams']:
        for key in REQUIRED_STREAM_KEYS:
            assert key in row, f'stream {row.get("name")} misses {key!r}'
        assert row['published'] > 0, row
        assert row['offered'] > 0, row
        assert row['on_time'] + row['late'] + row['dropped'] <= row['offered']
        assert 0.0 <= row['violation_ratio'] <= 1.0
        assert row['name'] in stdout
    assert sum(report['published'].values()) == sum(row['published'] for row in report['streams'])
    for column in ('stream', 'offered', 'violations', 'p95 ms', 'exit mix'):
        assert column in stdout


def test_demo_refuses_outside_namespace(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != 'EDGESERVING_ISOLATED'}
    completed = subprocess.run(
        [sys.executable, '-m', 'edgeserving_ros.demo', '--output', str(tmp_path / 'x.json')],
        capture_output=True, text=True, timeout=60, env=env)
    assert completed.returncode == 2
    assert 'make demo' in completed.stderr
    assert not (tmp_path / 'x.json').exists()


def test_node_command_quotes_strings():
    plan = demo.DemoPlan(
        config_file=pathlib.Path('/cfg/serve.yaml'), parameters={'stream_names': ['a']},
        rates_hz={'a': 30.0}, weights={'m': ''},
        profile_path=None, images=None, data_root=None)
    command = demo.node_command(plan, 'edf', pathlib.Path('/tmp/s.json'))
    assert command[command.index('--params-file') + 1] == '/cfg/serve.yaml'
    overrides = [command[i + 1] for i, arg in enumerate(command) if arg == '-p']
    assert 'policy:="edf"' in overrides
    assert 'models.m.weights:=""' in overrides
    assert 'streams.a.expected_rate_hz:=30.0' in overrides
    assert not any(item.startswith('profile_path') for item in overrides)


def test_measured_accuracy_counts_on_time_labelled():
    topics = {'a': '/a', 'b': '/b'}
    labels = {('/a', 1): 'cat', ('/a', 2): 'dog', ('/a', 3): 'cat', ('/a', 4): None,
              ('/b', 1): 'ship'}
    results = [('a', 1, 'cat', True), ('a', 2, 'cat', True), ('a', 3, 'cat', False),
               ('a', 4, 'cat', True), ('a', 9, 'cat', True), ('b', 1, 'ship', True)]
    accuracy = demo.measured_accuracy(results, labels, topics)
    assert accuracy['a'] == {'results': 2, 'top1': 0.5}
    assert accuracy['b'] == {'results': 1, 'top1': 1.0}


def test_plan_without_data_uses_untrained_weights(tmp_path, monkeypatch):
    config_file = demo.default_config_file()
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    plan = demo.plan_demo(config_file, [30.0, 20.0, 10.0])
    assert not plan.weights_trained
    assert plan.images is None
    assert plan.data_root is None
    assert set(plan.weights) == {'resnet20', 'resnet32', 'resnet56'}
    with pytest.raises(demo.DemoError, match='--rates'):
        demo.plan_demo(config_file, [30.0])


def test_plan_with_data_uses_real_weights():
    require_data('cifar10-resnet-weights')
    require_data('cifar10-jpeg/test')
    plan = demo.plan_demo(demo.default_config_file(), [30.0, 20.0, 10.0])
    assert plan.weights_trained
    for model, path in plan.weights.items():
        assert pathlib.Path(path).name.startswith(model + '-')


def test_demo_runs_on_real_data(tmp_path, ros_isolation, fastdds_shm_cleanup):
    require_data('cifar10-resnet-weights')
    require_data('cifar10-jpeg/test')
    stdout, report = _run_demo(tmp_path, 6.0)
    _check_report(stdout, report, 6.0)
    assert report['weights_trained'] is True
    assert report['data_root'] is not None
    for row in report['streams']:
        assert 'measured_top1_accuracy' in row


def test_demo_runs_without_data(tmp_path, ros_isolation, fastdds_shm_cleanup):
    empty = tmp_path / 'no_data'
    empty.mkdir()
    stdout, report = _run_demo(tmp_path, 4.0, {DATA_ENV_VAR: str(empty)})
    _check_report(stdout, report, 4.0)
    assert report['weights_trained'] is False
    assert report['data_root'] is None
    assert 'UNTRAINED' in stdout
    assert any('untrained' in note for note in report['notes'])
    for row in report['streams']:
        assert row['delivered_accuracy'] is None
        assert 'measured_top1_accuracy' not in row
