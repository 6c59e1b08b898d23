"""The versioned JSON document each result message (std_msgs/String) carries.

One document per served frame. docs/results.md describes every field; in short:

    {"schema": "edgeserving_ros/result", "version": 1,
     "header": {"stamp": {"sec": 12, "nanosec": 500}, "frame_id": "camera"},
     "stream": "cam_fast", "model": "resnet20", "request_id": 41, "batch_id": 7,
     "batch_size": 3,
     "exit": {"index": 1, "name": "stage2", "final": false, "profiled_accuracy": 0.57},
     "top_k": [{"class_id": 3, "label": "cat", "score": 0.71}, ...],
     "weights_trained": true, "heads_trained": true,
     "arrival_reference": "header", "slo_ms": 50.0,
     "time_s": {"arrival": 12.0000005, "receive": 12.002, "start": 12.010,
                "finish": 12.013, "deadline": 12.0500005},
     "latency_ms": {"queue": 10.0, "inference": 3.0, "total": 13.0,
                    "preprocess": 0.2, "forward": 2.5},
     "deadline_met": true}

Readers check `schema` and `version`: a new optional field keeps the version, a removed or
renamed field or a changed meaning increments it.
"""

import json
import math
import typing

SCHEMA_NAME = 'edgeserving_ros/result'
SCHEMA_VERSION = 1
MAX_DOCUMENT_CHARS = 65_536


class ResultSchemaError(ValueError):
    """A result document is not valid JSON, is of another schema or version, or misses a field."""


def build_result(*, stamp_sec: int, stamp_nanosec: int, frame_id: str, stream: str, model: str,
                 request_id: int, batch_id: int, batch_size: int, exit_index: int,
                 exit_name: str, final_exit: bool, profiled_accuracy: float | None,
                 top_k: typing.Sequence[tuple[int, str, float]], weights_trained: bool,
                 heads_trained: bool, arrival_reference: str, slo_ms: float,
                 arrival_s: float, receive_s: float, start_s: float, finish_s: float,
                 deadline_s: float, preprocess_s: float, forward_s: float) -> dict:
    """Return a result document; times are node-clock seconds, durations seconds.

    `latency_ms.queue` is start - arrival, `latency_ms.inference` is finish - start (the whole
    batch, of which preprocessing and the forward pass are parts) and `latency_ms.total` is
    finish - arrival, so queue + inference = total.
    """
    return {
        'schema': SCHEMA_NAME,
        'version': SCHEMA_VERSION,
        'header': {'stamp': {'sec': int(stamp_sec), 'nanosec': int(stamp_nanosec)},
                   'frame_id': str(frame_id)},
        'stream': stream,
        'model': model,
        'request_id': int(request_id),
        'batch_id': int(batch_id),
        'batch_size': int(batch_size),
        'exit': {'index': int(exit_index), 'name': exit_name, 'final': bool(final_exit),
                 'profiled_accuracy': profiled_accuracy},
        'top_k': [{'class_id': int(class_id), 'label': label, 'score': float(score)}
                  for class_id, label, score in top_k],
        'weights_trained': bool(weights_trained),
        'heads_trained': bool(heads_trained),
        'arrival_reference': arrival_reference,
        'slo_ms': float(slo_ms),
        'time_s': {'arrival': arrival_s, 'receive': receive_s, 'start': start_s,
                   'finish': finish_s, 'deadline': deadline_s},
        'latency_ms': {'queue': (start_s - arrival_s) * 1000.0,
                       'inference': (finish_s - start_s) * 1000.0,
                       'total': (finish_s - arrival_s) * 1000.0,
                       'preprocess': preprocess_s * 1000.0,
                       'forward': forward_s * 1000.0},
        'deadline_met': finish_s <= deadline_s,
    }


def to_json(document: typing.Mapping) -> str:
    """Serialise a result document compactly; non-finite numbers are rejected."""
    return json.dumps(document, separators=(',', ':'), allow_nan=False)


