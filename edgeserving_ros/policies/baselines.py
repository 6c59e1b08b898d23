"""Baseline scheduling rules that EdgeServing is compared with.

Every rule reads the queues through the `Policy` interface and returns one action. None of them
changes a queue. Ties between streams go to the stream listed first in the configuration, so
every decision is deterministic.
"""

from edgeserving_ros.policies.base import (Action, Policy, Queues, SchedulingContext,
                                           non_empty_streams)
from edgeserving_ros.requests import Request

# Tolerance for comparing simulated times that were reached by summing float steps.
_TIME_EPSILON_S = 1e-9


def largest_batch(queues: Queues, stream: str, context: SchedulingContext) -> int:
    """Return min(queue length, the stream's max_batch)."""
    return min(len(queues[stream]), context.streams[stream].max_batch)


def largest_on_time_batch(now: float, queues: Queues, stream: str, exit_index: int,
                          context: SchedulingContext) -> int | None:
    """Return the largest batch whose completion at `exit_index` meets the head's deadline.

    The head has the earliest deadline of the queue, so the batch of the `k` most urgent
    requests is on time when `now + L(exit, k)` reaches no later than the head's deadline.
    Returns None when not even a batch of one is on time. Sizes are tried from the largest down,
    because profiled latencies need not grow monotonically with the batch size.
    """
    deadline_s = queues[stream].head().deadline_s
    for batch_size in range(largest_batch(queues, stream, context), 0, -1):
        if now + context.latency_s(stream, exit_index, batch_size) <= deadline_s:
            return batch_size
    return None


def _head(queues: Queues, stream: str) -> Request:
    return queues[stream].head()


class FifoPolicy(Policy):
    """Serve the stream whose most urgent request arrived first, at the final exit.

    The batch is the largest one the stream allows, min(queue length, max_batch). Deadlines play
    no part beyond the order inside each queue, and no request is dropped.
    """

    name = 'fifo'

    def decide(self, now: float, queues: Queues, context: SchedulingContext) -> Action | None:
        streams = non_empty_streams(queues)
        if not streams:
            return None
        stream = min(streams, key=lambda s: (_head(queues, s).arrival_s,
                                             _head(queues, s).request_id))
        return Action(stream, context.final_exit(stream), largest_batch(queues, stream, context))


class RoundRobinPolicy(Policy):
    """Serve the non-empty streams in turn, in configuration order, at the final exit.

    After serving a stream, the next decision starts looking at the stream that follows it and
    skips empty ones. The batch is min(queue length, max_batch), and no request is dropped.
    """

    name = 'round_robin'

    def __init__(self):
        self._next_position = 0

    def reset(self) -> None:
        self._next_position = 0

    def decide(self, now: float, queues: Queues, context: SchedulingContext) -> Action | None:
        names = list(queues)
        for offset in range(len(names)):
            position = (self._next_position + offset) % len(names)
            stream = names[position]
            if queues[stream]:
                self._next_position = position + 1
                return Action(stream, context.final_exit(stream),
                              largest_batch(queues, stream, context))
        return None


class EdfPolicy(Policy):
    """Serve the stream whose head has the earliest deadline, at the final exit.

    The batch is the largest one, up to min(queue length, max_batch), whose predicted completion
    meets the head's deadline. When even a single request would be late, the head is lost
    anyway, so the batch is the largest one, which is the cheapest per request and shrinks a
    backlog. A fallback to batch 1 would serve at the highest per-request cost and never catch
    up.
    No request is dropped, so late requests are served late.
    """

    name = 'edf'

    def decide(self, now: float, queues: Queues, context: SchedulingContext) -> Action | None:
        streams = non_empty_streams(queues)
        if not streams:
            return None
        stream = min(streams, key=lambda s: _head(queues, s).sort_key())
        final = context.final_exit(stream)
        batch_size = (largest_on_time_batch(now, queues, stream, final, context)
                      or largest_batch(queues, stream, context))
        return Action(stream, final, batch_size)


