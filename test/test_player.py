"""Tests of the image player: argument parsing, sources, and real publishing over DDS.

Tests that start ROS processes need the private network namespace of tools/run-isolated
(`make test`); outside it they fail instead of talking DDS on the host network.
"""

import argparse
import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from edgeserving_ros import config, player, sample_images
from edgeserving_ros.data_paths import require_data

BAG_ROS1 = 'duckiebot-digit-crops-bag/collected_digit.bag'
BAG_ROS2 = 'duckiebot-digit-crops-bag/rosbag2_mcap'
CIFAR_TEST = 'cifar10-jpeg/test'
RECEIVE_TIMEOUT_S = 30.0


@pytest.fixture
def listener(rclpy_context, fastdds_shm_cleanup):
    """An rclpy node in its own context, for subscriptions made by a test."""
    import rclpy

    node = rclpy.create_node('player_test_listener', context=rclpy_context)
    try:
        yield node
    finally:
        node.destroy_node()


def _subscribe(node, msg_type, topic, received):
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    return node.create_subscription(msg_type, topic, received.append, qos)


def _run_player(node, arguments, done, timeout_s=RECEIVE_TIMEOUT_S):
    """Run the player as a process while spinning `node` until `done()` and the player exit."""
    import rclpy

    command = [sys.executable, '-m', 'edgeserving_ros.player', *arguments]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    executor = rclpy.executors.SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not (done() and process.poll() is not None):
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.remove_node(node)
        if process.poll() is None:
            process.send_signal(2)
        try:
            output, _ = process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert process.returncode == 0, f'player failed ({process.returncode}):\n{output}'
    return output


def _stamp_ns(msg):
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.mark.parametrize('text, expected', [
    ('/cam/image_raw=30', player.StreamSpec('/cam/image_raw', 30.0, 'bgr8')),
    ('/cam=12.5:compressed', player.StreamSpec('/cam', 12.5, 'compressed')),
    ('cam=1:mono8', player.StreamSpec('cam', 1.0, 'mono8')),
])
def test_parse_stream_spec_valid(text, expected):
    assert player.parse_stream_spec(text) == expected


@pytest.mark.parametrize('text', [
    '/cam', '=30', '/cam=', '/cam=fast', '/cam=0', '/cam=-5', '/cam=nan', '/cam=5000',
    '/cam=30:yuv', '/cam=30:jpeg', 'bad topic=10', '/cam//image=10', '1cam=10',
])
def test_parse_stream_spec_invalid(text):
    with pytest.raises(ValueError):
        player.parse_stream_spec(text)


