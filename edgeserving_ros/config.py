"""Stream and model configuration shared by the node, the simulator and the tools.

ROS 2 parameters cannot hold a list of structures, so a configuration is a flat mapping of
dotted names, exactly as a ROS parameters file flattens it:

    stream_names: [front, left]
    streams.front.topic: /camera/front/image_raw
    streams.front.model: resnet20
    model_names: [resnet20]
    models.resnet20.architecture: cifar_resnet20

`ServeConfig.from_parameters` parses such a mapping and raises ConfigError naming the first
invalid entry, so the node and the offline tools reject the same mistakes with the same words.
"""

import dataclasses
import math
import pathlib
import typing

import yaml

POLICY_DEFAULT = 'edgeserving'
ARRIVAL_REFERENCES = ('header', 'receive')
INPUT_TYPES = ('raw', 'compressed')

CIFAR10_LABELS = ('airplane', 'automobile', 'bird', 'cat', 'deer',
                  'dog', 'frog', 'horse', 'ship', 'truck')

# Limits shared by parameter descriptors and validation.
SLO_MS_RANGE = (1.0, 60_000.0)
MAX_BATCH_RANGE = (1, 64)
QUEUE_DEPTH_RANGE = (1, 1000)
INPUT_SIZE_RANGE = (8, 1024)


class ConfigError(ValueError):
    """A configuration entry is missing or invalid; the message names the entry."""


@dataclasses.dataclass
class StreamConfig:
    """One perception input served by one model."""

    name: str
    topic: str
    model: str
    slo_ms: float = 100.0
    min_accuracy: float = 0.0
    max_batch: int = 8
    queue_depth: int = 30
    input_type: str = 'raw'
    expected_rate_hz: float = 0.0

    @property
    def slo_s(self) -> float:
        return self.slo_ms / 1000.0

    def validate(self) -> None:
        """Raise ConfigError naming the first field out of range."""
        prefix = f'streams.{self.name}'
        if not self.name or not self.name.replace('_', '').isalnum():
            raise ConfigError(f'stream name {self.name!r} is invalid: use letters, digits and _')
        if not self.topic:
            raise ConfigError(f'{prefix}.topic is missing')
        if not self.model:
            raise ConfigError(f'{prefix}.model is missing')
        _check_range(f'{prefix}.slo_ms', self.slo_ms, SLO_MS_RANGE)
        _check_range(f'{prefix}.min_accuracy', self.min_accuracy, (0.0, 1.0))
        _check_range(f'{prefix}.max_batch', self.max_batch, MAX_BATCH_RANGE)
        _check_range(f'{prefix}.queue_depth', self.queue_depth, QUEUE_DEPTH_RANGE)
        _check_range(f'{prefix}.expected_rate_hz', self.expected_rate_hz, (0.0, 10_000.0))
        if self.input_type not in INPUT_TYPES:
            raise ConfigError(f'{prefix}.input_type is {self.input_type!r}; '
                              f'expected one of {", ".join(INPUT_TYPES)}')


@dataclasses.dataclass
class ModelConfig:
    """One early-exit model: its architecture, weights and labels.

    An empty `weights` path means a randomly initialised backbone: the pipeline runs, but the
    labels it returns are meaningless and every result marks them (`weights_trained` false).
    """

    name: str
    architecture: str
    weights: str = ''
    exit_heads: str = ''
    input_size: int = 32
    labels: tuple[str, ...] = CIFAR10_LABELS
    exits: tuple[str, ...] = ()

    def validate(self) -> None:
        prefix = f'models.{self.name}'
        if not self.architecture:
            raise ConfigError(f'{prefix}.architecture is missing')
        _check_range(f'{prefix}.input_size', self.input_size, INPUT_SIZE_RANGE)
        if not self.labels:
            raise ConfigError(f'{prefix}.labels is empty')


def _default_score_weight(name: str) -> float:
    # Imported on use: the policies import this module, so a module-level import would cycle.
    from edgeserving_ros.policies import edgeserving

    return getattr(edgeserving, name)


@dataclasses.dataclass
class ScoreWeights:
    """Weights of the stability score's pressure and accuracy terms.

    The defaults are the EdgeServing policy's own, so the node, the simulator and the tools
    share one set of default weights.
    """

    pressure: float = dataclasses.field(
        default_factory=lambda: _default_score_weight('DEFAULT_W_PRESSURE'))
    accuracy: float = dataclasses.field(
        default_factory=lambda: _default_score_weight('DEFAULT_W_ACCURACY'))


