"""Camera stand-in: publish real images onto image topics at chosen rates.

    edgeserving-player --stream /camera_fast/image_raw=30 \
        --stream /camera_slow/image_raw=10:compressed \
        --images <data>/cifar10-jpeg/test --duration-s 30 --labels-out labels.jsonl

Sources (one of):
  --images DIR   every image under DIR (recursive, ImageFolder layout: the parent folder name is
                 the true label), in a seeded random order;
  --bag PATH     the image messages of a ROS 1 bag or rosbag2 folder, at the stream rates or, with
                 --speed, at the recorded times scaled by the speed;
  (none)         scikit-image's bundled photographs: astronaut, chelsea (a cat), coffee, rocket,
                 camera (grey), coins (grey), hubble_deep_field, immunohistochemistry. They carry
                 no labels.

Each `--stream TOPIC=RATE_HZ[:ENCODING]` publishes sensor_msgs/Image in ENCODING (bgr8, the
default, rgb8 or mono8) or, with `compressed`, sensor_msgs/CompressedImage JPEG (a bag's own
compressed data is republished unchanged unless the frame is resized). The header stamp is the
node clock at publish time and frame_id is `--frame-id`.

True labels do not travel in the messages: with `--labels-out` the player writes one JSON line
per published frame, `{"topic", "stamp_ns", "frame_id", "label", "source"}`, so a consumer can
match results (which copy the input header) to labels by topic and stamp.
"""

import argparse
import dataclasses
import heapq
import json
import math
import pathlib
import signal
import sys
import threading
import time
import typing

import cv2
import numpy as np

from edgeserving_ros import image_conversion, sample_images

ENCODINGS = ('bgr8', 'rgb8', 'mono8', 'compressed')
DEFAULT_MAX_FOLDER_IMAGES = 1000
DEFAULT_MAX_BAG_MESSAGES = 10_000
MAX_RATE_HZ = 1000.0
MAX_SIDE_PX = 4096

SUBSCRIBER_SETTLE_S = 0.5
ACKNOWLEDGEMENT_TIMEOUT_S = 2.0


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """One published topic: its name, rate and encoding."""

    topic: str
    rate_hz: float
    encoding: str = 'bgr8'


class StreamSpecError(argparse.ArgumentTypeError, ValueError):
    """Invalid `--stream` value: argparse prints its message and it is also a ValueError."""


def parse_stream_spec(text: str) -> StreamSpec:
    """Parse `TOPIC=RATE_HZ[:ENCODING]`; raise StreamSpecError naming the invalid part."""
    topic, separator, rest = text.partition('=')
    if not separator or not topic:
        raise StreamSpecError(f'invalid stream {text!r}: expected TOPIC=RATE_HZ[:ENCODING]')
    _check_topic_name(topic, text)
    rate_text, _, encoding = rest.partition(':')
    encoding = encoding or 'bgr8'
    try:
        rate_hz = float(rate_text)
    except ValueError:
        raise StreamSpecError(f'invalid rate {rate_text!r} in stream {text!r}: expected a '
                              'number of frames per second') from None
    if not 0.0 < rate_hz <= MAX_RATE_HZ or not math.isfinite(rate_hz):
        raise StreamSpecError(f'rate {rate_hz:g} Hz in stream {text!r} is out of range: '
                              f'expected more than 0 and at most {MAX_RATE_HZ:g}')
    if encoding not in ENCODINGS:
        raise StreamSpecError(f'encoding {encoding!r} in stream {text!r} is not supported: '
                              f'expected one of {", ".join(ENCODINGS)}')
    return StreamSpec(topic=topic, rate_hz=rate_hz, encoding=encoding)


def _check_topic_name(topic: str, text: str) -> None:
    """Raise StreamSpecError unless `topic` is a valid ROS topic name, relative or absolute.

    The name is expanded as the player node's own would be (node `edgeserving_player` in the
    root namespace) so that errors only the full name shows, such as `//`, are found too.
    """
    from rclpy.exceptions import NameValidationException
    from rclpy.expand_topic_name import expand_topic_name
    from rclpy.validate_full_topic_name import validate_full_topic_name
    from rclpy.validate_topic_name import validate_topic_name

    try:
        validate_topic_name(topic)
        validate_full_topic_name(expand_topic_name(topic, 'edgeserving_player', '/'))
    except (NameValidationException, ValueError) as error:
        # rclpy's message has the form 'Invalid topic name: REASON:' and then lines that
        # point at the invalid character.
        reason = str(error).splitlines()[0].removeprefix('Invalid topic name: ').rstrip(':')
        raise StreamSpecError(f'invalid topic {topic!r} in stream {text!r}: {reason}') from None


