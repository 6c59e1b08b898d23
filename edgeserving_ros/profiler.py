"""Offline profiler: latency of every (model, exit, batch size) and accuracy of every exit.

Latency is the engine's whole `infer` call (`BatchResult.total_s`): preprocessing, the forward
pass up to the exit (device-synchronised on CUDA), softmax and top-k. The synthetic frames have
the model's input size, so no resizing is timed, unless --frame-size sets another size.
Warm-up rounds are excluded. Timed runs are interleaved: each round runs every (exit, batch size)
once in a shuffled order, so a burst of load from other processes spreads over all entries
instead of spoiling one of them.

Accuracy is top-1 on an ImageFolder tree (one sub-folder of images per class), through the same
`infer` path and preprocessing as serving.
"""

import argparse
import dataclasses
import datetime
import os
import pathlib
import platform
import statistics
import sys
import typing

import cv2
import numpy as np
import torch
import torchvision
import tqdm

from edgeserving_ros.config import ConfigError, load_parameters_file, ModelConfig, ServeConfig
from edgeserving_ros.engine import InferenceEngine
from edgeserving_ros.models import ARCHITECTURES, build_model, default_input_size
from edgeserving_ros.profile import ExitProfile, LatencyStats, ModelProfile, Profile
from edgeserving_ros.profile import save_profile

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.ppm', '.webp')
DEFAULT_MAX_BATCH = 10
DEFAULT_RUNS = 200
DEFAULT_WARMUP_ROUNDS = 20
ACCURACY_BATCH_SIZE = 250


@dataclasses.dataclass
class ImageFolderData:
    """Labelled RGB uint8 images of an ImageFolder tree, in sorted class and file order."""

    images: list[np.ndarray]
    targets: np.ndarray
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.images)


