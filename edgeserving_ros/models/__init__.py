"""Early-exit models by architecture name, and the exit heads shipped with the package."""

import hashlib
import logging
import pathlib

import torch

from edgeserving_ros.config import ModelConfig
from edgeserving_ros.models.cifar_resnet import CIFAR_DEPTHS, CIFAR_INPUT_SIZE, CifarResNet
from edgeserving_ros.models.cifar_resnet import default_cifar_weights
from edgeserving_ros.models.early_exit import EarlyExitModel, ExitHead, StateDictMismatchError
from edgeserving_ros.models.torchvision_exits import TORCHVISION_BUILDERS, TORCHVISION_INPUT_SIZE

__all__ = ['ARCHITECTURES', 'EarlyExitModel', 'ExitHead', 'StateDictMismatchError',
           'build_model', 'default_cifar_weights', 'default_exit_heads_path',
           'default_input_size', 'file_sha256']

PACKAGE_NAME = 'edgeserving_ros'
ARCHITECTURES = tuple(CIFAR_DEPTHS) + tuple(TORCHVISION_BUILDERS)
EXIT_HEADS_FOLDER = pathlib.Path('config') / 'exit_heads'

_logger = logging.getLogger(__name__)


def build_model(config: ModelConfig, use_default_heads: bool = True) -> EarlyExitModel:
    """Build the early-exit model of `config`, load its weights and exit heads.

    An empty `config.weights` leaves the backbone randomly initialised (`weights_trained`
    false). `config.exit_heads` names a heads file. When it is empty and `use_default_heads` is
    true, the heads shipped for the architecture are loaded if they were trained on the same
    backbone file (same sha256). Otherwise the heads stay untrained (`heads_trained` false).
    The number of classes is the number of labels.
    """
    architecture = config.architecture
    num_classes = len(config.labels)
    if architecture in CIFAR_DEPTHS:
        model = CifarResNet(architecture, num_classes=num_classes, input_size=config.input_size)
    elif architecture in TORCHVISION_BUILDERS:
        builder = TORCHVISION_BUILDERS[architecture]
        model = builder(architecture, num_classes=num_classes, input_size=config.input_size)
    else:
        raise ValueError(f'models.{config.name}.architecture {architecture!r} is unknown; '
                         f'known: {", ".join(ARCHITECTURES)}')

    unknown_exits = [name for name in config.exits if name not in model.exit_names]
    if unknown_exits:
        raise ValueError(f'models.{config.name}.exits names unknown exits '
                         f'{", ".join(unknown_exits)}; {architecture} has '
                         f'{", ".join(model.exit_names)}')

    weights_sha256 = ''
    if config.weights:
        weights_path = pathlib.Path(config.weights).expanduser()
        model.load_backbone_weights(weights_path)
        weights_sha256 = file_sha256(weights_path)

    if config.exit_heads:
        metadata = model.load_exit_heads(pathlib.Path(config.exit_heads).expanduser())
        trained_on = metadata.get('backbone_sha256', '')
        if trained_on and trained_on != weights_sha256:
            _logger.warning('exit heads %s were trained on backbone sha256 %s, but model %s '
                            'uses %s; early exits may be inaccurate', config.exit_heads,
                            trained_on[:12], config.name, weights_sha256[:12] or 'no weights')
    elif use_default_heads and weights_sha256:
        _load_default_heads(model, config.name, weights_sha256)
    return model


def default_input_size(architecture: str) -> int:
    """Return the input side length (pixels) the architecture was designed for."""
    if architecture in CIFAR_DEPTHS:
        return CIFAR_INPUT_SIZE
    if architecture in TORCHVISION_BUILDERS:
        return TORCHVISION_INPUT_SIZE
    raise ValueError(f'architecture {architecture!r} is unknown; known: '
                     f'{", ".join(ARCHITECTURES)}')


def default_exit_heads_path(architecture: str) -> pathlib.Path | None:
    """Return the exit-heads file shipped for `architecture`, or None when there is none.

    The file is config/exit_heads/<architecture>_heads.pt, looked up in the package's share
    folder of a colcon install (found with ament_index_python), then in the source tree.
    """
    name = f'{architecture}_heads.pt'
    candidates = []
    share = _package_share_folder()
    if share is not None:
        candidates.append(share / EXIT_HEADS_FOLDER / name)
    candidates.append(source_exit_heads_folder() / name)
    return next((path for path in candidates if path.is_file()), None)


def source_exit_heads_folder() -> pathlib.Path:
    """Return config/exit_heads of the source tree this module was imported from."""
    return pathlib.Path(__file__).resolve().parents[2] / EXIT_HEADS_FOLDER


def file_sha256(path: str | pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _load_default_heads(model: EarlyExitModel, model_name: str, weights_sha256: str) -> None:
    path = default_exit_heads_path(model.architecture)
    if path is None:
        return
    expected_sha256 = _peek_backbone_sha256(path)
    if expected_sha256 != weights_sha256:
        _logger.warning('shipped exit heads %s were trained on another backbone file (sha256 '
                        '%s, model %s uses %s); early exits of %s stay untrained', path,
                        expected_sha256[:12], model_name, weights_sha256[:12], model_name)
        return
    model.load_exit_heads(path)


def _peek_backbone_sha256(path: pathlib.Path) -> str:
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    metadata = checkpoint.get('metadata', {}) if isinstance(checkpoint, dict) else {}
    return str(metadata.get('backbone_sha256', ''))


def _package_share_folder() -> pathlib.Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory
        from ament_index_python.packages import PackageNotFoundError
    except ImportError:
        return None
    try:
        return pathlib.Path(get_package_share_directory(PACKAGE_NAME))
    except (PackageNotFoundError, ValueError, OSError):
        # OSError: AMENT_PREFIX_PATH is unset outside a sourced ROS 2 workspace.
        return None
