"""The stability score's terms, the EdgeServing policy and its ablations on hand-made situations.

Hand-made profile (p50 = p95 = p99, so every quantile gives the same latency), latencies in ms,
linear in the batch size b from 1 to 4:
  model small (stream cam_a, SLO 20 ms, max_batch 4):
    exit 0 stage (accuracy 0.5): 1 + 0.5 (b - 1)  -> 1.0, 1.5, 2.0, 2.5
    exit 1 final (accuracy 0.9): 2 + 1.0 (b - 1)  -> 2.0, 3.0, 4.0, 5.0
  model big (stream cam_b, SLO 30 ms, max_batch 4):
    exit 0 stage (accuracy 0.6): 2 + 1.0 (b - 1)  -> 2.0, 3.0, 4.0, 5.0
    exit 1 final (accuracy 0.9): 4 + 2.0 (b - 1)  -> 4.0, 6.0, 8.0, 10.0
Times in comments are ms relative to now = 100 s; the code uses absolute seconds.
"""

import random
import time

import pytest

from edgeserving_ros.config import StreamConfig
from edgeserving_ros.policies import make_policy
from edgeserving_ros.policies import stability_score as ss
from edgeserving_ros.policies.base import Action, SchedulingContext
from edgeserving_ros.policies.edgeserving import EdgeServingPolicy, RandomFeasiblePolicy
from edgeserving_ros.profile import (ExitProfile, LatencyModel, LatencyStats, ModelProfile,
                                     Profile)
from edgeserving_ros.requests import Request, StreamQueue
from edgeserving_ros.simulator import ProfileLatencySampler, simulate

NOW = 100.0
MS = 0.001
# Weights the behaviour tests are computed for, independent of the tuned defaults.
WEIGHTS = {'w_pressure': 1.0, 'w_accuracy': 0.2}


def make_edgeserving(name='edgeserving'):
    """Build a registered EdgeServing-family policy with the test weights."""
    return make_policy(name, **WEIGHTS)


def linear_exit(name, batch1_ms, step_ms, accuracy, max_batch=4):
    latency = {}
    for batch in range(1, max_batch + 1):
        ms = batch1_ms + step_ms * (batch - 1)
        latency[batch] = LatencyStats(p50=ms, p95=ms, p99=ms)
    return ExitProfile(name, latency, accuracy)


def hand_profile(stage_accuracy=0.5):
    return Profile(models={
        'small': ModelProfile('small', [linear_exit('stage', 1.0, 0.5, stage_accuracy),
                                        linear_exit('final', 2.0, 1.0, 0.9)]),
        'big': ModelProfile('big', [linear_exit('stage', 2.0, 1.0, 0.6),
                                    linear_exit('final', 4.0, 2.0, 0.9)]),
    })


def make_context(min_accuracy=0.0, stage_accuracy=0.5, rate_hz=0.0, slo_b_ms=30.0):
    streams = {
        'cam_a': StreamConfig('cam_a', '/cam_a/image_raw', 'small', slo_ms=20.0,
                              min_accuracy=min_accuracy, max_batch=4,
                              expected_rate_hz=rate_hz),
        'cam_b': StreamConfig('cam_b', '/cam_b/image_raw', 'big', slo_ms=slo_b_ms,
                              min_accuracy=min_accuracy, max_batch=4,
                              expected_rate_hz=rate_hz),
    }
    profile = hand_profile(stage_accuracy)
    return SchedulingContext(streams, profile, LatencyModel(profile, 'p95'))


def make_queues(context, deadlines_ms, max_depth=30):
    """Build queues from {stream: [deadline in ms after NOW, ...]}."""
    queues = {name: StreamQueue(name, max_depth) for name in context.streams}
    for stream, offsets_ms in deadlines_ms.items():
        slo_s = context.streams[stream].slo_s
        for offset_ms in offsets_ms:
            deadline_s = NOW + offset_ms * MS
            queues[stream].push(Request(stream, deadline_s - slo_s, deadline_s))
    return queues


