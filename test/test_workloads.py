"""Arrival trace generators: reproducibility, rates, burstiness and bag replay."""

import statistics

import pytest

from edgeserving_ros import workloads
from edgeserving_ros.data_paths import require_data
from edgeserving_ros.profile import ExitProfile, LatencyStats, ModelProfile, Profile
from edgeserving_ros.simulator import Arrival

ROS1_BAG = 'duckiebot-digit-crops-bag/collected_digit.bag'
ROS2_BAG = 'duckiebot-digit-crops-bag/rosbag2_mcap'
BAG_TOPIC = 'csc22917/april_tag_node/compressed'


def gaps_s(trace):
    return [later.time_s - earlier.time_s for earlier, later in zip(trace, trace[1:])]


def coefficient_of_variation(values):
    return statistics.pstdev(values) / statistics.fmean(values)


def is_sorted(trace):
    return all(earlier.time_s <= later.time_s for earlier, later in zip(trace, trace[1:]))


def mix_profile():
    """Three models whose final exits take 10, 20 and 40 ms at batch 10 (p50)."""
    def model(name, batch1_ms, batch10_ms):
        latency = {1: LatencyStats(batch1_ms, batch1_ms * 1.2, batch1_ms * 1.5),
                   10: LatencyStats(batch10_ms, batch10_ms * 1.2, batch10_ms * 1.5)}
        early = {batch: LatencyStats(stats.p50 / 4, stats.p95 / 4, stats.p99 / 4)
                 for batch, stats in latency.items()}
        return ModelProfile(name, [ExitProfile('stage1', early, 0.4),
                                   ExitProfile('final', latency, 0.8)])
    return Profile(models={'resnet20': model('resnet20', 4.0, 10.0),
                           'resnet32': model('resnet32', 8.0, 20.0),
                           'resnet56': model('resnet56', 16.0, 40.0)})


# Reproducibility

@pytest.mark.parametrize('make_trace', [
    lambda seed: workloads.periodic('cam', 30.0, 10.0, 0.002, seed),
    lambda seed: workloads.poisson('cam', 30.0, 10.0, seed),
    lambda seed: workloads.bursty('cam', 30.0, 10.0, 3.0, seed),
    lambda seed: workloads.paper_mix(0.8, 5.0, seed, profile=mix_profile())[0],
    lambda seed: workloads.paper_mix(0.8, 5.0, seed, 'bursty', profile=mix_profile())[0],
])
def test_seed_reproduces_trace(make_trace):
    first = make_trace(3)

    assert first == make_trace(3)
    assert first != make_trace(4)
    assert is_sorted(first)
    assert all(0.0 <= arrival.time_s < 10.0 for arrival in first)


# Rates and burstiness

def test_poisson_rate_and_cv():
    trace = workloads.poisson('cam', 200.0, 100.0, seed=1)

    # 20000 expected arrivals, standard deviation 141: 3 % is over 4 standard deviations.
    assert len(trace) == pytest.approx(20_000, rel=0.03)
    assert coefficient_of_variation(gaps_s(trace)) == pytest.approx(1.0, rel=0.05)
    assert {arrival.stream for arrival in trace} == {'cam'}


@pytest.mark.parametrize('cv', [2.0, 4.0])
def test_bursty_rate_and_cv(cv):
    trace = workloads.bursty('cam', 1000.0, 50.0, cv=cv, seed=2)

    # Count standard deviation is about cv * sqrt(50000): 2 % at cv 4.
    assert len(trace) == pytest.approx(50_000, rel=0.08)
    assert coefficient_of_variation(gaps_s(trace)) == pytest.approx(cv, rel=0.1)


def test_periodic_frames_stay_within_jitter():
    trace = workloads.periodic('cam', 30.0, 10.0, jitter_s=0.003, seed=5, phase_s=0.01)

    assert len(trace) == 300
    for index, arrival in enumerate(trace):
        nominal_s = 0.01 + index / 30.0
        assert abs(arrival.time_s - nominal_s) <= 0.003 + 1e-12
    assert statistics.fmean(gaps_s(trace)) == pytest.approx(1 / 30.0, rel=0.01)


def test_periodic_without_jitter_is_exact():
    trace = workloads.periodic('cam', 10.0, 1.0, seed=0, phase_s=0.05)

    assert [arrival.time_s for arrival in trace] == pytest.approx(
        [0.05 + index / 10.0 for index in range(10)])


def test_periodic_random_phase_within_period():
    phases = {workloads.periodic('cam', 10.0, 1.0, seed=seed)[0].time_s for seed in range(20)}

    assert len(phases) == 20
    assert all(0.0 <= phase < 0.1 for phase in phases)


