"""The serving loop's decision step, shared by the ROS node and the simulator.

Both call `submit` for every accepted frame, `next_batch` when the device is idle, and
`complete` (or `fail`) when the batch is done. Only the clock differs: node time in the node,
simulated time in the simulator, so both run the same policy code on the same queue state.
"""

import collections
import dataclasses
import time
import typing

from edgeserving_ros.metrics import (MetricsRecorder, OUTCOME_DROPPED_DOOMED,
                                     OUTCOME_DROPPED_OVERFLOW, OUTCOME_FAILED)
from edgeserving_ros.policies.base import Action, Policy, SchedulingContext
from edgeserving_ros.requests import Request, StreamQueue


@dataclasses.dataclass
class Batch:
    """Requests of one stream popped for one inference at one exit."""

    action: Action
    model: str
    exit_name: str
    requests: list[Request]
    start_s: float
    predicted_latency_s: float

    @property
    def stream(self) -> str:
        return self.action.stream

    @property
    def exit_index(self) -> int:
        return self.action.exit_index


@dataclasses.dataclass
class Outcome:
    request: Request
    finish_s: float
    on_time: bool


class Scheduler:
    """Owns the queues and applies a policy's decisions to them.

    With `drop_doomed` (the default), policies that declare `drops_doomed` get doomed requests
    removed and counted before each decision. With it off, those requests stay queued and are
    served late. Decision times of the policy (wall clock, perf_counter) are kept for overhead
    reports, the last `decision_samples` of them.
    """

    def __init__(self, policy: Policy, context: SchedulingContext,
                 queues: typing.MutableMapping[str, StreamQueue],
                 metrics: MetricsRecorder | None = None, drop_doomed: bool = True,
                 decision_samples: int = 10_000):
        self.policy = policy
        self.context = context
        self.queues = queues
        self.metrics = metrics if metrics is not None else MetricsRecorder()
        self.drop_doomed = drop_doomed
        self.decision_times_s: collections.deque = collections.deque(maxlen=decision_samples)
        self.last_dropped: list[Request] = []

    def submit(self, request: Request) -> Request | None:
        """Queue an accepted request; return the request pushed out of a full queue, if any."""
        self.metrics.record_offered(request.stream, request.arrival_s)
        dropped = self.queues[request.stream].push(request)
        if dropped is not None:
            self.metrics.record_dropped(dropped.stream, dropped.arrival_s,
                                        OUTCOME_DROPPED_OVERFLOW, request.receive_s)
        return dropped

    def pending(self) -> int:
        return sum(len(queue) for queue in self.queues.values())

    def next_batch(self, now: float) -> Batch | None:
        """Drop doomed requests if the policy does, then pop the batch the policy chooses.

        Returns None when every queue is empty or the policy chooses to wait. The requests
        dropped by this call are in `last_dropped`.
        """
        self.last_dropped = []
        if self.drop_doomed and self.policy.drops_doomed:
            self.last_dropped = self._drop_doomed(now)
        if not any(self.queues.values()):
            return None

        started = time.perf_counter()
        action = self.policy.decide(now, self.queues, self.context)
        self.decision_times_s.append(time.perf_counter() - started)
        if action is None:
            return None

        action = self._checked(action)
        requests = self.queues[action.stream].pop_most_urgent(action.batch_size)
        model = self.context.model_of(action.stream)
        return Batch(
            action=action,
            model=model,
            exit_name=self.context.profile.exit_names(model)[action.exit_index],
            requests=requests,
            start_s=now,
            predicted_latency_s=self.context.latency_s(action.stream, action.exit_index,
                                                       action.batch_size),
        )

    def complete(self, batch: Batch, finish_s: float,
                 measured_latency_s: float | None = None) -> list[Outcome]:
        """Record a finished batch; feed its measured latency to the online correction."""
        if measured_latency_s is not None:
            self.context.latency.observe(batch.model, batch.exit_index, len(batch.requests),
                                         measured_latency_s)
        accuracy = self.context.accuracy(batch.stream, batch.exit_index)
        outcomes = []
        for request in batch.requests:
            on_time = self.metrics.record_completed(
                request.stream, request.arrival_s, finish_s, request.deadline_s,
                batch.exit_name, accuracy)
            outcomes.append(Outcome(request=request, finish_s=finish_s, on_time=on_time))
        return outcomes

    def fail(self, batch: Batch, now: float) -> None:
        """Count the requests of a batch whose inference failed as dropped."""
        for request in batch.requests:
            self.metrics.record_dropped(request.stream, request.arrival_s, OUTCOME_FAILED, now)

    def _drop_doomed(self, now: float) -> list[Request]:
        dropped = []
        for queue in self.queues.values():
            doomed = [request for request in queue
                      if self.policy.is_doomed(request, now, self.context)]
            if not doomed:
                continue
            queue.remove(doomed)
            for request in doomed:
                self.metrics.record_dropped(request.stream, request.arrival_s,
                                            OUTCOME_DROPPED_DOOMED, now)
            dropped.extend(doomed)
        return dropped

    def _checked(self, action: Action) -> Action:
        queue = self.queues.get(action.stream)
        if queue is None or not queue:
            raise ValueError(f'policy {self.policy.name!r} chose stream {action.stream!r}, '
                             'which is unknown or empty')
        if action.exit_index not in self.context.allowed_exits(action.stream):
            raise ValueError(f'policy {self.policy.name!r} chose exit {action.exit_index} of '
                             f'stream {action.stream!r}, which is not allowed')
        max_batch = self.context.streams[action.stream].max_batch
        batch_size = min(max(action.batch_size, 1), len(queue), max_batch)
        if batch_size != action.batch_size:
            action = dataclasses.replace(action, batch_size=batch_size)
        return action
