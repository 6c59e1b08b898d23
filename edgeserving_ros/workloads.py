"""Seeded arrival traces for the simulator and the benchmark.

Every generator returns a list of `Arrival` sorted by time, in seconds from 0. The same
arguments and seed give the same trace (Python's `random.Random`, no global state).
"""

import math
import pathlib
import random
import re
import typing

from edgeserving_ros.config import StreamConfig
from edgeserving_ros.profile import LatencyModel, Profile
from edgeserving_ros.simulator import Arrival

Trace = list[Arrival]

ARRIVAL_KINDS = ('poisson', 'bursty', 'periodic')
PAPER_MODELS = ('resnet20', 'resnet32', 'resnet56')
PAPER_RATE_RATIO = (3, 2, 1)
# Jitter of the periodic streams of `paper_mix`, as a fraction of each stream's period.
PAPER_PERIODIC_JITTER = 0.1


def periodic(stream: str, rate_hz: float, duration_s: float, jitter_s: float = 0.0,
             seed: int = 0, phase_s: float | None = None) -> Trace:
    """Return a camera-like trace: one frame per period, each shifted by uniform jitter.

    Frame `k` arrives at `phase_s + k / rate_hz + u` with `u` uniform in [-jitter_s, jitter_s].
    Without `phase_s`, the phase is drawn uniformly from [0, period). Frames that the jitter
    moves outside [0, duration_s) are left out.
    """
    _check_positive('rate_hz', rate_hz)
    _check_non_negative('duration_s', duration_s)
    _check_non_negative('jitter_s', jitter_s)
    rng = random.Random(seed)
    period_s = 1.0 / rate_hz
    if phase_s is None:
        phase_s = rng.uniform(0.0, period_s)

    trace = []
    for index in range(math.ceil((duration_s - phase_s) * rate_hz) + 1):
        time_s = phase_s + index * period_s + rng.uniform(-jitter_s, jitter_s)
        if 0.0 <= time_s < duration_s:
            trace.append(Arrival(time_s, stream))
    trace.sort(key=lambda arrival: arrival.time_s)
    return trace


def poisson(stream: str, rate_hz: float, duration_s: float, seed: int = 0) -> Trace:
    """Return a Poisson process trace: exponential inter-arrival times with mean 1 / rate_hz."""
    _check_positive('rate_hz', rate_hz)
    _check_non_negative('duration_s', duration_s)
    rng = random.Random(seed)
    return _renewal(stream, duration_s, lambda: rng.expovariate(rate_hz))


def bursty(stream: str, rate_hz: float, duration_s: float, cv: float = 2.0,
           seed: int = 0) -> Trace:
    """Return a bursty trace: Gamma inter-arrival times with mean 1 / rate_hz and CV `cv`.

    The Gamma shape is 1 / cv^2 and the scale cv^2 / rate_hz. A CV above 1 packs arrivals into
    bursts separated by long gaps, and CV 1 gives a Poisson process.
    """
    _check_positive('rate_hz', rate_hz)
    _check_non_negative('duration_s', duration_s)
    _check_positive('cv', cv)
    rng = random.Random(seed)
    shape = 1.0 / cv ** 2
    scale = cv ** 2 / rate_hz
    return _renewal(stream, duration_s, lambda: rng.gammavariate(shape, scale))


def replay_bag_stamps(path: str | pathlib.Path, topic: str | None = None, stream: str = 'bag',
                      speed: float = 1.0, max_messages: int | None = None,
                      use_header_stamp: bool = False) -> Trace:
    """Return the message times of one topic of a ROS 1 or ROS 2 bag, shifted to start at 0.

    `path` is a ROS 1 `.bag` file or a ROS 2 bag folder (any storage the `rosbags` library
    reads). Without `topic` the bag must contain exactly one topic. Times are the recording times,
    or the messages' `header.stamp` with `use_header_stamp`, divided by `speed` (2.0 plays twice
    as fast). `max_messages` keeps the first messages in recording order.
    Raises FileNotFoundError for a missing path and ValueError for an unknown or ambiguous topic.
    """
    from rosbags.highlevel import AnyReader

    _check_positive('speed', speed)
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f'bag not found: {path}')

    stamps_ns = []
    with AnyReader([path]) as reader:
        connections = _topic_connections(reader.connections, topic, path)
        for connection, record_ns, raw in reader.messages(connections=connections):
            if max_messages is not None and len(stamps_ns) >= max_messages:
                break
            if use_header_stamp:
                message = reader.deserialize(raw, connection.msgtype)
                stamps_ns.append(message.header.stamp.sec * 1_000_000_000
                                 + message.header.stamp.nanosec)
            else:
                stamps_ns.append(record_ns)

    if not stamps_ns:
        return []
    start_ns = min(stamps_ns)
    times_s = sorted((stamp_ns - start_ns) / 1e9 / speed for stamp_ns in stamps_ns)
    return [Arrival(time_s, stream) for time_s in times_s]


