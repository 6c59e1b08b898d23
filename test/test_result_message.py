"""The JSON result schema: building, serialising and parsing with checks."""

import json
import math

import pytest

from edgeserving_ros.result_message import (build_result, parse_result, ResultSchemaError,
                                            SCHEMA_NAME, SCHEMA_VERSION, to_json)


def example_result(**changes) -> dict:
    arguments = dict(
        stamp_sec=12, stamp_nanosec=500, frame_id='camera', stream='cam_fast',
        model='resnet20', request_id=41, batch_id=7, batch_size=3, exit_index=1,
        exit_name='stage2', final_exit=False, profiled_accuracy=0.57,
        top_k=[(3, 'cat', 0.71), (5, 'dog', 0.2)], weights_trained=True, heads_trained=True,
        arrival_reference='header', slo_ms=50.0, arrival_s=12.0, receive_s=12.002,
        start_s=12.010, finish_s=12.013, deadline_s=12.05, preprocess_s=0.0002,
        forward_s=0.0025)
    arguments.update(changes)
    return build_result(**arguments)


def test_round_trip_keeps_every_field():
    document = example_result()
    parsed = parse_result(to_json(document))
    assert parsed == document
    assert parsed['schema'] == SCHEMA_NAME
    assert parsed['version'] == SCHEMA_VERSION


def test_latencies_add_up():
    latency = example_result()['latency_ms']
    assert latency['queue'] == pytest.approx(10.0)
    assert latency['inference'] == pytest.approx(3.0)
    assert latency['total'] == pytest.approx(13.0)
    assert latency['queue'] + latency['inference'] == pytest.approx(latency['total'])


def test_deadline_met_compares_finish_and_deadline():
    assert example_result()['deadline_met'] is True
    assert example_result(finish_s=12.06)['deadline_met'] is False
    assert example_result(finish_s=12.05)['deadline_met'] is True


def test_missing_accuracy_is_null():
    parsed = parse_result(to_json(example_result(profiled_accuracy=None)))
    assert parsed['exit']['profiled_accuracy'] is None


def test_non_finite_number_not_serialised():
    with pytest.raises(ValueError):
        to_json(example_result(slo_ms=math.nan))


def test_extra_field_accepted():
    document = example_result()
    document['future_field'] = {'anything': 1}
    assert parse_result(json.dumps(document))['future_field'] == {'anything': 1}


def _without(document: dict, path: str) -> dict:
    parts = path.split('.')
    target = document
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    del target[parts[-1]]
    return document


@pytest.mark.parametrize('path', [
    'header', 'header.stamp.sec', 'header.frame_id', 'stream', 'exit.name', 'top_k',
    'top_k.0.label', 'time_s.deadline', 'latency_ms.total', 'deadline_met', 'slo_ms'])
def test_missing_field_rejected(path):
    document = _without(example_result(), path)
    with pytest.raises(ResultSchemaError, match=path.split('.')[-1]):
        parse_result(json.dumps(document))


@pytest.mark.parametrize('text, message', [
    ('not json', 'not valid JSON'),
    ('[1, 2]', 'expected an object'),
    (json.dumps({**example_result(), 'schema': 'other'}), 'schema'),
    (json.dumps({**example_result(), 'version': SCHEMA_VERSION + 1}), 'version'),
    (json.dumps({**example_result(), 'batch_size': True}), 'batch_size'),
    (json.dumps({**example_result(), 'batch_size': 2.5}), 'batch_size'),
    (json.dumps({**example_result(), 'stream': 3}), 'stream'),
    (json.dumps({**example_result(), 'top_k': [1]}), r'top_k\[0\]'),
    (json.dumps({**example_result(), 'exit': {'index': 0, 'name': 'a', 'final': True,
                                              'profiled_accuracy': 'high'}}),
     'profiled_accuracy'),
    ('x' * 70_000, 'limit'),
])
def test_invalid_document_rejected(text, message):
    with pytest.raises(ResultSchemaError, match=message):
        parse_result(text)


def test_non_finite_value_in_text_rejected():
    text = to_json(example_result()).replace('"slo_ms":50.0', '"slo_ms":NaN')
    with pytest.raises(ResultSchemaError, match='slo_ms'):
        parse_result(text)