@pytest.mark.parametrize('call, name', [
    (lambda: workloads.poisson('cam', 0.0, 1.0), 'rate_hz'),
    (lambda: workloads.poisson('cam', 10.0, -1.0), 'duration_s'),
    (lambda: workloads.bursty('cam', 10.0, 1.0, cv=0.0), 'cv'),
    (lambda: workloads.periodic('cam', 10.0, 1.0, jitter_s=-0.1), 'jitter_s'),
    (lambda: workloads.periodic('cam', float('nan'), 1.0), 'rate_hz'),
])
def test_generators_reject_invalid_arguments(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_merge_sorts_and_keeps_argument_order_on_ties():
    first = [Arrival(0.0, 'a'), Arrival(0.2, 'a')]
    second = [Arrival(0.0, 'b'), Arrival(0.1, 'b')]

    assert workloads.merge(first, second) == [
        Arrival(0.0, 'a'), Arrival(0.0, 'b'), Arrival(0.1, 'b'), Arrival(0.2, 'a')]


# Paper-like mix

def test_final_exit_capacity_matches_hand_value():
    # Per-request costs 1, 2 and 4 ms, weights 1/2, 1/3, 1/6: 1.8333 ms, so 545.45 Hz.
    capacity_hz = workloads.final_exit_capacity_hz(
        mix_profile(), workloads.PAPER_MODELS, (3, 2, 1), max_batch=10)

    assert capacity_hz == pytest.approx(1000.0 / (0.5 + 2 / 3 + 4 / 6))


def test_paper_mix_streams_and_rates():
    trace, streams = workloads.paper_mix(0.5, 60.0, seed=1, profile=mix_profile())

    total_hz = 0.5 * 1000.0 / (0.5 + 2 / 3 + 4 / 6)
    assert list(streams) == ['resnet20', 'resnet32', 'resnet56']
    expected_rates_hz = [total_hz / 2, total_hz / 3, total_hz / 6]
    for (name, config), rate_hz in zip(streams.items(), expected_rates_hz):
        assert config.model == name
        assert config.slo_ms == 50.0
        assert config.max_batch == 10
        assert config.expected_rate_hz == pytest.approx(rate_hz)
        count = sum(1 for arrival in trace if arrival.stream == name)
        assert count == pytest.approx(rate_hz * 60.0, rel=0.06)
    assert is_sorted(trace)


@pytest.mark.parametrize('arrival', workloads.ARRIVAL_KINDS)
def test_paper_mix_total_rate_follows_load(arrival):
    trace, _ = workloads.paper_mix(1.2, 30.0, seed=2, arrival=arrival, cv=2.0,
                                   profile=mix_profile())

    total_hz = 1.2 * 1000.0 / (0.5 + 2 / 3 + 4 / 6)
    assert len(trace) == pytest.approx(total_hz * 30.0, rel=0.06)


def test_paper_mix_passes_stream_settings():
    _, streams = workloads.paper_mix(0.5, 1.0, profile=mix_profile(), slo_ms=80.0,
                                     max_batch=4, min_accuracy=0.5, queue_depth=12)

    for config in streams.values():
        assert (config.slo_ms, config.max_batch, config.min_accuracy, config.queue_depth) == (
            80.0, 4, 0.5, 12)


def test_paper_mix_rejects_bad_arguments():
    with pytest.raises(ValueError, match='profile'):
        workloads.paper_mix(0.5, 1.0)
    with pytest.raises(ValueError, match='arrival'):
        workloads.paper_mix(0.5, 1.0, arrival='uniform', profile=mix_profile())
    with pytest.raises(ValueError, match='3 models'):
        workloads.paper_mix(0.5, 1.0, profile=mix_profile(), models=('resnet20',))


def test_paper_mix_names_duplicate_models_apart():
    _, streams = workloads.paper_mix(0.5, 1.0, profile=mix_profile(),
                                     models=('resnet20', 'resnet20', 'resnet56'))

    assert list(streams) == ['resnet20_1', 'resnet20_2', 'resnet56_3']


# Bag replay

def test_replay_ros1_bag_stamps():
    path = require_data(ROS1_BAG)

    trace = workloads.replay_bag_stamps(path, stream='digits')

    assert len(trace) == 1402
    assert trace[0].time_s == 0.0
    assert is_sorted(trace)
    assert trace[-1].time_s == pytest.approx(636.434, abs=0.01)
    assert {arrival.stream for arrival in trace} == {'digits'}
    assert statistics.median(gaps_s(trace)) == pytest.approx(0.3, abs=0.1)


def test_replay_ros2_bag_matches_ros1():
    ros1 = workloads.replay_bag_stamps(require_data(ROS1_BAG), topic=BAG_TOPIC)
    ros2 = workloads.replay_bag_stamps(require_data(ROS2_BAG), topic=BAG_TOPIC)

    assert [arrival.time_s for arrival in ros2] == pytest.approx(
        [arrival.time_s for arrival in ros1])


def test_replay_speed_and_limit():
    path = require_data(ROS1_BAG)
    full = workloads.replay_bag_stamps(path)

    fast = workloads.replay_bag_stamps(path, speed=2.0, max_messages=10)

    assert len(fast) == 10
    assert [arrival.time_s for arrival in fast] == pytest.approx(
        [arrival.time_s / 2.0 for arrival in full[:10]])


def test_replay_header_stamps():
    trace = workloads.replay_bag_stamps(require_data(ROS1_BAG), use_header_stamp=True)

    assert len(trace) == 1402
    assert trace[0].time_s == 0.0
    assert is_sorted(trace)


def test_replay_rejects_unknown_topic():
    with pytest.raises(ValueError, match=BAG_TOPIC):
        workloads.replay_bag_stamps(require_data(ROS1_BAG), topic='/camera/image_raw')


def test_replay_missing_bag(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.bag'):
        workloads.replay_bag_stamps(tmp_path / 'missing.bag')
