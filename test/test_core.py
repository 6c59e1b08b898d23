"""Unit tests of the ROS-free core: queues, profiles, latency model, metrics, configuration."""

import math

import pytest
import yaml

from edgeserving_ros.config import (ConfigError, ServeConfig, StreamConfig,
                                    load_parameters_file)
from edgeserving_ros.metrics import (MetricsRecorder, OUTCOME_DROPPED_DOOMED,
                                     OUTCOME_DROPPED_OVERFLOW, OUTCOME_FAILED, percentile)
from edgeserving_ros.profile import (ExitProfile, LatencyCorrection, LatencyModel, LatencyStats,
                                     ModelProfile, Profile, ProfileError, load_profile,
                                     save_profile)
from edgeserving_ros.requests import Request, StreamQueue


def stats(p50_ms, p95_ms=None, p99_ms=None):
    p95_ms = p50_ms if p95_ms is None else p95_ms
    p99_ms = p95_ms if p99_ms is None else p99_ms
    return LatencyStats(p50=p50_ms, p95=p95_ms, p99=p99_ms, mean=p50_ms, stdev=0.1, runs=50)


def two_exit_profile():
    return Profile(
        models={'resnet20': ModelProfile(
            architecture='cifar_resnet20', input_size=32,
            exits=[
                ExitProfile('stage1', {1: stats(1.0, 1.5), 4: stats(2.5, 3.0)}, 0.41, 5000),
                ExitProfile('final', {1: stats(4.0, 5.0, 6.0), 4: stats(10.0, 12.0, 14.0),
                                      8: stats(16.0, 18.0, 20.0)}, 0.82, 5000),
            ])},
        device='cpu: test', torch='2.0', torchvision='0.15', threads=1, date='2026-01-01',
        notes='hand-made')


def request(stream, arrival_s, slo_s=0.1, receive_s=None):
    return Request(stream=stream, arrival_s=arrival_s, deadline_s=arrival_s + slo_s,
                   receive_s=receive_s)


# Queues

def test_queue_overflow_drops_oldest():
    queue = StreamQueue('front', max_depth=2)
    first, second, third = request('front', 0.0), request('front', 0.01), request('front', 0.02)

    assert queue.push(first) is None
    assert queue.push(second) is None
    dropped = queue.push(third)

    assert dropped is first
    assert queue.overflow_drops == 1
    assert list(queue) == [second, third]


def test_queue_orders_by_deadline_after_slo_change():
    queue = StreamQueue('front', max_depth=10)
    before_change = request('front', 0.000, slo_s=0.100)
    after_change = request('front', 0.010, slo_s=0.030)

    queue.push(before_change)
    queue.push(after_change)

    assert queue.head() is after_change
    assert queue.deadlines() == pytest.approx([0.040, 0.100])
    assert queue.pop_most_urgent(1) == [after_change]
    assert list(queue) == [before_change]


def test_queue_overflow_after_slo_change_drops_oldest_received():
    # The oldest request is not the head once a shorter SLO reorders the queue.
    queue = StreamQueue('front', max_depth=2)
    old = request('front', 0.000, slo_s=0.100)
    urgent = request('front', 0.010, slo_s=0.030)
    queue.push(old)
    queue.push(urgent)

    dropped = queue.push(request('front', 0.020, slo_s=0.030))

    assert dropped is old
    assert queue.head() is urgent


def test_queue_peek_remove_clear():
    queue = StreamQueue('front', max_depth=5)
    items = [request('front', 0.01 * index) for index in range(4)]
    for item in items:
        queue.push(item)

    assert queue.peek(2) == items[:2]
    assert len(queue) == 4
    queue.remove([items[1], request('front', 9.0)])
    assert list(queue) == [items[0], items[2], items[3]]
    assert queue.deadlines() == pytest.approx([0.1, 0.12, 0.13])
    assert queue.clear() == [items[0], items[2], items[3]]
    assert not queue


def test_queue_rejects_zero_depth():
    with pytest.raises(ValueError, match='front'):
        StreamQueue('front', max_depth=0)


