"""Early-exit model wrapper: a backbone split into stages, a small head after each early stage.

Exit i runs the backbone's stages 0..i and then the head of exit i; the last exit runs every stage
and the backbone's own classifier. A whole batch always leaves at the same exit, so the cost of a
(model, exit, batch size) is fixed and can be profiled.
"""

import abc
import collections.abc
import pathlib
import pickle
import typing

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

HEADS_FORMAT_NAME = 'edgeserving-exit-heads'
HEADS_FORMAT_VERSION = 1
_MAX_LISTED_KEYS = 8
DEFAULT_GRID_SIZE = 4


class StateDictMismatchError(ValueError):
    """A weights file does not fit the module: missing or unexpected keys, or other shapes."""


class ExitHead(nn.Module):
    """Classifier on the feature map of one stage: average pooling to a grid, then a linear layer.

    With `grid_size` 1 this is global average pooling plus a linear layer. A 4 x 4 grid keeps
    the coarse spatial layout that the frozen early stages still carry. On ResNet-20 it raised
    test accuracy from 32 % to 59 % after stage 1 and from 49 % to 72 % after stage 2
    (docs/profiles.md). The cost is 16 times the head parameters (2.6k and 5.1k weights), which
    is still negligible next to the backbone. There is no batch norm, so the head behaves the
    same in train and eval mode.
    """

    def __init__(self, in_channels: int, num_classes: int, grid_size: int = DEFAULT_GRID_SIZE):
        super().__init__()
        if not 1 <= grid_size <= 16:
            raise ValueError(f'exit head grid size must be 1..16, got {grid_size}')
        self.grid_size = grid_size
        self.pool = nn.AdaptiveAvgPool2d(grid_size)
        self.linear = nn.Linear(in_channels * grid_size * grid_size, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.pool(features), 1))


