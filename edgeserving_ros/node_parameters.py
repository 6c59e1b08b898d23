"""ROS 2 parameters of the edgeserving node: declarations, reading and validation of changes.

Every parameter is declared from one of three tables (node-wide, per stream, per model), each
entry with a ParameterDescriptor: a description with the unit, the allowed range and whether
the parameter is read-only. Read-only parameters are fixed at start-up (from a parameters file
or `-p name:=value`), because changing them needs new subscriptions, a new model or a new policy.

Streams and models are lists of names (`stream_names`, `model_names`) plus one group of
parameters per name (`streams.<name>.slo_ms`, `models.<name>.weights`), because a ROS 2
parameter cannot hold a list of structures. The values are turned into a `ServeConfig` by
`ServeConfig.from_parameters`, so the node and the offline tools check the same rules.

Live changes are checked by `validate_changes` as one set: if any parameter of the set is
invalid, the whole set is rejected with the reason and nothing is applied.
"""

import dataclasses
import math
import typing

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import (InvalidParameterTypeException, InvalidParameterValueException,
                              ParameterAlreadyDeclaredException, ParameterUninitializedException)
from rclpy.parameter import Parameter

from edgeserving_ros.config import (ARRIVAL_REFERENCES, CIFAR10_LABELS, ConfigError,
                                    INPUT_SIZE_RANGE, INPUT_TYPES, MAX_BATCH_RANGE,
                                    QUEUE_DEPTH_RANGE, ServeConfig, SLO_MS_RANGE, StreamConfig)
from edgeserving_ros.image_conversion import DEFAULT_MAX_PIXELS
from edgeserving_ros.policies.edgeserving import DEFAULT_W_ACCURACY, DEFAULT_W_PRESSURE

RELIABILITY_CHOICES = ('best_effort', 'reliable')
DEVICE_HELP = "'cpu', 'cuda' or 'cuda:N'"
DEFAULT_MAX_IMAGE_PIXELS = 3840 * 2160  # 4K UHD
MAX_TOP_K = 100

# A parameter without a default is declared with its type only; reading it before it is set
# returns the `unset` value of its spec.
_STRING_ARRAY = Parameter.Type.STRING_ARRAY


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    """One row of a declaration table.

    `default` is the value, or a Parameter.Type for a parameter without a default (it then
    reads as `unset`). `value_range` is inclusive and becomes a FloatingPointRange or an
    IntegerRange according to the type of the default.
    """

    name: str
    default: typing.Any
    description: str
    read_only: bool = True
    value_range: tuple[float, float] | None = None
    constraints: str = ''
    unset: typing.Any = None

    def descriptor(self, full_name: str) -> ParameterDescriptor:
        descriptor = ParameterDescriptor(name=full_name, description=self.description,
                                         additional_constraints=self.constraints,
                                         read_only=self.read_only)
        if self.value_range is not None:
            low, high = self.value_range
            if isinstance(self.default, bool) or not isinstance(self.default, (int, float)):
                raise TypeError(f'{full_name}: a range needs a numeric default')
            if isinstance(self.default, int):
                descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high),
                                                         step=0)]
            else:
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
        return descriptor