@dataclasses.dataclass
class ServeConfig:
    """Everything the serving loop needs apart from the profile contents."""

    streams: dict[str, StreamConfig]
    models: dict[str, ModelConfig]
    policy: str = POLICY_DEFAULT
    profile_path: str = ''
    device: str = 'cpu'
    tick_period_ms: float = 2.0
    arrival_reference: str = 'header'
    drop_doomed: bool = True
    latency_quantile: str = 'p95'
    score_weights: ScoreWeights = dataclasses.field(default_factory=ScoreWeights)

    def validate(self) -> None:
        if not self.streams:
            raise ConfigError('stream_names is empty: configure at least one stream')
        for stream in self.streams.values():
            stream.validate()
            if stream.model not in self.models:
                raise ConfigError(f'streams.{stream.name}.model names unknown model '
                                  f'{stream.model!r}; known: {", ".join(self.models)}')
        for model in self.models.values():
            model.validate()
        if self.arrival_reference not in ARRIVAL_REFERENCES:
            raise ConfigError(f'arrival_reference is {self.arrival_reference!r}; '
                              f'expected one of {", ".join(ARRIVAL_REFERENCES)}')
        if self.latency_quantile not in ('p50', 'p95', 'p99'):
            raise ConfigError(f'latency_quantile is {self.latency_quantile!r}; '
                              'expected p50, p95 or p99')
        _check_range('tick_period_ms', self.tick_period_ms, (0.1, 1000.0))

    @classmethod
    def from_parameters(cls, parameters: typing.Mapping[str, typing.Any]) -> 'ServeConfig':
        """Build and validate a configuration from flat dotted parameter names."""
        streams = {}
        for name in _string_list(parameters, 'stream_names'):
            prefix = f'streams.{name}.'
            defaults = StreamConfig(name=name, topic='', model='')
            streams[name] = StreamConfig(
                name=name,
                topic=str(parameters.get(prefix + 'topic', f'/{name}/image_raw')),
                model=str(parameters.get(prefix + 'model', '')),
                slo_ms=_number(parameters, prefix + 'slo_ms', defaults.slo_ms),
                min_accuracy=_number(parameters, prefix + 'min_accuracy', defaults.min_accuracy),
                max_batch=_integer(parameters, prefix + 'max_batch', defaults.max_batch),
                queue_depth=_integer(parameters, prefix + 'queue_depth', defaults.queue_depth),
                input_type=str(parameters.get(prefix + 'input_type', defaults.input_type)),
                expected_rate_hz=_number(parameters, prefix + 'expected_rate_hz', 0.0),
            )

        models = {}
        for name in _string_list(parameters, 'model_names'):
            prefix = f'models.{name}.'
            labels = tuple(_string_list(parameters, prefix + 'labels')) or CIFAR10_LABELS
            models[name] = ModelConfig(
                name=name,
                architecture=str(parameters.get(prefix + 'architecture', '')),
                weights=str(parameters.get(prefix + 'weights', '')),
                exit_heads=str(parameters.get(prefix + 'exit_heads', '')),
                input_size=_integer(parameters, prefix + 'input_size', 32),
                labels=labels,
                exits=tuple(_string_list(parameters, prefix + 'exits')),
            )

        default_weights = ScoreWeights()
        config = cls(
            streams=streams,
            models=models,
            policy=str(parameters.get('policy', POLICY_DEFAULT)),
            profile_path=str(parameters.get('profile_path', '')),
            device=str(parameters.get('device', 'cpu')),
            tick_period_ms=_number(parameters, 'tick_period_ms', 2.0),
            arrival_reference=str(parameters.get('arrival_reference', 'header')),
            drop_doomed=bool(parameters.get('drop_doomed', True)),
            latency_quantile=str(parameters.get('latency_quantile', 'p95')),
            score_weights=ScoreWeights(
                pressure=_number(parameters, 'score.w_pressure', default_weights.pressure),
                accuracy=_number(parameters, 'score.w_accuracy', default_weights.accuracy),
            ),
        )
        config.validate()
        return config


def flatten_parameters(tree: typing.Mapping[str, typing.Any], prefix: str = '') -> dict:
    """Flatten nested mappings into dotted names, as ROS 2 does with a parameters file."""
    flat = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            flat.update(flatten_parameters(value, name + '.'))
        else:
            flat[name] = value
    return flat


def load_parameters_file(path: str | pathlib.Path, node_name: str = 'edgeserving') -> dict:
    """Read a ROS 2 parameters file and return the flat parameters of `node_name`.

    Sections for `/**` and for the node name are merged in file order, the later one winning,
    which matches how rcl applies them to a node without a namespace.
    """
    with open(path, encoding='utf-8') as stream:
        document = yaml.safe_load(stream) or {}
    if not isinstance(document, dict):
        raise ConfigError(f'{path}: expected a mapping of node names to ros__parameters')

    parameters = {}
    for section, content in document.items():
        if section.lstrip('/') not in ('**', node_name):
            continue
        if not isinstance(content, dict) or 'ros__parameters' not in content:
            raise ConfigError(f'{path}: section {section!r} has no ros__parameters')
        parameters.update(flatten_parameters(content['ros__parameters']))
    return parameters


def _string_list(parameters: typing.Mapping[str, typing.Any], name: str) -> list[str]:
    value = parameters.get(name, [])
    if isinstance(value, str):
        value = [value] if value else []
    return [str(item) for item in value if str(item)]


def _number(parameters: typing.Mapping[str, typing.Any], name: str, default: float) -> float:
    value = parameters.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f'{name} is {value!r}; expected a number')
    return float(value)


def _integer(parameters: typing.Mapping[str, typing.Any], name: str, default: int) -> int:
    value = parameters.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ConfigError(f'{name} is {value!r}; expected a whole number')
    return int(value)


def _check_range(name: str, value: float, bounds: tuple[float, float]) -> None:
    low, high = bounds
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f'{name} is {value}; expected a finite number')
    if not low <= value <= high:
        raise ConfigError(f'{name} is {value}; expected a value from {low} to {high}')
