"""The edgeserving node over real DDS: real CIFAR-10 frames in, results and diagnostics out.

The node runs in this process, spun in a background thread with a client node that publishes
frames, subscribes to results and diagnostics and calls the parameter services. A publisher
in a subprocess checks that camera-sized frames from another process arrive. Everything runs
inside the private network namespace of tools/run-isolated; waits are bounded by WAIT_S.
"""

import dataclasses
import math
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading
import time

import cv2
import pytest
import yaml

from edgeserving_ros.config import CIFAR10_LABELS, ModelConfig
from edgeserving_ros.data_paths import require_data
from edgeserving_ros.profile import ExitProfile, LatencyStats, ModelProfile, Profile
from edgeserving_ros.profile import save_profile
from edgeserving_ros.result_message import parse_result

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SERVE_YAML = REPO_ROOT / 'config' / 'serve.yaml'
FASTDDS_PROFILE = REPO_ROOT / 'config' / 'fastdds_large_frames.xml'

WAIT_S = 20.0
SLO_MS = 2000.0  # generous: these tests check the pipeline, not timing on a loaded host
IMAGES_PER_CLASS = 2
POLICY = 'edgeserving'

# stream -> (topic, input type, model, min_accuracy). min_accuracy 1.0 allows the final exit
# only, so those streams' results can be compared with the engine's.
STREAMS = {
    'cam_fast': ('/camera_fast/image_raw', 'raw', 'resnet20', 0.0),
    'cam_medium': ('/camera_medium/image_raw/compressed', 'compressed', 'resnet32', 1.0),
    'cam_slow': ('/camera_slow/image_raw', 'raw', 'resnet56', 1.0),
}
ARCHITECTURES = {'resnet20': 'cifar_resnet20', 'resnet32': 'cifar_resnet32',
                 'resnet56': 'cifar_resnet56'}
# Latencies (p50 ms at batch 1 and 10) in the range measured for these models on one CPU
# thread; the online correction adapts them to this host.
PROFILED_MS = {'resnet20': ((1.1, 5.1), (1.9, 8.4), (2.6, 11.2)),
               'resnet32': ((1.7, 8.0), (3.0, 13.0), (4.2, 18.0)),
               'resnet56': ((2.8, 14.5), (5.1, 24.0), (7.3, 32.7))}
PROFILED_ACCURACY = (0.40, 0.57, 0.82)

PUBLISHER_SCRIPT = textwrap.dedent('''
    import signal, sys, threading
    import numpy as np
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    topic, duration_s = sys.argv[1], float(sys.argv[2])
    stop = threading.Event()
    rclpy.init()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node = rclpy.create_node('external_camera')
    publisher = node.create_publisher(Image, topic, qos_profile_sensor_data)
    pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    msg = Image(height=480, width=640, encoding='bgr8', step=640 * 3)
    msg.data = pixels.tobytes()
    msg.header.frame_id = 'other_process'
    end_s = node.get_clock().now().nanoseconds * 1e-9 + duration_s
    while not stop.is_set() and node.get_clock().now().nanoseconds * 1e-9 < end_s:
        msg.header.stamp = node.get_clock().now().to_msg()
        publisher.publish(msg)
        stop.wait(0.1)
    node.destroy_node()
    rclpy.try_shutdown()
''')


# ------------------------------------------------------------------------------ helpers
def write_profile(path: pathlib.Path) -> None:
    models = {}
    for name, per_exit in PROFILED_MS.items():
        exits = []
        for (exit_name, accuracy), (batch1_ms, batch10_ms) in zip(
                zip(('stage1', 'stage2', 'final'), PROFILED_ACCURACY), per_exit):
            latency = {1: LatencyStats(batch1_ms, batch1_ms * 1.2, batch1_ms * 1.5),
                       10: LatencyStats(batch10_ms, batch10_ms * 1.2, batch10_ms * 1.5)}
            exits.append(ExitProfile(exit_name, latency, accuracy, 5000))
        models[name] = ModelProfile(ARCHITECTURES[name], exits, input_size=32)
    save_profile(Profile(models=models, device='test profile', threads=1), path)


