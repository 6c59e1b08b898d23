"""End-to-end demo: the serving node and the image player as two processes, then a report.

`make demo` runs `python -m edgeserving_ros.demo` inside tools/run-isolated. The demo starts the
node with config/serve.yaml: three camera streams served by CIFAR ResNet-20, -32 and -56. It then
starts the player on the same topics and serves for `--duration-s`. Finally it stops both with
SIGINT and prints one row per stream from the node's metrics summary, also written as JSON.

With the data folder (edgeserving_ros.data_paths) present, the models load the pretrained
CIFAR-10 weights and the player publishes real CIFAR-10 test images. The player records the
true label of each frame, and the demo listens to the result topics, so it also reports the
top-1 accuracy of the results it received. Without the data, the same pipeline runs on
scikit-image's sample photos with randomly initialised weights: latencies and deadlines are
real, labels and accuracies are meaningless, and the output says so.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

from edgeserving_ros import config as serve_config
from edgeserving_ros import data_paths, profile as profile_module

NODE_NAME = 'edgeserving'
CIFAR_IMAGES = 'cifar10-jpeg/test'
CIFAR_WEIGHTS = 'cifar10-resnet-weights'
DEFAULT_RATES_HZ = (30.0, 20.0, 10.0)
# Camera-sized frames for the sample photos; CIFAR images keep their 32x32 size.
SAMPLE_PHOTO_SIZE = (640, 480)
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
DRAIN_S = 1.0
MAX_COLLECTED_RESULTS = 200_000

_REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


class DemoError(RuntimeError):
    """The demo could not run or one of its processes failed; the message names which."""


@dataclasses.dataclass
class DemoPlan:
    """Demo settings: streams with rates, weights, profile and image source."""

    config_file: pathlib.Path
    parameters: dict
    rates_hz: dict[str, float]
    weights: dict[str, str]
    profile_path: pathlib.Path | None
    images: pathlib.Path | None
    data_root: pathlib.Path | None

    @property
    def weights_trained(self) -> bool:
        return all(self.weights.values())

    def stream_names(self) -> list[str]:
        return list(self.parameters['stream_names'])

    def stream(self, name: str) -> dict:
        prefix = f'streams.{name}.'
        return {key[len(prefix):]: value for key, value in self.parameters.items()
                if key.startswith(prefix)}

    def model_of(self, stream: str) -> str:
        return str(self.stream(stream)['model'])

    def topic_of(self, stream: str) -> str:
        return str(self.stream(stream).get('topic') or f'/{stream}/image_raw')


def default_config_file() -> pathlib.Path:
    """Return serve.yaml of the source checkout, else of the installed package share."""
    source = _REPO_ROOT / 'config' / 'serve.yaml'
    if source.is_file():
        return source
    from ament_index_python.packages import get_package_share_directory

    return pathlib.Path(get_package_share_directory('edgeserving_ros')) / 'config' / 'serve.yaml'


def plan_demo(config_file: pathlib.Path, rates_hz: list[float]) -> DemoPlan:
    """Read the parameters file and decide weights, profile and image source.

    The profile is profile_cpu.json beside the parameters file when it exists there. Exit heads
    are left to the node, which loads the package's trained heads that match the weights file.
    """
    config_dir = config_file.parent
    parameters = serve_config.load_parameters_file(config_file, NODE_NAME)
    streams = list(parameters.get('stream_names', []))
    if len(rates_hz) != len(streams):
        raise DemoError(f'--rates has {len(rates_hz)} values but {config_file} has '
                        f'{len(streams)} streams ({", ".join(streams)})')

    root = data_paths.data_root()
    images = root / CIFAR_IMAGES
    weights = {}
    for model in parameters.get('model_names', []):
        architecture = str(parameters.get(f'models.{model}.architecture', ''))
        depth = architecture.removeprefix('cifar_')
        matches = sorted((root / CIFAR_WEIGHTS).glob(f'{depth}-*.th'))
        weights[model] = str(matches[0]) if matches else ''

    have_data = images.is_dir() and all(weights.values())
    if not have_data:
        weights = {model: '' for model in weights}
    profile_path = config_dir / 'profile_cpu.json'
    return DemoPlan(
        config_file=config_file, parameters=parameters,
        rates_hz=dict(zip(streams, rates_hz)), weights=weights,
        profile_path=profile_path if profile_path.is_file() else None,
        images=images if have_data else None, data_root=root if have_data else None)


def node_command(plan: DemoPlan, policy: str, summary_path: pathlib.Path) -> list[str]:
    overrides = {'policy': policy, 'summary_path': str(summary_path)}
    if plan.profile_path is not None:
        overrides['profile_path'] = str(plan.profile_path)
    for stream, rate_hz in plan.rates_hz.items():
        overrides[f'streams.{stream}.expected_rate_hz'] = float(rate_hz)
    for model in plan.weights:
        overrides[f'models.{model}.weights'] = plan.weights[model]

    command = [sys.executable, '-m', 'edgeserving_ros.node', '--ros-args',
               '--params-file', str(plan.config_file)]
    for name, value in overrides.items():
        # Parameter values are parsed as YAML: quote strings so that '' stays a string.
        text = json.dumps(value) if isinstance(value, str) else repr(value)
        command += ['-p', f'{name}:={text}']
    return command


def player_command(plan: DemoPlan, duration_s: float, labels_path: pathlib.Path,
                   stats_path: pathlib.Path) -> list[str]:
    command = [sys.executable, '-m', 'edgeserving_ros.player',
               '--duration-s', str(duration_s), '--seed', '0',
               '--wait-subscribers-s', str(STARTUP_TIMEOUT_S),
               '--labels-out', str(labels_path), '--stats-out', str(stats_path)]
    for stream in plan.stream_names():
        compressed = plan.stream(stream).get('input_type', 'raw') == 'compressed'
        suffix = ':compressed' if compressed else ''
        command += ['--stream', f'{plan.topic_of(stream)}={plan.rates_hz[stream]:g}{suffix}']
    if plan.images is not None:
        command += ['--images', str(plan.images)]
    else:
        command += ['--width', str(SAMPLE_PHOTO_SIZE[0]), '--height', str(SAMPLE_PHOTO_SIZE[1])]
    return command


class ResultCollector:
    """Subscribes to every stream's result topic and keeps (stream, stamp_ns, top-1, on time).

    `untrained_exit_results` counts per stream the results whose exit head was untrained
    (result field heads_trained false): their labels are meaningless.
    """

    def __init__(self, streams: list[str]):
        import rclpy
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rclpy.signals import SignalHandlerOptions
        from std_msgs.msg import String

        # Without rclpy's signal handlers, SIGINT raises KeyboardInterrupt, so the demo stops
        # its child processes on Ctrl-C.
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node('edgeserving_demo_results', context=self.context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.results: list[tuple[str, int, str | None, bool]] = []
        self.invalid = 0
        self.untrained_exit_results = {stream: 0 for stream in streams}
        self.topics = {stream: f'/{NODE_NAME}/{stream}/result' for stream in streams}
        qos = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        for stream, topic in self.topics.items():
            self.node.create_subscription(String, topic, self._on_result, qos)

    def _on_result(self, msg) -> None:
        from edgeserving_ros import result_message

        if len(self.results) >= MAX_COLLECTED_RESULTS:
            return
        try:
            document = result_message.parse_result(msg.data)
        except result_message.ResultSchemaError:
            self.invalid += 1
            return
        stamp = document['header']['stamp']
        top_k = document['top_k']
        if not document['heads_trained'] and document['stream'] in self.untrained_exit_results:
            self.untrained_exit_results[document['stream']] += 1
        self.results.append((document['stream'], stamp['sec'] * 1_000_000_000 + stamp['nanosec'],
                             top_k[0]['label'] if top_k else None, document['deadline_met']))

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=min(0.05, max(deadline - time.monotonic(), 0)))

    def publishers_ready(self) -> bool:
        return all(self.node.count_publishers(topic) > 0 for topic in self.topics.values())

    def close(self) -> None:
        import rclpy

        self.executor.remove_node(self.node)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def measured_accuracy(results, labels: dict[tuple[str, int], str | None],
                      topics: dict[str, str]) -> dict[str, dict]:
    """Return per stream the top-1 accuracy of on-time results whose frame has a true label."""
    per_stream = {stream: {'correct': 0, 'labelled': 0} for stream in topics}
    for stream, stamp_ns, predicted, on_time in results:
        label = labels.get((topics.get(stream), stamp_ns))
        if stream not in per_stream or label is None or not on_time:
            continue
        per_stream[stream]['labelled'] += 1
        per_stream[stream]['correct'] += int(predicted == label)
    return {stream: {'results': counts['labelled'],
                     'top1': counts['correct'] / counts['labelled'] if counts['labelled']
                     else None}
            for stream, counts in per_stream.items()}


def read_labels(path: pathlib.Path) -> dict[tuple[str, int], str | None]:
    labels = {}
    if not path.is_file():
        return labels
    with open(path, encoding='utf-8') as stream:
        for line in stream:
            entry = json.loads(line)
            labels[(entry['topic'], int(entry['stamp_ns']))] = entry['label']
    return labels


def _stop(process: subprocess.Popen, timeout_s: float) -> None:
    """Send SIGINT, wait up to `timeout_s`, then kill."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _tail(path: pathlib.Path, lines: int = 20) -> str:
    try:
        return '\n'.join(path.read_text(encoding='utf-8', errors='replace').splitlines()[-lines:])
    except OSError:
        return '(no log)'