def load_image_folder(root: str | pathlib.Path, labels: typing.Sequence[str] | None = None,
                      max_per_class: int | None = None) -> ImageFolderData:
    """Decode an ImageFolder tree: `root/<class name>/<image>`.

    Targets are the index of the folder name in `labels` when given, else the index of the
    folder in sorted order (torchvision's ImageFolder convention). `max_per_class` keeps the
    first images of each class in file-name order.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f'image folder {root} not found')
    class_names = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if not class_names:
        raise ValueError(f'image folder {root} has no class sub-folders')
    if labels is not None:
        unknown = [name for name in class_names if name not in labels]
        if unknown:
            raise ValueError(f'class folders of {root} are not among the model labels: '
                             f'{", ".join(unknown[:10])}')

    images, targets = [], []
    for folder_index, name in enumerate(class_names):
        target = labels.index(name) if labels is not None else folder_index
        files = sorted(path for path in (root / name).iterdir()
                       if path.suffix.lower() in IMAGE_SUFFIXES)
        for path in files[:max_per_class]:
            images.append(read_rgb_image(path))
            targets.append(target)
    if not images:
        raise ValueError(f'image folder {root} contains no images ({", ".join(IMAGE_SUFFIXES)})')
    return ImageFolderData(images, np.asarray(targets, np.int64), class_names)


def read_rgb_image(path: pathlib.Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'cannot decode image {path}')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def measure_accuracy(engine: InferenceEngine, model_name: str, data: ImageFolderData,
                     exit_indices: typing.Sequence[int] | None = None,
                     batch_size: int = ACCURACY_BATCH_SIZE,
                     progress: tqdm.tqdm | None = None) -> list[float]:
    """Return the top-1 accuracy of each exit (all exits by default) on `data`."""
    model = engine.model(model_name)
    if exit_indices is None:
        exit_indices = range(model.num_exits)
    accuracies = []
    for exit_index in exit_indices:
        correct = 0
        for start in range(0, len(data), batch_size):
            result = engine.infer(model_name, exit_index, data.images[start:start + batch_size],
                                  top_k=1)
            predicted = np.array([item[0].class_id for item in result.top_k])
            correct += int((predicted == data.targets[start:start + batch_size]).sum())
            if progress is not None:
                progress.update(len(predicted))
        accuracies.append(correct / len(data))
    return accuracies


def profile_model(engine: InferenceEngine, model_name: str, max_batch: int,
                  runs: int = DEFAULT_RUNS, warmup_rounds: int = DEFAULT_WARMUP_ROUNDS,
                  frame_size: tuple[int, int] | None = None, seed: int = 0,
                  progress: tqdm.tqdm | None = None) -> list[dict[int, LatencyStats]]:
    """Measure latency per exit and batch size 1..max_batch; return one table per exit.

    `frame_size` (width, height) sets the size of the synthetic frames; by default they have the
    model's input size, so no resizing is timed.
    """
    if max_batch < 1 or runs < 2 or warmup_rounds < 0:
        raise ValueError(f'need max_batch >= 1, runs >= 2 and warmup_rounds >= 0; got '
                         f'{max_batch}, {runs}, {warmup_rounds}')
    model = engine.model(model_name)
    width, height = frame_size or (model.input_size, model.input_size)
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (height, width, 3), np.uint8) for _ in range(max_batch)]
    entries = [(exit_index, batch_size) for exit_index in range(model.num_exits)
               for batch_size in range(1, max_batch + 1)]
    samples_ms: dict[tuple[int, int], list[float]] = {entry: [] for entry in entries}

    for round_index in range(warmup_rounds + runs):
        order = rng.permutation(len(entries))
        for position in order:
            exit_index, batch_size = entries[position]
            result = engine.infer(model_name, exit_index, frames[:batch_size], top_k=1)
            if round_index >= warmup_rounds:
                samples_ms[(exit_index, batch_size)].append(result.total_s * 1000.0)
        if progress is not None:
            progress.update(len(entries))

    tables: list[dict[int, LatencyStats]] = [{} for _ in range(model.num_exits)]
    for (exit_index, batch_size), samples in samples_ms.items():
        tables[exit_index][batch_size] = latency_stats(samples)
    return tables


def latency_stats(samples_ms: typing.Sequence[float]) -> LatencyStats:
    """Summarise latency samples (ms): linear-interpolated quantiles, mean, sample stdev."""
    p50, p95, p99 = np.percentile(np.asarray(samples_ms, np.float64), (50, 95, 99))
    return LatencyStats(p50=float(p50), p95=float(p95), p99=float(p99),
                        mean=float(statistics.fmean(samples_ms)),
                        stdev=float(statistics.stdev(samples_ms)), runs=len(samples_ms))


def device_description(device: torch.device) -> str:
    """Return the CUDA device name, or 'cpu: <CPU model> (<count> logical CPUs)'."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return f'cpu: {cpu_model_name()} ({os.cpu_count()} logical CPUs)'


def cpu_model_name() -> str:
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as stream:
            for line in stream:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or 'unknown CPU'


def parse_model_option(option: str) -> ModelConfig:
    """Parse NAME=ARCHITECTURE[:WEIGHTS] into a ModelConfig with the architecture's input size."""
    name, separator, rest = option.partition('=')
    architecture, _, weights = rest.partition(':')
    if not separator or not name or not architecture:
        raise ValueError(f'--model {option!r}: expected NAME=ARCHITECTURE[:WEIGHTS]')
    if architecture not in ARCHITECTURES:
        raise ValueError(f'--model {option!r}: architecture {architecture!r} is unknown; '
                         f'known: {", ".join(ARCHITECTURES)}')
    return ModelConfig(name=name, architecture=architecture, weights=weights,
                       input_size=default_input_size(architecture))