def write_parameters(path: pathlib.Path, profile_path: pathlib.Path, weights: dict,
                     **overrides) -> None:
    """Write the shipped config/serve.yaml with this test's streams, weights and profile."""
    document = yaml.safe_load(SERVE_YAML.read_text(encoding='utf-8'))
    parameters = document['/**']['ros__parameters']
    for stream, (topic, input_type, model, min_accuracy) in STREAMS.items():
        parameters['streams'][stream].update(topic=topic, input_type=input_type, model=model,
                                             min_accuracy=min_accuracy, slo_ms=SLO_MS,
                                             max_batch=4)
    for model, weights_path in weights.items():
        parameters['models'][model]['weights'] = str(weights_path)
    parameters.update(profile_path=str(profile_path), policy=POLICY, torch_threads=1,
                      **overrides)
    path.write_text(yaml.safe_dump(document), encoding='utf-8')


@dataclasses.dataclass
class CifarImage:
    label: int
    bgr: object
    jpeg: bytes


def load_cifar_images(root: pathlib.Path) -> list[CifarImage]:
    images = []
    for label, name in enumerate(CIFAR10_LABELS):
        for path in sorted((root / name).glob('*.jpg'))[:IMAGES_PER_CLASS]:
            jpeg = path.read_bytes()
            images.append(CifarImage(label, cv2.imread(str(path), cv2.IMREAD_COLOR), jpeg))
    return images


def model_weights() -> dict:
    from edgeserving_ros.models import default_cifar_weights

    require_data('cifar10-resnet-weights')
    weights = {name: default_cifar_weights(architecture)
               for name, architecture in ARCHITECTURES.items()}
    missing = [name for name, path in weights.items() if path is None]
    if missing:
        require_data(f'cifar10-resnet-weights/{missing[0]}')
    return weights


class Harness:
    """The node under test plus a client node, spun together in one background thread."""

    def __init__(self, context, node):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CompressedImage, Image
        from std_msgs.msg import String

        self.node = node
        self.client = rclpy.create_node('edgeserving_test_client', context=context)
        self.results = {stream: [] for stream in STREAMS}
        self.result_texts = []
        self.diagnostics = []
        self.publishers = {}
        for stream, (topic, input_type, _, _) in STREAMS.items():
            message_type = CompressedImage if input_type == 'compressed' else Image
            self.publishers[stream] = self.client.create_publisher(
                message_type, topic, qos_profile_sensor_data)
            self.client.create_subscription(
                String, f'/edgeserving/{stream}/result',
                lambda msg, stream=stream: self._on_result(stream, msg), 10)
        self.client.create_subscription(DiagnosticArray, '/diagnostics',
                                        self.diagnostics.append, 10)

        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(node)
        self.executor.add_node(self.client)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        for stream, (topic, _, _, _) in STREAMS.items():
            assert self.wait_for(lambda: self.publishers[stream].get_subscription_count() > 0
                                 and node.count_publishers(topic) > 0), \
                f'the node did not discover the test publisher of {topic}'
            result_topic = f'/edgeserving/{stream}/result'
            assert self.wait_for(lambda: node.count_subscribers(result_topic) > 0), \
                f'the node did not discover the test subscription to {result_topic}'

    def _on_result(self, stream, msg):
        self.result_texts.append(msg.data)
        self.results[stream].append(parse_result(msg.data))

    def close(self):
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(5.0)
        self.client.destroy_node()
        self.node.destroy_node()

    @staticmethod
    def wait_for(predicate, timeout_s: float = WAIT_S) -> bool:
        end_s = time.monotonic() + timeout_s
        while time.monotonic() < end_s:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()

    def header(self, frame_id: str):
        from std_msgs.msg import Header

        return Header(stamp=self.node.get_clock().now().to_msg(), frame_id=frame_id)

    def publish_image(self, stream: str, image: CifarImage, frame_id: str):
        """Publish a CIFAR image in the stream's format: rgb8, JPEG, or bgr8 for cam_slow."""
        from sensor_msgs.msg import CompressedImage

        from edgeserving_ros.image_conversion import array_to_image

        header = self.header(frame_id)
        if stream == 'cam_medium':
            msg = CompressedImage(header=header, format='jpeg', data=image.jpeg)
        elif stream == 'cam_slow':
            msg = array_to_image(image.bgr, 'bgr8', header)
        else:
            msg = array_to_image(cv2.cvtColor(image.bgr, cv2.COLOR_BGR2RGB), 'rgb8', header)
        self.publishers[stream].publish(msg)
        return header

    def results_for(self, stream: str, frame_ids) -> dict:
        wanted = set(frame_ids)
        return {result['header']['frame_id']: result for result in list(self.results[stream])
                if result['header']['frame_id'] in wanted}

    def wait_results(self, stream: str, frame_ids) -> dict:
        self.wait_for(lambda: len(self.results_for(stream, frame_ids)) == len(set(frame_ids)))
        return self.results_for(stream, frame_ids)

    def call(self, service_type, name: str, request):
        client = self.client.create_client(service_type, name)
        try:
            assert client.wait_for_service(timeout_sec=WAIT_S), f'service {name} not available'
            future = client.call_async(request)
            assert self.wait_for(future.done), f'no response from {name} within {WAIT_S} s'
            return future.result()
        finally:
            self.client.destroy_client(client)

    def set_parameters(self, parameters, atomically: bool = False):
        from rcl_interfaces.srv import SetParameters, SetParametersAtomically

        service_type = SetParametersAtomically if atomically else SetParameters
        suffix = 'set_parameters_atomically' if atomically else 'set_parameters'
        request = service_type.Request(
            parameters=[parameter.to_parameter_msg() for parameter in parameters])
        response = self.call(service_type, f'/edgeserving/{suffix}', request)
        return [response.result] if atomically else list(response.results)

    def get_parameters(self, names) -> list:
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        response = self.call(GetParameters, '/edgeserving/get_parameters',
                             GetParameters.Request(names=list(names)))
        return [parameter_value_to_python(value) for value in response.values]

    def latest_diagnostics(self) -> dict:
        """Return the statuses of the latest DiagnosticArray by name (empty before one)."""
        if not self.diagnostics:
            return {}
        return {status.name: status for status in self.diagnostics[-1].status}