class ClockworkPolicy(Policy):
    """Clockwork-style scheduling: drop the doomed, serve the earliest latest start time first.

    A request is doomed when it would be late even if served alone now at the final exit, the
    only exit this policy uses. The latest start time of a stream is its head's deadline minus
    the final exit's latency at batch 1, and the stream with the earliest one is served. The
    batch is the largest one whose every request is on time at the final exit. Because the queue
    is in deadline order, that is the condition on the head. When no batch is on time, the batch
    is 1.
    """

    name = 'clockwork'
    drops_doomed = True

    def is_doomed(self, request: Request, now: float, context: SchedulingContext) -> bool:
        stream = request.stream
        return now + context.latency_s(stream, context.final_exit(stream), 1) > request.deadline_s

    def decide(self, now: float, queues: Queues, context: SchedulingContext) -> Action | None:
        streams = non_empty_streams(queues)
        if not streams:
            return None

        def latest_start_s(stream: str) -> float:
            single_s = context.latency_s(stream, context.final_exit(stream), 1)
            return _head(queues, stream).deadline_s - single_s

        stream = min(streams, key=latest_start_s)
        final = context.final_exit(stream)
        batch_size = largest_on_time_batch(now, queues, stream, final, context) or 1
        return Action(stream, final, batch_size)


class TritonPolicy(Policy):
    """Triton-style dynamic batching per stream with a queue delay and a queue timeout.

    A stream's batch is ready when its queue contains max_batch requests or its oldest request
    has waited `max_queue_delay_ms` since it was received. Among ready streams, the one whose
    oldest request was received first is served, with min(queue length, max_batch) requests at
    the final exit. While no stream is ready the policy returns None and the device waits.
    The queue timeout equals the SLO: a request still queued at its deadline is dropped
    (`drops_doomed` with the `is_doomed` test below). This matches a Triton queue policy with
    `timeout_action: REJECT` and `default_timeout_microseconds` set to the SLO. The batching
    delay is measured from `receive_s`, the instant the request entered the queue.

    NOTE: Triton batches per model, but an action serves one stream, so streams that share a
    model are batched separately here.
    """

    name = 'triton'
    drops_doomed = True

    def __init__(self, max_queue_delay_ms: float = 5.0):
        if not max_queue_delay_ms >= 0.0:
            raise ValueError(f'max_queue_delay_ms is {max_queue_delay_ms}; expected a value '
                             '>= 0')
        self.max_queue_delay_ms = max_queue_delay_ms

    def is_doomed(self, request: Request, now: float, context: SchedulingContext) -> bool:
        return now >= request.deadline_s

    def decide(self, now: float, queues: Queues, context: SchedulingContext) -> Action | None:
        delay_s = self.max_queue_delay_ms / 1000.0
        ready = []
        for stream in non_empty_streams(queues):
            oldest = min(queues[stream], key=lambda r: (r.receive_s, r.request_id))
            full = len(queues[stream]) >= context.streams[stream].max_batch
            if full or now - oldest.receive_s >= delay_s - _TIME_EPSILON_S:
                ready.append(((oldest.receive_s, oldest.request_id), stream))
        if not ready:
            return None
        stream = min(ready, key=lambda entry: entry[0])[1]
        return Action(stream, context.final_exit(stream), largest_batch(queues, stream, context))


class GreedyExitPolicy(Policy):
    """Serve the least-slack stream at the deepest exit that still meets its head's deadline.

    The slack of a stream is its head's deadline minus now minus the final exit's latency at
    batch 1. For that stream the batch is the largest size, up to min(queue length, max_batch),
    for which some allowed exit meets the head's deadline. The exit is the deepest allowed one
    that meets it at that size, so a large batch is preferred to a deep exit. When no allowed
    exit meets the deadline even at batch 1, the stream's full batch goes to the shallowest
    allowed exit, which clears late work at the lowest cost. No request is dropped.
    """

    name = 'greedy_exit'

    def decide(self, now: float, queues: Queues, context: SchedulingContext) -> Action | None:
        streams = non_empty_streams(queues)
        if not streams:
            return None

        def slack_s(stream: str) -> float:
            single_s = context.latency_s(stream, context.final_exit(stream), 1)
            return _head(queues, stream).deadline_s - now - single_s

        stream = min(streams, key=slack_s)
        exits = context.allowed_exits(stream)
        deadline_s = _head(queues, stream).deadline_s
        full_batch = largest_batch(queues, stream, context)
        for batch_size in range(full_batch, 0, -1):
            for exit_index in reversed(exits):
                if now + context.latency_s(stream, exit_index, batch_size) <= deadline_s:
                    return Action(stream, exit_index, batch_size)
        return Action(stream, exits[0], full_batch)
