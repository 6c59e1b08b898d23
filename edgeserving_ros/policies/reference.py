"""The scheduling rule of the EdgeServing authors' public experiment code, as a `Policy`."""

import math

from edgeserving_ros.policies.base import (Action, Policy, Queues, SchedulingContext,
                                           non_empty_streams)
from edgeserving_ros.requests import Request

# Cap of one request's urgency term, so a single very late request cannot dominate the sum.
URGENCY_CAP = 10.0


def urgency(wait_s: float, slo_s: float) -> float:
    """Return min(exp(wait / SLO - 1), 10): about 0.37 at no wait, 1 at the SLO."""
    if slo_s <= 0.0:
        return URGENCY_CAP
    exponent = wait_s / slo_s - 1.0
    if exponent >= math.log(URGENCY_CAP):
        return URGENCY_CAP
    return math.exp(exponent)


def request_slo_s(request: Request) -> float:
    """Return the SLO a request was admitted with (its deadline minus its arrival)."""
    return request.deadline_s - request.arrival_s


class ReferencePolicy(Policy):
    """Serve the queue whose service leaves the least urgency in all the other requests.

    For every non-empty queue the candidate batch is the min(queue length, max_batch) most
    urgent requests. Its exit is the deepest allowed one for which the batch's maximum wait plus
    the predicted latency fits the SLO, else the shallowest allowed one. That latency is added
    to the wait of every request the candidate leaves queued (the rest of its own queue and all
    other queues), and the candidate's score is the sum of `urgency(wait, SLO)` over them, with
    each request's own SLO. The candidate with the lowest score is served; ties go to the stream
    listed first. Waits count from `arrival_s`. Nothing is dropped.

    NOTE: the authors use the p95 latency; here predictions come from the context's latency
    model, which is p95 with online correction by default (`latency_quantile`).
    """

    name = 'reference'

    def decide(self, now: float, queues: Queues, context: SchedulingContext) -> Action | None:
        best_action = None
        best_score = math.inf
        for stream in non_empty_streams(queues):
            action, latency_s = self._candidate(now, queues, stream, context)
            score = self._score_after(now, queues, action, latency_s)
            if score < best_score:
                best_action, best_score = action, score
        return best_action

    @staticmethod
    def _candidate(now: float, queues: Queues, stream: str,
                   context: SchedulingContext) -> tuple[Action, float]:
        queue = queues[stream]
        batch_size = min(len(queue), context.streams[stream].max_batch)
        batch = queue.peek(batch_size)
        max_wait_s = max(now - request.arrival_s for request in batch)
        slo_s = context.streams[stream].slo_s

        exits = context.allowed_exits(stream)
        for exit_index in reversed(exits):
            latency_s = context.latency_s(stream, exit_index, batch_size)
            if max_wait_s + latency_s <= slo_s:
                return Action(stream, exit_index, batch_size), latency_s
        shallowest = exits[0]
        return (Action(stream, shallowest, batch_size),
                context.latency_s(stream, shallowest, batch_size))

    @staticmethod
    def _score_after(now: float, queues: Queues, action: Action, latency_s: float) -> float:
        score = 0.0
        for stream, queue in queues.items():
            skipped = action.batch_size if stream == action.stream else 0
            for request in queue.peek(len(queue))[skipped:]:
                wait_s = now - request.arrival_s + latency_s
                score += urgency(wait_s, request_slo_s(request))
        return score