def test_queue_arrival_rate_smoothing():
    queue = StreamQueue('front', max_depth=1000, rate_smoothing=0.1)
    assert queue.arrival_rate_hz() == 0.0
    for index in range(200):
        queue.push(request('front', index / 20.0))
    assert queue.arrival_rate_hz() == pytest.approx(20.0)


# Profiles

def test_profile_json_round_trip(tmp_path):
    profile = two_exit_profile()
    path = tmp_path / 'profiles' / 'cpu.json'

    save_profile(profile, path)
    loaded = load_profile(path)

    assert loaded.to_dict() == profile.to_dict()
    assert loaded.model('resnet20').exits[1].latency_ms[8].p99 == 20.0
    assert loaded.exit_names('resnet20') == ['stage1', 'final']


def test_profile_yaml_round_trip(tmp_path):
    profile = two_exit_profile()
    path = tmp_path / 'cpu.yaml'
    path.write_text(yaml.safe_dump(profile.to_dict()), encoding='utf-8')

    assert load_profile(path).to_dict() == profile.to_dict()


def test_profile_rejects_other_format_version(tmp_path):
    document = two_exit_profile().to_dict()
    document['format_version'] = 99
    path = tmp_path / 'future.yaml'
    path.write_text(yaml.safe_dump(document), encoding='utf-8')

    with pytest.raises(ProfileError, match='format version 99'):
        load_profile(path)


def test_profile_rejects_missing_batch_one():
    document = two_exit_profile().to_dict()
    del document['models']['resnet20']['exits'][0]['latency_ms']['1']

    with pytest.raises(ProfileError, match='batch size 1'):
        Profile.from_dict(document)


def test_profile_unknown_model_names_known_ones():
    with pytest.raises(ProfileError, match='resnet20'):
        two_exit_profile().model('resnet56')


# Latency model

def test_latency_interpolates_unprofiled_batches():
    latency = LatencyModel(two_exit_profile(), 'p50')

    # Final exit: 4 ms at batch 1, 10 ms at 4, 16 ms at 8, so 2 ms per request up to 4
    # and 1.5 ms per request from 4 to 8; past 8 the last slope continues.
    assert latency.uncorrected_s('resnet20', 1, 1) == pytest.approx(0.004)
    assert latency.uncorrected_s('resnet20', 1, 2) == pytest.approx(0.006)
    assert latency.uncorrected_s('resnet20', 1, 3) == pytest.approx(0.008)
    assert latency.uncorrected_s('resnet20', 1, 6) == pytest.approx(0.013)
    assert latency.uncorrected_s('resnet20', 1, 10) == pytest.approx(0.019)


def test_latency_uses_requested_quantile():
    profile = two_exit_profile()

    assert LatencyModel(profile, 'p95').uncorrected_s('resnet20', 1, 4) == pytest.approx(0.012)
    # p99 of the final exit: 6 ms at batch 1, 14 ms at 4, so 6 + 8 / 3 ms at batch 2.
    assert LatencyModel(profile, 'p99').uncorrected_s('resnet20', 1, 2) == pytest.approx(
        (6.0 + 8.0 / 3.0) / 1000.0)
    with pytest.raises(ProfileError, match='p90'):
        LatencyModel(profile, 'p90')


def test_latency_single_profiled_batch_scales_linearly():
    profile = Profile(models={'tiny': ModelProfile(
        architecture='x', exits=[ExitProfile('final', {1: stats(2.0)})])})

    assert LatencyModel(profile, 'p50').uncorrected_s('tiny', 0, 3) == pytest.approx(0.006)


def test_latency_correction_tracks_2x_slowdown_in_14_batches():
    # Factor after n batches of a steady 2x slowdown: 2 - 0.8**n with smoothing 0.2, so the
    # remaining gap first falls below 5 % of the slowdown at n = 14 (0.8**14 = 0.044).
    latency = LatencyModel(two_exit_profile(), 'p50')
    predicted_s = latency.uncorrected_s('resnet20', 1, 4)
    factors = []
    for _ in range(15):
        latency.observe('resnet20', 1, 4, 2.0 * predicted_s)
        factors.append(latency.correction.factor('resnet20', 1))

    assert factors[12] < 1.95
    assert factors[13] >= 1.95
    assert factors[14] == pytest.approx(2.0 - 0.8 ** 15)
    assert latency.latency_s('resnet20', 1, 4) == pytest.approx(factors[14] * predicted_s)
    assert latency.correction.samples('resnet20', 1) == 15
    assert latency.correction.factor('resnet20', 0) == 1.0


