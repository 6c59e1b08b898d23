"""Parameters of the edgeserving node: declaration tables, config/serve.yaml, live changes.

Tests that create nodes need rclpy and therefore tools/run-isolated (`make test`); they use
a random-weight ResNet-20, so they need no data set.
"""

import ast
import importlib.util
import math
import pathlib
import py_compile

import pytest

from edgeserving_ros.config import (ConfigError, load_parameters_file, MAX_BATCH_RANGE,
                                    QUEUE_DEPTH_RANGE, SLO_MS_RANGE)
from edgeserving_ros.profile import ExitProfile, LatencyStats, ModelProfile, Profile
from edgeserving_ros.profile import save_profile

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SERVE_YAML = REPO_ROOT / 'config' / 'serve.yaml'
LAUNCH_FILE = REPO_ROOT / 'launch' / 'serve.launch.py'
LAUNCH_ARGUMENTS = {'config_file', 'policy', 'namespace', 'use_sim_time', 'fastdds_profile'}


def node_parameters():
    from edgeserving_ros import node_parameters

    return node_parameters


def declared_names(stream_names, model_names) -> set[str]:
    module = node_parameters()
    names = {spec.name for spec in module.NODE_PARAMETERS}
    names |= {f'streams.{stream}.{spec.name}' for stream in stream_names
              for spec in module.STREAM_PARAMETERS}
    names |= {f'models.{model}.{spec.name}' for model in model_names
              for spec in module.MODEL_PARAMETERS}
    return names


def write_profile(path: pathlib.Path) -> None:
    latency = {1: LatencyStats(1.0, 1.2, 1.5), 10: LatencyStats(5.0, 6.0, 7.5)}
    exits = [ExitProfile(name, latency, accuracy, 100)
             for name, accuracy in (('stage1', 0.4), ('stage2', 0.57), ('final', 0.8))]
    save_profile(Profile(models={'resnet20': ModelProfile('cifar_resnet20', exits, 32)},
                         device='test profile', threads=1), path)


def minimal_overrides(profile_path: pathlib.Path, **values):
    from rclpy.parameter import Parameter

    parameters = {
        'stream_names': ['front'], 'model_names': ['resnet20'],
        'streams.front.model': 'resnet20', 'streams.front.slo_ms': 80.0,
        'models.resnet20.architecture': 'cifar_resnet20',
        'profile_path': str(profile_path), 'torch_threads': 1, 'policy': 'fifo',
    }
    parameters.update(values)
    return [Parameter(name, value=value) for name, value in parameters.items()]


@pytest.fixture
def profile_path(tmp_path):
    path = tmp_path / 'profile.json'
    write_profile(path)
    return path


@pytest.fixture
def bare_node(rclpy_context):
    """A plain rclpy node factory (no serving) for declaration tests."""
    import rclpy

    nodes = []

    def make(**values):
        from rclpy.parameter import Parameter

        overrides = [Parameter(name, value=value) for name, value in values.items()]
        node = rclpy.create_node('edgeserving', context=rclpy_context,
                                 parameter_overrides=overrides)
        nodes.append(node)
        return node
    yield make
    for node in nodes:
        node.destroy_node()


@pytest.fixture
def serving_node(rclpy_context, profile_path):
    from edgeserving_ros.node import EdgeServingNode

    nodes = []

    def make(**values):
        node = EdgeServingNode(context=rclpy_context,
                               parameter_overrides=minimal_overrides(profile_path, **values))
        nodes.append(node)
        return node
    yield make
    for node in nodes:
        node.destroy_node()


# ------------------------------------------------------------------------ serve.yaml
def test_serve_yaml_builds_valid_configuration():
    config, settings = node_parameters().build_configuration(load_parameters_file(SERVE_YAML))
    assert list(config.streams) == ['cam_fast', 'cam_medium', 'cam_slow']
    assert config.streams['cam_fast'].topic == '/camera_fast/image_raw'
    assert [stream.model for stream in config.streams.values()] == \
        ['resnet20', 'resnet32', 'resnet56']
    for stream in config.streams.values():
        assert stream.slo_ms == 50.0
        assert stream.max_batch == 10
        assert stream.min_accuracy == 0.0
    assert [model.architecture for model in config.models.values()] == \
        ['cifar_resnet20', 'cifar_resnet32', 'cifar_resnet56']
    assert all(model.weights == '' for model in config.models.values())
    assert config.policy == 'edgeserving'
    assert config.profile_path == ''
    assert settings.input_reliability == 'best_effort'
    assert settings.summary_path == ''