def breakdown(policy, context, queues, action):
    return policy.score_breakdown(NOW, queues, context, action)


# --- the terms, by hand ---------------------------------------------------------------------

def test_misses_now_counts_batch_requests_past_finish():
    deadlines = [NOW + 1 * MS, NOW + 3 * MS, NOW + 5 * MS]
    assert ss.misses_now(deadlines, NOW, 4 * MS) == 2
    assert ss.misses_now(deadlines, NOW, 0.5 * MS) == 0


def test_misses_now_boundary_is_on_time():
    assert ss.misses_now([NOW + 0.5], NOW, 0.5) == 0


def test_misses_caused_counts_newly_doomed_only():
    remaining = [
        (NOW + 5 * MS, 2 * MS),    # 2 <= 5 < 4 + 2: doomed by the action
        (NOW + 1.5 * MS, 2 * MS),  # 1.5 < 2: doomed before the action, not caused by it
        (NOW + 10 * MS, 2 * MS),   # 10 >= 6: still feasible
        (NOW + 6 * MS, 2 * MS),    # 6 >= 6: still feasible (the boundary is on time)
    ]
    assert ss.misses_caused(remaining, NOW, 4 * MS) == 1


def test_overflow_drops_beyond_doomed_requests():
    # 8 requests stay in a queue of depth 10; 1000 Hz for 5 ms brings 5 more: 3 pushed out.
    assert ss.overflow_drops(8, 0, 1000.0, 10, 0.005) == pytest.approx(3.0)
    # Two of the stayers are doomed anyway: they go first, so only one more request is lost.
    assert ss.overflow_drops(8, 2, 1000.0, 10, 0.005) == pytest.approx(1.0)
    assert ss.overflow_drops(4, 0, 1000.0, 10, 0.005) == 0.0


def test_batched_work_uses_full_batches_then_rest():
    latencies = [2.0, 3.0, 4.0]
    assert ss.batched_work_s(0, latencies) == 0.0
    assert ss.batched_work_s(2, latencies) == 3.0
    assert ss.batched_work_s(3, latencies) == 4.0
    assert ss.batched_work_s(5, latencies) == 7.0
    assert ss.batched_work_s(7, latencies) == 10.0


def risk(ratio):
    return ratio ** 2 / (1 + ratio ** 2)


def test_demand_risk_values():
    assert ss.demand_risk(0.0) == 0.0
    assert ss.demand_risk(0.5) == pytest.approx(0.2)
    assert ss.demand_risk(1.0) == pytest.approx(0.5)
    assert ss.demand_risk(3.0) == pytest.approx(0.9)


def test_pressure_one_stream_by_hand():
    # Remaining deadlines 10 and 20 ms; L = [2, 3] ms; busy 4 ms.
    # 10 ms: W = C(1) = 2, available 6 -> 1/3.  20 ms: W = C(2) = 3, available 16 -> 3/16.
    stream = ss.StreamWork(deadlines_s=[NOW + 10 * MS, NOW + 20 * MS],
                           batch_latency_s=[2 * MS, 3 * MS], doom_latency_s=1 * MS)
    assert ss.pressure([stream], NOW, 4 * MS) == pytest.approx(risk(1 / 3) + risk(3 / 16))


def test_pressure_sums_demand_over_streams():
    # Stream a: deadline 10 ms, L = [2]; stream b: deadline 8 ms, L = [3]; busy 1 ms.
    # 8 ms: W = 3, available 7.  10 ms: W = 2 + 3, available 9.
    a = ss.StreamWork([NOW + 10 * MS], [2 * MS], 0.5 * MS)
    b = ss.StreamWork([NOW + 8 * MS], [3 * MS], 0.5 * MS)
    assert ss.pressure([a, b], NOW, 1 * MS) == pytest.approx(risk(3 / 7) + risk(5 / 9))


