"""The edgeserving node: image topics in, deadline-aware early-exit inference, results out.

Threading (docs/node.md explains the choice):
- the node's own executor (rclpy.spin in `main`) runs the image subscriptions, which decode,
  validate and queue frames, the parameter services and the 1 Hz diagnostics timer;
- every inference runs on one dedicated thread: a companion node `<name>_inference` owns only
  the inference timer (on the steady clock) and is spun by its own SingleThreadedExecutor in
  that thread. A companion node is needed because an rclpy node belongs to one executor at a
  time, so this node's timer could not be spun apart from its subscriptions.
Both threads share the scheduler under one lock, held only for queue operations, never while a
batch runs.
"""

import json
import os
import pathlib
import threading

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import InvalidNodeNameException, InvalidTopicNameException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from edgeserving_ros.config import ConfigError, ServeConfig
from edgeserving_ros.diagnostics import DiagnosticsBuilder, take_snapshot
from edgeserving_ros.engine import EngineError, InferenceEngine, stack_frames
from edgeserving_ros.image_conversion import ImageConversionError, frame_to_rgb8
from edgeserving_ros.metrics import MetricsRecorder
from edgeserving_ros.models import build_model
from edgeserving_ros.node_parameters import build_configuration, declare_parameters
from edgeserving_ros.node_parameters import validate_changes
from edgeserving_ros.policies import make_policy, SchedulingContext
from edgeserving_ros.profile import LatencyCorrection, LatencyModel, load_profile, Profile
from edgeserving_ros.profile import ProfileError
from edgeserving_ros.requests import Request, StreamQueue
from edgeserving_ros.result_message import build_result, to_json
from edgeserving_ros.scheduler import Batch, Scheduler

NODE_NAME = 'edgeserving'
PACKAGE_NAME = 'edgeserving_ros'
DEFAULT_PROFILE_NAME = 'profile_cpu.json'

DIAGNOSTICS_PERIOD_S = 1.0
FUTURE_STAMP_TOLERANCE_S = 1.0
STALE_STAMP_WARNING_S = 10.0
LOG_THROTTLE_S = 5.0
# Batches one timer tick may serve before it returns to the executor; the next tick goes on.
MAX_BATCHES_PER_TICK = 50
WORKER_STOP_TIMEOUT_S = 10.0

RESULT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                        reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)


class StartupError(RuntimeError):
    """The node cannot start: invalid parameters, profile, weights or device."""