def test_serve_yaml_sets_only_declared_parameters():
    parameters = load_parameters_file(SERVE_YAML)
    declared = declared_names(parameters['stream_names'], parameters['model_names'])
    assert sorted(set(parameters) - declared) == []


def test_serve_yaml_uses_declared_types():
    """Each value has the type of its declared default: rclpy rejects an int for a double."""
    module = node_parameters()
    specs = {spec.name: spec for spec in module.NODE_PARAMETERS}
    specs.update({f'streams.{spec.name}': spec for spec in module.STREAM_PARAMETERS})
    specs.update({f'models.{spec.name}': spec for spec in module.MODEL_PARAMETERS})
    for name, value in load_parameters_file(SERVE_YAML).items():
        parts = name.split('.')
        key = f'{parts[0]}.{parts[2]}' if parts[0] in ('streams', 'models') else name
        default = specs[key].default
        if type(default) in (bool, int, float, str, list):  # not a Parameter.Type
            assert type(value) is type(default), f'{name}: {value!r}'


# ------------------------------------------------------------------- declaration tables
def test_every_parameter_has_description():
    module = node_parameters()
    for spec in module.NODE_PARAMETERS + module.STREAM_PARAMETERS + module.MODEL_PARAMETERS:
        assert spec.description.endswith('.'), spec.name


def test_every_parameter_documented():
    module = node_parameters()
    text = (REPO_ROOT / 'docs' / 'node.md').read_text(encoding='utf-8')
    for spec in module.NODE_PARAMETERS + module.STREAM_PARAMETERS + module.MODEL_PARAMETERS:
        assert f'| `{spec.name}` |' in text, spec.name


def test_live_parameters_are_the_documented_ones():
    module = node_parameters()
    assert module.LIVE_STREAM_FIELDS == ('slo_ms', 'min_accuracy', 'max_batch')
    assert set(module.LIVE_NODE_PARAMETERS) == {'arrival_reference', 'drop_doomed',
                                                'reset_latency_correction'}
    assert all(spec.read_only for spec in module.MODEL_PARAMETERS)


def test_descriptor_ranges_match_config_limits():
    module = node_parameters()
    specs = {spec.name: spec for spec in module.STREAM_PARAMETERS}

    slo = specs['slo_ms'].descriptor('streams.a.slo_ms')
    assert (slo.floating_point_range[0].from_value,
            slo.floating_point_range[0].to_value) == SLO_MS_RANGE
    assert not slo.read_only
    batch = specs['max_batch'].descriptor('streams.a.max_batch')
    assert (batch.integer_range[0].from_value, batch.integer_range[0].to_value) == \
        MAX_BATCH_RANGE
    depth = specs['queue_depth'].descriptor('streams.a.queue_depth')
    assert (depth.integer_range[0].from_value, depth.integer_range[0].to_value) == \
        QUEUE_DEPTH_RANGE
    assert depth.read_only


# ------------------------------------------------------------------- change validation
VALID_CHANGES = [
    ('streams.front.slo_ms', 40.0, 40.0),
    ('streams.front.slo_ms', 40, 40.0),
    ('streams.front.min_accuracy', 0.5, 0.5),
    ('streams.front.max_batch', 16, 16),
    ('arrival_reference', 'receive', 'receive'),
    ('drop_doomed', False, False),
    ('reset_latency_correction', True, True),
]

INVALID_CHANGES = [
    ('streams.front.slo_ms', -5.0),
    ('streams.front.slo_ms', 0.5),
    ('streams.front.slo_ms', math.nan),
    ('streams.front.slo_ms', math.inf),
    ('streams.front.slo_ms', 'fast'),
    ('streams.front.slo_ms', True),
    ('streams.front.min_accuracy', 1.5),
    ('streams.front.max_batch', 0),
    ('streams.front.max_batch', 65),
    ('streams.front.max_batch', 2.0),
    ('streams.rear.slo_ms', 40.0),
    ('streams.front.topic', '/other'),
    ('models.resnet20.weights', '/other.th'),
    ('policy', 'fifo'),
    ('arrival_reference', 'stamp'),
    ('drop_doomed', 'yes'),
    ('reset_latency_correction', 1),
]