def test_pressure_counts_expected_arrivals_due_in_time():
    # As the one-stream case, with 100 Hz arrivals and SLO 15 ms: arrivals before 5 ms are
    # due by 20 ms, 0.5 of them, each priced L(2) / 2 = 1.5 ms -> W(20 ms) = 3 + 0.75.
    stream = ss.StreamWork(deadlines_s=[NOW + 10 * MS, NOW + 20 * MS],
                           batch_latency_s=[2 * MS, 3 * MS], doom_latency_s=1 * MS,
                           arrival_rate_hz=100.0, slo_s=15 * MS)
    assert ss.pressure([stream], NOW, 4 * MS) == pytest.approx(risk(1 / 3) + risk(3.75 / 16))


def test_pressure_leaves_out_requests_doomed_when_free():
    # Deadline 5 ms with doom latency 2 ms is doomed once busy 4 ms ends (5 < 6): only the
    # 20 ms request is a test point, and only its own work counts: ratio 2 / 16.
    stream = ss.StreamWork(deadlines_s=[NOW + 5 * MS, NOW + 20 * MS],
                           batch_latency_s=[2 * MS, 3 * MS], doom_latency_s=2 * MS)
    assert ss.pressure([stream], NOW, 4 * MS) == pytest.approx(risk(2 / 16))


def test_pressure_implied_misses_by_hand():
    # Four requests due by 5 ms, L = [2, 3, 4, 5] ms, busy 1 ms: W(5) = 5, available 4, so
    # 1 ms of excess; the per-request price is 5 / 4 ms, so 0.8 requests at least.
    latencies = [2 * MS, 3 * MS, 4 * MS, 5 * MS]
    tight = ss.StreamWork([NOW + 5 * MS] * 4, latencies, 0.5 * MS)
    assert ss.pressure_implied_misses([tight], NOW, 1 * MS) == pytest.approx(0.8)
    # Due by 7 ms instead: W = 5 against 6 ms available, no excess.
    loose = ss.StreamWork([NOW + 7 * MS] * 4, latencies, 0.5 * MS)
    assert ss.pressure_implied_misses([loose], NOW, 1 * MS) == 0.0


def test_exit_accuracy_loss_cases():
    assert ss.exit_accuracy_loss(0.9, 0.9, is_final=True) == 0.0
    assert ss.exit_accuracy_loss(0.5, 0.9, is_final=False) == pytest.approx(0.4)
    assert ss.exit_accuracy_loss(None, 0.9, is_final=False) == pytest.approx(0.9)
    assert ss.exit_accuracy_loss(0.5, None, is_final=False) == pytest.approx(0.5)
    assert ss.exit_accuracy_loss(0.95, 0.9, is_final=False) == 0.0


def test_accuracy_cost_scales_with_batch():
    assert ss.accuracy_cost(3, 0.4) == pytest.approx(1.2)


# --- the policy's terms on a queue state, by hand -------------------------------------------

def test_breakdown_terms_by_hand():
    """cam_a: deadlines 3, 10, 12 ms; cam_b: deadline 5 ms; serve cam_a at final, batch 2.

    Busy 3 ms: misses now = 0 (3 <= 3). cam_b's request (doom latency 2 ms at its stage exit)
    is doomed at 3 ms: 5 < 3 + 2, so misses caused = 1. cam_a's 12 ms request remains:
    W = C(1) = 2 ms against 12 - 3 = 9 ms -> ratio 2 / 9. Final exit -> accuracy cost 0.
    """
    context = make_context()
    queues = make_queues(context, {'cam_a': [3, 10, 12], 'cam_b': [5]})
    terms = breakdown(make_edgeserving(), context, queues, Action('cam_a', 1, 2))
    assert terms['misses_now'] == 0
    assert terms['misses_caused'] == 1
    assert terms['pressure'] == pytest.approx(risk(2 / 9))
    assert terms['accuracy_cost'] == 0
    assert terms['predicted_misses'] == 1


