"""Tests of exit-head training: data split, augmentation, learning, saved heads."""

import numpy as np
import pytest
import torch

from edgeserving_ros import train_exits
from edgeserving_ros.config import CIFAR10_LABELS, ModelConfig
from edgeserving_ros.data_paths import require_data
from edgeserving_ros.engine import InferenceEngine, stack_frames
from edgeserving_ros.models import build_model
from edgeserving_ros.models.cifar_resnet import CifarResNet
from edgeserving_ros.profile import load_profile
from edgeserving_ros.profiler import load_image_folder, profile_model
from edgeserving_ros.profile import ExitProfile, ModelProfile, Profile, save_profile

RESNET20_WEIGHTS = 'cifar10-resnet-weights/resnet20-12fca82f.th'
CIFAR_TRAIN = 'cifar10-jpeg/train'


pytestmark = pytest.mark.usefixtures('torch_one_thread')


@pytest.fixture(scope='module')
def subset():
    data = load_image_folder(require_data(CIFAR_TRAIN), CIFAR10_LABELS, max_per_class=24)
    return stack_frames(data.images, 32), data.targets


def _pretrained_resnet20() -> CifarResNet:
    model = CifarResNet('cifar_resnet20')
    model.load_backbone_weights(require_data(RESNET20_WEIGHTS))
    return model


def test_split_is_stratified_and_disjoint():
    targets = np.repeat(np.arange(4), 20)

    train, val = train_exits.split_train_val(targets, 0.25, seed=3)

    assert len(set(train) & set(val)) == 0
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(80))
    assert np.bincount(targets[val]).tolist() == [5, 5, 5, 5]


def test_split_rejects_fraction_of_one():
    with pytest.raises(ValueError, match='fraction'):
        train_exits.split_train_val(np.zeros(10, np.int64), 1.0, seed=0)


def test_augmentation_crops_padded_image_and_flips():
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(1, 256, (16, 8, 8, 3), np.uint8))
    padding = 2

    augmented = train_exits.augment_batch(images, padding, torch.Generator().manual_seed(0))

    assert augmented.shape == images.shape
    assert augmented.dtype == torch.uint8
    flipped_count = 0
    for original, result in zip(images, augmented):
        padded = torch.zeros(8 + 2 * padding, 8 + 2 * padding, 3, dtype=torch.uint8)
        padded[padding:padding + 8, padding:padding + 8] = original
        matches = [(top, left, flip)
                   for top in range(2 * padding + 1) for left in range(2 * padding + 1)
                   for flip in (False, True)
                   if torch.equal(result, _crop(padded, top, left, flip))]
        assert matches, 'output is no crop of the padded image'
        flipped_count += any(flip for _, _, flip in matches)
    assert 0 < flipped_count < 16


def _crop(padded: torch.Tensor, top: int, left: int, flip: bool) -> torch.Tensor:
    crop = padded[top:top + 8, left:left + 8]
    return crop.flip(1) if flip else crop


def test_training_lowers_loss_and_keeps_backbone(subset):
    images, targets = subset
    model = _pretrained_resnet20()
    backbone_before = {name: value.clone() for name, value in model.backbone.state_dict().items()}
    settings = train_exits.TrainSettings(epochs=4, batch_size=40, learning_rate=3e-3)

    report = train_exits.train_exit_heads(model, images, targets, settings, images[:40],
                                          targets[:40], show_progress=False)

    assert len(report.step_losses) == 4 * 6
    assert np.mean(report.step_losses[-4:]) < np.mean(report.step_losses[:4])
    assert len(report.val_accuracy) == 3
    assert model.heads_trained
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[name]), name


def test_training_is_reproducible_with_seed(subset):
    images, targets = subset
    settings = train_exits.TrainSettings(epochs=1, batch_size=60, seed=7)
    losses = []
    for _ in range(2):
        model = _pretrained_resnet20()
        report = train_exits.train_exit_heads(model, images, targets, settings,
                                              show_progress=False)
        losses.append(report.step_losses)

    assert losses[0] == losses[1]


def test_saved_heads_reload_to_identical_outputs(subset, tmp_path):
    images, targets = subset
    model = _pretrained_resnet20()
    train_exits.train_exit_heads(model, images, targets,
                                 train_exits.TrainSettings(epochs=1, batch_size=60),
                                 show_progress=False)
    path = tmp_path / 'heads.pt'
    model.save_exit_heads(path, {'seed': 0, 'note': 'unit test'})

    reloaded = build_model(ModelConfig(name='r20', architecture='cifar_resnet20',
                                       weights=str(require_data(RESNET20_WEIGHTS)),
                                       exit_heads=str(path)))
    batch = torch.randn(4, 3, 32, 32)

    assert reloaded.heads_trained
    assert reloaded.head_metadata == {'seed': 0, 'note': 'unit test'}
    with torch.inference_mode():
        for exit_index in range(3):
            assert torch.equal(model.eval()(batch, exit_index), reloaded.eval()(batch, exit_index))


def test_cli_trains_saves_and_updates_profile(tmp_path):
    require_data(CIFAR_TRAIN)
    require_data(RESNET20_WEIGHTS)
    engine = InferenceEngine({'r20': CifarResNet('cifar_resnet20')})
    tables = profile_model(engine, 'r20', max_batch=1, runs=2, warmup_rounds=0)
    profile_path = tmp_path / 'profile.json'
    save_profile(Profile(models={'r20': ModelProfile(
        architecture='cifar_resnet20',
        exits=[ExitProfile(name=name, latency_ms=table)
               for name, table in zip(('stage1', 'stage2', 'final'), tables)])}), profile_path)
    output = tmp_path / 'heads.pt'

    status = train_exits.main(['--architecture', 'cifar_resnet20', '--epochs', '1',
                               '--max-per-class', '10', '--test-per-class', '5',
                               '--threads', '1', '--output', str(output), '--quiet',
                               '--profile', str(profile_path), '--profile-model', 'r20'])

    assert status == 0
    model = CifarResNet('cifar_resnet20')
    metadata = model.load_exit_heads(output)
    assert metadata['train_images'] == 90
    assert metadata['val_images'] == 10
    assert metadata['test_images'] == 50
    assert metadata['train_dir'] == CIFAR_TRAIN
    assert len(metadata['backbone_sha256']) == 64
    accuracies = [exit_profile.accuracy for exit_profile in load_profile(profile_path)
                  .model('r20').exits]
    assert accuracies == pytest.approx(metadata['test_accuracy'])


def test_cli_requires_weights_for_torchvision(tmp_path, capsys):
    status = train_exits.main(['--architecture', 'resnet18', '--output',
                               str(tmp_path / 'h.pt'), '--quiet'])

    assert status == 2
    assert '--weights is required' in capsys.readouterr().err
