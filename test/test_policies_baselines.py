"""Decisions of the baseline policies and the reference policy on hand-computed situations.

Hand-made profile (p50 = p95 = p99), latencies in ms by batch size, linear in between:
  model small (stream cam_a, SLO 20 ms, max_batch 4):
    exit 0 (accuracy 0.4): 1 at batch 1, 2.5 at 4  -> 1.5 at 2, 2.0 at 3
    exit 1 (accuracy 0.6): 2 at batch 1, 5 at 4    -> 3 at 2, 4 at 3
    exit 2 (final, 0.9):   4 at batch 1, 10 at 4   -> 6 at 2, 8 at 3
  model big (stream cam_b, SLO 30 ms, max_batch 3):
    exit 0 (accuracy 0.5): 3 at batch 1, 6 at 4    -> 4 at 2, 5 at 3
    exit 1 (final, 0.92):  8 at batch 1, 20 at 4   -> 12 at 2, 16 at 3
Times in the comments are ms; the code uses seconds.
"""

import math
import random
import sys
import types

import pytest

from edgeserving_ros.config import StreamConfig
from edgeserving_ros.metrics import MetricsRecorder
from edgeserving_ros.policies import POLICY_NAMES, make_policy
from edgeserving_ros.policies.base import Action, SchedulingContext
from edgeserving_ros.policies.baselines import (ClockworkPolicy, EdfPolicy, FifoPolicy,
                                                GreedyExitPolicy, RoundRobinPolicy,
                                                TritonPolicy)
from edgeserving_ros.policies.reference import ReferencePolicy, urgency
from edgeserving_ros.profile import (ExitProfile, LatencyModel, LatencyStats, ModelProfile,
                                     Profile)
from edgeserving_ros.requests import Request, StreamQueue
from edgeserving_ros.scheduler import Scheduler

BASELINE_NAMES = ('fifo', 'round_robin', 'edf', 'clockwork', 'triton', 'greedy_exit',
                  'reference')


def stats(ms):
    return LatencyStats(p50=ms, p95=ms, p99=ms)


def exit_profile(name, batch1_ms, batch4_ms, accuracy):
    return ExitProfile(name, {1: stats(batch1_ms), 4: stats(batch4_ms)}, accuracy)


def hand_profile():
    return Profile(models={
        'small': ModelProfile('small', [exit_profile('stage1', 1.0, 2.5, 0.4),
                                        exit_profile('stage2', 2.0, 5.0, 0.6),
                                        exit_profile('final', 4.0, 10.0, 0.9)]),
        'big': ModelProfile('big', [exit_profile('stage1', 3.0, 6.0, 0.5),
                                    exit_profile('final', 8.0, 20.0, 0.92)]),
    })


def make_context(min_accuracy_a=0.0):
    streams = {
        'cam_a': StreamConfig('cam_a', '/cam_a/image_raw', 'small', slo_ms=20.0,
                              min_accuracy=min_accuracy_a, max_batch=4),
        'cam_b': StreamConfig('cam_b', '/cam_b/image_raw', 'big', slo_ms=30.0, max_batch=3),
    }
    profile = hand_profile()
    return SchedulingContext(streams, profile, LatencyModel(profile, 'p95'))


def make_queues(context, arrivals):
    """Build queues from {stream: [arrival ms, ...]} with deadlines from the stream's SLO."""
    queues = {name: StreamQueue(name, 30) for name in context.streams}
    for stream, times_ms in arrivals.items():
        for time_ms in times_ms:
            arrival_s = time_ms / 1000.0
            queues[stream].push(Request(stream, arrival_s,
                                        arrival_s + context.streams[stream].slo_s))
    return queues


def test_profile_helper_matches_docstring():
    context = make_context()
    assert context.latency_s('cam_a', 2, 3) == pytest.approx(0.008)
    assert context.latency_s('cam_b', 0, 3) == pytest.approx(0.005)
    assert context.latency_s('cam_b', 1, 2) == pytest.approx(0.012)
    assert context.allowed_exits('cam_a') == (0, 1, 2)
    assert make_context(min_accuracy_a=0.5).allowed_exits('cam_a') == (1, 2)


# fifo

def test_fifo_serves_oldest_head():
    context = make_context()
    queues = make_queues(context, {'cam_a': [4, 6], 'cam_b': [2]})

    # cam_b's head arrived at 2 ms, before cam_a's at 4 ms: final exit 1, batch 1.
    assert FifoPolicy().decide(0.010, queues, context) == Action('cam_b', 1, 1)