# Field -> expected type(s) at the top level and in the nested objects.
_NUMBER = (int, float)
_TOP_LEVEL_FIELDS = {
    'schema': str, 'version': int, 'header': dict, 'stream': str, 'model': str,
    'request_id': int, 'batch_id': int, 'batch_size': int, 'exit': dict, 'top_k': list,
    'weights_trained': bool, 'heads_trained': bool, 'arrival_reference': str,
    'slo_ms': _NUMBER, 'time_s': dict, 'latency_ms': dict, 'deadline_met': bool,
}
_EXIT_FIELDS = {'index': int, 'name': str, 'final': bool}
_TIME_FIELDS = ('arrival', 'receive', 'start', 'finish', 'deadline')
_LATENCY_FIELDS = ('queue', 'inference', 'total', 'preprocess', 'forward')


def parse_result(text: str) -> dict:
    """Parse and check a result document; raise ResultSchemaError naming the first problem.

    Documents of a newer version are rejected, because their fields may mean something else.
    Extra fields are accepted.
    """
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ResultSchemaError(f'result document has {len(text)} characters, more than the '
                                f'limit of {MAX_DOCUMENT_CHARS}')
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise ResultSchemaError(f'result is not valid JSON: {error}') from None
    if not isinstance(document, dict):
        raise ResultSchemaError(f'result is a JSON {type(document).__name__}, expected an object')
    if document.get('schema') != SCHEMA_NAME:
        raise ResultSchemaError(f'result schema is {document.get("schema")!r}, expected '
                                f'{SCHEMA_NAME!r}')
    if document.get('version') != SCHEMA_VERSION:
        raise ResultSchemaError(f'result version {document.get("version")!r} is not supported; '
                                f'this reader reads version {SCHEMA_VERSION}')

    _check_fields(document, _TOP_LEVEL_FIELDS, '')
    _check_fields(document['header'], {'stamp': dict, 'frame_id': str}, 'header.')
    _check_fields(document['header']['stamp'], {'sec': int, 'nanosec': int}, 'header.stamp.')
    _check_fields(document['exit'], _EXIT_FIELDS, 'exit.')
    accuracy = document['exit'].get('profiled_accuracy')
    if accuracy is not None and not _is_number(accuracy):
        raise ResultSchemaError(f'exit.profiled_accuracy is {accuracy!r}, expected a number '
                                'or null')
    _check_fields(document['time_s'], dict.fromkeys(_TIME_FIELDS, _NUMBER), 'time_s.')
    _check_fields(document['latency_ms'], dict.fromkeys(_LATENCY_FIELDS, _NUMBER),
                  'latency_ms.')
    for index, entry in enumerate(document['top_k']):
        if not isinstance(entry, dict):
            raise ResultSchemaError(f'top_k[{index}] is not an object')
        _check_fields(entry, {'class_id': int, 'label': str, 'score': _NUMBER},
                      f'top_k[{index}].')
    return document


def _check_fields(obj: dict, fields: typing.Mapping[str, typing.Any], prefix: str) -> None:
    for name, expected in fields.items():
        if name not in obj:
            raise ResultSchemaError(f'result field {prefix}{name} is missing')
        value = obj[name]
        numeric = expected is _NUMBER or expected is int
        if numeric and isinstance(value, bool):
            raise ResultSchemaError(f'result field {prefix}{name} is a boolean, expected a number')
        if not isinstance(value, expected):
            raise ResultSchemaError(f'result field {prefix}{name} is {value!r}, expected '
                                    f'{_describe(expected)}')
        if expected is _NUMBER and not math.isfinite(value):
            raise ResultSchemaError(f'result field {prefix}{name} is {value}, expected a '
                                    'finite number')


def _is_number(value: typing.Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and math.isfinite(value)


def _describe(expected: typing.Any) -> str:
    if expected is _NUMBER:
        return 'a number'
    return {str: 'a string', int: 'an integer', bool: 'a boolean', dict: 'an object',
            list: 'an array'}[expected]
