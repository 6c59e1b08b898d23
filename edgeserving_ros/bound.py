"""An upper bound on the requests any policy can finish on time, for one trace.

The relaxation: one machine, preemption allowed, and each request `j` needs only `p_j`, the
cheapest per-request cost its stream can reach, min over allowed exits `e` and batch sizes
`b <= max_batch` of L(model, e, b) / b. It must run inside [r_j, d_j] (arrival, deadline).
Any real schedule maps into it. A batch of `b` queued requests that starts at `s` and ends at
`s + L(e, b)` can give each of its requests a private slice of length L(e, b) / b >= p_j inside
[s, s + L(e, b)], which lies inside [r_j, d_j] of every on-time request. Batches never overlap
on the device, so the on-time requests of any policy form a set that the relaxation can also
finish on time.

Maximising that set exactly (1 | r_j, pmtn | sum U_j) takes O(n^4) time with Baptiste's
algorithm (1999), too slow for traces of thousands of requests. This module returns the optimum
of its linear-programming relaxation instead, which is never below the integer optimum:

    maximise sum_j f_j / p_j  over feasible preemptive processing amounts 0 <= f_j <= p_j,
    where f_j is processed inside [r_j, d_j] and the machine does one unit of work per second.

The feasible amount vectors form a polymatroid (a transversal one: time is matched to jobs whose
windows are intervals), so the greedy algorithm is optimal for a linear objective with
non-negative weights (Edmonds 1970). It takes requests by weight 1 / p_j, cheapest first, and
gives each as much work as the machine can still add. Requests of one stream share p_j, so
with the streams' costs c_1 < c_2 < ... and V_k the maximum total work that requests of the
k cheapest costs can receive, the optimum is sum_k (V_k - V_(k-1)) / c_k. Each V_k is the work
done by preemptive earliest-deadline-first scheduling that abandons a request at its deadline,
which maximises the total work for interval windows (Glover's rule for convex bipartite
matching, 1967). The cost is O(K n log n) for K distinct costs.
"""

import heapq
import math
import typing

from edgeserving_ros.config import StreamConfig
from edgeserving_ros.policies.base import SchedulingContext
from edgeserving_ros.profile import LatencyModel, Profile
from edgeserving_ros.simulator import Arrival

# Slack for float round-off before the bound is rounded down to a whole number of requests.
_COUNT_EPSILON = 1e-6
# Slack for float round-off when a job's processing time equals its window (1 ns).
_TIME_EPSILON_S = 1e-9


class Job(typing.NamedTuple):
    """One request of the relaxation: release and deadline (s) and processing time (s)."""

    release_s: float
    deadline_s: float
    processing_s: float


def cheapest_request_cost_s(stream: StreamConfig, context: SchedulingContext,
                            latency: LatencyModel) -> float:
    """Return min over allowed exits e and batch sizes b <= max_batch of L(e, b) / b."""
    return min(latency.uncorrected_s(stream.model, exit_index, batch_size) / batch_size
               for exit_index in context.allowed_exits(stream.name)
               for batch_size in range(1, stream.max_batch + 1))


def relaxation_jobs(trace: typing.Iterable[Arrival], streams: typing.Mapping[str, StreamConfig],
                    profile: Profile, context: SchedulingContext | None = None,
                    quantile: str = 'p50', latency_scale: float = 1.0,
                    warmup_s: float = -math.inf) -> list[Job]:
    """Return the relaxation's jobs for the requests of `trace` that arrive at or after warmup_s.

    Latencies are the profile's `quantile`, uncorrected, times `latency_scale`. The exits a
    stream may use come from `context` (its min_accuracy), or from a context built here.
    """
    latency = LatencyModel(profile, quantile)
    if context is None:
        context = SchedulingContext(streams, profile, latency)
    costs_s = {name: latency_scale * cheapest_request_cost_s(config, context, latency)
               for name, config in streams.items()}
    return [Job(arrival.time_s, arrival.time_s + streams[arrival.stream].slo_s,
                costs_s[arrival.stream])
            for arrival in trace if arrival.time_s >= warmup_s]