def test_fifo_batch_capped_by_max_batch():
    context = make_context()
    queues = make_queues(context, {'cam_a': [0, 1, 2, 3, 4, 5], 'cam_b': [2]})

    # cam_a (head at 0 ms) contains 6 requests, and max_batch 4 caps the batch.
    assert FifoPolicy().decide(0.010, queues, context) == Action('cam_a', 2, 4)


# round_robin

def test_round_robin_alternates_streams():
    context = make_context()
    queues = make_queues(context, {'cam_a': [0], 'cam_b': [0, 1]})
    policy = RoundRobinPolicy()

    decisions = [policy.decide(0.001, queues, context) for _ in range(3)]

    assert decisions == [Action('cam_a', 2, 1), Action('cam_b', 1, 2), Action('cam_a', 2, 1)]


def test_round_robin_skips_empty_stream():
    context = make_context()
    queues = make_queues(context, {'cam_b': [0]})
    policy = RoundRobinPolicy()

    assert policy.decide(0.001, queues, context) == Action('cam_b', 1, 1)
    assert policy.decide(0.001, queues, context) == Action('cam_b', 1, 1)


def test_round_robin_reset_restarts_at_first_stream():
    context = make_context()
    queues = make_queues(context, {'cam_a': [0], 'cam_b': [0]})
    policy = RoundRobinPolicy()
    policy.decide(0.001, queues, context)

    policy.reset()

    assert policy.decide(0.001, queues, context).stream == 'cam_a'


# edf

def test_edf_serves_earliest_deadline():
    context = make_context()
    # cam_a head: deadline 8 + 20 = 28; cam_b head: deadline 0 + 30 = 30.
    queues = make_queues(context, {'cam_a': [8], 'cam_b': [0, 1, 2]})

    assert EdfPolicy().decide(0.005, queues, context) == Action('cam_a', 2, 1)


@pytest.mark.parametrize('now_ms, expected_batch', [
    (9.0, 4),    # 9 + 10 (batch 4) = 19 <= 20
    (11.0, 3),   # batch 4 ends at 21 > 20; 11 + 8 (batch 3) = 19
    (13.0, 2),   # batch 3 ends at 21; 13 + 6 (batch 2) = 19
    (17.0, 4),   # even batch 1 ends at 21 > 20: the head is lost, serve the largest batch
])
def test_edf_largest_batch_meeting_head_deadline(now_ms, expected_batch):
    context = make_context()
    queues = make_queues(context, {'cam_a': [0, 0.5, 1, 1.5, 2]})

    action = EdfPolicy().decide(now_ms / 1000.0, queues, context)

    assert action == Action('cam_a', 2, expected_batch)


# clockwork

def test_clockwork_orders_by_latest_start_time():
    context = make_context()
    # cam_a: deadline 28, latest start 28 - 4 = 24. cam_b: deadline 30, latest start 30 - 8 = 22.
    # EDF would pick cam_a; Clockwork picks cam_b. Batch 3 ends at 5 + 16 = 21 <= 30.
    queues = make_queues(context, {'cam_a': [8], 'cam_b': [0, 1, 2]})

    assert ClockworkPolicy().decide(0.005, queues, context) == Action('cam_b', 1, 3)


def test_clockwork_batch_limited_by_head_deadline():
    context = make_context()
    queues = make_queues(context, {'cam_b': [0, 1, 2]})

    # At 15: batch 3 ends at 31 > 30, batch 2 at 27.
    assert ClockworkPolicy().decide(0.015, queues, context) == Action('cam_b', 1, 2)


def test_clockwork_doomed_uses_final_exit():
    context = make_context()
    doomed_request = Request('cam_a', 0.0, 0.020)

    # At 17: the final exit ends at 21 > 20 (doomed for Clockwork), exit 0 at 18 (not doomed
    # for the context, whose test uses the fastest allowed exit).
    assert ClockworkPolicy().is_doomed(doomed_request, 0.017, context)
    assert not context.is_doomed(doomed_request, 0.017)
    assert not ClockworkPolicy().is_doomed(doomed_request, 0.015, context)


def test_scheduler_drops_with_policy_doomed_test():
    context = make_context()
    queues = make_queues(context, {'cam_a': [0, 3], 'cam_b': [0]})
    metrics = MetricsRecorder()
    scheduler = Scheduler(ClockworkPolicy(), context, queues, metrics)

    # At 17: cam_a at 0 ms (deadline 20) is doomed at the final exit; cam_a at 3 ms
    # (deadline 23, 17 + 4 = 21) and cam_b (deadline 30, 17 + 8 = 25) are not.
    batch = scheduler.next_batch(0.017)

    assert [request.arrival_s for request in scheduler.last_dropped] == [0.0]
    assert metrics.streams['cam_a'].dropped_doomed == 1
    # Latest starts: cam_a 23 - 4 = 19, cam_b 30 - 8 = 22.
    assert batch.action == Action('cam_a', 2, 1)


