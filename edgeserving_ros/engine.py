"""Inference engine: batch preprocessing and one early-exit forward pass at a time.

Frames arrive as RGB uint8 arrays of any size. They are resized with OpenCV, stacked in numpy,
copied to the device as uint8 (a quarter of the bytes of float32) and normalised there.

Threading: `infer` holds a lock, so at most one batch runs at a time and concurrent calls wait.
On a GPU all calls must still come from one thread: PyTorch's current CUDA stream is per thread,
and the timings assume that no other work is queued on the device while a batch runs.

NOTE: the CUDA path (device copy, synchronisation, device name) has run only in unit tests that
need no GPU; it has not been measured on a GPU yet.
"""

import dataclasses
import threading
import time
import typing

import cv2
import numpy as np
import torch

from edgeserving_ros.models.early_exit import EarlyExitModel, IMAGENET_MEAN, IMAGENET_STD

MAX_BATCH_SIZE = 1024
MAX_TOP_K = 100


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One class of a top-k list; `score` is the softmax probability."""

    class_id: int
    score: float


@dataclasses.dataclass
class BatchResult:
    """Outcome of one batch: top-k per item in input order, and where the time went.

    `preprocess_s` covers resizing, stacking, the copy to the device and normalisation.
    `inference_s` is the forward pass up to the exit, device-synchronised on CUDA. `total_s` is
    the whole call, softmax and top-k included.
    """

    model: str
    exit_index: int
    exit_name: str
    top_k: list[list[Prediction]]
    preprocess_s: float
    inference_s: float
    total_s: float
    weights_trained: bool = True
    heads_trained: bool = True

    @property
    def batch_size(self) -> int:
        return len(self.top_k)


class EngineError(ValueError):
    """An inference request names an unknown model or exit, or carries invalid frames."""


class InferenceEngine:
    """Runs early-exit models on one device, one batch at a time."""

    def __init__(self, models: typing.Mapping[str, EarlyExitModel], device: str = 'cpu',
                 threads: int | None = None):
        self.device = resolve_device(device)
        if threads is not None:
            if threads < 1:
                raise ValueError(f'threads must be at least 1, got {threads}')
            torch.set_num_threads(threads)
        self.models = dict(models)
        for model in self.models.values():
            model.to(self.device)
            model.eval()
        self._lock = threading.Lock()
        self._normalisers: dict[tuple[tuple, tuple], tuple[torch.Tensor, torch.Tensor]] = {}

    def model(self, name: str) -> EarlyExitModel:
        try:
            return self.models[name]
        except KeyError:
            raise EngineError(f'unknown model {name!r}; loaded: '
                              f'{", ".join(sorted(self.models)) or "none"}') from None

    def preprocess(self, frames: typing.Sequence[np.ndarray], input_size: int,
                   mean: typing.Sequence[float] = IMAGENET_MEAN,
                   std: typing.Sequence[float] = IMAGENET_STD) -> torch.Tensor:
        """Return a normalised float32 NCHW tensor on the engine's device.

        Each frame is an RGB uint8 array of shape (height, width, 3) and is resized to
        `input_size` x `input_size` (area interpolation when shrinking, bilinear otherwise).
        """
        if not 1 <= len(frames) <= MAX_BATCH_SIZE:
            raise EngineError(f'batch size must be 1..{MAX_BATCH_SIZE}, got {len(frames)}')
        stacked = torch.from_numpy(stack_frames(frames, input_size)).to(self.device)
        mean_tensor, std_tensor = self._normaliser(tuple(mean), tuple(std))
        return normalize_batch(stacked, mean_tensor, std_tensor)

    def infer(self, model_name: str, exit_index: int, frames: typing.Sequence[np.ndarray],
              top_k: int = 3) -> BatchResult:
        """Classify a batch of RGB uint8 frames at one exit and return top-k per frame."""
        model = self.model(model_name)
        if not 0 <= exit_index < model.num_exits:
            raise EngineError(f'model {model_name!r} has exits 0..{model.num_exits - 1} '
                              f'({", ".join(model.exit_names)}), got {exit_index}')
        if not 1 <= top_k <= MAX_TOP_K:
            raise EngineError(f'top_k must be 1..{MAX_TOP_K}, got {top_k}')
        top_k = min(top_k, model.num_classes)

        with self._lock, torch.inference_mode():
            start_s = time.perf_counter()
            batch = self.preprocess(frames, model.input_size, model.mean, model.std)
            self._synchronize()
            preprocessed_s = time.perf_counter()
            logits = model(batch, exit_index)
            self._synchronize()
            inferred_s = time.perf_counter()
            scores, classes = torch.softmax(logits.float(), dim=1).topk(top_k, dim=1)
            scores, classes = scores.cpu().tolist(), classes.cpu().tolist()
            end_s = time.perf_counter()

        predictions = [[Prediction(int(c), float(s)) for c, s in zip(item_classes, item_scores)]
                       for item_classes, item_scores in zip(classes, scores)]
        return BatchResult(model=model_name, exit_index=exit_index,
                           exit_name=model.exit_names[exit_index], top_k=predictions,
                           preprocess_s=preprocessed_s - start_s,
                           inference_s=inferred_s - preprocessed_s, total_s=end_s - start_s,
                           weights_trained=model.weights_trained,
                           heads_trained=model.heads_trained or exit_index == model.num_exits - 1)

    def warm_up(self, runs: int = 3, batch_sizes: typing.Sequence[int] = (1,)) -> None:
        """Run every model at every exit and batch size `runs` times on blank frames.

        The first calls pay for lazy initialisation (CUDA context, cuDNN algorithm choice,
        allocator growth); serving and profiling start after them.
        """
        for name, model in self.models.items():
            frame = np.zeros((model.input_size, model.input_size, 3), np.uint8)
            for exit_index in range(model.num_exits):
                for batch_size in batch_sizes:
                    for _ in range(runs):
                        self.infer(name, exit_index, [frame] * batch_size)

    def _normaliser(self, mean: tuple, std: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        key = (mean, std)
        if key not in self._normalisers:
            self._normalisers[key] = (
                torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1),
                torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1))
        return self._normalisers[key]

    def _synchronize(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)


def resolve_device(device: str) -> torch.device:
    """Return the torch device for `device` ('cpu', 'cuda', 'cuda:N'); raise when unavailable."""
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f'invalid device {device!r}: {error}') from None
    if resolved.type == 'cpu':
        return resolved
    if resolved.type != 'cuda':
        raise ValueError(f'device {device!r} is not supported; use cpu or cuda[:index]')
    if not torch.cuda.is_available():
        raise ValueError(f'device {device!r} requested, but CUDA is not available '
                         f'(torch {torch.__version__}, built for CUDA {torch.version.cuda}); '
                         'use device cpu or install a CUDA driver')
    index = resolved.index if resolved.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ValueError(f'device {device!r} requested, but only '
                         f'{torch.cuda.device_count()} CUDA devices are visible')
    return torch.device('cuda', index)


def normalize_batch(batch: torch.Tensor, mean: typing.Sequence[float] | torch.Tensor,
                    std: typing.Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Return uint8 NHWC RGB images as float32 NCHW: scaled to [0, 1], minus mean, over std."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
    return batch.sub_(mean).div_(std)


def stack_frames(frames: typing.Sequence[np.ndarray], input_size: int) -> np.ndarray:
    """Return the frames resized to input_size x input_size and stacked as (N, H, W, 3) uint8."""
    stacked = np.empty((len(frames), input_size, input_size, 3), np.uint8)
    for index, frame in enumerate(frames):
        _check_frame(index, frame)
        height, width = frame.shape[:2]
        if (height, width) == (input_size, input_size):
            stacked[index] = frame
            continue
        shrinking = height > input_size or width > input_size
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        stacked[index] = cv2.resize(frame, (input_size, input_size), interpolation=interpolation)
    return stacked


def _check_frame(index: int, frame: np.ndarray) -> None:
    if not isinstance(frame, np.ndarray):
        raise EngineError(f'frame {index} is a {type(frame).__name__}, expected a numpy array')
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise EngineError(f'frame {index} has dtype {frame.dtype} and shape {frame.shape}, '
                          'expected uint8 (height, width, 3) RGB')
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise EngineError(f'frame {index} is empty: shape {frame.shape}')