def test_breakdown_counts_overflow_of_full_queue():
    """Queues of depth 3, 1000 Hz arriving on each stream; cam_a has one request due at
    10 ms, cam_b three due at 20-22 ms (a full queue).

    cam_a at final, batch 1 (2 ms): 2 arrivals each; cam_a keeps 0 + 2 <= 3, cam_b pushes out
    3 + 2 - 3 = 2. cam_b at final, batch 2 (6 ms): 6 arrivals each; cam_a pushes out
    1 + 6 - 3 = 4 and cam_b 1 + 6 - 3 = 4. No remaining request is doomed in either case.
    """
    context = make_context(rate_hz=1000.0)
    queues = make_queues(context, {'cam_a': [10], 'cam_b': [20, 21, 22]}, max_depth=3)
    short = breakdown(make_edgeserving(), context, queues, Action('cam_a', 1, 1))
    assert short['overflow_drops'] == pytest.approx(2.0)
    assert short['misses_caused'] == pytest.approx(2.0)
    long = breakdown(make_edgeserving(), context, queues, Action('cam_b', 1, 2))
    assert long['overflow_drops'] == pytest.approx(8.0)
    assert long['misses_caused'] == pytest.approx(8.0)


def test_breakdown_score_combines_weights():
    context = make_context()
    queues = make_queues(context, {'cam_a': [3, 10, 12], 'cam_b': [5]})
    policy = EdgeServingPolicy(w_pressure=2.0, w_accuracy=3.0)
    terms = breakdown(policy, context, queues, Action('cam_a', 0, 2))
    expected = (terms['misses_now'] + terms['misses_caused'] + 2.0 * terms['pressure']
                + 3.0 * terms['accuracy_cost'])
    assert terms['accuracy_cost'] == pytest.approx(2 * 0.4)
    assert terms['score'] == pytest.approx(expected)


def random_state(seed, context, count_range=(1, 12), max_depth=30):
    rng = random.Random(seed)
    deadlines = {}
    for name in context.streams:
        count = rng.randint(*count_range)
        values = [round(rng.uniform(1.0, 30.0), rng.choice([1, 3])) for _ in range(count)]
        deadlines[name] = values
    return make_queues(context, deadlines, max_depth)


@pytest.mark.parametrize('seed', range(12))
def test_vectorised_terms_match_reference_functions(seed):
    # Different SLOs and a rate make expected arrivals count, and 2000 Hz into queues of depth
    # 10 makes overflow count. Rounded deadlines make ties. Correction factors other than 1
    # check that both paths scale latencies alike. Some seeds leave a queue empty.
    context = make_context(rate_hz=2000.0, slo_b_ms=12.0)
    context.latency.correction.observe('small', 1, 0.002, 0.003)
    context.latency.correction.observe('big', 0, 0.002, 0.0015)
    queues = random_state(seed, context, count_range=(0 if seed % 3 == 0 else 1, 10),
                          max_depth=10)
    if not any(queues.values()):
        queues = random_state(seed + 100, context, count_range=(1, 10), max_depth=10)
    policy = EdgeServingPolicy(w_pressure=0.7, w_accuracy=0.4)
    rows = policy.candidate_terms(NOW, queues, context)
    assert rows
    for action, terms in rows:
        expected = policy.score_breakdown(NOW, queues, context, action)
        for name in ('misses_now', 'misses_caused', 'pressure', 'accuracy_cost', 'score'):
            assert terms[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), \
                (action, name)


def test_candidates_cover_action_space():
    context = make_context()
    queues = make_queues(context, {'cam_a': [5, 6, 7, 8, 9, 10], 'cam_b': [20, 21]})
    rows = make_edgeserving().candidate_terms(NOW, queues, context)
    actions = {action for action, _ in rows}
    expected = {Action('cam_a', e, b) for e in (0, 1) for b in range(1, 5)}
    expected |= {Action('cam_b', e, b) for e in (0, 1) for b in range(1, 3)}
    assert actions == expected