class EarlyExitModel(nn.Module, abc.ABC):
    """A backbone with exits, shallow to deep; the last exit is the backbone's classifier.

    Subclasses set `self.backbone` and implement `run_stage` and `classify`. There is one stage
    per exit: exit i reads the output of stage i. `heads[i]` is the head of early exit i.

    Flags: `weights_trained` is true once backbone weights were loaded (a random backbone returns
    meaningless labels), `heads_trained` once exit heads were loaded or trained.
    `head_metadata` is the training record stored with the loaded heads (date, seed, images,
    validation accuracy).
    """

    def __init__(self, *, architecture: str, exit_names: typing.Sequence[str],
                 head_channels: typing.Sequence[int], num_classes: int, input_size: int,
                 mean: typing.Sequence[float] = IMAGENET_MEAN,
                 std: typing.Sequence[float] = IMAGENET_STD,
                 grid_size: int = DEFAULT_GRID_SIZE):
        super().__init__()
        if len(head_channels) != len(exit_names) - 1:
            raise ValueError(f'{architecture}: {len(exit_names)} exits need '
                             f'{len(exit_names) - 1} head channel counts, '
                             f'got {len(head_channels)}')
        self.architecture = architecture
        self.exit_names = tuple(exit_names)
        self.head_channels = tuple(head_channels)
        self.num_classes = num_classes
        self.input_size = input_size
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.grid_size = grid_size
        self.heads = self._make_heads(grid_size)
        self.weights_trained = False
        self.weights_path = ''
        self.heads_trained = False
        self.head_metadata: dict = {}

    @property
    def num_exits(self) -> int:
        return len(self.exit_names)

    @abc.abstractmethod
    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Return the output of backbone stage `index` for the output of the stage before it."""

    @abc.abstractmethod
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Return the backbone classifier's logits for the output of the last stage."""

    def forward(self, x: torch.Tensor, exit_index: int = -1) -> torch.Tensor:
        """Return the logits (N, num_classes) of exit `exit_index`; -1 is the final exit."""
        exit_index = self.check_exit_index(exit_index)
        for stage in range(exit_index + 1):
            x = self.run_stage(stage, x)
        if exit_index == self.num_exits - 1:
            return self.classify(x)
        return self.heads[exit_index](x)

    def forward_all_exits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the logits of every exit, running each stage once."""
        logits = []
        for stage in range(self.num_exits):
            x = self.run_stage(stage, x)
            if stage < self.num_exits - 1:
                logits.append(self.heads[stage](x))
        logits.append(self.classify(x))
        return logits

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the outputs of the stages that feed the early-exit heads."""
        features = []
        for stage in range(self.num_exits - 1):
            x = self.run_stage(stage, x)
            features.append(x)
        return features

    def check_exit_index(self, exit_index: int) -> int:
        """Return `exit_index` as a non-negative index; raise IndexError when out of range."""
        if not -self.num_exits <= exit_index < self.num_exits:
            raise IndexError(f'{self.architecture} has exits 0..{self.num_exits - 1} '
                             f'({", ".join(self.exit_names)}), got {exit_index}')
        return exit_index % self.num_exits

    def load_backbone_weights(self, path: str | pathlib.Path) -> None:
        """Load backbone weights, matching keys and shapes strictly (load_state_dict_strict)."""
        load_state_dict_strict(self.backbone, path)
        self.weights_trained = True
        self.weights_path = str(path)

    def backbone_parameters(self) -> typing.Iterator[nn.Parameter]:
        for name, parameter in self.named_parameters():
            if not name.startswith('heads.'):
                yield parameter

    def head_parameters(self) -> typing.Iterator[nn.Parameter]:
        return self.heads.parameters()

    def reset_heads(self, grid_size: int | None = None) -> None:
        """Replace the early-exit heads with freshly initialised ones (on the model's device)."""
        grid_size = self.grid_size if grid_size is None else grid_size
        self._install_heads(self._make_heads(grid_size), grid_size)
        self.heads_trained = False
        self.head_metadata = {}

    def save_exit_heads(self, path: str | pathlib.Path, metadata: dict | None = None) -> None:
        """Write the early-exit heads with their architecture and a training record.

        `metadata` may contain str, int, float, bool, None, lists, tuples and dicts with string
        keys. Subclasses of these (torch.__version__ is one) are stored as the base type, so the
        file loads with `torch.load(weights_only=True)`; other types raise TypeError.
        """
        checkpoint = {
            'format': HEADS_FORMAT_NAME,
            'format_version': HEADS_FORMAT_VERSION,
            'architecture': self.architecture,
            'exit_names': list(self.exit_names[:-1]),
            'grid_size': self.grid_size,
            'head_channels': list(self.head_channels),
            'num_classes': self.num_classes,
            'state_dict': {name: tensor.detach().cpu().clone()
                           for name, tensor in self.heads.state_dict().items()},
            'metadata': _plain_metadata(dict(metadata or {}), 'metadata'),
        }
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, path)

    def load_exit_heads(self, path: str | pathlib.Path) -> dict:
        """Load heads written by `save_exit_heads` and return their training metadata.

        Raises ValueError when the file is of another format, architecture, exit set or number of
        classes, or when its tensors do not fit.
        """
        checkpoint = _load_weights_only(path)
        if not isinstance(checkpoint, dict) or checkpoint.get('format') != HEADS_FORMAT_NAME:
            raise ValueError(f'{path} is not an exit-heads file ({HEADS_FORMAT_NAME})')
        if checkpoint.get('format_version') != HEADS_FORMAT_VERSION:
            raise ValueError(f'{path}: exit-heads format version '
                             f'{checkpoint.get("format_version")!r} is not supported; this '
                             f'version reads {HEADS_FORMAT_VERSION}')
        expected = {'architecture': self.architecture, 'exit_names': list(self.exit_names[:-1]),
                    'num_classes': self.num_classes}
        for field, value in expected.items():
            if checkpoint.get(field) != value:
                raise ValueError(f'{path} contains heads for {field} '
                                 f'{checkpoint.get(field)!r}, but the model has {value!r}')

        grid_size = checkpoint.get('grid_size')
        if not isinstance(grid_size, int):
            raise ValueError(f'{path} has no integer grid_size: {grid_size!r}')
        heads = self._make_heads(grid_size) if grid_size != self.grid_size else self.heads
        check_state_dict(heads, checkpoint['state_dict'], str(path))
        heads.load_state_dict(checkpoint['state_dict'])
        if heads is not self.heads:
            self._install_heads(heads, grid_size)

        self.heads_trained = True
        self.head_metadata = dict(checkpoint.get('metadata') or {})
        return self.head_metadata

    def _install_heads(self, heads: nn.ModuleList, grid_size: int) -> None:
        reference = next(self.backbone_parameters(), None)
        if reference is not None:
            heads.to(reference.device)
        self.heads = heads
        self.grid_size = grid_size

    def _make_heads(self, grid_size: int) -> nn.ModuleList:
        return nn.ModuleList(ExitHead(channels, self.num_classes, grid_size)
                             for channels in self.head_channels)


