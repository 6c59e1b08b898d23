"""Offline profile files and the latency model the policies predict with.

A profile stores, for every model and exit, latency quantiles per batch size and the accuracy
measured on a labelled set, with the device, software versions and date of the measurement.
It is a JSON document (YAML is accepted on load) with a format version:

    {"format": "edgeserving-profile", "format_version": 1,
     "device": "...", "torch": "...", "torchvision": "...", "threads": 1, "date": "...",
     "models": {"resnet20": {"architecture": "cifar_resnet20", "input_size": 32,
        "exits": [{"name": "stage1", "accuracy": 0.41, "accuracy_images": 5000,
                   "latency_ms": {"1": {"p50": 1.1, "p95": 1.3, "p99": 1.6,
                                        "mean": 1.15, "stdev": 0.1, "runs": 200}}}]}}}

Exits are ordered from shallowest to deepest; the last one is the model's final classifier.
"""

import dataclasses
import json
import math
import pathlib
import typing

import yaml

FORMAT_NAME = 'edgeserving-profile'
FORMAT_VERSION = 1
QUANTILES = ('p50', 'p95', 'p99')


class ProfileError(ValueError):
    """A profile file is unreadable, of another format version, or misses an entry."""


@dataclasses.dataclass
class LatencyStats:
    """Latency of one (model, exit, batch size) in milliseconds."""

    p50: float
    p95: float
    p99: float
    mean: float = math.nan
    stdev: float = math.nan
    runs: int = 0

    def quantile_ms(self, quantile: str) -> float:
        return float(getattr(self, quantile))


@dataclasses.dataclass
class ExitProfile:
    """Measured accuracy (None when not measured) and latency per batch size of one exit."""

    name: str
    latency_ms: dict[int, LatencyStats]
    accuracy: float | None = None
    accuracy_images: int = 0


@dataclasses.dataclass
class ModelProfile:
    architecture: str
    exits: list[ExitProfile]
    input_size: int = 0
    weights_trained: bool = True

    def max_profiled_batch(self) -> int:
        return max(max(exit_profile.latency_ms) for exit_profile in self.exits)


@dataclasses.dataclass
class Profile:
    """A whole profile file: per-model measurements and where they were taken."""

    models: dict[str, ModelProfile]
    device: str = 'unknown'
    torch: str = ''
    torchvision: str = ''
    threads: int = 0
    date: str = ''
    notes: str = ''

    def model(self, name: str) -> ModelProfile:
        try:
            return self.models[name]
        except KeyError:
            raise ProfileError(f'model {name!r} is not in the profile; profiled: '
                               f'{", ".join(sorted(self.models)) or "none"}') from None

    def exit_count(self, model: str) -> int:
        return len(self.model(model).exits)

    def exit_names(self, model: str) -> list[str]:
        return [exit_profile.name for exit_profile in self.model(model).exits]

    def accuracy(self, model: str, exit_index: int) -> float | None:
        return self.model(model).exits[exit_index].accuracy

    def to_dict(self) -> dict:
        models = {}
        for name, model in self.models.items():
            exits = []
            for exit_profile in model.exits:
                exits.append({
                    'name': exit_profile.name,
                    'accuracy': exit_profile.accuracy,
                    'accuracy_images': exit_profile.accuracy_images,
                    'latency_ms': {str(batch): dataclasses.asdict(stats)
                                   for batch, stats in sorted(exit_profile.latency_ms.items())},
                })
            models[name] = {'architecture': model.architecture, 'input_size': model.input_size,
                            'weights_trained': model.weights_trained, 'exits': exits}
        return {
            'format': FORMAT_NAME, 'format_version': FORMAT_VERSION,
            'device': self.device, 'torch': self.torch, 'torchvision': self.torchvision,
            'threads': self.threads, 'date': self.date, 'notes': self.notes,
            'models': models,
        }

    @classmethod
    def from_dict(cls, document: typing.Mapping[str, typing.Any]) -> 'Profile':
        if document.get('format') != FORMAT_NAME:
            raise ProfileError(f'not an {FORMAT_NAME} document (format: '
                               f'{document.get("format")!r})')
        if document.get('format_version') != FORMAT_VERSION:
            raise ProfileError(f'profile format version {document.get("format_version")!r} '
                               f'is not supported; this version reads {FORMAT_VERSION}')
        models = {}
        for name, model in document.get('models', {}).items():
            exits = []
            for entry in model.get('exits', []):
                latency = {int(batch): LatencyStats(**stats)
                           for batch, stats in entry.get('latency_ms', {}).items()}
                if 1 not in latency:
                    raise ProfileError(f'model {name!r} exit {entry.get("name")!r} has no '
                                       'latency for batch size 1')
                accuracy = entry.get('accuracy')
                exits.append(ExitProfile(
                    name=str(entry['name']), latency_ms=latency,
                    accuracy=None if accuracy is None else float(accuracy),
                    accuracy_images=int(entry.get('accuracy_images', 0))))
            if not exits:
                raise ProfileError(f'model {name!r} has no exits in the profile')
            models[name] = ModelProfile(
                architecture=str(model.get('architecture', '')), exits=exits,
                input_size=int(model.get('input_size', 0)),
                weights_trained=bool(model.get('weights_trained', True)))
        return cls(models=models, device=str(document.get('device', 'unknown')),
                   torch=str(document.get('torch', '')),
                   torchvision=str(document.get('torchvision', '')),
                   threads=int(document.get('threads', 0)), date=str(document.get('date', '')),
                   notes=str(document.get('notes', '')))