def run_demo(plan: DemoPlan, policy: str, duration_s: float, work_dir: pathlib.Path,
             log_dir: pathlib.Path) -> tuple[dict, dict, ResultCollector, dict]:
    """Run node and player; return the node summary, player stats, results and labels."""
    summary_path = work_dir / 'node_summary.json'
    labels_path = work_dir / 'labels.jsonl'
    stats_path = work_dir / 'player_stats.json'
    node_log = log_dir / 'demo_node.log'
    player_log = log_dir / 'demo_player.log'

    collector = ResultCollector(plan.stream_names())
    node = player = None
    try:
        with open(node_log, 'w', encoding='utf-8') as log:
            node = subprocess.Popen(node_command(plan, policy, summary_path), stdout=log,
                                    stderr=subprocess.STDOUT)
        print(f'Starting the node (log: {node_log}) ...', flush=True)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not collector.publishers_ready():
            if node.poll() is not None:
                raise DemoError(f'the node exited with code {node.returncode} during start-up:'
                                f'\n{_tail(node_log)}')
            if time.monotonic() > deadline:
                raise DemoError(f'the node published no results topic within '
                                f'{STARTUP_TIMEOUT_S:.0f} s:\n{_tail(node_log)}')
            collector.spin_for(0.2)

        with open(player_log, 'w', encoding='utf-8') as log:
            player = subprocess.Popen(player_command(plan, duration_s, labels_path, stats_path),
                                      stdout=log, stderr=subprocess.STDOUT)
        print(f'Publishing for {duration_s:g} s (player log: {player_log}) ...', flush=True)
        deadline = time.monotonic() + duration_s + STARTUP_TIMEOUT_S
        while player.poll() is None and time.monotonic() < deadline:
            if node.poll() is not None:
                raise DemoError(f'the node exited with code {node.returncode} while serving:'
                                f'\n{_tail(node_log)}')
            collector.spin_for(0.2)
        if player.poll() is None or player.returncode != 0:
            _stop(player, STOP_TIMEOUT_S)
            raise DemoError(f'the player failed (exit code {player.returncode}):\n'
                            f'{_tail(player_log)}')

        collector.spin_for(DRAIN_S)
        _stop(node, STOP_TIMEOUT_S)
        collector.spin_for(0.2)
        if not summary_path.is_file():
            raise DemoError(f'the node wrote no summary (exit code {node.returncode}):\n'
                            f'{_tail(node_log)}')
        summary = json.loads(summary_path.read_text(encoding='utf-8'))
        stats = json.loads(stats_path.read_text(encoding='utf-8'))
        labels = read_labels(labels_path)
        return summary, stats, collector, labels
    finally:
        for process in (player, node):
            if process is not None:
                _stop(process, STOP_TIMEOUT_S)
        collector.close()