NODE_PARAMETERS = (
    ParameterSpec('stream_names', _STRING_ARRAY,
                  'Names of the input streams; each one has a group streams.<name>.*.',
                  constraints='required; letters, digits and _, starting with a letter',
                  unset=[]),
    ParameterSpec('model_names', _STRING_ARRAY,
                  'Names of the models; each one has a group models.<name>.*.',
                  constraints='required; letters, digits and _, starting with a letter',
                  unset=[]),
    ParameterSpec('policy', ServeConfig.policy,
                  'Scheduling policy that chooses the next (stream, exit, batch size).',
                  constraints='a name from edgeserving_ros.policies.POLICY_NAMES'),
    ParameterSpec('profile_path', '',
                  "Latency and accuracy profile (JSON or YAML); '' uses the package's "
                  'config/profile_cpu.json.'),
    ParameterSpec('device', ServeConfig.device, f'Inference device: {DEVICE_HELP}.'),
    ParameterSpec('torch_threads', 0,
                  'Torch CPU threads; 0 uses the thread count the profile was measured with '
                  '(or torch\'s default when the profile does not record it).',
                  value_range=(0, 256)),
    ParameterSpec('tick_period_ms', ServeConfig.tick_period_ms,
                  'Period of the inference timer in ms; each tick serves batches until the '
                  'queues are empty or the policy waits.',
                  value_range=(0.1, 1000.0)),
    ParameterSpec('arrival_reference', ServeConfig.arrival_reference,
                  "Instant a deadline counts from: 'header' (the image header stamp) or "
                  "'receive' (the node clock when the frame arrives). Applies to frames "
                  'received after a change.',
                  read_only=False, constraints=' or '.join(ARRIVAL_REFERENCES)),
    ParameterSpec('drop_doomed', ServeConfig.drop_doomed,
                  'Drop requests that cannot meet their deadline (for policies that drop); '
                  'false serves them late.',
                  read_only=False),
    ParameterSpec('latency_quantile', ServeConfig.latency_quantile,
                  'Profile latency quantile the policy predicts with.',
                  constraints='p50, p95 or p99'),
    # The defaults are the weights the EdgeServing policy was tuned with, not ScoreWeights'.
    ParameterSpec('score.w_pressure', DEFAULT_W_PRESSURE,
                  'Weight of the pressure term of the EdgeServing stability score.',
                  value_range=(0.0, 1000.0)),
    ParameterSpec('score.w_accuracy', DEFAULT_W_ACCURACY,
                  'Weight of the accuracy term of the EdgeServing stability score.',
                  value_range=(0.0, 1000.0)),
    ParameterSpec('max_image_pixels', DEFAULT_MAX_IMAGE_PIXELS,
                  'Frames with more pixels (width x height) are rejected as invalid input.',
                  value_range=(1, DEFAULT_MAX_PIXELS)),
    ParameterSpec('top_k', 3, 'Number of classes with scores in each result.',
                  value_range=(1, MAX_TOP_K)),
    ParameterSpec('input_qos.reliability', 'best_effort',
                  "Reliability of the image subscriptions: 'best_effort' (sensor data QoS) or "
                  "'reliable'. A reliable subscription receives nothing from a best-effort "
                  'publisher.',
                  constraints=' or '.join(RELIABILITY_CHOICES)),
    ParameterSpec('input_qos.depth', 5,
                  'History depth (keep last) of the image subscriptions; frames waiting in '
                  'this history age before they reach the queue.',
                  value_range=(1, 1000)),
    ParameterSpec('summary_path', '',
                  "At shutdown, write the metrics summary as JSON to this file; '' writes none. "
                  'Read-only, so that no peer on the ROS graph can choose where the node '
                  'writes.'),
    ParameterSpec('reset_latency_correction', False,
                  'Setting true resets the online latency correction factors of every model '
                  'and exit to 1; the parameter keeps the value it was set to.',
                  read_only=False),
)

STREAM_PARAMETERS = (
    ParameterSpec('topic', '', "Image topic; '' means /<stream>/image_raw."),
    ParameterSpec('model', '', 'Name of the model (from model_names) that serves this stream.',
                  constraints='required'),
    ParameterSpec('input_type', 'raw',
                  "'raw' subscribes to sensor_msgs/Image, 'compressed' to "
                  'sensor_msgs/CompressedImage (JPEG or PNG).',
                  constraints=' or '.join(INPUT_TYPES)),
    ParameterSpec('queue_depth', StreamConfig.queue_depth,
                  'Requests the deadline queue holds; when full, the oldest is dropped.',
                  value_range=QUEUE_DEPTH_RANGE),
    ParameterSpec('expected_rate_hz', StreamConfig.expected_rate_hz,
                  'Expected frame rate in Hz for the pressure term; 0 uses the observed rate.',
                  value_range=(0.0, 10_000.0)),
    ParameterSpec('slo_ms', StreamConfig.slo_ms,
                  'Latency objective in ms: deadline = arrival + slo_ms. A change applies to '
                  'frames that arrive after it.',
                  read_only=False, value_range=SLO_MS_RANGE),
    ParameterSpec('min_accuracy', StreamConfig.min_accuracy,
                  'Exits whose profiled accuracy is below this fraction are not used; the '
                  'final exit is always allowed.',
                  read_only=False, value_range=(0.0, 1.0)),
    ParameterSpec('max_batch', StreamConfig.max_batch,
                  'Largest batch served from this stream in one inference.',
                  read_only=False, value_range=MAX_BATCH_RANGE),
)

