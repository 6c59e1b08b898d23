"""The four terms of the EdgeServing stability score, one named function each.

An action serves the `b` most urgent requests of one stream at one exit, starting at `now` and
keeping the device busy for the predicted latency `tau`, so the device is free at
`f = now + tau`. With `l_q` the latency of stream `q` alone at its fastest allowed exit (the
scheduler drops a request of `q` as doomed once `now + l_q > deadline`):

    misses_now    = #{ served i : d_i < f }
    misses_caused = #{ remaining j : now + l_q <= d_j < f + l_q }         doomed by the action
                    + sum_q max(0, left_q + lambda_q tau - depth_q - doomed_q)      pushed out
    pressure      = sum over feasible j of risk(W(d_j) / (d_j - f)),  risk(r) = r^2 / (1 + r^2)
    accuracy_cost = b * max(0, a_final - a_exit)

    W(T) = sum_q [ C_q(n_q(T)) + lambda_q * max(0, T - slo_q - now) * L_q(B_q) / B_q ]
    C_q(n) = floor(n / B_q) * L_q(B_q) + L_q(n mod B_q),  L_q(0) = 0

A request is remaining when the action does not serve it, and feasible when it is remaining
and not doomed at `f` (`d_j >= f + l_q`), so every denominator is positive. `left_q` counts
the remaining requests of `q`, `doomed_q` those of them doomed at `f`, `depth_q` is the queue
depth and `lambda_q` the arrival rate: arrivals during the action push the oldest requests out
of a full queue. `n_q(T)` counts the feasible requests of `q` with deadline <= T, `L_q(b)` is
the latency of a batch of `b` at the stream's final exit and `B_q` its max batch. `W(T)` is
the processor demand due by `T`: queued work priced in full batches at the final exit, plus
the arrivals expected early enough to be due by `T`. docs/scheduler.md explains each choice.

The scalar functions are the readable reference. `evaluate_candidates` computes the same four
terms for every candidate action of a decision at once with numpy, and the tests check that
both agree. Comparisons are made on times relative to `now`, in the same order in both paths,
so they round alike.
"""

import bisect
import dataclasses
import functools
import typing

import numpy as np


@dataclasses.dataclass
class StreamWork:
    """One stream's inputs to the pressure and implied-misses functions.

    `deadlines_s` are the remaining (not served) requests, ascending. `batch_latency_s[b - 1]`
    is the predicted latency of a batch of `b` at the exit the work is priced at, for b = 1 up
    to the max batch. `doom_latency_s` is `l_q`, the latency of one request at the fastest
    allowed exit.
    """

    deadlines_s: typing.Sequence[float]
    batch_latency_s: typing.Sequence[float]
    doom_latency_s: float
    arrival_rate_hz: float = 0.0
    slo_s: float = 0.0


def misses_now(batch_deadlines_s: typing.Iterable[float], now: float, busy_s: float) -> int:
    """Count the requests of the served batch that end late: deadline before now + busy_s."""
    return sum(1 for deadline_s in batch_deadlines_s if deadline_s - now < busy_s)


def misses_caused(remaining: typing.Iterable[tuple[float, float]], now: float,
                  busy_s: float) -> int:
    """Count remaining requests that are not doomed now but are doomed when the device is free.

    `remaining` yields (deadline_s, doom_latency_s) for every request the action leaves queued,
    in any queue. A request is doomed at time `x` when `x + doom_latency_s > deadline_s`, and
    the device is free at `now + busy_s`.
    """
    return sum(1 for deadline_s, doom_latency_s in remaining
               if doom_latency_s <= deadline_s - now < busy_s + doom_latency_s)


def overflow_drops(queued_after: int, doomed_after: int, arrival_rate_hz: float,
                   max_depth: int, busy_s: float) -> float:
    """Return the requests that arrivals during the action push out of a full queue.

    `queued_after` requests stay in the queue (it was not served, or only partly), and
    `doomed_after` of them are doomed when the device is free. While the device is busy,
    `arrival_rate_hz * busy_s` requests are expected; whatever exceeds `max_depth` pushes out
    the oldest requests (drop-oldest). Doomed requests are the oldest and are lost anyway, so
    only pushes beyond them count.
    """
    pushed = max(0.0, queued_after + arrival_rate_hz * busy_s - max_depth)
    return max(0.0, pushed - doomed_after)


def batched_work_s(count: int, batch_latency_s: typing.Sequence[float]) -> float:
    """Return C(n): the time to serve `count` requests in full batches plus one partial batch."""
    if count <= 0:
        return 0.0
    max_batch = len(batch_latency_s)
    full_batches, rest = divmod(count, max_batch)
    work_s = full_batches * batch_latency_s[-1]
    if rest:
        work_s += batch_latency_s[rest - 1]
    return work_s