def max_work_s(jobs: typing.Iterable[Job]) -> float:
    """Return the maximum work one machine can do on the jobs, each up to its processing time.

    Preemptive earliest-deadline-first: at every instant the released, unfinished job with the
    earliest deadline runs, and a job is abandoned at its deadline with its work so far counted.
    """
    pending = sorted(jobs)
    heap: list[list[float]] = []
    now = -math.inf
    work_s = 0.0
    index = 0
    while index < len(pending) or heap:
        if not heap:
            now = max(now, pending[index].release_s)
        while index < len(pending) and pending[index].release_s <= now:
            job = pending[index]
            heapq.heappush(heap, [job.deadline_s, job.processing_s])
            index += 1

        deadline_s, remaining_s = heap[0]
        if deadline_s <= now:
            heapq.heappop(heap)
            continue
        next_release_s = pending[index].release_s if index < len(pending) else math.inf
        finish_s = now + remaining_s
        if finish_s <= min(deadline_s, next_release_s):
            # Completion is decided here, not from the remaining time, which float
            # round-off could leave a hair above zero.
            work_s += remaining_s
            heapq.heappop(heap)
            now = finish_s
            continue
        stop_s = min(deadline_s, next_release_s)
        work_s += stop_s - now
        heap[0][1] = remaining_s - (stop_s - now)
        now = stop_s
        if now >= deadline_s:
            heapq.heappop(heap)
    return work_s


def fractional_on_time_bound(jobs: typing.Sequence[Job]) -> float:
    """Return the LP optimum max sum_j f_j / p_j described in the module docstring."""
    costs_s = sorted({job.processing_s for job in jobs})
    bound = 0.0
    previous_work_s = 0.0
    for cost_s in costs_s:
        if cost_s <= 0.0:
            # Free requests take no machine time, so each finishes on time.
            bound += sum(1 for job in jobs if job.processing_s == cost_s)
            continue
        work_s = max_work_s(job for job in jobs if job.processing_s <= cost_s)
        bound += (work_s - previous_work_s) / cost_s
        previous_work_s = work_s
    return bound


def on_time_upper_bound(trace: typing.Sequence[Arrival],
                        streams: typing.Mapping[str, StreamConfig], profile: Profile,
                        context: SchedulingContext | None = None, quantile: str = 'p50',
                        latency_scale: float = 1.0, warmup_s: float = -math.inf) -> int:
    """Return an upper bound on the on-time requests of any policy serving `trace`.

    The bound holds for runs whose every batch takes at least `latency_scale` times the
    profile's `quantile` latency (the uncorrected profile numbers), with the exits that
    `context` allows (built from `streams` when omitted). For the simulator's deterministic
    p50 service times use the defaults. Its noisy sampler draws down to 0.8 x p50 times its
    slowdown, so pass that product as latency_scale. With `warmup_s`, only requests arriving at
    or after it count, as in `MetricsRecorder`.
    The result is the sum of the LP optima of the independent components, each rounded down.
    It is an upper bound on the exact preemptive optimum, which is itself an upper bound on
    every real schedule (see the module docstring).
    """
    jobs = relaxation_jobs(trace, streams, profile, context, quantile, latency_scale, warmup_s)
    return jobs_upper_bound(jobs)


def jobs_upper_bound(jobs: typing.Iterable[Job]) -> int:
    """Return an upper bound on the jobs that one preemptive machine can finish on time.

    Jobs longer than their window can never finish and are left out. The rest are split into
    independent components, and each component's LP optimum is rounded down.
    """
    possible = [job for job in jobs
                if job.processing_s <= job.deadline_s - job.release_s + _TIME_EPSILON_S]
    return sum(min(len(component), math.floor(fractional_on_time_bound(component)
                                              + _COUNT_EPSILON))
               for component in independent_components(possible))


def independent_components(jobs: typing.Iterable[Job]) -> list[list[Job]]:
    """Split jobs into groups whose windows' unions are disjoint intervals.

    Jobs of different groups never compete for the machine, so the optimum is the sum of the
    groups' optima, and rounding each group's LP bound down separately keeps a valid bound
    that is never looser than rounding the sum.
    """
    components: list[list[Job]] = []
    end_s = -math.inf
    for job in sorted(jobs):
        if job.release_s >= end_s:
            components.append([])
        components[-1].append(job)
        end_s = max(end_s, job.deadline_s)
    return components