class InferenceWorker:
    """Runs `on_tick` periodically on one dedicated thread.

    The timer belongs to a companion node spun by its own SingleThreadedExecutor, so inference
    never shares a thread with `node`'s callbacks. It runs on the steady clock, not the node
    clock: it only polls the queues, and the device computes in real time, so a simulated
    clock that pauses or advances in coarse steps must not pause or slow down serving. Request
    times and deadlines use the node clock. The companion node ignores the process's
    command-line arguments, because a `__node:=` remapping applies to every node of a process
    and would give it the main node's name.
    """

    def __init__(self, node: Node, period_s: float, on_tick):
        self.node = Node(f'{node.get_name()}_inference', namespace=node.get_namespace(),
                         context=node.context, use_global_arguments=False,
                         start_parameter_services=False)
        self._timer = self.node.create_timer(period_s, on_tick,
                                             callback_group=MutuallyExclusiveCallbackGroup(),
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._executor = SingleThreadedExecutor(context=node.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name='edgeserving-inference',
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = WORKER_STOP_TIMEOUT_S) -> bool:
        """Stop the thread after the tick in progress; return whether it ended in time."""
        self._executor.shutdown(timeout_sec=timeout_s)
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        stopped = not self._thread.is_alive()
        self.node.destroy_timer(self._timer)
        self.node.destroy_node()
        return stopped

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass  # rclpy.shutdown() was called: the process is ending


class EdgeServingNode(Node):
    """Serves early-exit models to several image streams under per-stream deadlines."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs):
        super().__init__(node_name, **kwargs)
        self._worker = None
        try:
            self._set_up()
        except BaseException:
            self._tear_down_partial()
            raise

    # ----------------------------------------------------------------------------- set-up
    def _set_up(self) -> None:
        try:
            config, self._settings = build_configuration(declare_parameters(self))
            self._config = config
            self._profile_path = resolve_profile_path(config.profile_path)
            self._profile = load_profile(self._profile_path)
            check_profile_covers(config, self._profile)
        except (ConfigError, ProfileError) as error:
            raise StartupError(str(error)) from error
        self._arrival_reference = config.arrival_reference
        self._lock = threading.Lock()
        self._stopping = threading.Event()

        self._engine = self._load_engine(config)
        self._scheduler = self._make_scheduler(config)
        self._batch_count = 0
        start_s = self._now_s()
        self._last_result_s = dict.fromkeys(config.streams, start_s)
        self._model_state = {
            name: {'weights_trained': model.weights_trained,
                   'heads_trained': model.heads_trained, 'batches': 0, 'failed_batches': 0}
            for name, model in self._engine.models.items()}

        self._stream_loggers = {name: self.get_logger().get_child(name)
                                for name in config.streams}
        try:
            self._result_publishers = {
                name: self.create_publisher(String, f'~/{name}/result', RESULT_QOS)
                for name in config.streams}
            self._subscriptions_by_stream = {name: self._subscribe(name)
                                             for name in config.streams}
        except (InvalidTopicNameException, InvalidNodeNameException) as error:
            raise StartupError(f'invalid topic name: {error}') from error

        self._diagnostics = DiagnosticsBuilder(self.get_name(), self._hardware_id())
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, '/diagnostics',
                                                            DIAGNOSTICS_QOS)
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._on_diagnostics)

        # Registered after the declarations, so they see only changes made while running.
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._apply_after_set = hasattr(self, 'add_post_set_parameters_callback')
        if self._apply_after_set:
            self.add_post_set_parameters_callback(self._on_parameters_set)

        self._worker = InferenceWorker(self, config.tick_period_ms / 1000.0, self._on_tick)
        self._worker.start()
        self._log_start()

    def _load_engine(self, config: ServeConfig) -> InferenceEngine:
        try:
            models = {name: build_model(model_config)
                      for name, model_config in config.models.items()}
        except (ValueError, OSError) as error:
            raise StartupError(f'cannot load the models: {error}') from error
        for name, model in models.items():
            profiled = self._profile.exit_names(name)
            if profiled != list(model.exit_names):
                raise StartupError(
                    f'model {name!r} has exits {", ".join(model.exit_names)}, but the profile '
                    f'{self._profile_path} has {", ".join(profiled)}: profile this model again')
            if not model.weights_trained:
                self.get_logger().warning(
                    f'model {name} ({model.architecture}) has random backbone weights: its '
                    f'labels are meaningless; set models.{name}.weights to a weights file')

        threads = self._settings.torch_threads or self._profile.threads or None
        try:
            engine = InferenceEngine(models, device=config.device, threads=threads)
        except ValueError as error:
            raise StartupError(str(error)) from error
        engine.warm_up(runs=2)
        return engine

    def _make_scheduler(self, config: ServeConfig) -> Scheduler:
        try:
            policy = make_policy(config.policy, w_pressure=config.score_weights.pressure,
                                 w_accuracy=config.score_weights.accuracy)
        except ValueError as error:
            raise StartupError(str(error)) from error
        allowed_exits = {name: model.exits for name, model in config.models.items()
                         if model.exits}
        latency = LatencyModel(self._profile, config.latency_quantile, LatencyCorrection())
        context = SchedulingContext(config.streams, self._profile, latency, allowed_exits)
        queues = {name: StreamQueue(name, stream.queue_depth)
                  for name, stream in config.streams.items()}
        return Scheduler(policy, context, queues, MetricsRecorder(),
                         drop_doomed=config.drop_doomed)

    def _subscribe(self, stream: str):
        stream_config = self._config.streams[stream]
        reliability = (ReliabilityPolicy.RELIABLE
                       if self._settings.input_reliability == 'reliable'
                       else ReliabilityPolicy.BEST_EFFORT)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self._settings.input_depth,
                         reliability=reliability, durability=DurabilityPolicy.VOLATILE)
        message_type = CompressedImage if stream_config.input_type == 'compressed' else Image
        return self.create_subscription(message_type, stream_config.topic,
                                        lambda msg: self._on_image(stream, msg), qos)

    def _hardware_id(self) -> str:
        device = self._engine.device
        if device.type == 'cuda':
            import torch
            return f'{device} ({torch.cuda.get_device_name(device)})'
        return str(device)

    def _log_start(self) -> None:
        config = self._config
        streams = ', '.join(f'{name} ({stream.topic}, {stream.input_type}) -> {stream.model}'
                            for name, stream in config.streams.items())
        models = ', '.join(f'{name} ({model.architecture})'
                           for name, model in config.models.items())
        profile = self._profile
        self.get_logger().info(
            f'serving streams {streams}; models {models}; policy {config.policy}; device '
            f'{self._engine.device}; profile {self._profile_path} (device {profile.device!r}, '
            f'{profile.threads} threads, {profile.date or "undated"})')
        if self._engine.device.type == 'cuda' and 'cpu' in profile.device.lower():
            self.get_logger().warning(
                f'the profile was measured on {profile.device!r} but the node serves on '
                f'{self._engine.device}: latency predictions start off and are corrected '
                'online; profile this device and set profile_path')

    # ------------------------------------------------------------------------ callbacks
    def _on_image(self, stream: str, msg) -> None:
        """Validate and convert a frame, then queue it; invalid frames are counted and logged."""
        receive_s = self._now_s()
        input_size = self._config.models[self._config.streams[stream].model].input_size
        try:
            frame = frame_to_rgb8(msg, max_pixels=self._settings.max_image_pixels)
            # Resize here, off the inference thread; the engine skips frames of the right size.
            frame = stack_frames([frame], input_size)[0]
        except (ImageConversionError, EngineError) as error:
            with self._lock:
                self._scheduler.metrics.record_rejected_input(stream)
            self._stream_loggers[stream].warning(
                f'rejected an invalid frame of stream {stream} on '
                f'{self._config.streams[stream].topic} ({describe_frame(msg)}): {error}',
                throttle_duration_sec=LOG_THROTTLE_S)
            return

        arrival_s = self._arrival_s(stream, msg.header, receive_s)
        with self._lock:
            slo_ms = self._config.streams[stream].slo_ms
            request = Request(stream=stream, arrival_s=arrival_s,
                              deadline_s=arrival_s + slo_ms / 1000.0, receive_s=receive_s,
                              payload=(frame, msg.header, slo_ms))
            dropped = self._scheduler.submit(request)
        if dropped is not None:
            self._stream_loggers[stream].info(
                f'queue of stream {stream} is full ({self._config.streams[stream].queue_depth} '
                'requests): dropped the oldest request',
                throttle_duration_sec=LOG_THROTTLE_S)

    def _arrival_s(self, stream: str, header, receive_s: float) -> float:
        """Return the instant the deadline counts from, per `arrival_reference`."""
        if self._arrival_reference != 'header':
            return receive_s
        stamp_s = header.stamp.sec + header.stamp.nanosec / 1e9
        logger = self._stream_loggers[stream]
        # One log call per case, because rclpy throttles per call site.
        if stamp_s == 0.0:
            logger.warning(
                f'header stamp of stream {stream} is 0: the deadline counts from the receive '
                'time instead', throttle_duration_sec=LOG_THROTTLE_S)
            return receive_s
        if stamp_s > receive_s + FUTURE_STAMP_TOLERANCE_S:
            logger.warning(
                f'header stamp of stream {stream} is {stamp_s - receive_s:.3f} s ahead of the '
                'node clock (another clock source? check use_sim_time): the deadline counts '
                'from the receive time instead', throttle_duration_sec=LOG_THROTTLE_S)
            return receive_s
        if stamp_s < receive_s - STALE_STAMP_WARNING_S:
            logger.warning(
                f'header stamp of stream {stream} is {receive_s - stamp_s:.3f} s behind the node '
                'clock, so its frames miss their deadlines: synchronise the camera clock or set '
                'arrival_reference to receive', throttle_duration_sec=LOG_THROTTLE_S)
        return stamp_s

    def _on_tick(self) -> None:
        """Serve batches until the queues are empty or the policy waits (inference thread)."""
        for _ in range(MAX_BATCHES_PER_TICK):
            if self._stopping.is_set():
                return
            with self._lock:
                if not self._scheduler.pending():
                    return
                try:
                    batch = self._scheduler.next_batch(self._now_s())
                except Exception as error:  # a policy bug must not stop the serving thread
                    self.get_logger().error(
                        f'policy {self._config.policy} failed to choose a batch: {error!r}',
                        throttle_duration_sec=LOG_THROTTLE_S)
                    return
                dropped = self._scheduler.last_dropped
                if batch is not None:
                    self._batch_count += 1
                batch_id = self._batch_count
            if dropped:
                self._log_doomed(dropped)
            if batch is None:
                return
            self._serve(batch, batch_id)

    def _serve(self, batch: Batch, batch_id: int) -> None:
        """Run one batch outside the lock, record it, publish one result per request."""
        frames = [request.payload[0] for request in batch.requests]
        try:
            result = self._engine.infer(batch.model, batch.exit_index, frames,
                                        top_k=self._settings.top_k)
        except Exception as error:  # keep serving the other requests and streams
            request_ids = ', '.join(str(request.request_id) for request in batch.requests)
            self.get_logger().error(
                f'inference failed for stream {batch.stream}, model {batch.model}, exit '
                f'{batch.exit_name}, batch {batch_id} (requests {request_ids}): {error!r}')
            with self._lock:
                self._scheduler.fail(batch, self._now_s())
                self._model_state[batch.model]['failed_batches'] += 1
            return

        finish_s = self._now_s()
        with self._lock:
            # The profile times whole engine.infer calls (BatchResult.total_s), so the online
            # correction compares like with like.
            outcomes = self._scheduler.complete(batch, finish_s,
                                                measured_latency_s=result.total_s)
            self._model_state[batch.model]['batches'] += 1
            self._last_result_s[batch.stream] = finish_s
            arrival_reference = self._arrival_reference

        labels = self._config.models[batch.model].labels
        accuracy = self._profile.accuracy(batch.model, batch.exit_index)
        final_exit = batch.exit_index == self._profile.exit_count(batch.model) - 1
        publisher = self._result_publishers[batch.stream]
        for outcome, predictions in zip(outcomes, result.top_k):
            request = outcome.request
            _, header, slo_ms = request.payload
            document = build_result(
                stamp_sec=header.stamp.sec, stamp_nanosec=header.stamp.nanosec,
                frame_id=header.frame_id, stream=batch.stream, model=batch.model,
                request_id=request.request_id, batch_id=batch_id,
                batch_size=len(batch.requests), exit_index=batch.exit_index,
                exit_name=batch.exit_name, final_exit=final_exit, profiled_accuracy=accuracy,
                top_k=[(p.class_id, label_of(labels, p.class_id), p.score)
                       for p in predictions],
                weights_trained=result.weights_trained, heads_trained=result.heads_trained,
                arrival_reference=arrival_reference,
                slo_ms=slo_ms,
                arrival_s=request.arrival_s, receive_s=request.receive_s,
                start_s=batch.start_s, finish_s=finish_s, deadline_s=request.deadline_s,
                preprocess_s=result.preprocess_s, forward_s=result.inference_s)
            publisher.publish(String(data=to_json(document)))

    def _log_doomed(self, dropped: list[Request]) -> None:
        streams = sorted({request.stream for request in dropped})
        self.get_logger().info(
            f'dropped {len(dropped)} requests that could no longer meet their deadline '
            f'(streams {", ".join(streams)})', throttle_duration_sec=LOG_THROTTLE_S)

    def _on_diagnostics(self) -> None:
        now = self.get_clock().now()
        with self._lock:
            snapshot = take_snapshot(self._scheduler, now.nanoseconds / 1e9, self._model_state,
                                     self._last_result_s, self._config.policy,
                                     str(self._engine.device), str(self._profile_path))
        self._diagnostics_publisher.publish(self._diagnostics.build(snapshot, now.to_msg()))

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """Check a set of parameter changes; reject all of them if one is invalid."""
        names = ', '.join(parameter.name for parameter in parameters)
        try:
            changes = validate_changes(parameters, self._config)
        except ConfigError as error:
            self.get_logger().warning(f'rejected parameter change ({names}): {error}')
            return SetParametersResult(successful=False, reason=str(error))
        if not self._apply_after_set:
            # rclpy before Iron has no post-set callback: apply once the set is known valid.
            self._apply_changes(changes)
        return SetParametersResult(successful=True)

    def _on_parameters_set(self, parameters) -> None:
        self._apply_changes(validate_changes(parameters, self._config))

    def _apply_changes(self, changes: dict) -> None:
        if not changes:
            return
        with self._lock:
            for name, value in changes.items():
                self._apply_change(name, value)
            self._scheduler.context.invalidate()
        described = ', '.join(f'{name} = {value!r}' for name, value in changes.items())
        self.get_logger().info(f'parameter change applied: {described}')

    def _apply_change(self, name: str, value) -> None:
        """Apply one validated change; the caller holds the lock."""
        parts = name.split('.')
        if parts[0] == 'streams':
            setattr(self._config.streams[parts[1]], parts[2], value)
        elif name == 'drop_doomed':
            self._scheduler.drop_doomed = value
        elif name == 'arrival_reference':
            self._arrival_reference = value
        elif name == 'reset_latency_correction' and value:
            self._scheduler.context.latency.correction.reset()

    # ------------------------------------------------------------------------ shutdown
    def destroy_node(self) -> None:
        """Stop the inference thread, write the summary, then destroy the node."""
        if self._worker is not None:
            self._stopping.set()
            if not self._worker.stop():
                self._shutdown_logger().error('the inference thread did not stop within '
                                              f'{WORKER_STOP_TIMEOUT_S:g} s')
            self._worker = None
            self._write_summary()
            self._shutdown_logger().info('stopped')
        super().destroy_node()

    def _shutdown_logger(self):
        """Return the node logger, or a console-only logger once the context is shut down.

        After Ctrl-C, rclpy shuts the context down before the node is destroyed. The node logger
        would then fail to publish to /rosout and print an error for every message.
        """
        if self.context.ok():
            return self.get_logger()
        return rclpy.logging.get_logger(f'{self.get_name()}.shutdown')

    def _tear_down_partial(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        super().destroy_node()

    def summary(self) -> dict:
        """Return the metrics summary that `summary_path` receives at shutdown."""
        with self._lock:
            metrics = self._scheduler.metrics
            return {
                'streams': metrics.summary(list(self._config.streams)),
                'totals': metrics.totals(),
                'policy': self._config.policy,
                'device': str(self._engine.device),
                'profile': {'path': str(self._profile_path), 'device': self._profile.device,
                            'threads': self._profile.threads, 'date': self._profile.date,
                            'torch': self._profile.torch},
                'weights_trained': {name: state['weights_trained']
                                    for name, state in self._model_state.items()},
                'latency_correction': {
                    f'{model}/{self._profile.exit_names(model)[exit_index]}': factor
                    for (model, exit_index), factor in
                    self._scheduler.context.latency.correction.snapshot().items()},
            }

    def _write_summary(self) -> None:
        path = self._settings.summary_path
        if not path:
            return
        path = pathlib.Path(path).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + '.partial')
            partial.write_text(json.dumps(self.summary(), indent=1) + '\n', encoding='utf-8')
            os.replace(partial, path)
        except OSError as error:
            self._shutdown_logger().error(f'cannot write the metrics summary to {path}: {error}')
            return
        self._shutdown_logger().info(f'wrote the metrics summary to {path}')

    def _now_s(self) -> float:
        return self.get_clock().now().nanoseconds / 1e9


def resolve_profile_path(configured: str) -> pathlib.Path:
    """Return the profile file: `configured`, else the package's config/profile_cpu.json.

    The package's file is looked up in its share folder (a colcon or distro install, found with
    ament_index_python), then in the source tree this module was imported from.
    Raises ConfigError when the file does not exist.
    """
    if configured:
        path = pathlib.Path(configured).expanduser()
        if not path.is_file():
            raise ConfigError(f'profile_path {configured!r} does not exist')
        return path

    candidates = []
    share = package_share_folder()
    if share is not None:
        candidates.append(share / 'config' / DEFAULT_PROFILE_NAME)
    candidates.append(pathlib.Path(__file__).resolve().parents[1] / 'config'
                      / DEFAULT_PROFILE_NAME)
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(f'no profile found (looked for {", ".join(map(str, candidates))}): '
                      'measure one with edgeserving-profile and set profile_path')


def package_share_folder() -> pathlib.Path | None:
    """Return share/edgeserving_ros of an installed package, or None (source tree, venv)."""
    try:
        from ament_index_python.packages import (get_package_share_directory,
                                                 PackageNotFoundError)
    except ImportError:
        return None
    try:
        return pathlib.Path(get_package_share_directory(PACKAGE_NAME))
    except (PackageNotFoundError, ValueError, OSError):  # OSError: AMENT_PREFIX_PATH unset
        return None


def check_profile_covers(config: ServeConfig, profile: Profile) -> None:
    """Raise ConfigError unless the profile has every model of `model_names`."""
    missing = sorted(name for name in config.models if name not in profile.models)
    if missing:
        raise ConfigError(f'the profile has no entry for model(s) {", ".join(missing)} '
                          f'(profiled: {", ".join(sorted(profile.models)) or "none"}): profile '
                          'them with edgeserving-profile or use another profile_path')
    for name in config.models:
        architecture = profile.model(name).architecture
        if architecture and architecture != config.models[name].architecture:
            raise ConfigError(f'model {name} is {config.models[name].architecture} but the '
                              f'profile measured {architecture} under that name')


def describe_frame(msg) -> str:
    """Describe a frame's declared format for log messages, without decoding it."""
    size = len(msg.data)
    if hasattr(msg, 'format'):
        return f'format {msg.format!r}, {size} bytes'
    return (f'encoding {msg.encoding!r}, {msg.width}x{msg.height}, step {msg.step}, '
            f'{size} bytes')


def label_of(labels, class_id: int) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else str(class_id)


def main(args=None) -> int:
    """Run the node until shutdown; return the process exit status."""
    rclpy.init(args=args)
    node = None
    try:
        try:
            node = EdgeServingNode()
        except StartupError as error:
            rclpy.logging.get_logger(NODE_NAME).fatal(f'cannot start: {error}')
            return 1
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