def arrival_offsets(process: str, rate_hz: float, rng: np.random.Generator,
                    jitter_s: float = 0.0) -> typing.Iterator[float]:
    """Yield increasing publish times in seconds from the start.

    `periodic`: k / rate plus a uniform jitter in [-jitter_s, jitter_s], the jitter capped at
    45 % of the period so frames stay in order. `poisson`: exponential gaps with mean 1 / rate.
    """
    period_s = 1.0 / rate_hz
    if process == 'periodic':
        jitter_s = min(max(jitter_s, 0.0), 0.45 * period_s)
        k = 0
        while True:
            noise = rng.uniform(-jitter_s, jitter_s) if jitter_s > 0 else 0.0
            yield max(k * period_s + noise, 0.0)
            k += 1
    elif process == 'poisson':
        time_s = 0.0
        while True:
            yield time_s
            time_s += rng.exponential(period_s)
    else:
        raise ValueError(f'unknown arrival process {process!r}: expected periodic or poisson')


def recorded_offsets(frames: list[sample_images.Frame], speed: float) -> typing.Iterator[float]:
    """Yield the frames' recorded times relative to the first, divided by `speed`."""
    start_s = frames[0].recorded_s
    for frame in frames:
        yield max(frame.recorded_s - start_s, 0.0) / speed


class MessageFactory:
    """Builds one message per (frame, encoding) once and keeps it within a memory budget.

    The header is left empty: the player sets stamp and frame_id on each publish, which is safe
    because rclpy serialises the message inside publish(). Beyond `cache_bytes` of message data,
    messages are built on every publish instead.
    """

    def __init__(self, frames: list[sample_images.Frame], size: tuple[int, int] | None,
                 cache_bytes: int):
        self._frames = frames
        self._size = size
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0
        self._cache: dict[tuple[int, str], typing.Any] = {}

    def prebuild(self, encodings: typing.Iterable[str]) -> int:
        """Build the messages of every frame in each encoding until the budget is used.

        Return the number of messages cached.
        """
        for encoding in dict.fromkeys(encodings):
            for index in range(len(self._frames)):
                self.message(index, encoding)
                if (index, encoding) not in self._cache:
                    return len(self._cache)
        return len(self._cache)

    def message(self, index: int, encoding: str):
        key = (index, encoding)
        msg = self._cache.get(key)
        if msg is not None:
            return msg
        msg = self._build(self._frames[index], encoding)
        if self._cached_bytes + len(msg.data) <= self._cache_bytes:
            self._cache[key] = msg
            self._cached_bytes += len(msg.data)
        return msg

    def _build(self, frame: sample_images.Frame, encoding: str):
        if encoding == 'compressed' and frame.compressed is not None and self._size is None:
            from sensor_msgs.msg import CompressedImage
            msg = CompressedImage()
            msg.format = frame.compressed_format
            msg.data = frame.compressed
            return msg

        image = self._resized(frame.image)
        if encoding == 'compressed':
            return image_conversion.array_to_compressed_image(image, 'jpeg')
        grey = image.ndim == 2
        if encoding == 'mono8':
            pixels = image if grey else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif encoding == 'rgb8':
            pixels = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if grey else cv2.COLOR_BGR2RGB)
        else:
            pixels = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if grey else image
        return image_conversion.array_to_image(pixels, encoding)

    def _resized(self, image: np.ndarray) -> np.ndarray:
        if self._size is None or image.shape[1::-1] == self._size:
            return image
        shrinking = self._size[0] * self._size[1] < image.shape[0] * image.shape[1]
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        return cv2.resize(image, self._size, interpolation=interpolation)