def demand_s(streams: typing.Sequence[StreamWork], counts: typing.Sequence[int], now: float,
             horizon_s: float) -> float:
    """Return W(T) for T = horizon_s, given each stream's count of remaining requests due by T."""
    work_s = 0.0
    for stream, count in zip(streams, counts):
        work_s += batched_work_s(count, stream.batch_latency_s)
    for stream in streams:
        expected = stream.arrival_rate_hz * max(0.0, horizon_s - stream.slo_s - now)
        if expected > 0.0:
            max_batch = len(stream.batch_latency_s)
            work_s += expected * stream.batch_latency_s[-1] / max_batch
    return work_s


def feasible_deadlines(stream: StreamWork, now: float, busy_s: float) -> list[float]:
    """Return the stream's remaining deadlines that are not doomed at now + busy_s."""
    return [d for d in stream.deadlines_s if d - now >= busy_s + stream.doom_latency_s]


def demand_risk(ratio: float) -> float:
    """Return r^2 / (1 + r^2) for a demand ratio r: convex below 1, 0.5 at 1, below 1 always."""
    square = ratio * ratio
    return square / (1.0 + square)


def pressure(streams: typing.Sequence[StreamWork], now: float, busy_s: float) -> float:
    """Return the sum over feasible remaining requests j of demand_risk(W(d_j) / (d_j - f)).

    `f = now + busy_s`. Requests doomed at `f` are left out, both as test points and as
    demand: the scheduler drops them, and `misses_caused` already counts them.
    """
    feasible = [feasible_deadlines(stream, now, busy_s) for stream in streams]
    total = 0.0
    for kept in feasible:
        for deadline_s in kept:
            counts = [bisect.bisect_right(other, deadline_s) for other in feasible]
            work_s = demand_s(streams, counts, now, deadline_s)
            total += demand_risk(work_s / (deadline_s - now - busy_s))
    return total


def pressure_implied_misses(streams: typing.Sequence[StreamWork], now: float,
                            busy_s: float) -> float:
    """Return the fewest further misses the demand implies, in the fluid view of the queues.

    For each feasible remaining deadline T, a positive excess W(T) - (T - now - busy_s) is work
    that cannot be done by T. Removing it takes at least excess / c_max requests, where c_max
    is the largest per-request price L_q(B_q) / B_q among the streams with work due by T. The
    result is the largest such count over T. It ignores batching losses and future bursts, so
    it is a lower estimate.
    """
    feasible = [feasible_deadlines(stream, now, busy_s) for stream in streams]
    per_request_s = [stream.batch_latency_s[-1] / len(stream.batch_latency_s)
                     for stream in streams]
    implied = 0.0
    for kept in feasible:
        for deadline_s in kept:
            counts = [bisect.bisect_right(other, deadline_s) for other in feasible]
            excess_s = demand_s(streams, counts, now, deadline_s) - (deadline_s - now - busy_s)
            if excess_s <= 0.0:
                continue
            c_max = max(cost for cost, count in zip(per_request_s, counts) if count)
            implied = max(implied, excess_s / c_max)
    return implied


def exit_accuracy_loss(exit_accuracy: float | None, final_accuracy: float | None,
                       is_final: bool) -> float:
    """Return the accuracy one request loses at this exit against the final exit.

    The final exit loses nothing. An early exit with no measured accuracy (an untrained head)
    counts as accuracy 0; a final exit with no measured accuracy counts as 1. So unknown early
    exits are charged the most any exit can lose, and they are used only to avoid misses.
    """
    if is_final:
        return 0.0
    reference = 1.0 if final_accuracy is None else final_accuracy
    reached = 0.0 if exit_accuracy is None else exit_accuracy
    return max(0.0, reference - reached)


def accuracy_cost(batch_size: int, loss_per_request: float) -> float:
    """Return the accuracy lost by a batch: batch size times the per-request loss."""
    return batch_size * loss_per_request


class _Layout(typing.NamedTuple):
    """Index arrays that depend only on the queue lengths of a decision."""

    lengths: np.ndarray
    starts: np.ndarray
    owner: np.ndarray
    row_stream: np.ndarray
    row_offset: np.ndarray
    row_removed: np.ndarray


@functools.lru_cache(maxsize=4096)
def _layout(lengths: tuple[int, ...]) -> _Layout:
    sizes = np.array(lengths)
    streams = np.arange(len(sizes))
    row_stream = np.repeat(streams, sizes + 1)
    row_offset = np.cumsum(sizes + 1) - (sizes + 1)
    return _Layout(lengths=sizes, starts=np.cumsum(sizes) - sizes,
                   owner=np.repeat(streams, sizes), row_stream=row_stream,
                   row_offset=row_offset,
                   row_removed=np.arange(len(row_stream)) - row_offset[row_stream])