MODEL_PARAMETERS = (
    ParameterSpec('architecture', '', 'Model architecture, for example cifar_resnet20.',
                  constraints='required'),
    ParameterSpec('weights', '',
                  "Backbone weights file; '' keeps random weights (results are marked "
                  'weights_trained false and their labels are meaningless).'),
    ParameterSpec('exit_heads', '',
                  "Trained exit heads file; '' keeps untrained early-exit heads."),
    ParameterSpec('input_size', 32, 'Side in pixels of the square model input.',
                  value_range=INPUT_SIZE_RANGE),
    ParameterSpec('labels', list(CIFAR10_LABELS), 'Class labels in class-id order.'),
    ParameterSpec('exits', _STRING_ARRAY,
                  'Names of the exits the policy may use; unset allows every exit of the '
                  'profile. The final exit is always allowed.',
                  unset=[]),
)

LIVE_STREAM_FIELDS = tuple(spec.name for spec in STREAM_PARAMETERS if not spec.read_only)
LIVE_NODE_PARAMETERS = tuple(spec.name for spec in NODE_PARAMETERS if not spec.read_only)
_NODE_PARAMETER_NAMES = frozenset(spec.name for spec in NODE_PARAMETERS)


@dataclasses.dataclass
class NodeSettings:
    """Node options that are not part of the serving configuration."""

    torch_threads: int = 0
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    top_k: int = 3
    input_reliability: str = 'best_effort'
    input_depth: int = 5
    summary_path: str = ''


def declare_parameters(node) -> dict[str, typing.Any]:
    """Declare every parameter of `node` and return the flat mapping of their values.

    The node-wide parameters are declared first, because `stream_names` and `model_names`
    decide which per-stream and per-model groups exist. Raises ConfigError for a value of the
    wrong type or an invalid stream or model name.
    """
    values = {}
    for spec in NODE_PARAMETERS:
        values[spec.name] = _declare(node, spec, spec.name)
    for list_name in ('stream_names', 'model_names'):
        names = values[list_name]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ConfigError(f'{list_name} lists {", ".join(repeated)} more than once')

    for stream in values['stream_names']:
        _check_name('stream_names', stream)
        for spec in STREAM_PARAMETERS:
            name = f'streams.{stream}.{spec.name}'
            values[name] = _declare(node, spec, name)
        if not values[f'streams.{stream}.topic']:
            del values[f'streams.{stream}.topic']  # ServeConfig applies /<stream>/image_raw

    for model in values['model_names']:
        _check_name('model_names', model)
        for spec in MODEL_PARAMETERS:
            name = f'models.{model}.{spec.name}'
            values[name] = _declare(node, spec, name)
    return values


def build_configuration(values: typing.Mapping[str, typing.Any]
                        ) -> tuple[ServeConfig, NodeSettings]:
    """Return the validated serving configuration and node settings; raise ConfigError."""
    if not values.get('stream_names'):
        raise ConfigError('stream_names is not set: pass a parameters file, for example '
                          '--ros-args --params-file config/serve.yaml')
    if not values.get('model_names'):
        raise ConfigError('model_names is not set: list the models the streams use')
    config = ServeConfig.from_parameters(values)

    settings = NodeSettings(
        torch_threads=int(values.get('torch_threads', 0)),
        max_image_pixels=int(values.get('max_image_pixels', DEFAULT_MAX_IMAGE_PIXELS)),
        top_k=int(values.get('top_k', 3)),
        input_reliability=str(values.get('input_qos.reliability', 'best_effort')),
        input_depth=int(values.get('input_qos.depth', 5)),
        summary_path=str(values.get('summary_path', '')),
    )
    if settings.input_reliability not in RELIABILITY_CHOICES:
        raise ConfigError(f'input_qos.reliability is {settings.input_reliability!r}; '
                          f'expected one of {", ".join(RELIABILITY_CHOICES)}')
    return config, settings


