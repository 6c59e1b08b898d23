"""The four terms of the EdgeServing stability score, one named function each.

An action serves the `b` most urgent requests of one stream at one exit, starting at `now` and
keeping the device busy for the predicted latency `tau`, so the device is free at
`free_s = now + tau`. With `l_q` the latency of stream `q` alone at its fastest allowed exit
(the scheduler drops a request of `q` as doomed once `now + l_q > deadline`):

    misses_now    = #{ served i : d_i < now + tau_miss }               tau_miss: p99 latency
    misses_caused = #{ remaining j : now + l_q <= d_j < free_s + l_q }  doomed by the action
    pressure      = sum over remaining j that stay feasible of  W(d_j) / (d_j - free_s)
    accuracy_cost = b * max(0, a_final - a_exit)

    W(T) = sum_q [ C_q(n_q(T)) + lambda_q * max(0, T - slo_q - now) * L_q(B_q) / B_q ]
    C_q(n) = floor(n / B_q) * L_q(B_q) + L_q(n mod B_q),  L_q(0) = 0

`n_q(T)` counts the remaining requests of `q` with deadline <= T, `L_q(b)` is the latency of a
batch of `b` at the stream's final exit, `B_q` its max batch and `lambda_q` its arrival rate.
`W(T)` is the processor demand due by `T`: queued work priced in full batches at the final
exit, plus the arrivals expected early enough to be due by `T`. A request stays feasible when
it is not served by the action and not doomed at `free_s` (`d_j >= free_s + l_q`), so every
denominator is positive. docs/scheduler.md explains each choice.

These functions are the readable reference; `evaluate_candidates` computes the same four terms
for every candidate action of a decision at once with numpy, and the tests check that both
agree.
"""

import bisect
import dataclasses
import typing

import numpy as np


@dataclasses.dataclass
class StreamWork:
    """What the pressure term needs to know about one stream.

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


def pressure(streams: typing.Sequence[StreamWork], now: float, busy_s: float) -> float:
    """Return the sum over feasible remaining requests j of W(d_j) / (d_j - now - busy_s).

    Requests doomed at now + busy_s are left out, both as test points and as demand: the
    scheduler drops them, and `misses_caused` already counts them.
    """
    feasible = [feasible_deadlines(stream, now, busy_s) for stream in streams]
    total = 0.0
    for kept in feasible:
        for deadline_s in kept:
            counts = [bisect.bisect_right(other, deadline_s) for other in feasible]
            total += demand_s(streams, counts, now, deadline_s) / (deadline_s - now - busy_s)
    return total


def pressure_implied_misses(streams: typing.Sequence[StreamWork], now: float,
                            busy_s: float) -> float:
    """Return the fewest further misses the demand implies, in the fluid view of the queues.

    For each feasible remaining deadline T the excess W(T) - (T - now - busy_s), when
    positive, is work that cannot be done by T; removing it takes at least excess / c_max
    requests, with c_max the largest per-request price (L_q(B_q) / B_q) among the streams with
    work due by T. The result is the largest such count over T. It ignores batching losses and
    future bursts, so it is a lower estimate.
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


@dataclasses.dataclass
class CandidateTerms:
    """The four terms for every candidate action of one decision, index-aligned arrays."""

    misses_now: np.ndarray
    misses_caused: np.ndarray
    pressure: np.ndarray
    accuracy_cost: np.ndarray


def evaluate_candidates(now: float, deadlines: typing.Sequence[np.ndarray],
                        doom_latency_s: np.ndarray, priced_work: typing.Sequence[np.ndarray],
                        arrival_work_s: np.ndarray, stream_index: np.ndarray,
                        batch_size: np.ndarray, busy_s: np.ndarray, miss_busy_s: np.ndarray,
                        loss_per_request: np.ndarray) -> CandidateTerms:
    """Compute the four terms for K candidate actions over Q non-empty streams at once.

    `deadlines[q]` is stream q's ascending deadlines and `priced_work[q][n]` is C_q(n) for n up
    to len(deadlines[q]). `arrival_work_s(T)` is not passed as a function: `arrival_work_s[j]`
    is the expected-arrival work due by the j-th deadline of the merged, sorted deadlines of
    all streams. Per candidate k: `stream_index[k]`, `batch_size[k]`, the predicted busy time
    `busy_s[k]` (tau), the latency `miss_busy_s[k]` that misses now are judged at, and the
    per-request accuracy loss `loss_per_request[k]`.
    """
    stream_count = len(deadlines)
    candidates = len(busy_s)
    lengths = np.array([len(d) for d in deadlines])
    starts = np.cumsum(lengths) - lengths
    # Times relative to now; the subtraction is exact for deadlines near now (Sterbenz).
    relative = [d - now for d in deadlines]
    merged = np.concatenate(relative)
    order = np.argsort(merged, kind='stable')
    points_s = merged[order]

    doomed_at_free = np.empty((candidates, stream_count), dtype=np.int64)
    late_by_stream = np.empty((candidates, stream_count), dtype=np.int64)
    doomed_now = np.empty(stream_count, dtype=np.int64)
    due = np.empty((stream_count, len(points_s)), dtype=np.int64)
    for q in range(stream_count):
        doomed_at_free[:, q] = np.searchsorted(relative[q], busy_s + doom_latency_s[q])
        late_by_stream[:, q] = np.searchsorted(relative[q], miss_busy_s)
        doomed_now[q] = np.searchsorted(relative[q], doom_latency_s[q])
        due[q] = np.searchsorted(relative[q], points_s, 'right')
    rows = np.arange(candidates)
    late_in_batch = np.minimum(late_by_stream[rows, stream_index], batch_size)

    # Served and doomed requests are both prefixes of their queue (deadline order).
    served = np.zeros((candidates, stream_count), dtype=np.int64)
    served[rows, stream_index] = batch_size
    caused = np.maximum(doomed_at_free - np.maximum(served, doomed_now), 0).sum(axis=1)
    removed = np.maximum(served, doomed_at_free)

    # Test points: every queued deadline, merged over streams, with its stream and queue rank.
    owner = np.repeat(np.arange(stream_count), lengths)[order]
    rank = order - starts[owner]

    # remaining_work[row_offset[q] + r, j]: work of stream q due by point j once the first r
    # requests of q are gone; W(T_j) of a candidate sums one such row per stream.
    row_stream = np.repeat(np.arange(stream_count), lengths + 1)
    row_offset = np.cumsum(lengths + 1) - (lengths + 1)
    row_removed = np.arange(len(row_stream)) - row_offset[row_stream]
    work_offset = np.cumsum([0] + [len(w) for w in priced_work[:-1]])
    left = np.maximum(due[row_stream] - row_removed[:, None], 0) + work_offset[row_stream, None]
    remaining_work = np.concatenate(priced_work)[left]

    work_s = arrival_work_s + remaining_work[removed[:, 0]]
    for q in range(1, stream_count):
        work_s += remaining_work[removed[:, q] + row_offset[q]]
    available_s = points_s - busy_s[:, None]
    feasible = rank >= removed[:, owner]
    ratio = np.divide(work_s, available_s, out=np.zeros_like(work_s), where=feasible)

    return CandidateTerms(misses_now=late_in_batch.astype(float),
                          misses_caused=caused.astype(float), pressure=ratio.sum(axis=1),
                          accuracy_cost=batch_size * loss_per_request)