@dataclasses.dataclass
class CandidateTerms:
    """The four terms for every candidate action of one decision, index-aligned arrays."""

    misses_now: np.ndarray
    misses_caused: np.ndarray
    pressure: np.ndarray
    accuracy_cost: np.ndarray


def evaluate_candidates(now: float, deadlines: typing.Sequence[np.ndarray],
                        doom_latency_s: np.ndarray, priced_work: typing.Sequence[np.ndarray],
                        arrival_work_s: np.ndarray, arrival_rate_hz: np.ndarray,
                        max_depth: np.ndarray, stream_index: np.ndarray,
                        batch_size: np.ndarray, busy_s: np.ndarray,
                        loss_per_request: np.ndarray) -> CandidateTerms:
    """Compute the four terms for K candidate actions over Q streams at once.

    Per stream q (empty queues included): `deadlines[q]`, its ascending deadlines;
    `priced_work[q][n]`, C_q(n) for n up to len(deadlines[q]); `doom_latency_s[q]`,
    `arrival_rate_hz[q]` and `max_depth[q]`. `arrival_work_s[j]` is the expected-arrival work
    due by the j-th deadline of the merged, sorted deadlines of all streams. Per candidate k:
    `stream_index[k]`, `batch_size[k]`, the predicted busy time `busy_s[k]` (tau) and the
    per-request accuracy loss `loss_per_request[k]`.
    """
    stream_count = len(deadlines)
    candidates = len(busy_s)
    layout = _layout(tuple(len(d) for d in deadlines))
    lengths = layout.lengths
    # Times relative to now, as in the scalar functions, so both paths round alike. The
    # subtraction is exact whenever now >= deadline / 2 (Sterbenz lemma).
    relative = [d - now for d in deadlines]
    merged = np.concatenate(relative)
    order = merged.argsort(kind='stable')
    points_s = merged[order]

    doomed_at_free = np.empty((candidates, stream_count), dtype=np.int64)
    late_by_stream = np.empty((candidates, stream_count), dtype=np.int64)
    doomed_now = np.empty(stream_count, dtype=np.int64)
    due = np.empty((stream_count, len(points_s)), dtype=np.int64)
    for q in range(stream_count):
        queue_s = relative[q]
        doomed_at_free[:, q] = queue_s.searchsorted(busy_s + doom_latency_s[q])
        late_by_stream[:, q] = queue_s.searchsorted(busy_s)
        doomed_now[q] = queue_s.searchsorted(doom_latency_s[q])
        due[q] = queue_s.searchsorted(points_s, 'right')
    rows = np.arange(candidates)
    late_in_batch = np.minimum(late_by_stream[rows, stream_index], batch_size)

    # Served and doomed requests are both prefixes of their queue (deadline order).
    served = np.zeros((candidates, stream_count), dtype=np.int64)
    served[rows, stream_index] = batch_size
    caused = np.maximum(doomed_at_free - np.maximum(served, doomed_now), 0).sum(axis=1)
    removed = np.maximum(served, doomed_at_free)
    pushed = np.maximum(lengths - served + busy_s[:, None] * arrival_rate_hz - max_depth, 0.0)
    pushed = np.maximum(pushed - (removed - served), 0.0)

    # Test points: every queued deadline, merged over streams, with its stream and queue rank.
    owner = layout.owner[order]
    rank = order - layout.starts[owner]

    # remaining_work[row_offset[q] + r, j]: work of stream q due by point j once the first r
    # requests of q are gone; W(T_j) of a candidate sums one such row per stream. Row
    # row_offset[q] + r also indexes C_q(r) in the concatenated priced_work.
    row_stream, row_offset = layout.row_stream, layout.row_offset
    left = np.maximum(due[row_stream] - layout.row_removed[:, None], 0)
    left += row_offset[row_stream, None]
    remaining_work = np.concatenate(priced_work)[left]

    # In-place steps below: these (candidates x points) arrays dominate the decision time.
    work_s = remaining_work[removed[:, 0]]
    for q in range(1, stream_count):
        work_s += remaining_work[removed[:, q] + row_offset[q]]
    if arrival_work_s.any():
        work_s += arrival_work_s
    available_s = points_s - busy_s[:, None]
    available_s[rank < removed[:, owner]] = np.inf
    ratio = np.divide(work_s, available_s, out=work_s)
    np.square(ratio, out=ratio)
    risk = np.divide(ratio, np.add(ratio, 1.0, out=available_s), out=ratio)

    return CandidateTerms(misses_now=late_in_batch.astype(float),
                          misses_caused=caused + pushed.sum(axis=1),
                          pressure=risk.sum(axis=1),
                          accuracy_cost=batch_size * loss_per_request)