@dataclasses.dataclass
class TopicStats:
    """Publish count and lag of one topic; lag is publish time minus scheduled time."""

    encoding: str
    rate_hz: float
    published: int = 0
    first_publish_s: float | None = None
    last_publish_s: float | None = None
    max_lag_s: float = 0.0
    lag_sum_s: float = 0.0

    def record(self, now_s: float, lag_s: float) -> None:
        self.published += 1
        if self.first_publish_s is None:
            self.first_publish_s = now_s
        self.last_publish_s = now_s
        self.max_lag_s = max(self.max_lag_s, lag_s)
        self.lag_sum_s += lag_s

    def as_dict(self) -> dict:
        span_s = (self.last_publish_s - self.first_publish_s) if self.published > 1 else 0.0
        return {
            'encoding': self.encoding,
            'rate_hz': self.rate_hz,
            'published': self.published,
            'achieved_rate_hz': (self.published - 1) / span_s if span_s > 0 else None,
            'mean_lag_ms': 1000.0 * self.lag_sum_s / self.published if self.published else None,
            'max_lag_ms': 1000.0 * self.max_lag_s,
        }


class _Schedule:
    """The publish times and frame order of one topic."""

    def __init__(self, offsets: typing.Iterator[float], frame_order: typing.Iterator[int]):
        self.offsets = offsets
        self.frame_order = frame_order

    def next(self) -> tuple[float, int] | None:
        try:
            return next(self.offsets), next(self.frame_order)
        except StopIteration:
            return None


def _make_qos(reliable: bool):
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    if not reliable:
        return qos_profile_sensor_data
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _create_player_node(options: argparse.Namespace):
    from rclpy.duration import Duration
    from rclpy.node import Node

    class PlayerNode(Node):
        """Publishes frames per topic on schedule; runs in the calling thread, needs no spin."""

        def __init__(self):
            super().__init__('edgeserving_player')
            self.streams = options.streams
            self.publishers_by_topic = {}
            qos = _make_qos(options.reliable)
            for spec in self.streams:
                msg_type = _message_type(spec.encoding)
                self.publishers_by_topic[spec.topic] = self.create_publisher(
                    msg_type, spec.topic, qos)

        def wait_for_subscribers(self, timeout_s: float, stop: threading.Event) -> bool:
            deadline = time.monotonic() + timeout_s
            while not stop.is_set():
                missing = [topic for topic, publisher in self.publishers_by_topic.items()
                           if publisher.get_subscription_count() == 0]
                if not missing:
                    # Discovery is asymmetric: the writer can match a reader before the reader
                    # has matched the writer, and a reliable volatile reader misses what is
                    # published in that gap. A short pause lets both sides match.
                    stop.wait(SUBSCRIBER_SETTLE_S)
                    return True
                if time.monotonic() >= deadline:
                    self.get_logger().warning(
                        f'no subscriber after {timeout_s:.1f} s on {", ".join(missing)}; '
                        'publishing anyway')
                    return False
                stop.wait(0.05)
            return False

        def wait_for_acknowledgements(self, timeout_s: float) -> None:
            """Wait until reliable subscribers acknowledged every frame, at most `timeout_s`.

            Destroying a reliable writer right after its last publish can lose the frames not
            yet acknowledged, so the player waits before it exits.
            """
            if not options.reliable:
                return
            for topic, publisher in self.publishers_by_topic.items():
                if not publisher.wait_for_all_acked(Duration(seconds=timeout_s)):
                    self.get_logger().warning(
                        f'{topic}: not every frame was acknowledged within {timeout_s:.1f} s')

        def publish(self, topic: str, msg) -> int:
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.header.frame_id = options.frame_id
            self.publishers_by_topic[topic].publish(msg)
            return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec

    return PlayerNode()


def _message_type(encoding: str):
    from sensor_msgs.msg import CompressedImage, Image

    return CompressedImage if encoding == 'compressed' else Image