def test_latency_correction_keeps_p95_above_mean():
    # Measurements at the profiled mean must leave a p95 prediction at p95: the factor compares
    # with the mean, so it stays 1.
    profile = two_exit_profile()
    profile.models['resnet20'].exits[1].latency_ms[4] = LatencyStats(
        p50=10.0, p95=12.0, p99=14.0, mean=10.5, stdev=1.0, runs=50)
    latency = LatencyModel(profile, 'p95')
    for _ in range(50):
        latency.observe('resnet20', 1, 4, 0.0105)

    assert latency.correction.factor('resnet20', 1) == pytest.approx(1.0)
    assert latency.latency_s('resnet20', 1, 4) == pytest.approx(0.012)


def test_latency_correction_bounds_one_outlier():
    correction = LatencyCorrection(smoothing=0.2, outlier_ratio=2.0)

    correction.observe('resnet20', 1, predicted_s=0.010, measured_s=0.060)

    # The 6x ratio is clipped to 2x, so the factor moves by 0.2 * (2 - 1).
    assert correction.factor('resnet20', 1) == pytest.approx(1.2)


def test_latency_correction_ignores_invalid_samples():
    correction = LatencyCorrection()

    correction.observe('resnet20', 1, predicted_s=0.0, measured_s=0.01)
    correction.observe('resnet20', 1, predicted_s=0.01, measured_s=math.nan)
    correction.observe('resnet20', 1, predicted_s=0.01, measured_s=-1.0)

    assert correction.samples('resnet20', 1) == 0
    assert correction.factor('resnet20', 1) == 1.0


# Metrics

def test_violation_ratio_counts_drops():
    metrics = MetricsRecorder()
    for arrival_s in (0.0, 0.1, 0.2, 0.3, 0.4):
        metrics.record_offered('front', arrival_s)
    metrics.record_completed('front', 0.0, 0.05, 0.1, 'final', 0.8)
    metrics.record_completed('front', 0.1, 0.25, 0.2, 'final', 0.8)
    metrics.record_dropped('front', 0.2, OUTCOME_DROPPED_DOOMED, 0.25)
    metrics.record_dropped('front', 0.3, OUTCOME_DROPPED_OVERFLOW, 0.35)
    metrics.record_dropped('front', 0.4, OUTCOME_FAILED, 0.45)

    front = metrics.streams['front']
    # One on time, one late, three dropped: 4 violations over 5 offered.
    assert front.violation_ratio() == pytest.approx(0.8)
    assert (front.on_time, front.late, front.dropped) == (1, 1, 3)
    assert metrics.totals()['violation_ratio'] == pytest.approx(0.8)
    assert metrics.summary(['front'])[0]['dropped_overflow'] == 1


def test_metrics_delivered_accuracy_counts_on_time_only():
    metrics = MetricsRecorder()
    metrics.record_completed('front', 0.0, 0.05, 0.1, 'stage1', 0.4)
    metrics.record_completed('front', 0.0, 0.06, 0.1, 'final', 0.8)
    metrics.record_completed('front', 0.0, 0.20, 0.1, 'final', 0.8)

    assert metrics.streams['front'].delivered_accuracy() == pytest.approx(0.6)
    assert metrics.summary(['front'])[0]['exit_mix'] == {
        'final': pytest.approx(2 / 3), 'stage1': pytest.approx(1 / 3)}


def test_metrics_ignore_warmup_arrivals():
    metrics = MetricsRecorder(warmup_s=1.0)
    metrics.record_offered('front', 0.5)
    metrics.record_dropped('front', 0.5, OUTCOME_DROPPED_DOOMED, 0.6)
    metrics.record_offered('front', 1.5)
    metrics.record_completed('front', 1.5, 1.52, 1.6, 'final', 0.8)

    totals = metrics.totals()
    assert totals['offered'] == 1
    assert totals['dropped'] == 0
    assert totals['violation_ratio'] == 0.0
    assert totals['p50_ms'] == pytest.approx(20.0)