def profiled_exit_accuracy(plan: DemoPlan) -> dict[str, dict[str, float | None]]:
    """Return each model's per-exit accuracy from the profile ({} without a profile)."""
    if plan.profile_path is None:
        return {}
    try:
        profile = profile_module.load_profile(plan.profile_path)
    except profile_module.ProfileError:
        return {}
    return {name: {exit_profile.name: exit_profile.accuracy for exit_profile in model.exits}
            for name, model in profile.models.items()}


def build_report(plan: DemoPlan, policy: str, duration_s: float, summary: dict, stats: dict,
                 collector: ResultCollector, labels: dict) -> dict:
    """Combine node summary, player counts and measured accuracy into the demo's JSON."""
    results = collector.results
    topics = {stream: plan.topic_of(stream) for stream in plan.stream_names()}
    accuracy = measured_accuracy(results, labels, topics) if plan.weights_trained else {}
    exit_accuracy = profiled_exit_accuracy(plan)
    node_rows = {row['name']: row for row in summary.get('streams', [])}
    published = {topic: entry['published'] for topic, entry in stats['topics'].items()}

    streams = []
    for stream in plan.stream_names():
        row = dict(node_rows.get(stream, {'name': stream}))
        model = plan.model_of(stream)
        row.update({
            'name': stream,
            'model': model,
            'topic': topics[stream],
            'rate_hz': plan.rates_hz[stream],
            'published': published.get(topics[stream], 0),
            'results_received': sum(1 for result in results if result[0] == stream),
            'untrained_exit_results': collector.untrained_exit_results[stream],
            'profiled_exit_accuracy': exit_accuracy.get(model, {}),
        })
        if not plan.weights_trained:
            # Profiled accuracies belong to the trained weights, not to random ones.
            row['delivered_accuracy'] = None
        if accuracy:
            row['measured_top1_accuracy'] = accuracy[stream]['top1']
            row['measured_results'] = accuracy[stream]['results']
        streams.append(row)

    notes = []
    if not plan.weights_trained:
        notes.append('weights are untrained (random initialisation) because the data folder '
                     f'was not found at {data_paths.data_root()}: labels and accuracies are '
                     'meaningless; latencies and deadlines are real')
    untrained = sum(collector.untrained_exit_results.values())
    if untrained:
        notes.append(f'{untrained} results came from untrained early-exit heads (result field '
                     'heads_trained false): their labels are meaningless')
    unmeasured = sorted({f'{model}/{exit_name}'
                         for model, exits in exit_accuracy.items()
                         for exit_name, value in exits.items() if value is None})
    if unmeasured:
        notes.append('the profile has no measured accuracy for ' + ', '.join(unmeasured))
    if plan.profile_path is None:
        notes.append('no profile_cpu.json beside the parameters file: the node used its '
                     'default profile')

    return {
        'streams': streams,
        'totals': summary.get('totals'),
        'policy': policy,
        'weights_trained': plan.weights_trained,
        'data_root': str(plan.data_root) if plan.data_root else None,
        'image_source': _image_source(plan),
        'profile_path': str(plan.profile_path) if plan.profile_path else None,
        'device': summary.get('device'),
        'duration_s': duration_s,
        'published': published,
        'invalid_results': collector.invalid,
        'notes': notes,
    }