def _schedules(options, frames) -> list[_Schedule]:
    schedules = []
    for index, spec in enumerate(options.streams):
        rng = np.random.default_rng([options.seed, index])
        if options.speed is not None:
            offsets = recorded_offsets(frames, options.speed)
            order = iter(range(len(frames)))
        else:
            offsets = arrival_offsets(options.arrivals, spec.rate_hz, rng,
                                      options.jitter_ms / 1000.0)
            # Topics start at different frames, so they do not show the same image at once.
            order = _cycle(len(frames), start=index * len(frames) // len(options.streams))
        schedules.append(_Schedule(offsets, order))
    return schedules


def _cycle(length: int, start: int) -> typing.Iterator[int]:
    index = start
    while True:
        yield index % length
        index += 1


def play(node, options, frames, stop: threading.Event, labels_file=None) -> dict:
    """Publish until the duration, the frame limit or the source ends, or `stop` is set.

    Return the per-topic statistics.
    """
    factory = MessageFactory(frames, options.size, options.cache_mb * 2**20)
    factory.prebuild(spec.encoding for spec in options.streams)

    stats = {spec.topic: TopicStats(spec.encoding, spec.rate_hz) for spec in options.streams}
    schedules = _schedules(options, frames)
    start_s = time.monotonic()
    end_s = start_s + options.duration_s if options.duration_s > 0 else math.inf

    queue = []
    for index, schedule in enumerate(schedules):
        entry = schedule.next()
        if entry is not None:
            heapq.heappush(queue, (start_s + entry[0], index, entry[1]))

    while queue and not stop.is_set():
        due_s, index, frame_index = heapq.heappop(queue)
        if due_s >= end_s:
            break
        delay_s = due_s - time.monotonic()
        if delay_s > 0 and stop.wait(delay_s):
            break

        spec = options.streams[index]
        msg = factory.message(frame_index, spec.encoding)
        stamp_ns = node.publish(spec.topic, msg)
        now_s = time.monotonic()
        stats[spec.topic].record(now_s - start_s, max(now_s - due_s, 0.0))
        if labels_file is not None:
            frame = frames[frame_index]
            labels_file.write(json.dumps({
                'topic': spec.topic, 'stamp_ns': stamp_ns, 'frame_id': options.frame_id,
                'label': frame.label, 'source': frame.name}) + '\n')

        if options.max_frames and stats[spec.topic].published >= options.max_frames:
            continue
        entry = schedules[index].next()
        if entry is not None:
            heapq.heappush(queue, (start_s + entry[0], index, entry[1]))

    return {topic: topic_stats.as_dict() for topic, topic_stats in stats.items()}


def load_frames(options) -> tuple[list[sample_images.Frame], str]:
    """Load the frames of the chosen source; return them and a description of the source."""
    if options.images is not None:
        frames = sample_images.load_image_folder(
            options.images, options.max_images or DEFAULT_MAX_FOLDER_IMAGES, options.seed)
        return frames, f'image folder {options.images}'
    if options.bag is not None:
        frames = sample_images.load_bag(options.bag, options.bag_topic,
                                        options.max_images or DEFAULT_MAX_BAG_MESSAGES)
        return frames, f'bag {options.bag}'
    return sample_images.load_sample_photos(), 'scikit-image sample photos'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='edgeserving-player',
        description='Publish real images onto image topics at chosen rates.')
    parser.add_argument('--stream', dest='streams', action='append', type=parse_stream_spec,
                        required=True, metavar='TOPIC=RATE_HZ[:ENCODING]',
                        help='topic to publish, frames per second and encoding '
                             f'({", ".join(ENCODINGS)}; default bgr8); repeatable')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--images', type=pathlib.Path, metavar='DIR',
                        help='image folder, searched recursively; parent folder = label')
    source.add_argument('--bag', type=pathlib.Path, metavar='PATH',
                        help='ROS 1 .bag file or rosbag2 folder with image messages')
    parser.add_argument('--bag-topic', help='image topic to read from the bag')
    parser.add_argument('--speed', type=float,
                        help='replay a bag at its recorded times divided by SPEED, instead of '
                             'the stream rates; ends at the end of the bag')
    parser.add_argument('--arrivals', choices=('periodic', 'poisson'), default='periodic',
                        help='arrival process of each stream (default periodic)')
    parser.add_argument('--jitter-ms', type=float, default=0.0,
                        help='uniform jitter of periodic arrivals, +- milliseconds (default 0)')
    parser.add_argument('--duration-s', type=float, default=0.0,
                        help='stop after this many seconds (default 0: no limit)')
    parser.add_argument('--max-frames', type=int, default=0,
                        help='stop each topic after this many frames (default 0: no limit)')
    parser.add_argument('--max-images', type=int,
                        help='load at most this many folder images (default '
                             f'{DEFAULT_MAX_FOLDER_IMAGES}) or bag messages (default '
                             f'{DEFAULT_MAX_BAG_MESSAGES})')
    parser.add_argument('--seed', type=int, default=0,
                        help='seed of the image order and the arrival times (default 0)')
    parser.add_argument('--width', type=int, help='resize frames to this width in pixels')
    parser.add_argument('--height', type=int, help='resize frames to this height in pixels')
    parser.add_argument('--frame-id', default='camera_optical_frame',
                        help='header frame_id of the published frames')
    parser.add_argument('--reliable', action='store_true',
                        help='reliable QoS, depth 10 (default: sensor-data QoS, best effort)')
    parser.add_argument('--wait-subscribers-s', type=float, default=0.0,
                        help='before publishing, wait up to this many seconds until every '
                             'topic has a subscriber (default 0: do not wait)')
    parser.add_argument('--cache-mb', type=int, default=1024,
                        help='memory for pre-built messages in MiB (default 1024)')
    parser.add_argument('--labels-out', type=pathlib.Path, metavar='PATH',
                        help='write one JSON line per published frame with its true label')
    parser.add_argument('--stats-out', type=pathlib.Path, metavar='PATH',
                        help='write the published frame counts per topic as JSON')
    return parser