def status_values(status) -> dict:
    return {pair.key: pair.value for pair in status.values}


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope='module')
def cifar_images():
    return load_cifar_images(require_data('cifar10-jpeg/test'))


@pytest.fixture(scope='module')
def weights():
    return model_weights()


@pytest.fixture(scope='module')
def harness(tmp_path_factory, make_ros_context, weights):
    folder = tmp_path_factory.mktemp('node')
    write_profile(folder / 'profile.json')
    write_parameters(folder / 'params.yaml', folder / 'profile.json', weights)
    with make_ros_context(['--ros-args', '--params-file', str(folder / 'params.yaml')]) \
            as context:
        from edgeserving_ros.node import EdgeServingNode

        node = EdgeServingNode(context=context)
        try:
            harness = Harness(context, node)
        except BaseException:
            node.destroy_node()
            raise
        try:
            yield harness
        finally:
            harness.close()


@pytest.fixture(scope='module')
def served(harness, cifar_images):
    """Publish every CIFAR image on every stream once; return stream -> (headers, results)."""
    sent = {stream: {} for stream in STREAMS}
    for index, image in enumerate(cifar_images):
        for stream in STREAMS:
            frame_id = f'{stream}-{index}'
            sent[stream][frame_id] = (harness.publish_image(stream, image, frame_id), image)
        time.sleep(0.01)
    return {stream: (frames, harness.wait_results(stream, frames))
            for stream, frames in sent.items()}


# ------------------------------------------------------------------------------ tests
def test_every_frame_gets_one_result(served):
    for stream, (sent, results) in served.items():
        missing = sorted(set(sent) - set(results))
        assert not missing, f'{stream}: no result within {WAIT_S} s for {missing}'


def test_results_copy_input_header(served):
    for stream, (sent, results) in served.items():
        for frame_id, result in results.items():
            header, _ = sent[frame_id]
            assert result['header']['frame_id'] == header.frame_id
            assert result['header']['stamp'] == {'sec': header.stamp.sec,
                                                 'nanosec': header.stamp.nanosec}