# --- decisions ------------------------------------------------------------------------------

def test_decide_returns_none_when_queues_empty():
    context = make_context()
    assert make_edgeserving().decide(NOW, make_queues(context, {}), context) is None


def test_prefers_large_batch_that_removes_work_efficiently():
    """Four cam_a requests due at 40 ms, final exit only: one batch of 4 (5 ms) leaves nothing
    queued, while a batch of 1 (2 ms) leaves three requests needing another 4 ms batch."""
    context = make_context(min_accuracy=0.8)
    queues = make_queues(context, {'cam_a': [40, 40, 40, 40]})
    policy = make_edgeserving()
    assert policy.decide(NOW, queues, context) == Action('cam_a', 1, 4)
    large = breakdown(policy, context, queues, Action('cam_a', 1, 4))
    single = breakdown(policy, context, queues, Action('cam_a', 1, 1))
    assert large['pressure'] < single['pressure']


def test_shortens_batch_when_large_batch_dooms_other_stream():
    """cam_b's request is due at 8.5 ms and needs 4 ms at its final exit (final only). Serving
    all four cam_a requests (5 ms) would doom it (5 + 4 > 8.5); two (3 ms) would not."""
    context = make_context(min_accuracy=0.8)
    queues = make_queues(context, {'cam_a': [40, 40, 40, 40], 'cam_b': [8.5]})
    policy = make_edgeserving()
    assert breakdown(policy, context, queues, Action('cam_a', 1, 4))['misses_caused'] == 1
    action = policy.decide(NOW, queues, context)
    assert action != Action('cam_a', 1, 4)
    chosen = breakdown(policy, context, queues, action)
    assert chosen['misses_now'] + chosen['misses_caused'] == 0


@pytest.mark.parametrize('seed', range(5))
def test_never_uses_exit_below_min_accuracy(seed):
    # min_accuracy 0.55 forbids cam_a's stage exit (0.5) but allows cam_b's (0.6).
    context = make_context(min_accuracy=0.55)
    queues = random_state(seed, context, count_range=(4, 12))
    policy = EdgeServingPolicy(w_accuracy=0.0)
    action = policy.decide(NOW, queues, context)
    assert action.exit_index in context.allowed_exits(action.stream)
    rows = policy.candidate_terms(NOW, queues, context)
    assert all(a.exit_index == 1 for a, _ in rows if a.stream == 'cam_a')
    assert any(a.exit_index == 0 for a, _ in rows if a.stream == 'cam_b')


def test_untrained_exit_allowed_only_without_minimum():
    # An exit head without measured accuracy (None) is allowed only when min_accuracy is 0.
    open_context = make_context(min_accuracy=0.0, stage_accuracy=None)
    strict_context = make_context(min_accuracy=0.1, stage_accuracy=None)
    assert open_context.allowed_exits('cam_a') == (0, 1)
    assert strict_context.allowed_exits('cam_a') == (1,)
    queues = make_queues(open_context, {'cam_a': [3]})
    terms = breakdown(make_edgeserving(), open_context, queues, Action('cam_a', 0, 1))
    assert terms['accuracy_cost'] == pytest.approx(0.9)


def test_uses_early_exit_to_avoid_a_miss():
    """cam_a's request is due in 1.5 ms, so only the stage exit (1 ms) meets it. The final exit
    (2 ms) would be a miss, which outweighs the accuracy cost 0.4 x w_accuracy."""
    context = make_context()
    queues = make_queues(context, {'cam_a': [1.5]})
    assert make_edgeserving().decide(NOW, queues, context) == Action('cam_a', 0, 1)


def test_keeps_final_exit_when_deadline_is_loose():
    context = make_context()
    queues = make_queues(context, {'cam_a': [15]})
    assert make_edgeserving().decide(NOW, queues, context) == Action('cam_a', 1, 1)