def parse_options(argv: list[str]) -> argparse.Namespace:
    """Parse and check the command line (without ROS arguments); exit with usage on errors."""
    parser = build_parser()
    options = parser.parse_args(argv)
    topics = [spec.topic for spec in options.streams]
    if len(set(topics)) != len(topics):
        parser.error(f'each topic may appear in one --stream only: {", ".join(topics)}')
    if (options.width is None) != (options.height is None):
        parser.error('give both --width and --height, or neither')
    options.size = None
    if options.width is not None:
        if not (0 < options.width <= MAX_SIDE_PX and 0 < options.height <= MAX_SIDE_PX):
            parser.error(f'--width and --height must be 1 to {MAX_SIDE_PX} pixels')
        options.size = (options.width, options.height)
    if options.speed is not None:
        if options.bag is None:
            parser.error('--speed replays recorded times and needs --bag')
        if not 0.0 < options.speed <= 1000.0:
            parser.error('--speed must be more than 0 and at most 1000')
    if options.bag_topic is not None and options.bag is None:
        parser.error('--bag-topic needs --bag')
    for name in ('duration_s', 'jitter_ms', 'wait_subscribers_s'):
        value = getattr(options, name)
        if not math.isfinite(value) or value < 0:
            parser.error(f'--{name.replace("_", "-")} must be a finite number >= 0')
    if options.max_images is not None and options.max_images < 1:
        parser.error('--max-images must be at least 1')
    if options.max_frames < 0 or options.cache_mb < 0:
        parser.error('--max-frames and --cache-mb must be >= 0')
    for name in ('labels_out', 'stats_out'):
        path = getattr(options, name)
        if path is not None and not path.parent.is_dir():
            parser.error(f'--{name.replace("_", "-")} {path}: folder {path.parent} not found')
    return options


def main(args: list[str] | None = None) -> int:
    """Run the player; `args` is a full command line like sys.argv (default sys.argv)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args

    argv = sys.argv if args is None else args
    options = parse_options(remove_ros_args(argv)[1:])
    try:
        frames, source = load_frames(options)
    except sample_images.ImageSourceError as error:
        print(f'edgeserving-player: {error}', file=sys.stderr)
        return 2
    labels_file = None
    if options.labels_out is not None:
        try:
            labels_file = open(options.labels_out, 'w', encoding='utf-8')
        except OSError as error:
            print(f'edgeserving-player: cannot write --labels-out {options.labels_out}: '
                  f'{error.strerror}', file=sys.stderr)
            return 2

    stop = threading.Event()
    previous_handlers = {number: signal.signal(number, lambda *_: stop.set())
                         for number in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = _create_player_node(options)
        logger = node.get_logger()
        logger.info(f'loaded {len(frames)} frames from {source}')
        if options.wait_subscribers_s > 0:
            node.wait_for_subscribers(options.wait_subscribers_s, stop)
        stats = play(node, options, frames, stop, labels_file)
        node.wait_for_acknowledgements(ACKNOWLEDGEMENT_TIMEOUT_S)

        for topic, topic_stats in stats.items():
            logger.info(f'{topic}: published {topic_stats["published"]} frames '
                        f'({topic_stats["encoding"]}, max lag {topic_stats["max_lag_ms"]:.1f} ms)')
        if options.stats_out is not None:
            report = {'source': source, 'frames_loaded': len(frames),
                      'arrivals': 'recorded' if options.speed else options.arrivals,
                      'seed': options.seed, 'topics': stats}
            options.stats_out.write_text(json.dumps(report, indent=2) + '\n', encoding='utf-8')
    finally:
        if labels_file is not None:
            labels_file.close()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        for number, handler in previous_handlers.items():
            signal.signal(number, handler)
    return 0


if __name__ == '__main__':
    sys.exit(main())