def _image_source(plan: DemoPlan) -> str:
    if plan.images is not None:
        return str(plan.images)
    return f'scikit-image sample photos at {SAMPLE_PHOTO_SIZE[0]}x{SAMPLE_PHOTO_SIZE[1]}'


def _percent(value) -> str:
    return '-' if value is None else f'{100.0 * value:.1f}%'


def _exit_mix(mix: dict) -> str:
    return ' '.join(f'{name} {100.0 * share:.0f}%' for name, share in mix.items()) or '-'


def format_table(report: dict) -> str:
    """Return the per-stream table and the notes as text."""
    header = ('stream', 'model', 'Hz', 'published', 'offered', 'on time', 'late', 'dropped',
              'violations', 'p95 ms', 'accuracy*', 'top-1', 'exit mix')
    rows = [header]
    for row in report['streams']:
        p95 = row.get('p95_ms')
        rows.append((
            row['name'], row['model'], f'{row["rate_hz"]:g}', str(row['published']),
            str(row.get('offered', 0)), str(row.get('on_time', 0)), str(row.get('late', 0)),
            str(row.get('dropped', 0)), _percent(row.get('violation_ratio')),
            '-' if p95 is None else f'{p95:.1f}', _percent(row.get('delivered_accuracy')),
            _percent(row.get('measured_top1_accuracy')), _exit_mix(row.get('exit_mix', {}))))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = ['  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in rows]
    lines.insert(1, '  '.join('-' * width for width in widths))
    lines.append('')
    lines.append(f'policy {report["policy"]}, {report["duration_s"]:g} s, images: '
                 f'{report["image_source"]}')
    lines.append('accuracy*: mean profiled accuracy of the exits that produced on-time results; '
                 'top-1: measured on the received on-time results against the true labels.')
    for note in report['notes']:
        lines.append(f'NOTE: {note}')
    return '\n'.join(lines)


def _raise_keyboard_interrupt(signal_number, frame):
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='edgeserving-demo',
        description='Serve three camera streams with three models for a while and print the '
                    'per-stream SLO metrics. Run it with `make demo`.')
    parser.add_argument('--policy', default=serve_config.POLICY_DEFAULT,
                        help=f'scheduling policy (default {serve_config.POLICY_DEFAULT})')
    parser.add_argument('--duration-s', type=float, default=30.0,
                        help='seconds of publishing (default 30)')
    parser.add_argument('--rates', default=','.join(f'{rate:g}' for rate in DEFAULT_RATES_HZ),
                        help='frame rates in Hz of the streams of serve.yaml, in order, '
                             'comma-separated (default %(default)s)')
    parser.add_argument('--config', type=pathlib.Path,
                        help='parameters file of the node (default: the package\'s '
                             'config/serve.yaml)')
    parser.add_argument('--output', type=pathlib.Path,
                        default=pathlib.Path('results/demo_summary.json'),
                        help='JSON summary file (default %(default)s); logs go beside it')
    return parser


