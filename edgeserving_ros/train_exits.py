"""Train the early-exit heads of a model on a frozen backbone, then measure every exit.

The backbone stays in eval mode and receives no gradients: only the heads (pooling grid plus a
linear layer each) learn, so the final exit keeps the pretrained accuracy and the heads train
in minutes on a CPU. All decoded training images are held in memory as uint8; the backbone
prefix runs again on every batch because augmentation (random crop after zero padding, random
horizontal flip) changes the features each epoch.
"""

import argparse
import dataclasses
import datetime
import math
import pathlib
import sys
import typing

import numpy as np
import torch
import tqdm
from torch.nn import functional

from edgeserving_ros.config import CIFAR10_LABELS, ModelConfig
from edgeserving_ros.data_paths import DATA_ENV_VAR, data_root
from edgeserving_ros.engine import InferenceEngine, normalize_batch, stack_frames
from edgeserving_ros.models import ARCHITECTURES, build_model, default_cifar_weights
from edgeserving_ros.models import default_input_size, EarlyExitModel, file_sha256
from edgeserving_ros.models import source_exit_heads_folder
from edgeserving_ros.models.cifar_resnet import CIFAR_DEPTHS
from edgeserving_ros.models.early_exit import DEFAULT_GRID_SIZE
from edgeserving_ros.profile import load_profile, save_profile
from edgeserving_ros.profiler import load_image_folder, measure_accuracy

CIFAR_TRAIN_DIR = 'cifar10-jpeg/train'
CIFAR_TEST_DIR = 'cifar10-jpeg/test'
EVAL_BATCH_SIZE = 500


@dataclasses.dataclass
class TrainSettings:
    """Hyper-parameters of head training; Adam with a cosine learning-rate decay to zero."""

    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    crop_padding: int = 4
    augment: bool = True
    seed: int = 0


@dataclasses.dataclass
class TrainReport:
    """Record of one training run: loss per step (sum over heads), validation accuracy per exit."""

    step_losses: list[float]
    val_accuracy: list[float]
    train_images: int
    val_images: int
    epochs: int