@pytest.mark.parametrize('text, message', [
    ('/a=0', "rate 0 Hz in stream '/a=0' is out of range"),
    ('/a=-5', "rate -5 Hz in stream '/a=-5' is out of range"),
    ('/a=nan', "rate nan Hz in stream '/a=nan' is out of range"),
    ('/a=1e9', "rate 1e+09 Hz in stream '/a=1e9' is out of range"),
    ('/a=10:yuv420', "encoding 'yuv420' in stream '/a=10:yuv420' is not supported"),
    ('/a', "invalid stream '/a': expected TOPIC=RATE_HZ[:ENCODING]"),
    ('bad topic=10', "invalid topic 'bad topic' in stream 'bad topic=10': topic name must not "
                     'contain characters other than alphanumerics'),
    ('/a//b=10', "invalid topic '/a//b' in stream '/a//b=10': topic name must not contain "
                 "repeated '/'"),
    ('/a/=10', "invalid topic '/a/' in stream '/a/=10'"),
])
def test_invalid_stream_exits_two(text, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        player.parse_options(['--stream', '/ok=10', '--stream', text])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f'argument --stream: {message}' in error
    assert 'invalid parse_stream_spec value' not in error


def test_stream_spec_error_is_value_error():
    with pytest.raises(argparse.ArgumentTypeError):
        player.parse_stream_spec('bad topic=10')
    with pytest.raises(ValueError):
        player.parse_stream_spec('bad topic=10')


@pytest.mark.parametrize('option', ['--labels-out', '--stats-out'])
def test_output_in_missing_folder_exits_two(option, tmp_path, capsys):
    path = tmp_path / 'absent' / 'out.json'
    with pytest.raises(SystemExit) as exit_info:
        player.parse_options(['--stream', '/a=10', option, str(path)])
    assert exit_info.value.code == 2
    assert f'{option} {path}: folder {path.parent} not found' in capsys.readouterr().err


def test_unwritable_labels_file_exits_two(tmp_path, capsys):
    # A folder cannot be opened for writing; the player stops before it starts ROS.
    code = player.main(['edgeserving-player', '--stream', '/a=10', '--labels-out',
                        str(tmp_path)])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith(f'edgeserving-player: cannot write --labels-out {tmp_path}: ')
    assert len(error.splitlines()) == 1


def _bad_bags(folder):
    not_a_bag = folder / 'photo.bag'
    not_a_bag.write_bytes(b'not a bag')
    no_metadata = folder / 'rosbag2_without_metadata'
    no_metadata.mkdir()
    return [(not_a_bag, 'File magic is invalid'), (no_metadata, 'metadata')]


def test_unreadable_bag_raises_source_error(tmp_path):
    for path, reason in _bad_bags(tmp_path):
        with pytest.raises(sample_images.ImageSourceError,
                           match=f'cannot read bag {path}: .*{reason}'):
            sample_images.load_bag(path)


def test_unreadable_bag_exits_two(tmp_path, capsys):
    for path, reason in _bad_bags(tmp_path):
        code = player.main(['edgeserving-player', '--stream', '/a=10', '--bag', str(path)])
        assert code == 2
        error = capsys.readouterr().err
        assert error.startswith(f'edgeserving-player: cannot read bag {path}: ')
        assert reason in error
        assert len(error.splitlines()) == 1


def test_periodic_arrivals_with_jitter_stay_ordered():
    rng = np.random.default_rng(1)
    offsets = player.arrival_offsets('periodic', 20.0, rng, jitter_s=1.0)
    times = np.array([next(offsets) for _ in range(200)])
    nominal = np.arange(200) / 20.0
    # The jitter is capped at 45 % of the 50 ms period.
    assert np.all(np.abs(times - nominal) <= 0.45 * 0.05 + 1e-12)
    assert np.all(np.diff(times) > 0)


def test_periodic_arrivals_without_jitter_are_exact():
    offsets = player.arrival_offsets('periodic', 4.0, np.random.default_rng(0))
    assert [next(offsets) for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]


def test_poisson_arrivals_mean_gap():
    offsets = player.arrival_offsets('poisson', 50.0, np.random.default_rng(3))
    times = np.array([next(offsets) for _ in range(5000)])
    gaps = np.diff(times)
    assert np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(0.02, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.1)


def test_sample_photos_load_without_data():
    frames = sample_images.load_sample_photos()
    assert [frame.name for frame in frames] == [
        f'skimage:{name}' for name in sample_images.SAMPLE_PHOTOS]
    for frame in frames:
        assert frame.image.dtype == np.uint8
        assert frame.image.ndim in (2, 3)
        assert min(frame.image.shape[:2]) >= 100
        assert frame.label is None


def test_image_folder_labels_and_seeded_order():
    root = require_data(CIFAR_TEST)
    frames = sample_images.load_image_folder(root, max_images=50, seed=7)
    again = sample_images.load_image_folder(root, max_images=50, seed=7)
    assert len(frames) == 50
    assert [frame.name for frame in frames] == [frame.name for frame in again]
    assert {frame.label for frame in frames} <= set(config.CIFAR10_LABELS)
    assert len({frame.label for frame in frames}) > 3
    for frame in frames:
        assert frame.image.shape == (32, 32, 3)
        assert frame.name.split('/')[0] == frame.label


def test_image_folder_missing_raises(tmp_path):
    with pytest.raises(sample_images.ImageSourceError, match='not found'):
        sample_images.load_image_folder(tmp_path / 'absent')
    with pytest.raises(sample_images.ImageSourceError, match='no images'):
        sample_images.load_image_folder(tmp_path)


def test_ros1_and_ros2_bags_hold_same_frames():
    ros1 = sample_images.load_bag(require_data(BAG_ROS1))
    ros2 = sample_images.load_bag(require_data(BAG_ROS2))
    assert len(ros1) == len(ros2) == 1402
    for first, second in zip(ros1, ros2):
        assert first.image.shape == (28, 28)
        assert first.compressed == second.compressed
        assert first.recorded_s == second.recorded_s
        assert first.compressed_format == 'jpeg'
    span_s = ros1[-1].recorded_s - ros1[0].recorded_s
    assert 600 < span_s < 700


def test_bag_unknown_topic_raises():
    with pytest.raises(sample_images.ImageSourceError, match='no image topic'):
        sample_images.load_bag(require_data(BAG_ROS1), topic='/camera/image_raw')


def test_recorded_offsets_follow_bag_times():
    frames = sample_images.load_bag(require_data(BAG_ROS1), max_frames=20)
    offsets = list(player.recorded_offsets(frames, speed=4.0))
    expected = [(frame.recorded_s - frames[0].recorded_s) / 4.0 for frame in frames]
    assert offsets == pytest.approx(expected)


def test_player_publishes_cifar_images(listener, tmp_path):
    from sensor_msgs.msg import Image

    root = require_data(CIFAR_TEST)
    received = []
    _subscribe(listener, Image, '/test_cifar/image_raw', received)
    labels_path = tmp_path / 'labels.jsonl'
    stats_path = tmp_path / 'stats.json'
    _run_player(listener, [
        '--stream', '/test_cifar/image_raw=50', '--images', str(root), '--max-frames', '20',
        '--max-images', '100', '--reliable', '--wait-subscribers-s', '10',
        '--frame-id', 'test_camera', '--labels-out', str(labels_path),
        '--stats-out', str(stats_path)], done=lambda: len(received) >= 20)

    stats = json.loads(stats_path.read_text())
    assert stats['topics']['/test_cifar/image_raw']['published'] == 20
    labels = {entry['stamp_ns']: entry
              for entry in map(json.loads, labels_path.read_text().splitlines())}
    assert len(labels) == 20
    assert len(received) == 20
    for msg in received:
        assert (msg.encoding, msg.width, msg.height, msg.step) == ('bgr8', 32, 32, 96)
        assert msg.header.frame_id == 'test_camera'
        entry = labels[_stamp_ns(msg)]
        assert entry['label'] in config.CIFAR10_LABELS
        expected = cv2.imread(str(root / entry['source']), cv2.IMREAD_COLOR)
        pixels = np.frombuffer(msg.data, np.uint8).reshape(32, 32, 3)
        np.testing.assert_array_equal(pixels, expected)


def test_player_republishes_bag_frames(listener):
    from sensor_msgs.msg import CompressedImage, Image

    bag = require_data(BAG_ROS1)
    compressed, decoded = [], []
    _subscribe(listener, CompressedImage, '/test_digits/compressed', compressed)
    _subscribe(listener, Image, '/test_digits/image_raw', decoded)
    _run_player(listener, [
        '--stream', '/test_digits/compressed=100:compressed',
        '--stream', '/test_digits/image_raw=100:mono8',
        '--bag', str(bag), '--max-frames', '10', '--reliable', '--wait-subscribers-s', '10'],
        done=lambda: len(compressed) >= 10 and len(decoded) >= 10)

    frames = sample_images.load_bag(bag, max_frames=20)
    originals = {frame.compressed for frame in frames}
    assert len(compressed) == 10
    for msg in compressed:
        assert msg.format == 'jpeg'
        assert bytes(msg.data) in originals
    assert len(decoded) == 10
    for msg in decoded:
        assert (msg.encoding, msg.width, msg.height, msg.step) == ('mono8', 28, 28, 28)


def test_player_sample_photos_camera_size(listener):
    from sensor_msgs.msg import CompressedImage, Image

    raw, compressed = [], []
    _subscribe(listener, Image, '/test_photos/image_raw', raw)
    _subscribe(listener, CompressedImage, '/test_photos/compressed', compressed)
    _run_player(listener, [
        '--stream', '/test_photos/image_raw=30',
        '--stream', '/test_photos/compressed=30:compressed',
        '--width', '640', '--height', '480', '--max-frames', '8', '--reliable',
        '--wait-subscribers-s', '10'],
        done=lambda: len(raw) >= 8 and len(compressed) >= 8)

    assert len(raw) == 8
    for msg in raw:
        assert (msg.encoding, msg.width, msg.height, msg.step) == ('bgr8', 640, 480, 1920)
        assert len(msg.data) == 640 * 480 * 3
    assert len(compressed) == 8
    for msg in compressed:
        image = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_UNCHANGED)
        assert image.shape[:2] == (480, 640)


