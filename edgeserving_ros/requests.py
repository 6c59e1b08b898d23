"""Requests and the bounded per-stream deadline queues they wait in."""

import bisect
import dataclasses
import itertools
import typing

_request_ids = itertools.count(1)


@dataclasses.dataclass(eq=False)
class Request:
    """One received frame waiting for inference.

    Times are seconds on one clock (the node clock in the node, simulated time in the simulator).
    `arrival_s` is the instant the deadline counts from, and `receive_s` the instant the frame
    entered the queue. They differ when the arrival is taken from the message header stamp.
    """

    stream: str
    arrival_s: float
    deadline_s: float
    receive_s: float | None = None
    payload: typing.Any = None
    request_id: int = dataclasses.field(default_factory=lambda: next(_request_ids))

    def __post_init__(self):
        if self.receive_s is None:
            self.receive_s = self.arrival_s

    def sort_key(self) -> tuple[float, int]:
        return (self.deadline_s, self.request_id)


class StreamQueue:
    """Requests of one stream, ordered by deadline, bounded in depth.

    When a push would exceed `max_depth`, the request that arrived first is dropped (drop-oldest,
    the usual choice for sensor data: a newer frame is worth more) and counted in
    `overflow_drops`. Deadlines of one stream are normally in arrival order, but a live change of
    the stream's SLO can break that, so the queue keeps an explicit deadline order.
    """

    def __init__(self, name: str, max_depth: int, rate_smoothing: float = 0.1):
        if max_depth < 1:
            raise ValueError(f'queue depth of stream {name!r} must be at least 1, got {max_depth}')
        self.name = name
        self.max_depth = max_depth
        self.overflow_drops = 0
        self._items: list[Request] = []
        self._keys: list[tuple[float, int]] = []
        self._rate_smoothing = rate_smoothing
        self._last_arrival_s: float | None = None
        self._mean_gap_s: float | None = None

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> typing.Iterator[Request]:
        return iter(self._items)

    def push(self, request: Request) -> Request | None:
        """Insert a request in deadline order; return the request dropped to make room, if any."""
        self._observe_arrival(request.arrival_s)

        dropped = None
        if len(self._items) >= self.max_depth:
            oldest_index = min(range(len(self._items)),
                               key=lambda i: (self._items[i].receive_s, self._items[i].request_id))
            dropped = self._remove_at(oldest_index)
            self.overflow_drops += 1

        key = request.sort_key()
        index = bisect.bisect_right(self._keys, key)
        self._keys.insert(index, key)
        self._items.insert(index, request)
        return dropped

    def head(self) -> Request | None:
        """Return the most urgent request (earliest deadline) without removing it."""
        return self._items[0] if self._items else None

    def peek(self, count: int) -> list[Request]:
        """Return the `count` most urgent requests without removing them."""
        return self._items[:count]

    def pop_most_urgent(self, count: int) -> list[Request]:
        """Remove and return the `count` most urgent requests."""
        taken = self._items[:count]
        del self._items[:count]
        del self._keys[:count]
        return taken

    def remove(self, requests: typing.Iterable[Request]) -> None:
        """Remove the given requests; requests not in the queue are ignored."""
        unwanted = {id(request) for request in requests}
        kept = [request for request in self._items if id(request) not in unwanted]
        self._items = kept
        self._keys = [request.sort_key() for request in kept]

    def deadlines(self) -> list[float]:
        """Return the deadlines in queue order (ascending)."""
        return [key[0] for key in self._keys]

    def clear(self) -> list[Request]:
        """Remove and return every queued request."""
        taken = self._items
        self._items = []
        self._keys = []
        return taken

    def arrival_rate_hz(self) -> float:
        """Return the smoothed arrival rate seen by `push` (0.0 before two arrivals)."""
        if not self._mean_gap_s:
            return 0.0
        return 1.0 / self._mean_gap_s

    def _observe_arrival(self, arrival_s: float) -> None:
        if self._last_arrival_s is not None:
            gap_s = max(arrival_s - self._last_arrival_s, 0.0)
            if self._mean_gap_s is None:
                self._mean_gap_s = gap_s
            else:
                self._mean_gap_s += self._rate_smoothing * (gap_s - self._mean_gap_s)
        if self._last_arrival_s is None or arrival_s > self._last_arrival_s:
            self._last_arrival_s = arrival_s

    def _remove_at(self, index: int) -> Request:
        del self._keys[index]
        return self._items.pop(index)