def test_differs_from_reference_policy():
    """The reference policy always serves min(queue length, max_batch) requests; EdgeServing
    also scores smaller batches.

    Final exits only. cam_a has an urgent head (due at 5 ms) and three requests due at
    40 ms; cam_b has one request due at 8 ms, which needs 4 ms alone. The reference policy
    serves all four cam_a requests (5 ms), because leaving one request behind scores lower than
    leaving four, and that dooms cam_b's request (5 + 4 > 8). EdgeServing serves a shorter
    action that keeps every request feasible.
    """
    context = make_context(min_accuracy=0.8)
    queues = make_queues(context, {'cam_a': [5, 40, 40, 40], 'cam_b': [8]})
    reference_action = make_policy('reference').decide(NOW, queues, context)
    ours = make_edgeserving().decide(NOW, queues, context)
    assert reference_action == Action('cam_a', 1, 4)
    assert ours != reference_action
    policy = make_edgeserving()
    assert breakdown(policy, context, queues, reference_action)['misses_caused'] == 1
    ours_terms = breakdown(policy, context, queues, ours)
    assert ours_terms['misses_now'] + ours_terms['misses_caused'] == 0


# --- ablations ------------------------------------------------------------------------------

def test_ablation_without_misses_caused_dooms_other_stream():
    """Final exits only. cam_a: one request due at 5 ms (2 ms alone); cam_b: two due at 12 and
    20 ms (6 ms together). Serving cam_b's pair first dooms cam_a's request (6 + 2 > 5) and
    leaves nothing queued, so its pressure is 0. Only the misses-caused term makes the full
    score serve cam_a first, after which cam_b's pair still fits (2 + 6 <= 12)."""
    context = make_context(min_accuracy=0.8)
    queues = make_queues(context, {'cam_a': [5], 'cam_b': [12, 20]})
    full = make_edgeserving('edgeserving').decide(NOW, queues, context)
    ablated = make_edgeserving('edgeserving_no_misses_caused').decide(NOW, queues, context)
    assert full == Action('cam_a', 1, 1)
    assert ablated == Action('cam_b', 1, 2)
    policy = make_edgeserving()
    assert breakdown(policy, context, queues, ablated)['misses_caused'] == 1
    assert breakdown(policy, context, queues, ablated)['pressure'] == 0.0
    assert breakdown(policy, context, queues, full)['misses_caused'] == 0


def test_ablation_without_misses_now_serves_head_late():
    """cam_a: head due at 3 ms and three requests due at 40 ms, final exit only. A batch of 4
    (5 ms) finishes the head late but empties the queue; the full score serves on time."""
    context = make_context(min_accuracy=0.8)
    queues = make_queues(context, {'cam_a': [3, 40, 40, 40]})
    full = make_edgeserving('edgeserving').decide(NOW, queues, context)
    ablated = make_edgeserving('edgeserving_no_misses_now').decide(NOW, queues, context)
    policy = make_edgeserving()
    assert breakdown(policy, context, queues, full)['misses_now'] == 0
    assert breakdown(policy, context, queues, ablated)['misses_now'] >= 1


def test_ablation_without_pressure_ignores_urgency():
    """One request each, no miss either way: cam_a's due at 30 ms, cam_b's at 10 ms. Pressure
    prefers serving cam_b first (its deadline is closer); without it the scores tie and the
    first stream listed wins."""
    context = make_context(min_accuracy=0.8)
    queues = make_queues(context, {'cam_a': [30], 'cam_b': [10]})
    full = make_edgeserving('edgeserving').decide(NOW, queues, context)
    ablated = make_edgeserving('edgeserving_no_pressure').decide(NOW, queues, context)
    assert full.stream == 'cam_b'
    assert ablated.stream == 'cam_a'