def front_config():
    from edgeserving_ros.config import ServeConfig

    return ServeConfig.from_parameters({
        'stream_names': ['front'], 'model_names': ['resnet20'],
        'streams.front.model': 'resnet20', 'models.resnet20.architecture': 'cifar_resnet20'})


@pytest.mark.parametrize('name, value, expected', VALID_CHANGES)
def test_valid_change_accepted(name, value, expected):
    from rclpy.parameter import Parameter

    changes = node_parameters().validate_changes([Parameter(name, value=value)], front_config())
    assert changes == {name: expected}
    assert type(changes[name]) is type(expected)


@pytest.mark.parametrize('name, value', INVALID_CHANGES)
def test_invalid_change_rejected_with_name(name, value):
    from rclpy.parameter import Parameter

    with pytest.raises(ConfigError, match=name.split('.')[-1]):
        node_parameters().validate_changes([Parameter(name, value=value)], front_config())


def test_set_with_one_invalid_change_rejected():
    from rclpy.parameter import Parameter

    parameters = [Parameter('streams.front.slo_ms', value=40.0),
                  Parameter('streams.front.max_batch', value=0)]
    config = front_config()
    with pytest.raises(ConfigError, match='max_batch'):
        node_parameters().validate_changes(parameters, config)
    assert config.streams['front'].slo_ms == 100.0


def test_rclpy_parameters_pass_through():
    from rclpy.parameter import Parameter

    changes = node_parameters().validate_changes([Parameter('use_sim_time', value=True)],
                                                 front_config())
    assert changes == {}


# ------------------------------------------------------------------- declaration on a node
def test_declare_reads_overrides_and_defaults(bare_node):
    node = bare_node(stream_names=['front'], model_names=['resnet20'],
                     **{'streams.front.model': 'resnet20', 'streams.front.slo_ms': 40.0,
                        'models.resnet20.architecture': 'cifar_resnet20'})
    values = node_parameters().declare_parameters(node)
    assert values['streams.front.slo_ms'] == 40.0
    assert values['streams.front.max_batch'] == 8
    assert values['models.resnet20.exits'] == []
    assert 'streams.front.topic' not in values  # '' leaves the /<stream>/image_raw default
    config, _ = node_parameters().build_configuration(values)
    assert config.streams['front'].topic == '/front/image_raw'

    descriptor = node.describe_parameter('streams.front.topic')
    assert descriptor.read_only
    assert 'image topic' in descriptor.description.lower()
    assert not node.describe_parameter('streams.front.slo_ms').read_only


def test_declare_rejects_integer_for_double(bare_node):
    node = bare_node(stream_names=['front'], model_names=['resnet20'],
                     **{'streams.front.slo_ms': 50})
    with pytest.raises(ConfigError, match=r'streams\.front\.slo_ms.*50\.0'):
        node_parameters().declare_parameters(node)


def test_declare_rejects_invalid_stream_name(bare_node):
    node = bare_node(stream_names=['front camera'], model_names=['resnet20'])
    with pytest.raises(ConfigError, match='front camera'):
        node_parameters().declare_parameters(node)


@pytest.mark.parametrize('overrides, expected_text', [
    ({'streams.front.max_batch': 0}, r'streams\.front\.max_batch has an invalid value'),
    ({'tick_period_ms': 0.0}, r'tick_period_ms has an invalid value'),
    ({'stream_names': ['front', 'front']}, r'stream_names lists front more than once'),
    ({'stream_names': ['cam_\u00fc']}, 'cam_'),
])
def test_declare_rejects_bad_startup_values(bare_node, overrides, expected_text):
    parameters = {'stream_names': ['front'], 'model_names': ['resnet20']}
    parameters.update(overrides)
    node = bare_node(**parameters)
    with pytest.raises(ConfigError, match=expected_text):
        node_parameters().declare_parameters(node)


