"""The policy interface: what every scheduling rule reads and returns."""

import abc
import dataclasses
import random
import typing

from edgeserving_ros.config import StreamConfig
from edgeserving_ros.profile import LatencyModel, Profile
from edgeserving_ros.requests import Request, StreamQueue

Queues = typing.Mapping[str, StreamQueue]


@dataclasses.dataclass(frozen=True)
class Action:
    """Serve the `batch_size` most urgent requests of `stream` at exit `exit_index`."""

    stream: str
    exit_index: int
    batch_size: int


class SchedulingContext:
    """Everything a policy may read besides the queues: stream settings, profile, latency model.

    Allowed exits are derived from each stream's `min_accuracy` and the profiled accuracies:
    an exit is allowed when its measured accuracy reaches the minimum. An exit with no measured
    accuracy is allowed only when the minimum is 0. The final exit is always allowed, because
    serving late is better than serving nothing. Call `invalidate()` after changing a stream.
    """

    def __init__(self, streams: typing.Mapping[str, StreamConfig], profile: Profile,
                 latency: LatencyModel,
                 allowed_exit_names: typing.Mapping[str, typing.Sequence[str]] | None = None,
                 seed: int = 0):
        self.streams = streams
        self.profile = profile
        self.latency = latency
        self.rng = random.Random(seed)
        self._allowed_exit_names = allowed_exit_names or {}
        self._allowed: dict[str, tuple[int, ...]] = {}

    def invalidate(self) -> None:
        self._allowed.clear()

    def model_of(self, stream: str) -> str:
        return self.streams[stream].model

    def final_exit(self, stream: str) -> int:
        return self.profile.exit_count(self.model_of(stream)) - 1

    def allowed_exits(self, stream: str) -> tuple[int, ...]:
        """Return the allowed exit indices of a stream, shallowest first."""
        allowed = self._allowed.get(stream)
        if allowed is None:
            allowed = self._compute_allowed_exits(stream)
            self._allowed[stream] = allowed
        return allowed

    def fastest_exit(self, stream: str) -> int:
        return self.allowed_exits(stream)[0]

    def latency_s(self, stream: str, exit_index: int, batch_size: int) -> float:
        return self.latency.latency_s(self.model_of(stream), exit_index, batch_size)

    def accuracy(self, stream: str, exit_index: int) -> float | None:
        return self.profile.accuracy(self.model_of(stream), exit_index)

    def is_doomed(self, request: Request, now: float) -> bool:
        """Tell whether the request misses its deadline even if served alone now, fastest exit."""
        stream = request.stream
        return now + self.latency_s(stream, self.fastest_exit(stream), 1) > request.deadline_s

    def arrival_rate_hz(self, stream: str, queue: StreamQueue) -> float:
        """Return the configured rate of a stream, else the rate its queue has observed."""
        configured = self.streams[stream].expected_rate_hz
        return configured if configured > 0.0 else queue.arrival_rate_hz()

    def _compute_allowed_exits(self, stream: str) -> tuple[int, ...]:
        config = self.streams[stream]
        model = config.model
        names = self.profile.exit_names(model)
        final = len(names) - 1
        enabled = set(self._allowed_exit_names.get(model, ()) or names)
        allowed = []
        for index, name in enumerate(names):
            if index == final:
                allowed.append(index)
                continue
            if name not in enabled:
                continue
            accuracy = self.profile.accuracy(model, index)
            if accuracy is None:
                if config.min_accuracy <= 0.0:
                    allowed.append(index)
            elif accuracy >= config.min_accuracy:
                allowed.append(index)
        return tuple(allowed)


class Policy(abc.ABC):
    """A scheduling rule: given the queues, choose the next batch or nothing.

    `decide` is called only when the device is idle and at least one queue is non-empty. It must
    not modify the queues: the scheduler pops the chosen requests. A policy whose class sets
    `drops_doomed` has doomed requests removed before each decision, unless the scheduler is
    configured to serve them late. Other policies see every queued request.
    """

    name: str = ''
    drops_doomed: bool = False

    @abc.abstractmethod
    def decide(self, now: float, queues: Queues, context: SchedulingContext) -> Action | None:
        """Return the next action, or None to leave the device idle until the next tick."""

    def is_doomed(self, request: Request, now: float, context: SchedulingContext) -> bool:
        """Tell whether the scheduler drops `request` before a decision of a `drops_doomed` policy.

        The default is `context.is_doomed`: late even if served alone now at the fastest allowed
        exit. A policy that never uses that exit, or that drops for another reason (a queue
        timeout), overrides this test.
        """
        return context.is_doomed(request, now)

    def reset(self) -> None:
        """Forget any state kept between decisions (round-robin position, timers)."""


def non_empty_streams(queues: Queues) -> list[str]:
    return [name for name, queue in queues.items() if queue]