def test_scheduler_keeps_doomed_when_drop_disabled():
    context = make_context()
    queues = make_queues(context, {'cam_a': [0]})
    scheduler = Scheduler(ClockworkPolicy(), context, queues, drop_doomed=False)

    batch = scheduler.next_batch(0.017)

    assert scheduler.last_dropped == []
    assert batch.action == Action('cam_a', 2, 1)


# triton

def test_triton_waits_for_queue_delay():
    context = make_context()
    queues = make_queues(context, {'cam_a': [0, 1], 'cam_b': [2]})
    policy = TritonPolicy(max_queue_delay_ms=5.0)

    # At 4 ms no request has waited 5 ms and no queue is full.
    assert policy.decide(0.004, queues, context) is None
    # At 5.5 ms cam_a's oldest request has waited 5.5 ms; cam_b's only 3.5 ms.
    assert policy.decide(0.0055, queues, context) == Action('cam_a', 2, 2)


def test_triton_full_queue_is_ready_at_once():
    context = make_context()
    queues = make_queues(context, {'cam_a': [0], 'cam_b': [1, 2, 3]})

    # cam_b contains max_batch = 3 requests, so it is ready at 3 ms, while cam_a has waited
    # only 3 ms.
    assert TritonPolicy(5.0).decide(0.003, queues, context) == Action('cam_b', 1, 3)


def test_triton_ready_streams_in_fifo_order():
    context = make_context()
    queues = make_queues(context, {'cam_a': [1], 'cam_b': [0]})

    # Both waited over 5 ms at 7 ms; cam_b's oldest request was received first.
    assert TritonPolicy(5.0).decide(0.007, queues, context) == Action('cam_b', 1, 1)


def test_triton_zero_delay_serves_at_once():
    context = make_context()
    queues = make_queues(context, {'cam_a': [1]})

    assert TritonPolicy(0.0).decide(0.001, queues, context) == Action('cam_a', 2, 1)


def test_triton_times_out_at_deadline():
    context = make_context()
    policy = TritonPolicy()
    queued = Request('cam_a', 0.0, 0.020)

    assert not policy.is_doomed(queued, 0.0199, context)
    assert policy.is_doomed(queued, 0.020, context)


def test_triton_rejects_negative_delay():
    with pytest.raises(ValueError, match='max_queue_delay_ms'):
        TritonPolicy(max_queue_delay_ms=-1.0)


# greedy_exit

def test_greedy_exit_prefers_large_batch_over_deep_exit():
    context = make_context()
    # At 10.5: slack cam_a = 20 - 10.5 - 4 = 5.5, cam_b = 30 - 10.5 - 8 = 11.5.
    # cam_a batch 4: final ends at 20.5 > 20, exit 1 at 15.5 <= 20.
    queues = make_queues(context, {'cam_a': [0, 0, 0, 0], 'cam_b': [0, 0, 0]})

    assert GreedyExitPolicy().decide(0.0105, queues, context) == Action('cam_a', 1, 4)


def test_greedy_exit_uses_final_exit_when_it_fits():
    context = make_context()
    queues = make_queues(context, {'cam_a': [0, 0]})

    # At 5: batch 2 at the final exit ends at 11 <= 20.
    assert GreedyExitPolicy().decide(0.005, queues, context) == Action('cam_a', 2, 2)


def test_greedy_exit_respects_min_accuracy():
    context = make_context(min_accuracy_a=0.5)
    queues = make_queues(context, {'cam_a': [0, 0, 0, 0]})

    # Exits 1 and 2 are allowed. At 16.5: batch 4 at exit 1 ends at 21.5, batch 3 at 20.5,
    # batch 2 at 19.5 <= 20.
    assert GreedyExitPolicy().decide(0.0165, queues, context) == Action('cam_a', 1, 2)


def test_greedy_exit_late_head_shallowest_exit():
    context = make_context(min_accuracy_a=0.5)
    queues = make_queues(context, {'cam_a': [0, 0, 0, 0]})

    # At 19: exit 1 at batch 1 ends at 21 > 20, so the full batch goes to exit 1.
    assert GreedyExitPolicy().decide(0.019, queues, context) == Action('cam_a', 1, 4)