def split_train_val(targets: np.ndarray, val_fraction: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (train, validation) indices, stratified: `val_fraction` of every class."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f'validation fraction must be in [0, 1), got {val_fraction}')
    rng = np.random.default_rng(seed)
    train, val = [], []
    for target in np.unique(targets):
        members = rng.permutation(np.flatnonzero(targets == target))
        count = int(round(len(members) * val_fraction))
        val.append(members[:count])
        train.append(members[count:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def augment_batch(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Randomly crop after zero padding, and flip half of the images horizontally.

    `images` is uint8 (N, H, W, 3); every image gets its own crop offset and flip.
    """
    count, height, width, _ = images.shape
    padded = functional.pad(images, (0, 0, padding, padding, padding, padding))
    top = torch.randint(0, 2 * padding + 1, (count, 1, 1), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (count, 1, 1), generator=generator)
    flip = (torch.rand(count, generator=generator) < 0.5).view(count, 1, 1)
    offsets = torch.arange(width).view(1, 1, width)
    rows = top + torch.arange(height).view(1, height, 1)
    columns = left + torch.where(flip, width - 1 - offsets, offsets)
    return padded[torch.arange(count).view(count, 1, 1), rows, columns]


def train_exit_heads(model: EarlyExitModel, images: np.ndarray, targets: np.ndarray,
                     settings: TrainSettings, val_images: np.ndarray | None = None,
                     val_targets: np.ndarray | None = None,
                     show_progress: bool = True) -> TrainReport:
    """Train the early-exit heads of `model` in place on uint8 (N, H, W, 3) RGB images.

    The heads are re-initialised from `settings.seed` first. The backbone's weights are never
    changed, and its parameters are left with requires_grad false.
    """
    device = next(model.backbone_parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model.reset_heads()
    model.eval()
    for parameter in model.backbone_parameters():
        parameter.requires_grad_(False)

    generator = torch.Generator().manual_seed(settings.seed)
    images_tensor = torch.from_numpy(images)
    targets_tensor = torch.from_numpy(targets.astype(np.int64))
    steps_per_epoch = math.ceil(len(images) / settings.batch_size)
    optimizer = torch.optim.Adam(model.head_parameters(), lr=settings.learning_rate,
                                 weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=settings.epochs * steps_per_epoch)

    step_losses = []
    for epoch in range(settings.epochs):
        order = torch.randperm(len(images), generator=generator)
        batches = tqdm.tqdm(range(steps_per_epoch), desc=f'epoch {epoch + 1}/{settings.epochs}',
                            unit='batch', disable=not show_progress, leave=False)
        for step in batches:
            indices = order[step * settings.batch_size:(step + 1) * settings.batch_size]
            batch = images_tensor[indices]
            if settings.augment:
                batch = augment_batch(batch, settings.crop_padding, generator)
            batch = normalize_batch(batch.to(device), model.mean, model.std)
            with torch.no_grad():
                features = model.stage_features(batch)
            labels = targets_tensor[indices].to(device)
            loss = sum(functional.cross_entropy(head(feature), labels)
                       for head, feature in zip(model.heads, features))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step_losses.append(loss.item())
            batches.set_postfix(loss=f'{step_losses[-1]:.3f}')

    model.heads_trained = True
    val_accuracy = []
    if val_images is not None and val_targets is not None and len(val_images):
        val_accuracy = evaluate_exits(model, val_images, val_targets)
    return TrainReport(step_losses=step_losses, val_accuracy=val_accuracy,
                       train_images=len(images),
                       val_images=0 if val_images is None else len(val_images),
                       epochs=settings.epochs)


def evaluate_exits(model: EarlyExitModel, images: np.ndarray, targets: np.ndarray,
                   batch_size: int = EVAL_BATCH_SIZE) -> list[float]:
    """Return the top-1 accuracy of every exit on uint8 (N, H, W, 3) RGB images."""
    device = next(model.backbone_parameters()).device
    correct = np.zeros(model.num_exits, np.int64)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = torch.from_numpy(images[start:start + batch_size]).to(device)
            logits = model.forward_all_exits(normalize_batch(batch, model.mean, model.std))
            labels = torch.from_numpy(targets[start:start + batch_size]).to(device)
            for exit_index, exit_logits in enumerate(logits):
                correct[exit_index] += int((exit_logits.argmax(1) == labels).sum())
    return [float(count) / len(images) for count in correct]


def default_output_path(architecture: str) -> pathlib.Path:
    return source_exit_heads_folder() / f'{architecture}_heads.pt'


def build_argument_parser() -> argparse.ArgumentParser:
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(
        prog='edgeserving-train-exits',
        description='Train the early-exit heads of a model on a frozen backbone and measure the '
                    'accuracy of every exit.',
        epilog=f'The data root is ${DATA_ENV_VAR}, else ../shared/data beside the repository.')
    parser.add_argument('--architecture', required=True, choices=ARCHITECTURES)
    parser.add_argument('--weights', type=pathlib.Path,
                        help='backbone weights (default for CIFAR ResNets: the pretrained file '
                             'in the data folder)')
    parser.add_argument('--train-dir', type=pathlib.Path,
                        help=f'ImageFolder training tree (default for CIFAR ResNets: '
                             f'<data root>/{CIFAR_TRAIN_DIR})')
    parser.add_argument('--test-dir', type=pathlib.Path,
                        help=f'ImageFolder tree to measure every exit on after training (default '
                             f'for CIFAR ResNets: <data root>/{CIFAR_TEST_DIR}); never used for '
                             'choices during training')
    parser.add_argument('--output', type=pathlib.Path,
                        help='heads file to write (default: config/exit_heads/'
                             '<architecture>_heads.pt in the source tree)')

    parser.add_argument('--epochs', type=int, default=defaults.epochs,
                        help='passes over the training images (default: %(default)s)')
    parser.add_argument('--batch-size', type=int, default=defaults.batch_size,
                        help='images per optimiser step (default: %(default)s)')
    parser.add_argument('--learning-rate', type=float, default=defaults.learning_rate,
                        help='initial Adam learning rate, decayed to 0 on a cosine '
                             '(default: %(default)s)')
    parser.add_argument('--weight-decay', type=float, default=defaults.weight_decay,
                        help='Adam weight decay (default: %(default)s)')
    parser.add_argument('--val-fraction', type=float, default=defaults.val_fraction,
                        help='share of every class held out for validation '
                             '(default: %(default)s)')
    parser.add_argument('--grid-size', type=int, default=DEFAULT_GRID_SIZE,
                        help='side of the average-pooling grid of each head, 1 for global '
                             'pooling (default: %(default)s)')
    parser.add_argument('--no-augment', action='store_true',
                        help='train without random crop and flip')
    parser.add_argument('--max-per-class', type=int,
                        help='use only the first N training images of each class')
    parser.add_argument('--test-per-class', type=int,
                        help='use only the first N test images of each class')

    parser.add_argument('--seed', type=int, default=defaults.seed,
                        help='seed of the split, head initialisation, order and augmentation')
    parser.add_argument('--threads', type=int,
                        help='CPU threads for torch (default: torch\'s own choice)')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    parser.add_argument('--profile', type=pathlib.Path,
                        help='existing profile file whose accuracy entries of --profile-model '
                             'are replaced by the test accuracies')
    parser.add_argument('--profile-model', help='model name in --profile')
    parser.add_argument('--quiet', action='store_true', help='no progress bars')
    return parser


def main(argv: typing.Sequence[str] | None = None) -> int:
    """Run the training command line; return the exit status."""
    parser = build_argument_parser()
    args = parser.parse_args(argv)
    if (args.profile is None) != (args.profile_model is None):
        parser.error('--profile and --profile-model go together')
    if args.epochs < 1 or args.batch_size < 1 or args.grid_size < 1:
        parser.error('--epochs, --batch-size and --grid-size must be positive')
    try:
        return _run(args)
    except (ValueError, OSError) as error:
        print(f'edgeserving-train-exits: error: {error}', file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    architecture = args.architecture
    is_cifar = architecture in CIFAR_DEPTHS
    weights = args.weights or (default_cifar_weights(architecture) if is_cifar else None)
    if weights is None:
        raise ValueError(f'--weights is required for {architecture}: heads on a random '
                         'backbone learn nothing useful')
    train_dir = args.train_dir or (data_root() / CIFAR_TRAIN_DIR if is_cifar else None)
    if train_dir is None:
        raise ValueError(f'--train-dir is required for {architecture}')
    test_dir = args.test_dir or (data_root() / CIFAR_TEST_DIR if is_cifar else None)
    labels = CIFAR10_LABELS if is_cifar else None

    print(f'loading {train_dir}', file=sys.stderr)
    train_data = load_image_folder(train_dir, labels, args.max_per_class)
    num_classes = len(labels) if labels is not None else len(train_data.class_names)
    config = ModelConfig(name=architecture, architecture=architecture, weights=str(weights),
                         input_size=default_input_size(architecture),
                         labels=labels or tuple(train_data.class_names))
    model = build_model(config, use_default_heads=False)
    model.reset_heads(args.grid_size)
    engine = InferenceEngine({architecture: model}, device=args.device, threads=args.threads)

    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size,
                             learning_rate=args.learning_rate, weight_decay=args.weight_decay,
                             val_fraction=args.val_fraction, augment=not args.no_augment,
                             seed=args.seed)
    images = stack_frames(train_data.images, model.input_size)
    train_index, val_index = split_train_val(train_data.targets, settings.val_fraction,
                                             settings.seed)
    report = train_exit_heads(model, images[train_index], train_data.targets[train_index],
                              settings, images[val_index], train_data.targets[val_index],
                              show_progress=not args.quiet)
    print(f'validation accuracy ({report.val_images} images): '
          + _format_accuracies(model, report.val_accuracy), file=sys.stderr)

    test_accuracy: list[float] = []
    test_images = 0
    if test_dir is not None:
        test_data = load_image_folder(test_dir, labels, args.test_per_class)
        test_accuracy = measure_accuracy(engine, architecture, test_data)
        test_images = len(test_data)
        print(f'test accuracy ({test_images} images): '
              + _format_accuracies(model, test_accuracy))

    output = args.output or default_output_path(architecture)
    metadata = _training_metadata(args, settings, report, pathlib.Path(weights), train_dir,
                                  test_accuracy, test_images, num_classes)
    model.save_exit_heads(output, metadata)
    print(f'wrote {output}')

    if args.profile is not None:
        _write_profile_accuracy(args.profile, args.profile_model, model, test_accuracy,
                                test_images)
    return 0


def _training_metadata(args: argparse.Namespace, settings: TrainSettings, report: TrainReport,
                       weights: pathlib.Path, train_dir: pathlib.Path,
                       test_accuracy: list[float], test_images: int, num_classes: int) -> dict:
    return {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'torch': str(torch.__version__),
        'seed': settings.seed,
        'epochs': settings.epochs,
        'batch_size': settings.batch_size,
        'learning_rate': settings.learning_rate,
        'weight_decay': settings.weight_decay,
        'augment': settings.augment,
        'grid_size': args.grid_size,
        'train_dir': _describe_path(train_dir),
        'train_images': report.train_images,
        'val_images': report.val_images,
        'val_accuracy': report.val_accuracy,
        'test_accuracy': test_accuracy,
        'test_images': test_images,
        'final_loss': report.step_losses[-1] if report.step_losses else None,
        'num_classes': num_classes,
        'backbone_file': weights.name,
        'backbone_sha256': file_sha256(weights),
    }


def _describe_path(path: pathlib.Path) -> str:
    """Return the path relative to the data root when inside it, so no host path is stored."""
    try:
        return str(pathlib.Path(path).resolve().relative_to(data_root()))
    except ValueError:
        return pathlib.Path(path).name


def _write_profile_accuracy(path: pathlib.Path, model_name: str, model: EarlyExitModel,
                            accuracies: list[float], images: int) -> None:
    if not accuracies:
        raise ValueError('--profile needs test accuracies: give --test-dir')
    profile = load_profile(path)
    entry = profile.model(model_name)
    names = [exit_profile.name for exit_profile in entry.exits]
    if names != list(model.exit_names):
        raise ValueError(f'profile {path} model {model_name!r} has exits {names}, '
                         f'the trained model has {list(model.exit_names)}')
    for exit_profile, accuracy in zip(entry.exits, accuracies):
        exit_profile.accuracy = accuracy
        exit_profile.accuracy_images = images
    save_profile(profile, path)
    print(f'updated accuracy of {model_name!r} in {path}')


def _format_accuracies(model: EarlyExitModel, accuracies: typing.Sequence[float]) -> str:
    return ', '.join(f'{name} {100.0 * accuracy:.1f} %'
                     for name, accuracy in zip(model.exit_names, accuracies))


if __name__ == '__main__':
    sys.exit(main())