def _parse_frame_size(text: str) -> tuple[int, int]:
    width, separator, height = text.lower().partition('x')
    if not separator or not width.isdigit() or not height.isdigit():
        raise argparse.ArgumentTypeError(f'frame size {text!r}: expected WIDTHxHEIGHT, '
                                         'e.g. 640x480')
    size = (int(width), int(height))
    if not all(1 <= side <= 8192 for side in size):
        raise argparse.ArgumentTypeError(f'frame size {text!r}: sides must be 1..8192 pixels')
    return size


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'expected a positive integer, got {text}')
    return value


def build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='edgeserving-profile',
        description='Measure latency per (model, exit, batch size) and accuracy per exit, and '
                    'write a profile file for the scheduler.')

    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--params', type=pathlib.Path,
                        help='ROS 2 parameters file of the node; its models are profiled')
    source.add_argument('--model', action='append', metavar='NAME=ARCH[:WEIGHTS]',
                        help='a model to profile (repeatable); architectures: '
                             + ', '.join(ARCHITECTURES))
    parser.add_argument('--node-name', default='edgeserving',
                        help='node section to read from --params (default: %(default)s)')
    parser.add_argument('--output', type=pathlib.Path, required=True,
                        help='profile file to write (JSON)')

    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N (default: cpu)')
    parser.add_argument('--threads', type=_positive_int,
                        help='CPU threads for torch (default: torch\'s own choice)')
    parser.add_argument('--max-batch', type=_positive_int,
                        help='largest batch size to profile (default: the largest max_batch of '
                             f'the streams using the model, or {DEFAULT_MAX_BATCH} with --model)')
    parser.add_argument('--runs', type=_positive_int, default=DEFAULT_RUNS,
                        help='timed runs per (exit, batch size) (default: %(default)s)')
    parser.add_argument('--warmup', type=int, default=DEFAULT_WARMUP_ROUNDS,
                        help='untimed rounds before the timed ones (default: %(default)s)')
    parser.add_argument('--frame-size', type=_parse_frame_size, metavar='WIDTHxHEIGHT',
                        help='size of the synthetic frames (default: the model input size)')

    parser.add_argument('--accuracy-dir', type=pathlib.Path,
                        help='ImageFolder tree (class sub-folders) to measure accuracy per exit')
    parser.add_argument('--accuracy-per-class', type=_positive_int,
                        help='use only the first N images of each class for accuracy')

    parser.add_argument('--seed', type=int, default=0, help='seed of frames and run order')
    parser.add_argument('--notes', default='', help='free text stored in the profile')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def main(argv: typing.Sequence[str] | None = None) -> int:
    """Run the profiler command line; return the exit status."""
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error('--runs must be at least 2 (quantiles need several samples)')
    try:
        model_configs, max_batches = _models_to_profile(args)
        engine = InferenceEngine({name: build_model(config)
                                  for name, config in model_configs.items()},
                                 device=args.device, threads=args.threads)
        accuracy_data = _load_accuracy_data(args, model_configs)
    except (ConfigError, ValueError, OSError) as error:
        print(f'edgeserving-profile: error: {error}', file=sys.stderr)
        return 2

    load_average = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    started = datetime.datetime.now(datetime.timezone.utc)
    models = {}
    for name, config in model_configs.items():
        models[name] = _profile_one_model(engine, name, config, max_batches[name], args,
                                          accuracy_data.get(name))

    notes = [args.notes] if args.notes else []
    notes.append(f'latency = InferenceEngine.infer total_s; {args.runs} timed runs, '
                 f'{args.warmup} warm-up rounds, interleaved; 1-minute load average at start '
                 f'{load_average:.2f}')
    profile = Profile(models=models, device=device_description(engine.device),
                      torch=torch.__version__, torchvision=torchvision.__version__,
                      threads=torch.get_num_threads(),
                      date=started.isoformat(timespec='seconds'), notes='; '.join(notes))
    save_profile(profile, args.output)
    print(format_summary(profile))
    print(f'wrote {args.output}')
    return 0