def test_message_factory_cache_budget():
    frames = sample_images.load_sample_photos()[:2]
    frame_bytes = 64 * 48 * 3
    factory = player.MessageFactory(frames, (64, 48), cache_bytes=frame_bytes)
    assert factory.prebuild(['bgr8']) == 1
    assert factory.message(0, 'bgr8') is factory.message(0, 'bgr8')
    assert factory.message(1, 'bgr8') is not factory.message(1, 'bgr8')
    msg = factory.message(1, 'bgr8')
    assert (msg.width, msg.height, msg.step, len(msg.data)) == (64, 48, 192, frame_bytes)


@pytest.mark.parametrize('encoding, step', [('bgr8', 192), ('rgb8', 192), ('mono8', 64)])
def test_message_factory_encodings(encoding, step):
    frames = sample_images.load_sample_photos(('astronaut', 'camera'))
    factory = player.MessageFactory(frames, (64, 48), cache_bytes=0)
    for index in range(len(frames)):
        msg = factory.message(index, encoding)
        assert (msg.encoding, msg.width, msg.height, msg.step) == (encoding, 64, 48, step)
        assert len(msg.data) == step * 48


def test_message_factory_rgb8_reorders_channels():
    frames = sample_images.load_sample_photos(('astronaut',))
    factory = player.MessageFactory(frames, None, cache_bytes=0)
    bgr = np.frombuffer(factory.message(0, 'bgr8').data, np.uint8).reshape(512, 512, 3)
    rgb = np.frombuffer(factory.message(0, 'rgb8').data, np.uint8).reshape(512, 512, 3)
    np.testing.assert_array_equal(rgb, bgr[:, :, ::-1])


def test_message_factory_compressed_jpeg():
    frames = sample_images.load_sample_photos(('coffee',))
    msg = player.MessageFactory(frames, (640, 480), cache_bytes=0).message(0, 'compressed')
    assert 'jpeg' in msg.format
    image = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (480, 640, 3)
