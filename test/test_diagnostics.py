"""Diagnostics built from scheduler snapshots: statuses, levels, key/value details."""

import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus

from edgeserving_ros import diagnostics
from edgeserving_ros.config import StreamConfig
from edgeserving_ros.metrics import MetricsRecorder
from edgeserving_ros.policies import make_policy, SchedulingContext
from edgeserving_ros.profile import ExitProfile, LatencyModel, LatencyStats, ModelProfile
from edgeserving_ros.profile import Profile
from edgeserving_ros.requests import Request, StreamQueue
from edgeserving_ros.scheduler import Scheduler


def make_scheduler() -> Scheduler:
    latency = {1: LatencyStats(1.0, 1.2, 1.5), 10: LatencyStats(5.0, 6.0, 7.5)}
    exits = [ExitProfile(name, latency, accuracy, 100)
             for name, accuracy in (('stage1', 0.4), ('stage2', 0.57), ('final', 0.8))]
    profile = Profile(models={'resnet20': ModelProfile('cifar_resnet20', exits, 32)},
                      device='test profile', threads=1)
    streams = {'front': StreamConfig('front', '/front/image_raw', 'resnet20', slo_ms=50.0)}
    context = SchedulingContext(streams, profile, LatencyModel(profile))
    queues = {'front': StreamQueue('front', 30)}
    return Scheduler(make_policy('fifo'), context, queues, MetricsRecorder())


MODEL_STATE = {'resnet20': {'weights_trained': True, 'heads_trained': True, 'batches': 0,
                            'failed_batches': 0}}


def snapshot(scheduler, now_s, model_state=MODEL_STATE, last_result_s=0.0):
    return diagnostics.take_snapshot(scheduler, now_s, model_state,
                                     {'front': last_result_s}, 'fifo', 'cpu', '/p.json')


def serve(scheduler, arrival_s, finish_s, count=1):
    for index in range(count):
        scheduler.submit(Request('front', arrival_s, arrival_s + 0.05))
    batch = scheduler.next_batch(arrival_s)
    scheduler.complete(batch, finish_s, measured_latency_s=finish_s - arrival_s)


def statuses(array) -> dict:
    return {status.name: status for status in array.status}


def values(status) -> dict:
    return {pair.key: pair.value for pair in status.values}


def build(builder, snap):
    return statuses(builder.build(snap, Time(sec=int(snap.now_s))))


def test_statuses_named_per_stream_model_and_scheduler():
    builder = diagnostics.DiagnosticsBuilder('edgeserving', 'cpu')
    result = build(builder, snapshot(make_scheduler(), 1.0))
    assert sorted(result) == ['edgeserving: model resnet20', 'edgeserving: scheduler',
                              'edgeserving: stream front']
    assert all(status.hardware_id == 'cpu' for status in result.values())


def test_idle_stream_warns():
    builder = diagnostics.DiagnosticsBuilder('edgeserving', 'cpu')
    stream = build(builder, snapshot(make_scheduler(), 1.0))['edgeserving: stream front']
    assert stream.level == DiagnosticStatus.WARN
    assert 'no frames' in stream.message


def test_on_time_stream_is_ok_with_details():
    scheduler = make_scheduler()
    builder = diagnostics.DiagnosticsBuilder('edgeserving', 'cpu')
    for second in range(5):
        serve(scheduler, second + 0.5, second + 0.51, count=2)
    stream = build(builder, snapshot(scheduler, 5.0, last_result_s=4.51))[
        'edgeserving: stream front']
    assert stream.level == DiagnosticStatus.OK, stream.message
    details = values(stream)
    assert details['offered'] == '10'
    assert details['on_time'] == '10'
    assert details['violation_ratio'] == '0'
    assert float(details['latency_p95_ms']) == pytest.approx(10.0)
    assert details['exit_mix'] == 'final:1.00'
    assert details['queue_length'] == '0'
    assert details['rejected_inputs'] == '0'


def test_late_results_raise_level_over_window():
    scheduler = make_scheduler()
    builder = diagnostics.DiagnosticsBuilder('edgeserving', 'cpu', window_s=10.0)
    serve(scheduler, 0.5, 0.51)
    build(builder, snapshot(scheduler, 1.0, last_result_s=0.51))
    serve(scheduler, 1.5, 1.6)  # 100 ms against a 50 ms SLO
    stream = build(builder, snapshot(scheduler, 2.0, last_result_s=1.6))[
        'edgeserving: stream front']
    assert stream.level == DiagnosticStatus.ERROR
    assert 'violation ratio' in stream.message
    assert values(stream)['late'] == '1'


def test_rejected_inputs_warn():
    scheduler = make_scheduler()
    builder = diagnostics.DiagnosticsBuilder('edgeserving', 'cpu')
    serve(scheduler, 0.5, 0.51)
    scheduler.metrics.record_rejected_input('front')
    stream = build(builder, snapshot(scheduler, 1.0, last_result_s=0.51))[
        'edgeserving: stream front']
    assert stream.level == DiagnosticStatus.WARN
    assert 'invalid frames' in stream.message
    assert values(stream)['rejected_inputs'] == '1'


def test_stalled_queue_is_error():
    scheduler = make_scheduler()
    builder = diagnostics.DiagnosticsBuilder('edgeserving', 'cpu', stall_s=5.0)
    scheduler.submit(Request('front', 9.0, 60.0))
    stream = build(builder, snapshot(scheduler, 10.0, last_result_s=1.0))[
        'edgeserving: stream front']
    assert stream.level == DiagnosticStatus.ERROR
    assert 'no result for 9.0 s' in stream.message


def test_model_reports_correction_and_warnings():
    scheduler = make_scheduler()
    builder = diagnostics.DiagnosticsBuilder('edgeserving', 'cpu')
    for _ in range(20):
        scheduler.context.latency.observe('resnet20', 2, 1, 0.006)  # 4x the profiled 1.5 ms
    model = build(builder, snapshot(scheduler, 1.0))['edgeserving: model resnet20']
    assert model.level == DiagnosticStatus.WARN
    assert 'exit final runs' in model.message
    details = values(model)
    assert float(details['latency_correction.final']) > 2.0
    assert details['latency_correction_samples.final'] == '20'
    assert details['latency_correction.stage1'] == '1'


def test_untrained_and_failed_models():
    builder = diagnostics.DiagnosticsBuilder('edgeserving', 'cpu')
    untrained = {'resnet20': {**MODEL_STATE['resnet20'], 'weights_trained': False}}
    model = build(builder, snapshot(make_scheduler(), 1.0, untrained))[
        'edgeserving: model resnet20']
    assert model.level == DiagnosticStatus.WARN
    assert 'random backbone weights' in model.message

    failed = {'resnet20': {**MODEL_STATE['resnet20'], 'failed_batches': 2}}
    model = build(builder, snapshot(make_scheduler(), 2.0, failed))['edgeserving: model resnet20']
    assert model.level == DiagnosticStatus.ERROR
    assert '2 inference batches failed' in model.message