def validate_changes(parameters: typing.Sequence[Parameter], config: ServeConfig
                     ) -> dict[str, typing.Any]:
    """Check a set of live parameter changes against `config`; return name -> checked value.

    Raises ConfigError naming the first invalid parameter; the caller then rejects the whole
    set. Read-only parameters, values of the wrong type and values outside a descriptor's range
    never reach this function through rclpy, which rejects them first, but the checks here
    also cover callers that bypass rclpy.
    """
    changes = {}
    stream_fields: dict[str, dict[str, typing.Any]] = {}
    for parameter in parameters:
        name, value = parameter.name, parameter.value
        parts = name.split('.')
        if len(parts) == 3 and parts[0] == 'streams' and parts[2] in LIVE_STREAM_FIELDS:
            stream, field = parts[1], parts[2]
            if stream not in config.streams:
                raise ConfigError(f'{name}: unknown stream {stream!r}')
            checked = _checked_stream_value(name, field, value)
            stream_fields.setdefault(stream, {})[field] = checked
            changes[name] = checked
        elif name in LIVE_NODE_PARAMETERS:
            changes[name] = _checked_node_value(name, value)
        elif parts[0] in ('streams', 'models') or name in _NODE_PARAMETER_NAMES:
            raise ConfigError(f'{name} is read-only: it is set when the node starts')
        # Any other name belongs to rclpy (use_sim_time), which checks it itself.

    for stream, fields in stream_fields.items():
        dataclasses.replace(config.streams[stream], **fields).validate()
    return changes


def _checked_stream_value(name: str, field: str, value: typing.Any) -> typing.Any:
    if field == 'max_batch':
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f'{name} is {value!r}; expected an integer')
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f'{name} is {value!r}; expected a number')
    if not math.isfinite(value):
        raise ConfigError(f'{name} is {value}; expected a finite number')
    return float(value)


def _checked_node_value(name: str, value: typing.Any) -> typing.Any:
    if name == 'arrival_reference':
        if value not in ARRIVAL_REFERENCES:
            raise ConfigError(f'arrival_reference is {value!r}; expected one of '
                              f'{", ".join(ARRIVAL_REFERENCES)}')
    elif name in ('drop_doomed', 'reset_latency_correction'):
        if not isinstance(value, bool):
            raise ConfigError(f'{name} is {value!r}; expected true or false')
    return value


def _declare(node, spec: ParameterSpec, name: str) -> typing.Any:
    try:
        parameter = node.declare_parameter(name, spec.default, spec.descriptor(name))
    except InvalidParameterTypeException as error:
        expected = _type_name(spec.default)
        raise ConfigError(f'{name} has a value of the wrong type: expected {expected} '
                          f'(write 50.0, not 50, for a floating-point value): {error}') from None
    except InvalidParameterValueException as error:
        raise ConfigError(f'{name} has an invalid value: {error}') from None
    except ParameterAlreadyDeclaredException:
        raise ConfigError(f'{name} is declared twice: a stream or model name is listed '
                          'twice') from None
    try:
        value = parameter.value
    except ParameterUninitializedException:
        return spec.unset
    return spec.unset if value is None else value


def _check_name(list_name: str, name: str) -> None:
    if (not name or not name.isascii() or not name[0].isalpha()
            or not name.replace('_', '').isalnum()):
        raise ConfigError(f'{list_name} contains {name!r}: a name is letters, digits and _, '
                          'starting with a letter, because it becomes part of parameter and '
                          'topic names')


def _type_name(default: typing.Any) -> str:
    if isinstance(default, Parameter.Type):
        return default.name.lower().replace('_', ' ')
    if isinstance(default, bool):
        return 'a boolean'
    if isinstance(default, int):
        return 'an integer'
    if isinstance(default, float):
        return 'a floating-point number'
    if isinstance(default, list):
        return 'a string array'
    return 'a string'