def test_greedy_exit_serves_least_slack_stream():
    context = make_context()
    # At 5: slack cam_a = 28 - 5 - 4 = 19; cam_b = 20 - 5 - 8 = 7 (arrived at -10).
    queues = make_queues(context, {'cam_a': [8], 'cam_b': [-10]})

    # cam_b batch 1 at the final exit ends at 13 <= 20.
    assert GreedyExitPolicy().decide(0.005, queues, context) == Action('cam_b', 1, 1)


# reference

def test_reference_urgency():
    assert urgency(0.0, 0.020) == pytest.approx(math.exp(-1.0))
    assert urgency(0.020, 0.020) == pytest.approx(1.0)
    assert urgency(0.100, 0.020) == 10.0


def test_reference_serves_larger_queue_when_cheap():
    context = make_context()
    queues = make_queues(context, {'cam_a': [0, 2], 'cam_b': [6]})

    # At 10. Candidate cam_a: batch 2, max wait 10 + final 6 = 16 <= 20, so exit 2, 6 ms;
    # cam_b's request then waits 4 + 6 = 10 of 30: exp(10/30 - 1) = 0.513.
    # Candidate cam_b: batch 1, wait 4 + final 8 = 12 <= 30, so exit 1, 8 ms; cam_a's requests
    # wait 18 and 16 of 20: exp(-0.1) + exp(-0.2) = 1.724. cam_a scores lower.
    assert ReferencePolicy().decide(0.010, queues, context) == Action('cam_a', 2, 2)


def test_reference_serves_old_request_at_early_exit():
    context = make_context()
    queues = make_queues(context, {'cam_a': [8, 9], 'cam_b': [-15]})

    # At 10. Candidate cam_a: max wait 2 + final 6 fits, 6 ms; cam_b's request waits
    # 25 + 6 = 31 of 30: exp(1/30) = 1.034.
    # Candidate cam_b: wait 25 + final 8 = 33 > 30, exit 0: 25 + 3 = 28 fits, 3 ms; cam_a's
    # requests wait 5 and 4 of 20: exp(-0.75) + exp(-0.8) = 0.922. cam_b scores lower.
    assert ReferencePolicy().decide(0.010, queues, context) == Action('cam_b', 0, 1)


@pytest.mark.parametrize('now_ms, expected_exit', [
    (10.0, 2),   # max wait 10 + final 6 = 16 <= 20
    (15.0, 1),   # 15 + 6 = 21 > 20; exit 1: 15 + 3 = 18
    (19.0, 0),   # exit 1: 22, exit 0: 20.5 > 20, so the shallowest allowed exit
])
def test_reference_exit_choice(now_ms, expected_exit):
    context = make_context()
    queues = make_queues(context, {'cam_a': [0, 2]})

    action = ReferencePolicy().decide(now_ms / 1000.0, queues, context)

    assert action == Action('cam_a', expected_exit, 2)


def test_reference_respects_min_accuracy():
    context = make_context(min_accuracy_a=0.5)
    queues = make_queues(context, {'cam_a': [0, 2]})

    # Exit 0 is not allowed, so at 19 the shallowest allowed exit is 1.
    assert ReferencePolicy().decide(0.019, queues, context) == Action('cam_a', 1, 2)


# Properties shared by all baselines

@pytest.mark.parametrize('name', BASELINE_NAMES)
def test_baseline_actions_valid_and_queues_untouched(name):
    rng = random.Random(7)
    for _ in range(200):
        context = make_context(min_accuracy_a=rng.choice((0.0, 0.5, 0.95)))
        arrivals = {stream: sorted(rng.uniform(-40.0, 10.0)
                                   for _ in range(rng.randint(0, 7)))
                    for stream in context.streams}
        if not any(arrivals.values()):
            continue
        queues = make_queues(context, arrivals)
        before = {stream: list(queue) for stream, queue in queues.items()}
        now = rng.uniform(0.0, 0.015)

        action = make_policy(name).decide(now, queues, context)

        assert {stream: list(queue) for stream, queue in queues.items()} == before
        if action is None:
            assert name == 'triton'
            continue
        assert queues[action.stream]
        assert action.exit_index in context.allowed_exits(action.stream)
        assert 1 <= action.batch_size <= len(queues[action.stream])
        assert action.batch_size <= context.streams[action.stream].max_batch