def test_results_describe_stream_and_timing(served):
    for stream, (_, results) in served.items():
        assert results, f'{stream}: no results'
        for result in results.values():
            times, latency = result['time_s'], result['latency_ms']
            stamp = result['header']['stamp']
            assert result['stream'] == stream
            assert result['model'] == STREAMS[stream][2]
            assert result['slo_ms'] == SLO_MS
            assert result['arrival_reference'] == 'header'
            assert times['arrival'] == pytest.approx(stamp['sec'] + stamp['nanosec'] * 1e-9,
                                                     abs=1e-6)
            assert times['deadline'] - times['arrival'] == pytest.approx(SLO_MS / 1000.0,
                                                                         abs=1e-6)
            assert times['arrival'] <= times['receive'] <= times['start'] <= times['finish']
            assert latency['queue'] + latency['inference'] == pytest.approx(latency['total'])
            assert result['deadline_met'] == (times['finish'] <= times['deadline'])
            assert 1 <= result['batch_size'] <= 4
            assert len(result['top_k']) == 3
            assert all(entry['label'] == CIFAR10_LABELS[entry['class_id']]
                       for entry in result['top_k'])


def test_final_exit_results_match_engine(served, weights):
    """Results of final-exit streams equal the engine's own output on the decoded images."""
    from edgeserving_ros.engine import InferenceEngine
    from edgeserving_ros.models import build_model

    for stream in ('cam_medium', 'cam_slow'):
        sent, results = served[stream]
        model_name = STREAMS[stream][2]
        model = build_model(ModelConfig(model_name, ARCHITECTURES[model_name],
                                        weights=str(weights[model_name])))
        engine = InferenceEngine({model_name: model}, threads=1)
        frame_ids = sorted(results)
        frames = [cv2.cvtColor(sent[frame_id][1].bgr, cv2.COLOR_BGR2RGB)
                  for frame_id in frame_ids]
        expected = engine.infer(model_name, 2, frames).top_k

        correct = 0
        for frame_id, reference in zip(frame_ids, expected):
            result = results[frame_id]
            assert result['exit']['final'] is True
            assert result['weights_trained'] is True
            assert result['top_k'][0]['class_id'] == reference[0].class_id, frame_id
            assert result['top_k'][0]['score'] == pytest.approx(reference[0].score, abs=1e-4)
            correct += result['top_k'][0]['class_id'] == sent[frame_id][1].label
        # The first two test images of each class: 16 to 17 of 20 are right for these models.
        assert correct >= 0.7 * len(frame_ids), f'{stream}: {correct}/{len(frame_ids)} right'


def test_diagnostics_report_streams_and_models(harness, served):
    from diagnostic_msgs.msg import DiagnosticStatus

    expected = [f'edgeserving: stream {stream}' for stream in STREAMS]
    expected += [f'edgeserving: model {model}' for model in ARCHITECTURES]
    expected.append('edgeserving: scheduler')
    assert harness.wait_for(lambda: all(name in harness.latest_diagnostics()
                                        for name in expected)), \
        f'diagnostics lack some of {expected}: {sorted(harness.latest_diagnostics())}'

    statuses = harness.latest_diagnostics()
    for name in expected:
        assert statuses[name].level in (DiagnosticStatus.OK, DiagnosticStatus.WARN,
                                        DiagnosticStatus.ERROR)
        assert statuses[name].message
        assert statuses[name].hardware_id == 'cpu'
    stream_values = status_values(statuses['edgeserving: stream cam_slow'])
    for key in ('violation_ratio', 'latency_p95_ms', 'queue_length', 'dropped_doomed',
                'dropped_overflow', 'rejected_inputs', 'exit_mix'):
        assert key in stream_values, key
    assert int(stream_values['offered']) >= IMAGES_PER_CLASS * 10
    assert float(stream_values['latency_p95_ms']) > 0.0
    assert stream_values['exit_mix'] == 'final:1.00'
    model_values = status_values(statuses['edgeserving: model resnet56'])
    assert model_values['weights_trained'] == 'true'
    assert float(model_values['exit_mix.final']) == 1.0
    assert int(model_values['latency_correction_samples.final']) >= 1
    assert float(model_values['latency_correction.final']) > 0.0


def test_live_slo_change_applies_to_new_frames(harness, cifar_images):
    from rclpy.parameter import Parameter

    name = 'streams.cam_fast.slo_ms'
    try:
        outcome, = harness.set_parameters([Parameter(name, value=1500.0)])
        assert outcome.successful, outcome.reason
        assert harness.get_parameters([name]) == [1500.0]

        frame_ids = [f'slo-change-{index}' for index in range(3)]
        for frame_id, image in zip(frame_ids, cifar_images):
            harness.publish_image('cam_fast', image, frame_id)
            time.sleep(0.02)
        results = harness.wait_results('cam_fast', frame_ids)
        assert sorted(results) == frame_ids
        for result in results.values():
            assert result['slo_ms'] == 1500.0
            times = result['time_s']
            assert times['deadline'] - times['arrival'] == pytest.approx(1.5, abs=1e-6)
    finally:
        harness.set_parameters([Parameter(name, value=SLO_MS)])