def test_missing_stream_names_rejected(bare_node):
    values = node_parameters().declare_parameters(bare_node())
    with pytest.raises(ConfigError, match='stream_names is not set'):
        node_parameters().build_configuration(values)


# ------------------------------------------------------------------- the node's callbacks
@pytest.mark.parametrize('post_set_callback', [True, False], ids=['kilted', 'humble'])
def test_live_change_applied_to_stream(serving_node, monkeypatch, post_set_callback):
    import rclpy.node
    from rclpy.parameter import Parameter

    if not post_set_callback:
        # Humble's rclpy has only the on-set callback: the node must apply changes there.
        monkeypatch.delattr(rclpy.node.Node, 'add_post_set_parameters_callback')
    node = serving_node()
    results = node.set_parameters([Parameter('streams.front.slo_ms', value=30.0),
                                   Parameter('streams.front.max_batch', value=3)])
    assert all(result.successful for result in results)
    stream = node._config.streams['front']
    assert (stream.slo_ms, stream.max_batch) == (30.0, 3)
    assert node.get_parameter('streams.front.slo_ms').value == 30.0


@pytest.mark.parametrize('post_set_callback', [True, False], ids=['kilted', 'humble'])
def test_invalid_set_leaves_stream_unchanged(serving_node, monkeypatch, post_set_callback):
    import rclpy.node
    from rclpy.parameter import Parameter

    if not post_set_callback:
        monkeypatch.delattr(rclpy.node.Node, 'add_post_set_parameters_callback')
    node = serving_node()
    result = node.set_parameters_atomically([
        Parameter('streams.front.slo_ms', value=30.0),
        Parameter('arrival_reference', value='stamp')])
    assert not result.successful
    assert 'arrival_reference' in result.reason
    assert node._config.streams['front'].slo_ms == 80.0
    assert node.get_parameter('streams.front.slo_ms').value == 80.0
    assert node.get_parameter('arrival_reference').value == 'header'


def test_reset_latency_correction_resets_factors(serving_node):
    from rclpy.parameter import Parameter

    node = serving_node()
    correction = node._scheduler.context.latency.correction
    correction.observe('resnet20', 2, 0.001, 0.002)
    assert correction.factor('resnet20', 2) > 1.0
    result, = node.set_parameters([Parameter('reset_latency_correction', value=True)])
    assert result.successful
    assert correction.factor('resnet20', 2) == 1.0
    assert correction.samples('resnet20', 2) == 0


def test_missing_profile_stops_startup(rclpy_context, tmp_path):
    from edgeserving_ros.node import EdgeServingNode, StartupError

    missing = tmp_path / 'no_profile.json'
    with pytest.raises(StartupError, match='no_profile.json'):
        EdgeServingNode(context=rclpy_context, parameter_overrides=minimal_overrides(missing))


def test_unknown_policy_stops_startup(rclpy_context, profile_path):
    from edgeserving_ros.node import EdgeServingNode, StartupError

    with pytest.raises(StartupError, match='no_such_policy'):
        EdgeServingNode(context=rclpy_context, parameter_overrides=minimal_overrides(
            profile_path, policy='no_such_policy'))


def test_main_returns_error_without_streams(ros_isolation):
    import rclpy

    from edgeserving_ros.node import main

    assert main(['--ros-args', '-p', 'model_names:=[resnet20]']) == 1
    assert not rclpy.ok()


# ------------------------------------------------------------------------ launch file
def test_launch_file_compiles():
    py_compile.compile(str(LAUNCH_FILE), doraise=True)


def test_launch_file_declares_arguments():
    tree = ast.parse(LAUNCH_FILE.read_text(encoding='utf-8'))
    declared = {node.args[0].value for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, 'id', '') ==
                'DeclareLaunchArgument'}
    assert declared == LAUNCH_ARGUMENTS


def test_launch_file_loads_where_launch_exists():
    if importlib.util.find_spec('launch') is None or \
            importlib.util.find_spec('launch_ros') is None:
        pytest.skip('launch and launch_ros are not installed (no PyPI wheels); '
                    'test_launch_file_declares_arguments checks the file without them')
    spec = importlib.util.spec_from_file_location('serve_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {argument.name for argument in description.get_launch_arguments()}
    assert names == LAUNCH_ARGUMENTS
