"""The discrete-event simulator against hand-computed schedules."""

import pytest

from edgeserving_ros.config import StreamConfig
from edgeserving_ros.policies import make_policy
from edgeserving_ros.profile import (ExitProfile, LatencyStats, ModelProfile, Profile)
from edgeserving_ros.simulator import Arrival, ProfileLatencySampler, simulate


def stats(p50_ms, p95_ms=None, p99_ms=None):
    p95_ms = p50_ms if p95_ms is None else p95_ms
    p99_ms = p95_ms if p99_ms is None else p99_ms
    return LatencyStats(p50=p50_ms, p95=p95_ms, p99=p99_ms)


def one_model_profile():
    # Final exit: 10 ms at batch 1, 15 ms at 2, 20 ms at 3; exit 0: 2 ms at 1, 3 ms at 2.
    return Profile(models={'net': ModelProfile('net', [
        ExitProfile('stage1', {1: stats(2.0, 2.5, 3.0), 2: stats(3.0, 3.5, 4.0)}, 0.5),
        ExitProfile('final', {1: stats(10.0, 12.0, 14.0), 2: stats(15.0, 17.0, 19.0),
                              3: stats(20.0, 22.0, 24.0)}, 0.9),
    ])})


def one_stream(slo_ms=100.0, max_batch=4, queue_depth=30):
    return {'cam': StreamConfig('cam', '/cam/image_raw', 'net', slo_ms=slo_ms,
                                max_batch=max_batch, queue_depth=queue_depth)}


def finish_times(result_holder):
    def observer(now, batch, scheduler):
        duration_s = result_holder['service'](batch.model, batch.exit_index, len(batch.requests))
        result_holder['batches'].append(
            (now, batch.action, [request.arrival_s for request in batch.requests],
             now + duration_s))
    return observer


def run(trace, streams, policy_name, **options):
    profile = one_model_profile()
    service = ProfileLatencySampler(profile)
    record = {'service': service, 'batches': []}
    result = simulate(trace, streams, profile, make_policy(policy_name), service_time=service,
                      observer=finish_times(record), **options)
    return result, record['batches']


def test_fifo_hand_computed_schedule():
    trace = [Arrival(0.000, 'cam'), Arrival(0.002, 'cam'), Arrival(0.004, 'cam'),
             Arrival(0.030, 'cam')]

    result, batches = run(trace, one_stream(), 'fifo')

    # 0: serve the 0 ms request alone (10 ms), done at 10. 10: the 2 and 4 ms requests wait,
    # batch 2 (15 ms), done at 25. Idle until 30, then batch 1, done at 40.
    assert [(start, action.batch_size, arrivals, finish) for start, action, arrivals, finish
            in batches] == [
        (0.0, 1, [0.0], pytest.approx(0.010)),
        (pytest.approx(0.010), 2, [0.002, 0.004], pytest.approx(0.025)),
        (0.030, 1, [0.030], pytest.approx(0.040)),
    ]
    assert result.batches == 3
    assert result.end_s == pytest.approx(0.040)
    cam = result.metrics.streams['cam']
    assert cam.latencies_s == pytest.approx([0.010, 0.023, 0.021, 0.010])
    assert (cam.offered, cam.on_time, cam.late) == (4, 4, 0)


def test_fifo_late_requests_counted():
    trace = [Arrival(0.000, 'cam'), Arrival(0.001, 'cam'), Arrival(0.002, 'cam')]

    result, batches = run(trace, one_stream(slo_ms=20.0), 'fifo')

    # 0: batch 1 done at 10 (on time). 10: batch 2 (15 ms) done at 25, after the deadlines
    # 21 and 22, so both are late.
    assert [finish for _, _, _, finish in batches] == pytest.approx([0.010, 0.025])
    cam = result.metrics.streams['cam']
    assert (cam.on_time, cam.late, cam.dropped) == (1, 2, 0)
    assert cam.violation_ratio() == pytest.approx(2 / 3)


def test_clockwork_drops_doomed_in_simulation():
    trace = [Arrival(0.000, 'cam'), Arrival(0.0005, 'cam'), Arrival(0.003, 'cam')]

    result, batches = run(trace, one_stream(slo_ms=20.0), 'clockwork', online_correction=False)

    # 0: the 0 ms request alone, done at 10 (p50 service). At 10 the policy predicts the final
    # exit's p95, 12 ms at batch 1: the 0.5 ms request (deadline 20.5) is doomed and dropped,
    # and the 3 ms request (deadline 23) is served alone, done at 20.
    assert [arrivals for _, _, arrivals, _ in batches] == [[0.0], [0.003]]
    assert [finish for _, _, _, finish in batches] == pytest.approx([0.010, 0.020])
    cam = result.metrics.streams['cam']
    assert (cam.on_time, cam.late, cam.dropped_doomed) == (2, 0, 1)