def load_profile(path: str | pathlib.Path) -> Profile:
    """Read a profile file (JSON, or YAML by its .yaml/.yml suffix)."""
    path = pathlib.Path(path)
    try:
        with open(path, encoding='utf-8') as stream:
            if path.suffix in ('.yaml', '.yml'):
                document = yaml.safe_load(stream)
            else:
                document = json.load(stream)
    except (OSError, json.JSONDecodeError, yaml.YAMLError) as error:
        raise ProfileError(f'cannot read profile {path}: {error}') from error
    if not isinstance(document, dict):
        raise ProfileError(f'profile {path} is not a mapping')
    try:
        return Profile.from_dict(document)
    except (KeyError, TypeError) as error:
        raise ProfileError(f'profile {path} has an invalid entry: {error}') from error


def save_profile(profile: Profile, path: str | pathlib.Path) -> None:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'w', encoding='utf-8') as stream:
        json.dump(profile.to_dict(), stream, indent=1)
        stream.write('\n')


class LatencyCorrection:
    """Per-(model, exit) factors that scale profiled latencies towards measured ones.

    Each measured batch latency is divided by the profiled latency it is compared with (the
    mean, see LatencyModel). The ratio is clipped to [factor / outlier_ratio, factor *
    outlier_ratio] around the current factor and then folded into an exponentially weighted
    moving average. The clip bounds the step that one stall of the host (up to 6x seen on a
    shared 2-core CPU) can cause. The factor itself stays within `factor_range`.
    With the defaults (smoothing 0.2) a sustained 2x slowdown is tracked within 5 % after 14
    batches: 1 - 0.8**14 = 0.956.
    """

    def __init__(self, smoothing: float = 0.2, outlier_ratio: float = 2.0,
                 factor_range: tuple[float, float] = (0.25, 8.0)):
        self.smoothing = smoothing
        self.outlier_ratio = outlier_ratio
        self.factor_range = factor_range
        self._factors: dict[tuple[str, int], float] = {}
        self._samples: dict[tuple[str, int], int] = {}

    def factor(self, model: str, exit_index: int) -> float:
        return self._factors.get((model, exit_index), 1.0)

    def samples(self, model: str, exit_index: int) -> int:
        return self._samples.get((model, exit_index), 0)

    def observe(self, model: str, exit_index: int, predicted_s: float, measured_s: float) -> None:
        """Fold one measured batch latency into the factor of (model, exit)."""
        if predicted_s <= 0.0 or not math.isfinite(measured_s) or measured_s < 0.0:
            return
        key = (model, exit_index)
        factor = self._factors.get(key, 1.0)
        ratio = measured_s / predicted_s
        ratio = min(max(ratio, factor / self.outlier_ratio), factor * self.outlier_ratio)
        factor += self.smoothing * (ratio - factor)
        low, high = self.factor_range
        self._factors[key] = min(max(factor, low), high)
        self._samples[key] = self._samples.get(key, 0) + 1

    def reset(self) -> None:
        self._factors.clear()
        self._samples.clear()

    def snapshot(self) -> dict[tuple[str, int], float]:
        return dict(self._factors)