def test_ablation_without_accuracy_takes_early_exit():
    """cam_a has five requests due at 8, 10, 10, 30 and 40 ms; no miss is at stake. Four of
    them at the stage exit (2.5 ms) leave a little less pressure than at the final exit (5 ms);
    only the accuracy term (4 x 0.4 lost) keeps the final exit."""
    context = make_context()
    queues = make_queues(context, {'cam_a': [8, 10, 10, 30, 40]})
    full = make_edgeserving('edgeserving').decide(NOW, queues, context)
    ablated = make_edgeserving('edgeserving_no_accuracy').decide(NOW, queues, context)
    assert full == Action('cam_a', 1, 4)
    assert ablated == Action('cam_a', 0, 4)


def test_final_exit_only_judges_doom_at_final_exit():
    context = make_context()
    queues = make_queues(context, {'cam_a': [1.5, 30]})
    head = queues['cam_a'].head()
    no_exit = make_edgeserving('edgeserving_no_exit')
    assert no_exit.is_doomed(head, NOW, context)  # final exit needs 2 ms > 1.5 ms
    assert not make_edgeserving().is_doomed(head, NOW, context)  # stage exit needs 1 ms
    rows = no_exit.candidate_terms(NOW, queues, context)
    assert {action.exit_index for action, _ in rows} == {1}


def test_registry_passes_weights_and_rejects_unknown_terms():
    policy = make_policy('edgeserving', w_pressure=0.7, w_accuracy=0.2, seed=3)
    assert (policy.w_pressure, policy.w_accuracy) == (0.7, 0.2)
    assert make_edgeserving('edgeserving_no_pressure').disabled_terms == {'pressure'}
    with pytest.raises(ValueError, match='unknown score terms'):
        EdgeServingPolicy(disabled_terms=('latency',))
    with pytest.raises(ValueError, match='w_pressure'):
        EdgeServingPolicy(w_pressure=-1.0)


# --- random feasible choice -----------------------------------------------------------------

def test_random_feasible_covers_action_space_uniformly():
    context = make_context()
    queues = make_queues(context, {'cam_a': [5, 6, 7], 'cam_b': [20]})
    policy = RandomFeasiblePolicy(seed=7)
    counts = {}
    draws = 6000
    for _ in range(draws):
        action = policy.decide(NOW, queues, context)
        counts[action] = counts.get(action, 0) + 1
    # cam_a: 2 exits x batch 1..3; cam_b: 2 exits x batch 1 -> 8 actions, 750 draws each.
    expected = {Action('cam_a', e, b) for e in (0, 1) for b in (1, 2, 3)}
    expected |= {Action('cam_b', e, 1) for e in (0, 1)}
    assert set(counts) == expected
    assert all(600 < count < 900 for count in counts.values())


def test_random_feasible_reset_repeats_choices():
    context = make_context()
    queues = make_queues(context, {'cam_a': [5, 6, 7, 8], 'cam_b': [20, 21]})
    policy = make_policy('edgeserving_random', seed=11)
    first = [policy.decide(NOW, queues, context) for _ in range(20)]
    policy.reset()
    assert [policy.decide(NOW, queues, context) for _ in range(20)] == first


# --- simulation and overhead ----------------------------------------------------------------

def cifar_like_profile():
    """Three models with the shape of CIFAR ResNet-20/32/56 latencies on one CPU thread."""
    shapes = {  # model: [(exit, batch-1 ms, batch-10 ms, accuracy)]
        'resnet20': [('stage1', 1.1, 5.1, 0.40), ('stage2', 1.9, 8.4, 0.57),
                     ('final', 2.6, 11.2, 0.81)],
        'resnet32': [('stage1', 1.7, 8.2, 0.42), ('stage2', 3.0, 13.6, 0.58),
                     ('final', 4.2, 18.4, 0.83)],
        'resnet56': [('stage1', 2.8, 14.5, 0.43), ('stage2', 5.1, 24.0, 0.60),
                     ('final', 7.3, 32.7, 0.83)],
    }
    models = {}
    for model, exits in shapes.items():
        profiles = []
        for name, one_ms, ten_ms, accuracy in exits:
            latency = {}
            for batch in range(1, 11):
                ms = one_ms + (ten_ms - one_ms) * (batch - 1) / 9
                latency[batch] = LatencyStats(p50=ms, p95=1.15 * ms, p99=1.4 * ms)
            profiles.append(ExitProfile(name, latency, accuracy))
        models[model] = ModelProfile(model, profiles)
    return Profile(models=models)