def test_triton_waits_queue_delay_in_simulation():
    trace = [Arrival(0.000, 'cam'), Arrival(0.001, 'cam')]
    profile = one_model_profile()

    result = simulate(trace, one_stream(), profile, make_policy('triton', max_queue_delay_ms=5.0))

    # Ready when the 0 ms request has waited 5 ms (in 0.5 ms steps): batch 2, 15 ms, done at 20.
    cam = result.metrics.streams['cam']
    assert result.batches == 1
    assert result.end_s == pytest.approx(0.020)
    assert cam.latencies_s == pytest.approx([0.020, 0.019])


def test_queue_overflow_counts_in_simulation():
    # Three requests at once into a queue of depth 2: the oldest is dropped on arrival.
    trace = [Arrival(0.0, 'cam'), Arrival(0.0, 'cam'), Arrival(0.0, 'cam')]

    result, batches = run(trace, one_stream(queue_depth=2), 'fifo')

    cam = result.metrics.streams['cam']
    assert cam.dropped_overflow == 1
    assert cam.on_time == 2
    assert [action.batch_size for _, action, _, _ in batches] == [2]


def test_greedy_exit_uses_early_exit_under_pressure():
    # Four requests at once with SLO 12 ms: the final exit at batch 2 (15 ms) misses, batch 1
    # (10 ms) fits, but exit 0 at batch 2 (3 ms) fits with the larger batch.
    trace = [Arrival(0.0, 'cam')] * 4

    result, batches = run(trace, one_stream(slo_ms=12.0, max_batch=2), 'greedy_exit',
                          latency_quantile='p50')

    # 0: batch 2 at exit 0, done at 3. 3: deadline 12, batch 2 at exit 0 done at 6.
    assert [(action.exit_index, action.batch_size) for _, action, _, _ in batches] == [
        (0, 2), (0, 2)]
    assert result.metrics.streams['cam'].on_time == 4
    assert result.metrics.streams['cam'].exit_counts == {'stage1': 4}


def test_warmup_excludes_early_arrivals():
    trace = [Arrival(0.000, 'cam'), Arrival(0.050, 'cam')]

    result, _ = run(trace, one_stream(), 'fifo', warmup_s=0.010)

    assert result.metrics.totals()['offered'] == 1


def test_noisy_sampler_is_seeded_and_within_range():
    profile = one_model_profile()
    first = ProfileLatencySampler(profile, noise=True, seed=4)
    second = ProfileLatencySampler(profile, noise=True, seed=4)

    draws = [first('net', 1, 1) for _ in range(2000)]

    assert draws == [second('net', 1, 1) for _ in range(2000)]
    # p50 10, p95 12, p99 14 ms: lower end max(10 - 2, 8) = 8 ms, upper end 1.2 * 14 ms.
    assert min(draws) >= 0.008
    assert max(draws) <= 0.0168
    assert sorted(draws)[1000] == pytest.approx(0.010, rel=0.05)


def test_online_correction_learns_slowdown():
    trace = [Arrival(0.1 * index, 'cam') for index in range(30)]
    profile = one_model_profile()
    service = ProfileLatencySampler(profile, quantile='p50', slowdown=2.0)

    result = simulate(trace, one_stream(), profile, make_policy('fifo'), service_time=service,
                      latency_quantile='p50')

    # Every batch takes 2 x p50, so the final exit's factor approaches 2: 2 - 0.8**30.
    factor = result.scheduler.context.latency.correction.factor('net', 1)
    assert factor == pytest.approx(2.0, abs=0.01)


@pytest.mark.parametrize('trace, message', [
    ([Arrival(0.0, 'cam'), Arrival(float('nan'), 'cam')],
     r"arrival 1 \(time nan s, stream 'cam'\) has a non-finite time"),
    ([Arrival(float('inf'), 'cam')], r'arrival 0 \(time inf s.*non-finite'),
    ([Arrival(0.0, 'cam'), Arrival(0.02, 'cam'), Arrival(0.01, 'cam')],
     r"arrival 2 \(time 0.01 s, stream 'cam'\) is earlier than the arrival before it"),
    ([Arrival(0.0, 'cam'), Arrival(0.01, 'lidar')],
     r"arrival 1 \(time 0.01 s, stream 'lidar'\) is on an unknown stream; known streams: cam"),
])
def test_invalid_trace_raises(trace, message):
    with pytest.raises(ValueError, match=message):
        run(trace, one_stream(), 'fifo')


def test_equal_arrival_times_accepted():
    result, batches = run([Arrival(0.0, 'cam'), Arrival(0.0, 'cam')], one_stream(), 'fifo')
    assert [arrivals for _, _, arrivals, _ in batches] == [[0.0, 0.0]]