def test_percentile_interpolates():
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == pytest.approx(2.5)
    assert percentile([1.0, 2.0], 1.0) == 2.0
    assert math.isnan(percentile([], 0.5))


# Configuration

def valid_parameters():
    return {
        'stream_names': ['front', 'left'],
        'streams.front.topic': '/camera/front/image_raw',
        'streams.front.model': 'resnet20',
        'streams.front.slo_ms': 50.0,
        'streams.front.max_batch': 4,
        'streams.left.model': 'resnet20',
        'streams.left.min_accuracy': 0.5,
        'model_names': ['resnet20'],
        'models.resnet20.architecture': 'cifar_resnet20',
        'policy': 'clockwork',
        'score.w_pressure': 2.5,
    }


def test_config_parses_flat_parameters():
    config = ServeConfig.from_parameters(valid_parameters())

    assert list(config.streams) == ['front', 'left']
    assert config.streams['front'].slo_ms == 50.0
    assert config.streams['front'].max_batch == 4
    assert config.streams['left'].topic == '/left/image_raw'
    assert config.streams['left'].min_accuracy == 0.5
    assert config.policy == 'clockwork'
    assert config.score_weights.pressure == 2.5
    assert config.latency_quantile == 'p95'


@pytest.mark.parametrize('name, value, expected_message', [
    ('streams.front.slo_ms', 0.0, 'streams.front.slo_ms'),
    ('streams.front.slo_ms', math.inf, 'streams.front.slo_ms'),
    ('streams.front.max_batch', 0, 'streams.front.max_batch'),
    ('streams.front.queue_depth', 5000, 'streams.front.queue_depth'),
    ('streams.left.min_accuracy', 1.5, 'streams.left.min_accuracy'),
    ('streams.front.input_type', 'png', 'streams.front.input_type'),
    ('streams.front.model', 'resnet99', 'streams.front.model'),
    ('latency_quantile', 'p90', 'latency_quantile'),
    ('arrival_reference', 'sent', 'arrival_reference'),
    ('tick_period_ms', 0.0, 'tick_period_ms'),
    ('models.resnet20.architecture', '', 'models.resnet20.architecture'),
    ('streams.front.max_batch', 'four', 'streams.front.max_batch'),
    ('streams.front.max_batch', 4.7, 'streams.front.max_batch'),
    ('streams.front.slo_ms', '50', 'streams.front.slo_ms'),
    ('streams.front.slo_ms', True, 'streams.front.slo_ms'),
])
def test_config_rejects_invalid_value(name, value, expected_message):
    parameters = valid_parameters()
    parameters[name] = value

    with pytest.raises(ConfigError, match=expected_message.replace('.', r'\.')):
        ServeConfig.from_parameters(parameters)


def test_config_rejects_no_streams():
    parameters = valid_parameters()
    parameters['stream_names'] = []

    with pytest.raises(ConfigError, match='stream_names'):
        ServeConfig.from_parameters(parameters)


def test_config_rejects_invalid_stream_name():
    with pytest.raises(ConfigError, match='front-left'):
        StreamConfig(name='front-left', topic='/t', model='m').validate()


def test_config_reads_parameters_file(tmp_path):
    path = tmp_path / 'params.yaml'
    path.write_text(yaml.safe_dump({
        '/**': {'ros__parameters': {'policy': 'fifo', 'stream_names': ['front']}},
        'edgeserving': {'ros__parameters': {
            'policy': 'edf',
            'streams': {'front': {'model': 'resnet20', 'slo_ms': 80.0}},
            'model_names': ['resnet20'],
            'models': {'resnet20': {'architecture': 'cifar_resnet20'}},
        }},
        'other_node': {'ros__parameters': {'policy': 'triton'}},
    }), encoding='utf-8')

    config = ServeConfig.from_parameters(load_parameters_file(path))

    assert config.policy == 'edf'
    assert config.streams['front'].slo_ms == 80.0