def paper_like_streams(min_accuracy, rate_scale_hz):
    streams = {}
    for model, share in (('resnet20', 3), ('resnet32', 2), ('resnet56', 1)):
        streams[model] = StreamConfig(model, f'/{model}/image_raw', model, slo_ms=50.0,
                                      min_accuracy=min_accuracy, max_batch=10,
                                      queue_depth=30, expected_rate_hz=share * rate_scale_hz)
    return streams


def poisson_trace(streams, duration_s, seed):
    from edgeserving_ros.simulator import Arrival

    rng = random.Random(seed)
    trace = []
    for name, config in streams.items():
        time_s = rng.expovariate(config.expected_rate_hz)
        while time_s < duration_s:
            trace.append(Arrival(time_s, name))
            time_s += rng.expovariate(config.expected_rate_hz)
    trace.sort(key=lambda arrival: arrival.time_s)
    return trace


def test_overload_final_only_beats_clockwork():
    """At about 1.2 x final-exit capacity with final exits only, EdgeServing drops fewer
    requests than Clockwork-style scheduling (both drop doomed requests): it keeps batches
    large and lets the costliest requests go first."""
    profile = cifar_like_profile()
    streams = paper_like_streams(min_accuracy=0.8, rate_scale_hz=116.0)
    trace = poisson_trace(streams, duration_s=3.0, seed=5)
    ratios = {}
    for name in ('edgeserving', 'clockwork'):
        result = simulate(trace, streams, profile, make_policy(name),
                          service_time=ProfileLatencySampler(profile, noise=True, seed=5),
                          warmup_s=0.5)
        ratios[name] = result.metrics.totals()['violation_ratio']
    assert ratios['edgeserving'] < 0.8 * ratios['clockwork'], ratios


def test_decision_overhead_is_measured(record_property):
    """Time decide() for 3 streams x 3 exits x 10 batch sizes (90 candidates), 12 requests per
    queue. Recorded and printed, never asserted: timings depend on the host's load."""
    profile = cifar_like_profile()
    streams = paper_like_streams(min_accuracy=0.0, rate_scale_hz=100.0)
    context = SchedulingContext(streams, profile, LatencyModel(profile, 'p95'))
    rng = random.Random(3)
    queues = {}
    for name, config in streams.items():
        queue = StreamQueue(name, config.queue_depth)
        for _ in range(12):
            arrival_s = NOW - rng.uniform(0.0, 0.03)
            queue.push(Request(name, arrival_s, arrival_s + config.slo_s))
        queues[name] = queue
    policy = make_edgeserving()
    assert len(policy.candidate_terms(NOW, queues, context)) == 90
    for _ in range(100):
        policy.decide(NOW, queues, context)
    samples = []
    for _ in range(1000):
        started = time.perf_counter()
        policy.decide(NOW, queues, context)
        samples.append(time.perf_counter() - started)
    samples.sort()
    p50_us = samples[len(samples) // 2] * 1e6
    p99_us = samples[int(0.99 * len(samples))] * 1e6
    record_property('decision_p50_us', round(p50_us, 1))
    record_property('decision_p99_us', round(p99_us, 1))
    print(f'EdgeServing decision time, 90 candidates: p50 {p50_us:.0f} us, '
          f'p99 {p99_us:.0f} us')