def main(args: list[str] | None = None) -> int:
    """Run the demo; `args` excludes the program name (default sys.argv[1:])."""
    options = build_parser().parse_args(args)
    if os.environ.get('EDGESERVING_ISOLATED') != '1':
        print('edgeserving-demo: refusing to start ROS 2 processes on the host network. '
              'Run `make demo`, which runs the demo inside a private network namespace '
              '(tools/run-isolated).', file=sys.stderr)
        return 2
    try:
        rates_hz = [float(rate) for rate in options.rates.split(',')]
    except ValueError:
        print(f'edgeserving-demo: invalid --rates {options.rates!r}: expected numbers in Hz '
              'separated by commas', file=sys.stderr)
        return 2
    if not 0 < options.duration_s <= 3600 or not all(0 < rate <= 1000 for rate in rates_hz):
        print('edgeserving-demo: --duration-s must be 0-3600 s and each rate 0-1000 Hz '
              '(both exclusive of 0)', file=sys.stderr)
        return 2

    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        plan = plan_demo(options.config or default_config_file(), rates_hz)
        options.output.parent.mkdir(parents=True, exist_ok=True)
        if plan.weights_trained:
            print(f'Real data: CIFAR-10 test images and pretrained weights from {plan.data_root}')
        else:
            print(f'No data folder at {data_paths.data_root()}: serving scikit-image sample '
                  'photos with UNTRAINED weights (labels are meaningless).')
        with tempfile.TemporaryDirectory(prefix='edgeserving-demo-') as work_dir:
            summary, stats, collector, labels = run_demo(
                plan, options.policy, options.duration_s, pathlib.Path(work_dir),
                options.output.parent)
    except (DemoError, serve_config.ConfigError, OSError) as error:
        print(f'edgeserving-demo: {error}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('edgeserving-demo: interrupted; the node and the player were stopped',
              file=sys.stderr)
        return 130

    report = build_report(plan, options.policy, options.duration_s, summary, stats, collector,
                          labels)
    options.output.write_text(json.dumps(report, indent=2) + '\n', encoding='utf-8')
    print()
    print(format_table(report))
    print(f'\nSummary written to {options.output}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