def _models_to_profile(args: argparse.Namespace) -> tuple[dict[str, ModelConfig], dict[str, int]]:
    if args.params is not None:
        config = ServeConfig.from_parameters(load_parameters_file(args.params, args.node_name))
        model_configs = config.models
        max_batches = {name: max((stream.max_batch for stream in config.streams.values()
                                  if stream.model == name), default=DEFAULT_MAX_BATCH)
                       for name in model_configs}
    else:
        model_configs = {}
        for option in args.model:
            model_config = parse_model_option(option)
            if model_config.name in model_configs:
                raise ValueError(f'--model names {model_config.name!r} twice')
            model_configs[model_config.name] = model_config
        max_batches = {name: DEFAULT_MAX_BATCH for name in model_configs}
    if args.max_batch is not None:
        max_batches = {name: args.max_batch for name in model_configs}
    return model_configs, max_batches


def _load_accuracy_data(args: argparse.Namespace,
                        model_configs: dict[str, ModelConfig]) -> dict[str, ImageFolderData]:
    """Decode the accuracy images once per distinct label list."""
    if args.accuracy_dir is None:
        return {}
    by_labels: dict[tuple[str, ...], ImageFolderData] = {}
    data = {}
    for name, config in model_configs.items():
        if config.labels not in by_labels:
            by_labels[config.labels] = load_image_folder(args.accuracy_dir, config.labels,
                                                         args.accuracy_per_class)
        data[name] = by_labels[config.labels]
    return data


def _profile_one_model(engine: InferenceEngine, name: str, config: ModelConfig, max_batch: int,
                       args: argparse.Namespace,
                       accuracy_data: ImageFolderData | None) -> ModelProfile:
    model = engine.model(name)
    rounds = args.warmup + args.runs
    with tqdm.tqdm(total=rounds * model.num_exits * max_batch, unit='batch',
                   desc=f'{name} latency', disable=args.quiet) as progress:
        tables = profile_model(engine, name, max_batch, runs=args.runs,
                               warmup_rounds=args.warmup, frame_size=args.frame_size,
                               seed=args.seed, progress=progress)
    accuracies: list[float | None] = [None] * model.num_exits
    if accuracy_data is not None:
        with tqdm.tqdm(total=len(accuracy_data) * model.num_exits, unit='image',
                       desc=f'{name} accuracy', disable=args.quiet) as progress:
            accuracies = measure_accuracy(engine, name, accuracy_data, progress=progress)
    exits = [ExitProfile(name=exit_name, latency_ms=tables[index], accuracy=accuracies[index],
                         accuracy_images=len(accuracy_data) if accuracy_data is not None else 0)
             for index, exit_name in enumerate(model.exit_names)]
    return ModelProfile(architecture=config.architecture, exits=exits,
                        input_size=model.input_size, weights_trained=model.weights_trained)


def format_summary(profile: Profile) -> str:
    """Return a plain-text table: accuracy and p50/p95 latency at batch 1 and the largest batch."""
    lines = [f'device: {profile.device}, threads {profile.threads}, torch {profile.torch}']
    for name, model in profile.models.items():
        largest = model.max_profiled_batch()
        lines.append(f'{name} ({model.architecture}):')
        lines.append(f'  {"exit":<10} {"accuracy":>8}  {"p50/p95 ms @1":>15}  '
                     f'{f"p50/p95 ms @{largest}":>16}')
        for exit_profile in model.exits:
            accuracy = ('-' if exit_profile.accuracy is None
                        else f'{100.0 * exit_profile.accuracy:.1f} %')
            one = exit_profile.latency_ms[1]
            big = exit_profile.latency_ms[largest]
            lines.append(f'  {exit_profile.name:<10} {accuracy:>8}  '
                         f'{one.p50:7.2f}/{one.p95:7.2f}  {big.p50:7.2f}/{big.p95:8.2f}')
    return '\n'.join(lines)


if __name__ == '__main__':
    sys.exit(main())