class LatencyModel:
    """Predicts the latency of (model, exit, batch size) from a profile quantile.

    Batch sizes between profiled ones are interpolated linearly. Beyond the largest profiled
    size the last segment's slope is extended, which is an estimate because real batching
    curves flatten or jump. Predictions are multiplied by the online correction factor of
    (model, exit). That factor compares measurements with the profiled mean (p50 where the mean
    is missing), not with the predicted quantile: otherwise it would converge to mean / p95 and
    pull a p95 prediction down to the median.
    """

    def __init__(self, profile: Profile, quantile: str = 'p95',
                 correction: LatencyCorrection | None = None):
        if quantile not in QUANTILES:
            raise ProfileError(f'latency quantile {quantile!r} is not one of {QUANTILES}')
        self.profile = profile
        self.quantile = quantile
        self.correction = correction if correction is not None else LatencyCorrection()
        self._tables: dict[tuple[str, int], tuple[list[int], list[float]]] = {}
        self._central_tables: dict[tuple[str, int], tuple[list[int], list[float]]] = {}
        self._cache: dict[tuple[str, int, int], float] = {}
        for name, model in profile.models.items():
            for exit_index, exit_profile in enumerate(model.exits):
                batches = sorted(exit_profile.latency_ms)
                seconds = [exit_profile.latency_ms[b].quantile_ms(quantile) / 1000.0
                           for b in batches]
                central = [_central_ms(exit_profile.latency_ms[b]) / 1000.0 for b in batches]
                self._tables[(name, exit_index)] = (batches, seconds)
                self._central_tables[(name, exit_index)] = (batches, central)

    def uncorrected_s(self, model: str, exit_index: int, batch_size: int) -> float:
        """Return the profiled latency in seconds, before online correction."""
        key = (model, exit_index, batch_size)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            batches, seconds = self._tables[(model, exit_index)]
        except KeyError:
            raise ProfileError(f'no latency profiled for model {model!r} exit {exit_index}') \
                from None
        value = _interpolate(batches, seconds, batch_size)
        self._cache[key] = value
        return value

    def latency_s(self, model: str, exit_index: int, batch_size: int) -> float:
        """Return the predicted latency in seconds, online correction included."""
        return (self.uncorrected_s(model, exit_index, batch_size)
                * self.correction.factor(model, exit_index))

    def central_s(self, model: str, exit_index: int, batch_size: int) -> float:
        """Return the profiled mean latency in seconds (p50 where no mean was recorded)."""
        try:
            batches, seconds = self._central_tables[(model, exit_index)]
        except KeyError:
            raise ProfileError(f'no latency profiled for model {model!r} exit {exit_index}') \
                from None
        return _interpolate(batches, seconds, batch_size)

    def observe(self, model: str, exit_index: int, batch_size: int, measured_s: float) -> None:
        """Feed one measured batch latency to the online correction."""
        self.correction.observe(model, exit_index,
                                self.central_s(model, exit_index, batch_size), measured_s)


def _central_ms(stats: LatencyStats) -> float:
    return stats.mean if math.isfinite(stats.mean) and stats.mean > 0 else stats.p50


def _interpolate(batches: list[int], seconds: list[float], batch_size: int) -> float:
    if batch_size in batches:
        return seconds[batches.index(batch_size)]
    if len(batches) == 1:
        return seconds[0] * batch_size / batches[0]
    if batch_size < batches[0]:
        low, high = 0, 1
    elif batch_size > batches[-1]:
        low, high = len(batches) - 2, len(batches) - 1
    else:
        high = next(i for i, b in enumerate(batches) if b > batch_size)
        low = high - 1
    slope = (seconds[high] - seconds[low]) / (batches[high] - batches[low])
    return max(seconds[low] + slope * (batch_size - batches[low]), 1e-6)