def check_state_dict(module: nn.Module, state_dict: collections.abc.Mapping, source: str) -> None:
    """Raise StateDictMismatchError unless `state_dict` has the keys and shapes of `module`.

    BatchNorm's `num_batches_tracked` counters may be missing: files written by PyTorch before 0.4
    lack them, they do not affect inference, and `load_state_dict` fills them in.
    """
    expected = module.state_dict()
    missing = [key for key in expected
               if key not in state_dict and not key.endswith('num_batches_tracked')]
    unexpected = [key for key in state_dict if key not in expected]
    reshaped = [f'{key} {tuple(state_dict[key].shape)} != {tuple(expected[key].shape)}'
                for key in expected
                if key in state_dict and hasattr(state_dict[key], 'shape')
                and tuple(state_dict[key].shape) != tuple(expected[key].shape)]
    problems = []
    for label, keys in (('missing keys', missing), ('unexpected keys', unexpected),
                        ('shape mismatches (file != model)', reshaped)):
        if keys:
            listed = ', '.join(keys[:_MAX_LISTED_KEYS])
            hidden = len(keys) - _MAX_LISTED_KEYS
            more = f' and {hidden} more' if hidden > 0 else ''
            problems.append(f'{len(keys)} {label}: {listed}{more}')
    if problems:
        raise StateDictMismatchError(f'{source} does not fit {type(module).__name__}: '
                                     + '; '.join(problems))


def load_state_dict_strict(module: nn.Module, path: str | pathlib.Path) -> None:
    """Load a weights file into `module` with strict key and shape matching.

    The file contains a state_dict, or a dict with the state_dict under 'state_dict' (as training
    scripts save it). A 'module.' prefix on the keys, added by DataParallel, is removed.
    """
    state = _load_weights_only(path)
    if isinstance(state, dict) and isinstance(state.get('state_dict'), dict):
        state = state['state_dict']
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        raise ValueError(f'{path} contains no state_dict (a mapping of parameter names to '
                         'tensors)')
    state = {key.removeprefix('module.'): value for key, value in state.items()}
    check_state_dict(module, state, str(path))
    module.load_state_dict(state, strict=True)


def _plain_metadata(value: typing.Any, where: str) -> typing.Any:
    """Return `value` with builtin types only, which weights_only loading accepts."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    for plain_type in (bool, int, float, str):
        if isinstance(value, plain_type):
            return plain_type(value)
    if isinstance(value, (list, tuple)):
        return [_plain_metadata(item, f'{where}[{index}]') for index, item in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f'{where} has a key that is not a string')
        return {str(key): _plain_metadata(item, f'{where}.{key}') for key, item in value.items()}
    raise TypeError(f'{where} is a {type(value).__name__}; exit-head metadata may hold only '
                    'str, int, float, bool, None, lists and dicts')


def _load_weights_only(path: str | pathlib.Path) -> typing.Any:
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(f'cannot load {path} with torch.load(weights_only=True): {error}') \
            from error