def test_out_of_range_values_rejected(harness):
    from rclpy.parameter import Parameter

    cases = [Parameter('streams.cam_fast.slo_ms', value=-5.0),
             Parameter('streams.cam_fast.max_batch', value=0),
             Parameter('streams.cam_fast.min_accuracy', value=1.5),
             Parameter('streams.cam_fast.slo_ms', value='fast'),
             Parameter('arrival_reference', value='stamp'),
             Parameter('streams.cam_fast.topic', value='/other')]
    for parameter in cases:
        outcome, = harness.set_parameters([parameter])
        assert not outcome.successful, parameter.name
        assert outcome.reason, parameter.name
    assert harness.get_parameters(['streams.cam_fast.slo_ms', 'streams.cam_fast.max_batch',
                                   'streams.cam_fast.min_accuracy', 'arrival_reference',
                                   'streams.cam_fast.topic']) == \
        [SLO_MS, 4, 0.0, 'header', STREAMS['cam_fast'][0]]


def test_invalid_set_changes_nothing(harness):
    from rclpy.parameter import Parameter

    for invalid in (Parameter('streams.cam_fast.max_batch', value=0),
                    Parameter('arrival_reference', value='stamp')):
        outcome, = harness.set_parameters(
            [Parameter('streams.cam_fast.slo_ms', value=1000.0), invalid], atomically=True)
        assert not outcome.successful
        assert outcome.reason
        assert harness.get_parameters(['streams.cam_fast.slo_ms', 'streams.cam_fast.max_batch',
                                       'arrival_reference']) == [SLO_MS, 4, 'header']
    assert harness.node.summary()['streams'][0]['name'] == 'cam_fast'


def test_malformed_frames_do_not_stop_serving(harness, cifar_images):
    from sensor_msgs.msg import CompressedImage, Image

    def raw(encoding, step, size):
        return Image(header=harness.header('malformed'), height=32, width=32,
                     encoding=encoding, step=step, data=bytes(size))

    def rejected_inputs():
        return {row['name']: row['rejected_inputs'] for row in harness.node.summary()['streams']}

    before = rejected_inputs()
    malformed = [('cam_fast', raw('rgb8', 50, 50 * 32)),  # step shorter than a row
                 ('cam_fast', raw('rgb8', 96, 96 * 31)),  # data below step * height
                 ('cam_fast', raw('no_such_encoding', 96, 96 * 32)),
                 ('cam_medium', CompressedImage(header=harness.header('malformed'),
                                                format='jpeg', data=b'not an image'))]
    for stream, msg in malformed:
        harness.publishers[stream].publish(msg)
        time.sleep(0.02)  # the subscription keeps the last 5 frames: do not overrun it
    assert harness.wait_for(lambda: rejected_inputs()['cam_fast'] - before['cam_fast'] == 3
                            and rejected_inputs()['cam_medium'] - before['cam_medium'] == 1), \
        f'rejected inputs before {before}, after {rejected_inputs()}'

    frame_ids = [f'after-malformed-{index}' for index in range(3)]
    for frame_id, image in zip(frame_ids, cifar_images):
        harness.publish_image('cam_fast', image, frame_id)
        harness.publish_image('cam_medium', image, frame_id)
        time.sleep(0.02)
    assert sorted(harness.wait_results('cam_fast', frame_ids)) == frame_ids
    assert sorted(harness.wait_results('cam_medium', frame_ids)) == frame_ids
    rejected = rejected_inputs()

    def diagnostics_count_rejections():
        status = harness.latest_diagnostics().get('edgeserving: stream cam_fast')
        return status is not None and \
            int(status_values(status)['rejected_inputs']) >= rejected['cam_fast']
    assert harness.wait_for(diagnostics_count_rejections), \
        'diagnostics did not report the rejected frames of cam_fast'


