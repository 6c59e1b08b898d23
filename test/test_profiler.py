"""Tests of the profiler: latency statistics, accuracy measurement and the profile file."""

import json
import statistics

import numpy as np
import pytest
import torch

from edgeserving_ros import profiler
from edgeserving_ros.config import CIFAR10_LABELS, ModelConfig
from edgeserving_ros.data_paths import require_data
from edgeserving_ros.engine import InferenceEngine, stack_frames
from edgeserving_ros.models import build_model
from edgeserving_ros.models.cifar_resnet import CifarResNet
from edgeserving_ros.profile import load_profile, QUANTILES
from edgeserving_ros.train_exits import evaluate_exits

RESNET20_WEIGHTS = 'cifar10-resnet-weights/resnet20-12fca82f.th'
CIFAR_TEST = 'cifar10-jpeg/test'


pytestmark = pytest.mark.usefixtures('torch_one_thread')


def test_latency_stats_of_known_samples():
    samples = [float(value) for value in range(1, 101)]

    stats = profiler.latency_stats(samples)

    assert stats.p50 == pytest.approx(50.5)
    assert stats.p95 == pytest.approx(95.05)
    assert stats.p99 == pytest.approx(99.01)
    assert stats.mean == pytest.approx(50.5)
    assert stats.stdev == pytest.approx(statistics.stdev(samples))
    assert stats.runs == 100


def test_cli_writes_profile_that_loads_back(tmp_path):
    output = tmp_path / 'profile.json'

    status = profiler.main(['--model', 'tiny=cifar_resnet20', '--runs', '8', '--warmup', '1',
                            '--max-batch', '3', '--threads', '1', '--output', str(output),
                            '--quiet', '--notes', 'unit test'])

    assert status == 0
    profile = load_profile(output)
    assert profile.exit_names('tiny') == ['stage1', 'stage2', 'final']
    assert profile.threads == 1
    assert profile.torch == torch.__version__
    assert 'logical CPUs' in profile.device
    assert profile.notes.startswith('unit test')
    model = profile.model('tiny')
    assert model.architecture == 'cifar_resnet20'
    assert model.input_size == 32
    assert not model.weights_trained
    for exit_profile in model.exits:
        assert sorted(exit_profile.latency_ms) == [1, 2, 3]
        assert exit_profile.accuracy is None
        for stats in exit_profile.latency_ms.values():
            assert 0.0 < stats.p50 <= stats.p95 <= stats.p99
            assert stats.runs == 8
    assert json.loads(output.read_text())['models']['tiny']['exits'][0]['name'] == 'stage1'


def test_latency_grows_with_exit_depth():
    engine = InferenceEngine({'deep': CifarResNet('cifar_resnet56')})

    tables = profiler.profile_model(engine, 'deep', max_batch=2, runs=25, warmup_rounds=2)

    for batch_size in (1, 2):
        medians = [table[batch_size].p50 for table in tables]
        # Each stage holds a third of ResNet-56's blocks (true ratios about 1 : 1.7 : 2.4), so
        # adjacent exits get a wide margin against other processes on a shared CPU.
        assert medians[0] <= medians[1] * 1.5, medians
        assert medians[1] <= medians[2] * 1.5, medians
        assert medians[0] <= medians[2] * 0.8, medians
    for table in tables:
        for stats in table.values():
            assert [stats.quantile_ms(q) for q in QUANTILES] == sorted(
                stats.quantile_ms(q) for q in QUANTILES)


def test_profile_model_rejects_single_run():
    engine = InferenceEngine({'m': CifarResNet('cifar_resnet20')})

    with pytest.raises(ValueError, match='runs >= 2'):
        profiler.profile_model(engine, 'm', max_batch=1, runs=1)


def test_measure_accuracy_matches_direct_evaluation():
    weights = require_data(RESNET20_WEIGHTS)
    data = profiler.load_image_folder(require_data(CIFAR_TEST), CIFAR10_LABELS, max_per_class=30)
    model = build_model(ModelConfig(name='r20', architecture='cifar_resnet20',
                                    weights=str(weights)))
    engine = InferenceEngine({'r20': model})

    through_engine = profiler.measure_accuracy(engine, 'r20', data, batch_size=128)
    direct = evaluate_exits(model, stack_frames(data.images, 32), data.targets)

    assert len(data) == 300
    assert through_engine == pytest.approx(direct, abs=1.0 / len(data))
    assert through_engine[2] > 0.6


def test_cli_reads_parameters_file_and_measures_accuracy(tmp_path):
    weights = require_data(RESNET20_WEIGHTS)
    test_dir = require_data(CIFAR_TEST)
    parameters = tmp_path / 'serve.yaml'
    parameters.write_text(f"""edgeserving:
  ros__parameters:
    stream_names: [front]
    streams.front.model: r20
    streams.front.max_batch: 2
    model_names: [r20]
    models.r20.architecture: cifar_resnet20
    models.r20.weights: {weights}
""")
    output = tmp_path / 'profile.json'

    status = profiler.main(['--params', str(parameters), '--runs', '4', '--warmup', '1',
                            '--accuracy-dir', str(test_dir), '--accuracy-per-class', '10',
                            '--output', str(output), '--quiet'])

    assert status == 0
    model = load_profile(output).model('r20')
    assert model.weights_trained
    assert model.max_profiled_batch() == 2
    for exit_profile in model.exits:
        assert exit_profile.accuracy_images == 100
        assert 0.0 <= exit_profile.accuracy <= 1.0


@pytest.mark.parametrize('option, expected_text', [
    ('noequals', 'NAME=ARCHITECTURE'),
    ('m=', 'NAME=ARCHITECTURE'),
    ('m=lenet', "architecture 'lenet' is unknown"),
])
def test_invalid_model_option_rejected(option, expected_text):
    with pytest.raises(ValueError, match=expected_text):
        profiler.parse_model_option(option)


def test_model_option_with_weights_path():
    config = profiler.parse_model_option('r18=resnet18:/models/r18.pt')

    assert (config.name, config.architecture, config.weights) == ('r18', 'resnet18',
                                                                  '/models/r18.pt')
    assert config.input_size == 224


def test_cli_reports_missing_weights_file(tmp_path, capsys):
    status = profiler.main(['--model', f'm=cifar_resnet20:{tmp_path / "missing.th"}',
                            '--output', str(tmp_path / 'p.json'), '--quiet'])

    assert status == 2
    assert 'missing.th' in capsys.readouterr().err
    assert not (tmp_path / 'p.json').exists()


def test_image_folder_rejects_classes_outside_labels(tmp_path):
    (tmp_path / 'zebra').mkdir()

    with pytest.raises(ValueError, match='zebra'):
        profiler.load_image_folder(tmp_path, CIFAR10_LABELS)


def test_image_folder_reads_rgb_in_label_order(tmp_path):
    import cv2

    for name, color in (('ship', (0, 0, 255)), ('airplane', (255, 0, 0))):
        (tmp_path / name).mkdir()
        pixels = np.zeros((4, 4, 3), np.uint8)
        pixels[:] = color
        cv2.imwrite(str(tmp_path / name / '0.png'), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))

    data = profiler.load_image_folder(tmp_path, CIFAR10_LABELS)

    assert data.class_names == ['airplane', 'ship']
    assert data.targets.tolist() == [0, 8]
    assert data.images[0][0, 0].tolist() == [255, 0, 0]


def test_missing_image_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match='not found'):
        profiler.load_image_folder(tmp_path / 'absent')