def merge(*traces: typing.Iterable[Arrival]) -> Trace:
    """Return all arrivals of the traces in time order; equal times keep the argument order."""
    merged = [arrival for trace in traces for arrival in trace]
    merged.sort(key=lambda arrival: arrival.time_s)
    return merged


def final_exit_capacity_hz(profile: Profile, models: typing.Sequence[str],
                           weights: typing.Sequence[float], max_batch: int) -> float:
    """Return the request rate one device sustains at the final exit for a weighted model mix.

    With weights w_i summing to 1 and per-request cost c_i = L_i(final exit, max_batch) /
    max_batch (profiled p50, no online correction), the capacity is 1 / sum_i w_i c_i: the rate
    at which full batches of the mix keep the device exactly busy.
    """
    latency = LatencyModel(profile, 'p50')
    total_weight = sum(weights)
    cost_s = 0.0
    for model, weight in zip(models, weights):
        final = profile.exit_count(model) - 1
        full_batch_s = latency.uncorrected_s(model, final, max_batch)
        cost_s += weight / total_weight * full_batch_s / max_batch
    return 1.0 / cost_s


def paper_mix(load: float, duration_s: float, seed: int = 0, arrival: str = 'poisson',
              cv: float = 2.0, profile: Profile | None = None,
              models: typing.Sequence[str] = PAPER_MODELS, slo_ms: float = 50.0,
              max_batch: int = 10, min_accuracy: float = 0.0,
              queue_depth: int = 30) -> tuple[Trace, dict[str, StreamConfig]]:
    """Return a trace and its streams: three models of increasing depth at rates 3:2:1.

    Stream i serves `models[i]` (one stream per model, named after it) with weight w_i =
    (3, 2, 1)[i] / 6, so list the models from the shallowest to the deepest. The total rate is
    `load` times `final_exit_capacity_hz` for these weights and `max_batch`. At load 1.0 the
    device is exactly busy when every request is served at the final exit in full batches.
    Above 1.0 only early exits or drops can keep up.
    `arrival` selects Poisson, bursty (Gamma, coefficient of variation `cv`) or periodic
    arrivals (jitter 10 % of the period, random phase). Each stream's `expected_rate_hz` is its
    mean rate. Every stream uses `slo_ms`, `max_batch`, `min_accuracy` and `queue_depth`.
    """
    if profile is None:
        raise ValueError('paper_mix needs a profile to size the load')
    if len(models) != len(PAPER_RATE_RATIO):
        raise ValueError(f'paper_mix needs {len(PAPER_RATE_RATIO)} models, got {list(models)}')
    if arrival not in ARRIVAL_KINDS:
        raise ValueError(f'arrival is {arrival!r}; expected one of {", ".join(ARRIVAL_KINDS)}')
    _check_positive('load', load)

    weights = [share / sum(PAPER_RATE_RATIO) for share in PAPER_RATE_RATIO]
    total_rate_hz = load * final_exit_capacity_hz(profile, models, weights, max_batch)
    seeds = random.Random(seed)
    names = _stream_names(models)

    traces = []
    streams = {}
    for name, model, weight in zip(names, models, weights):
        rate_hz = weight * total_rate_hz
        stream_seed = seeds.randrange(2 ** 32)
        if arrival == 'poisson':
            traces.append(poisson(name, rate_hz, duration_s, stream_seed))
        elif arrival == 'bursty':
            traces.append(bursty(name, rate_hz, duration_s, cv, stream_seed))
        else:
            traces.append(periodic(name, rate_hz, duration_s,
                                   PAPER_PERIODIC_JITTER / rate_hz, stream_seed))
        streams[name] = StreamConfig(
            name=name, topic=f'/{name}/image_raw', model=model, slo_ms=slo_ms,
            min_accuracy=min_accuracy, max_batch=max_batch, queue_depth=queue_depth,
            expected_rate_hz=rate_hz)
        streams[name].validate()
    return merge(*traces), streams


def _renewal(stream: str, duration_s: float, next_gap_s: typing.Callable[[], float]) -> Trace:
    trace = []
    time_s = next_gap_s()
    while time_s < duration_s:
        trace.append(Arrival(time_s, stream))
        time_s += next_gap_s()
    return trace


def _stream_names(models: typing.Sequence[str]) -> list[str]:
    base_names = [re.sub(r'[^A-Za-z0-9_]', '_', model) for model in models]
    if len(set(base_names)) == len(base_names):
        return base_names
    return [f'{name}_{index + 1}' for index, name in enumerate(base_names)]


def _topic_connections(connections: list, topic: str | None, path: pathlib.Path) -> list:
    topics = sorted({connection.topic for connection in connections})
    if topic is None:
        if len(topics) != 1:
            raise ValueError(f'bag {path} has {len(topics)} topics ({", ".join(topics)}); '
                             'choose one with topic=')
        topic = topics[0]
    chosen = [connection for connection in connections if connection.topic == topic]
    if not chosen:
        raise ValueError(f'topic {topic!r} is not in bag {path}; topics: {", ".join(topics)}')
    return chosen


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f'{name} is {value}; expected a finite number > 0')


def _check_non_negative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f'{name} is {value}; expected a finite number >= 0')