def test_frame_from_another_process_arrives(harness, tmp_path, fastdds_shm_cleanup):
    script = tmp_path / 'external_camera.py'
    script.write_text(PUBLISHER_SCRIPT, encoding='utf-8')
    env = dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(FASTDDS_PROFILE))
    process = subprocess.Popen([sys.executable, str(script), STREAMS['cam_fast'][0], '30'],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        arrived = harness.wait_for(lambda: harness.results_for('cam_fast', ['other_process']))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=10.0)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert arrived, ('no result for the 640x480 bgr8 frames of the publisher process; its '
                     f'output: {output.decode(errors="replace")[-2000:]}')
    result = harness.results_for('cam_fast', ['other_process'])['other_process']
    stamp = result['header']['stamp']
    assert stamp['sec'] > 0
    assert result['time_s']['arrival'] == pytest.approx(stamp['sec'] + stamp['nanosec'] * 1e-9,
                                                        abs=1e-6)


def other_domain_id(offset: int) -> int:
    """Return a domain id that keeps a second node apart from the module's node."""
    return (int(os.environ.get('ROS_DOMAIN_ID', '0')) + offset) % 100


def test_sim_time_drives_request_times(tmp_path, make_ros_context, weights, cifar_images):
    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock

    from edgeserving_ros.node import EdgeServingNode

    write_profile(tmp_path / 'profile.json')
    write_parameters(tmp_path / 'params.yaml', tmp_path / 'profile.json', weights)
    arguments = ['--ros-args', '--params-file', str(tmp_path / 'params.yaml'),
                 '-p', 'use_sim_time:=true']
    with make_ros_context(arguments, domain_id=other_domain_id(2)) as context:
        harness = Harness(context, EdgeServingNode(context=context))
        try:
            clock_publisher = harness.client.create_publisher(Clock, '/clock', 10)
            sim_time = Time(sec=1000, nanosec=0)

            def node_clock_at_sim_time():
                clock_publisher.publish(Clock(clock=sim_time))
                return harness.node.get_clock().now().nanoseconds == 1000 * 10**9
            assert harness.wait_for(node_clock_at_sim_time), 'the node clock ignored /clock'

            # Simulated time now stands still; serving must go on regardless.
            harness.publish_image('cam_slow', cifar_images[0], 'sim-time')
            results = harness.wait_results('cam_slow', ['sim-time'])
        finally:
            harness.close()

    assert list(results) == ['sim-time']
    times = results['sim-time']['time_s']
    assert results['sim-time']['header']['stamp'] == {'sec': 1000, 'nanosec': 0}
    assert times['arrival'] == 1000.0
    assert times['receive'] == 1000.0
    assert times['finish'] == 1000.0
    assert times['deadline'] == pytest.approx(1000.0 + SLO_MS / 1000.0)
    assert results['sim-time']['deadline_met'] is True


def test_summary_written_at_shutdown(tmp_path, make_ros_context, weights, cifar_images):
    from edgeserving_ros.node import EdgeServingNode

    write_profile(tmp_path / 'profile.json')
    summary_path = tmp_path / 'out' / 'summary.json'
    write_parameters(tmp_path / 'params.yaml', tmp_path / 'profile.json', weights,
                     summary_path=str(summary_path))
    with make_ros_context(['--ros-args', '--params-file', str(tmp_path / 'params.yaml')],
                          domain_id=other_domain_id(1)) as context:
        harness = Harness(context, EdgeServingNode(context=context))
        try:
            frame_ids = ['summary-0', 'summary-1']
            for frame_id, image in zip(frame_ids, cifar_images):
                harness.publish_image('cam_slow', image, frame_id)
            assert sorted(harness.wait_results('cam_slow', frame_ids)) == frame_ids
        finally:
            harness.close()

    import json
    summary = json.loads(summary_path.read_text(encoding='utf-8'))
    rows = {row['name']: row for row in summary['streams']}
    assert sorted(rows) == sorted(STREAMS)
    assert rows['cam_slow']['on_time'] == 2
    assert rows['cam_slow']['exit_mix'] == {'final': 1.0}
    assert summary['totals']['offered'] == 2
    assert summary['policy'] == POLICY
    assert summary['profile']['device'] == 'test profile'
    assert summary['weights_trained'] == {'resnet20': True, 'resnet32': True, 'resnet56': True}
    assert all(math.isfinite(factor) for factor in summary['latency_correction'].values())