@pytest.mark.parametrize('name', ('fifo', 'round_robin', 'edf', 'clockwork', 'triton'))
def test_final_exit_baselines_never_exit_early(name):
    rng = random.Random(11)
    context = make_context()
    for _ in range(100):
        arrivals = {stream: [rng.uniform(-30.0, 0.0) for _ in range(rng.randint(1, 5))]
                    for stream in context.streams}
        queues = make_queues(context, arrivals)

        action = make_policy(name, max_queue_delay_ms=0.0).decide(0.001, queues, context)

        assert action.exit_index == context.final_exit(action.stream)


# Registry

def test_registry_lists_every_policy():
    assert set(BASELINE_NAMES) <= set(POLICY_NAMES)
    assert {'edgeserving', 'edgeserving_no_exit', 'edgeserving_random',
            'edgeserving_no_misses_now', 'edgeserving_no_misses_caused',
            'edgeserving_no_pressure', 'edgeserving_no_accuracy'} <= set(POLICY_NAMES)
    assert len(set(POLICY_NAMES)) == len(POLICY_NAMES)


def test_registry_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown policy 'lifo'.*edgeserving.*fifo.*reference"):
        make_policy('lifo')


@pytest.mark.parametrize('name', BASELINE_NAMES)
def test_registry_ignores_foreign_options(name):
    policy = make_policy(name, w_pressure=3.0, seed=5, max_queue_delay_ms=2.0)

    assert policy.name == name
    assert not hasattr(policy, 'w_pressure')


def test_registry_passes_triton_delay():
    assert make_policy('triton', max_queue_delay_ms=2.0).max_queue_delay_ms == 2.0
    assert make_policy('triton').max_queue_delay_ms == 5.0


def test_registry_builds_independent_round_robin_state():
    assert make_policy('round_robin') is not make_policy('round_robin')


class _RecordingPolicy:
    """Stand-in for EdgeServingPolicy that records its constructor options."""

    drops_doomed = True

    def __init__(self, w_pressure=1.0, w_accuracy=1.0, final_exit_only=False,
                 disabled_terms=(), seed=0):
        self.options = {'w_pressure': w_pressure, 'w_accuracy': w_accuracy,
                        'final_exit_only': final_exit_only,
                        'disabled_terms': tuple(disabled_terms), 'seed': seed}


class _RecordingRandomPolicy:
    def __init__(self, seed=0):
        self.options = {'seed': seed}


@pytest.fixture
def recording_edgeserving(monkeypatch):
    module = types.ModuleType('edgeserving_ros.policies.edgeserving')
    module.EdgeServingPolicy = _RecordingPolicy
    module.RandomFeasiblePolicy = _RecordingRandomPolicy
    monkeypatch.setitem(sys.modules, 'edgeserving_ros.policies.edgeserving', module)
    import edgeserving_ros.policies as package
    monkeypatch.setattr(package, 'edgeserving', module, raising=False)
    return module


CALLER_TERMS = ('pressure', 'accuracy')


@pytest.mark.parametrize('name, final_exit_only, disabled_terms', [
    ('edgeserving', False, CALLER_TERMS),
    ('edgeserving_no_exit', True, CALLER_TERMS),
    ('edgeserving_no_misses_now', False, ('misses_now',)),
    ('edgeserving_no_misses_caused', False, ('misses_caused',)),
    ('edgeserving_no_pressure', False, ('pressure',)),
    ('edgeserving_no_accuracy', False, ('accuracy',)),
])
def test_registry_edgeserving_family_options(recording_edgeserving, name, final_exit_only,
                                             disabled_terms):
    policy = make_policy(name, w_pressure=2.0, max_queue_delay_ms=1.0,
                         disabled_terms=CALLER_TERMS)

    # A term ablation replaces the caller's disabled_terms; other names pass them through.
    assert policy.name == name
    assert policy.options['w_pressure'] == 2.0
    assert policy.options['final_exit_only'] is final_exit_only
    assert policy.options['disabled_terms'] == disabled_terms


def test_registry_random_policy_gets_seed(recording_edgeserving):
    assert make_policy('edgeserving_random', seed=9, w_pressure=2.0).options == {'seed': 9}
    assert make_policy('edgeserving_random').options == {'seed': 0}


def test_registry_builds_real_edgeserving_family():
    pytest.importorskip('edgeserving_ros.policies.edgeserving',
                        reason='the EdgeServing policy module is not in this checkout')
    context = make_context()
    queues = make_queues(context, {'cam_a': [0, 1], 'cam_b': [0]})
    for name in POLICY_NAMES:
        policy = make_policy(name, seed=3, w_pressure=1.0, max_queue_delay_ms=0.0)
        assert policy.name == name

        action = policy.decide(0.002, queues, context)

        assert action is None or action.exit_index in context.allowed_exits(action.stream)
