"""Tests of the inference engine: preprocessing, request validation, results and timings."""

import threading

import cv2
import numpy as np
import pytest
import torch

from edgeserving_ros.engine import BatchResult, EngineError, InferenceEngine, resolve_device
from edgeserving_ros.models.cifar_resnet import CifarResNet
from edgeserving_ros.models.early_exit import IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture(scope='module')
def engine():
    torch.manual_seed(0)
    previous = torch.get_num_threads()
    yield InferenceEngine({'small': CifarResNet('cifar_resnet20')}, threads=1)
    torch.set_num_threads(previous)


def _random_frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def _reference_preprocess(frame: np.ndarray, size: int) -> np.ndarray:
    """Compute one normalised CHW image pixel by pixel, as plainly as possible."""
    if frame.shape[:2] != (size, size):
        shrinking = frame.shape[0] > size or frame.shape[1] > size
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (size, size), interpolation=interpolation)
    result = np.zeros((3, size, size), np.float64)
    for row in range(size):
        for column in range(size):
            for channel in range(3):
                value = frame[row, column, channel] / 255.0
                result[channel, row, column] = ((value - IMAGENET_MEAN[channel])
                                                / IMAGENET_STD[channel])
    return result


@pytest.mark.parametrize('height, width', [(32, 32), (48, 40), (20, 27)])
def test_preprocess_matches_pixelwise_reference(engine, height, width):
    frame = _random_frame(height, width)

    batch = engine.preprocess([frame], 32)

    assert batch.shape == (1, 3, 32, 32)
    assert batch.dtype == torch.float32
    np.testing.assert_allclose(batch[0].numpy(), _reference_preprocess(frame, 32), atol=1e-5)


def test_preprocess_stacks_frames_of_mixed_sizes(engine):
    frames = [_random_frame(32, 32, 1), _random_frame(64, 48, 2), _random_frame(10, 10, 3)]

    batch = engine.preprocess(frames, 32)

    assert batch.shape == (3, 3, 32, 32)
    for index, frame in enumerate(frames):
        np.testing.assert_allclose(batch[index].numpy(), _reference_preprocess(frame, 32),
                                   atol=1e-5)


@pytest.mark.parametrize('frame, expected_text', [
    (np.zeros((32, 32), np.uint8), 'shape (32, 32)'),
    (np.zeros((32, 32, 3), np.float32), 'dtype float32'),
    (np.zeros((32, 32, 4), np.uint8), 'shape (32, 32, 4)'),
    (np.zeros((0, 32, 3), np.uint8), 'empty'),
    ([[1, 2, 3]], 'is a list'),
])
def test_preprocess_rejects_invalid_frame(engine, frame, expected_text):
    with pytest.raises(EngineError, match='frame 1') as error:
        engine.preprocess([_random_frame(32, 32), frame], 32)
    assert expected_text in str(error.value)


def test_preprocess_rejects_empty_batch(engine):
    with pytest.raises(EngineError, match='batch size must be 1..1024, got 0'):
        engine.preprocess([], 32)


def test_infer_rejects_unknown_model(engine):
    with pytest.raises(EngineError, match="unknown model 'large'; loaded: small"):
        engine.infer('large', 0, [_random_frame(32, 32)])


@pytest.mark.parametrize('exit_index', [-1, 3, 10])
def test_infer_rejects_unknown_exit(engine, exit_index):
    with pytest.raises(EngineError, match=f'exits 0..2 .*got {exit_index}'):
        engine.infer('small', exit_index, [_random_frame(32, 32)])


def test_infer_rejects_invalid_top_k(engine):
    with pytest.raises(EngineError, match='top_k'):
        engine.infer('small', 0, [_random_frame(32, 32)], top_k=0)


@pytest.mark.parametrize('exit_index', [0, 1, 2])
def test_infer_returns_top_k_of_model_output(engine, exit_index):
    frames = [_random_frame(32, 32, seed) for seed in range(4)]
    model = engine.model('small')
    with torch.inference_mode():
        expected = torch.softmax(model(engine.preprocess(frames, 32), exit_index), 1)

    result = engine.infer('small', exit_index, frames, top_k=3)

    assert isinstance(result, BatchResult)
    assert result.batch_size == 4
    assert result.exit_name == model.exit_names[exit_index]
    for item, probabilities in zip(result.top_k, expected):
        scores = [prediction.score for prediction in item]
        assert len(item) == 3
        assert scores == sorted(scores, reverse=True)
        assert item[0].class_id == int(probabilities.argmax())
        assert scores[0] == pytest.approx(float(probabilities.max()), abs=1e-6)


def test_infer_caps_top_k_at_class_count(engine):
    result = engine.infer('small', 2, [_random_frame(32, 32)], top_k=50)

    assert len(result.top_k[0]) == 10
    assert sum(prediction.score for prediction in result.top_k[0]) == pytest.approx(1.0, 1e-5)


def test_infer_reports_timings_and_flags(engine):
    result = engine.infer('small', 1, [_random_frame(32, 32)] * 2)

    assert result.preprocess_s > 0.0
    assert result.inference_s > 0.0
    assert result.total_s >= result.preprocess_s + result.inference_s
    assert not result.weights_trained
    assert not result.heads_trained


def test_infer_from_two_threads_serves_both(engine):
    results = []

    def serve(seed):
        results.append(engine.infer('small', 2, [_random_frame(32, 32, seed)] * 3))

    threads = [threading.Thread(target=serve, args=(seed,)) for seed in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60.0)

    assert [result.batch_size for result in results] == [3, 3]


def test_warm_up_runs_every_exit(engine):
    engine.warm_up(runs=1, batch_sizes=(1, 2))


def test_engine_puts_models_in_eval_mode():
    model = CifarResNet('cifar_resnet20').train()

    InferenceEngine({'m': model})

    assert not model.training


def test_threads_argument_sets_torch_threads():
    previous = torch.get_num_threads()
    try:
        InferenceEngine({}, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)


def test_zero_threads_rejected():
    with pytest.raises(ValueError, match='threads'):
        InferenceEngine({}, threads=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason='CUDA is available on this machine')
def test_cuda_without_gpu_raises_clear_error():
    with pytest.raises(ValueError, match='CUDA is not available'):
        InferenceEngine({}, device='cuda')


@pytest.mark.parametrize('device', ['tpu', 'not a device'])
def test_unsupported_device_raises(device):
    with pytest.raises(ValueError, match=repr(device)):
        resolve_device(device)
