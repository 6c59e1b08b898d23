"""Tests of the early-exit models: strict weight loading, exits, batching, accuracy."""

import time

import numpy as np
import pytest
import torch

from edgeserving_ros.config import ModelConfig
from edgeserving_ros.data_paths import require_data
from edgeserving_ros.engine import normalize_batch, stack_frames
from edgeserving_ros.models import ARCHITECTURES, build_model, default_exit_heads_path
from edgeserving_ros.models import StateDictMismatchError
from edgeserving_ros.models.cifar_resnet import CifarResNet
from edgeserving_ros.models.torchvision_exits import MobileNetV3SmallExits, ResNetExits
from edgeserving_ros.profiler import load_image_folder

RESNET20_WEIGHTS = 'cifar10-resnet-weights/resnet20-12fca82f.th'
RESNET32_WEIGHTS = 'cifar10-resnet-weights/resnet32-d509ac18.th'
CIFAR_TEST = 'cifar10-jpeg/test'
TORCHVISION_ARCHITECTURES = ('resnet18', 'resnet50', 'mobilenet_v3_small')


pytestmark = pytest.mark.usefixtures('torch_one_thread')


@pytest.fixture(scope='module')
def resnet20():
    weights = require_data(RESNET20_WEIGHTS)
    model = build_model(ModelConfig(name='resnet20', architecture='cifar_resnet20',
                                    weights=str(weights)))
    return model.eval()


def _pretrained_state(path) -> dict:
    state = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
    return {key.removeprefix('module.'): value for key, value in state.items()}


def test_pretrained_resnet20_loads_every_tensor(resnet20):
    state = _pretrained_state(require_data(RESNET20_WEIGHTS))
    own = resnet20.backbone.state_dict()

    assert resnet20.weights_trained
    assert set(state) <= set(own)
    for key, tensor in state.items():
        assert torch.equal(own[key], tensor), key


@pytest.mark.parametrize('change, expected_text', [
    ('drop', 'missing keys: layer2.1.conv1.weight'),
    ('add', 'unexpected keys: extra.weight'),
    ('reshape', 'linear.weight (5, 64) != (10, 64)'),
])
def test_mismatched_state_dict_raises(tmp_path, change, expected_text):
    state = _pretrained_state(require_data(RESNET20_WEIGHTS))
    if change == 'drop':
        del state['layer2.1.conv1.weight']
    elif change == 'add':
        state['extra.weight'] = torch.zeros(3)
    else:
        state['linear.weight'] = torch.zeros(5, 64)
    path = tmp_path / 'changed.th'
    torch.save({'state_dict': state}, path)

    with pytest.raises(StateDictMismatchError) as error:
        CifarResNet('cifar_resnet20').load_backbone_weights(path)
    assert expected_text in str(error.value)


def test_weights_of_other_depth_raise_naming_keys():
    model = CifarResNet('cifar_resnet20')

    with pytest.raises(StateDictMismatchError, match='unexpected keys: layer1.3.conv1.weight'):
        model.load_backbone_weights(require_data(RESNET32_WEIGHTS))
    assert not model.weights_trained


def test_non_checkpoint_file_raises(tmp_path):
    path = tmp_path / 'not_weights.th'
    path.write_bytes(b'not a torch file')

    with pytest.raises(ValueError, match='weights_only=True'):
        CifarResNet('cifar_resnet20').load_backbone_weights(path)


def test_each_exit_returns_logits_per_item(resnet20):
    batch = torch.randn(5, 3, 32, 32)

    with torch.inference_mode():
        for exit_index in range(resnet20.num_exits):
            assert resnet20(batch, exit_index).shape == (5, 10)
        assert torch.equal(resnet20(batch, -1), resnet20(batch, 2))


def test_exit_index_out_of_range_raises(resnet20):
    with pytest.raises(IndexError, match='stage1, stage2, final'):
        resnet20(torch.zeros(1, 3, 32, 32), 3)


def test_batched_output_equals_per_item(resnet20):
    batch = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))

    with torch.inference_mode():
        for exit_index in range(resnet20.num_exits):
            together = resnet20(batch, exit_index)
            alone = torch.cat([resnet20(batch[i:i + 1], exit_index) for i in range(6)])
            assert torch.allclose(together, alone, atol=1e-5), exit_index


def test_all_exits_pass_matches_single_exits(resnet20):
    batch = torch.randn(3, 3, 32, 32)

    with torch.inference_mode():
        together = resnet20.forward_all_exits(batch)
        for exit_index, logits in enumerate(together):
            assert torch.allclose(logits, resnet20(batch, exit_index), atol=1e-6)


def test_final_exit_accuracy_on_cifar_test_jpegs(resnet20):
    data = load_image_folder(require_data(CIFAR_TEST))
    images = stack_frames(data.images, 32)
    correct = 0
    start_s = time.perf_counter()

    with torch.inference_mode():
        for start in range(0, len(images), 500):
            batch = normalize_batch(torch.from_numpy(images[start:start + 500]),
                                    resnet20.mean, resnet20.std)
            predicted = resnet20(batch, 2).argmax(1).numpy()
            correct += int((predicted == data.targets[start:start + 500]).sum())

    accuracy = correct / len(images)
    print(f'ResNet-20 final exit: {100 * accuracy:.2f} % on {len(images)} images in '
          f'{time.perf_counter() - start_s:.1f} s')
    assert len(images) == 5000
    assert 0.75 <= accuracy <= 0.88


def test_shipped_heads_load_for_pretrained_backbone(resnet20):
    assert default_exit_heads_path('cifar_resnet20') is not None
    assert resnet20.heads_trained
    assert resnet20.head_metadata['train_images'] > 0


def test_untrained_model_is_flagged():
    model = build_model(ModelConfig(name='random', architecture='cifar_resnet32'))

    assert not model.weights_trained
    assert not model.heads_trained


def test_build_model_rejects_unknown_architecture():
    with pytest.raises(ValueError) as error:
        build_model(ModelConfig(name='m', architecture='resnet1000'))
    for known in ARCHITECTURES:
        assert known in str(error.value)


def test_build_model_rejects_unknown_exit_name():
    config = ModelConfig(name='m', architecture='cifar_resnet20', exits=('stage1', 'stage9'))

    with pytest.raises(ValueError, match='stage9'):
        build_model(config)


def test_heads_of_other_architecture_raise(tmp_path):
    path = tmp_path / 'heads.pt'
    CifarResNet('cifar_resnet20').save_exit_heads(path)

    with pytest.raises(ValueError, match='architecture'):
        CifarResNet('cifar_resnet56').load_exit_heads(path)


@pytest.mark.parametrize('architecture', TORCHVISION_ARCHITECTURES)
def test_torchvision_backbone_runs_each_exit(architecture):
    model = build_model(ModelConfig(name='m', architecture=architecture, input_size=64,
                                    labels=tuple(f'class{i}' for i in range(1000))))
    model.eval()
    batch = torch.randn(2, 3, 64, 64)

    assert not model.weights_trained
    with torch.inference_mode():
        for exit_index in range(model.num_exits):
            assert model(batch, exit_index).shape == (2, 1000)


@pytest.mark.parametrize('builder, architecture', [
    (ResNetExits, 'resnet18'), (ResNetExits, 'resnet50'),
    (MobileNetV3SmallExits, 'mobilenet_v3_small')])
def test_torchvision_default_class_count(builder, architecture):
    model = builder(architecture)

    assert model.num_classes == 1000
    assert model.input_size == 224


def test_torchvision_user_checkpoint_loads(tmp_path):
    source = ResNetExits('resnet18', num_classes=10)
    path = tmp_path / 'resnet18.pt'
    torch.save(source.backbone.state_dict(), path)

    model = build_model(ModelConfig(name='m', architecture='resnet18', weights=str(path)))

    assert model.weights_trained
    assert torch.equal(model.backbone.fc.weight, source.backbone.fc.weight)


def test_torchvision_checkpoint_of_other_network_raises(tmp_path):
    path = tmp_path / 'mobilenet.pt'
    torch.save(MobileNetV3SmallExits(num_classes=10).backbone.state_dict(), path)

    with pytest.raises(StateDictMismatchError, match='missing keys: conv1.weight'):
        build_model(ModelConfig(name='m', architecture='resnet18', weights=str(path)))


def test_stage_features_feed_heads(resnet20):
    features = resnet20.stage_features(torch.zeros(1, 3, 32, 32))

    assert [tuple(f.shape) for f in features] == [(1, 16, 32, 32), (1, 32, 16, 16)]


def test_head_grid_size_changes_head_size():
    model = CifarResNet('cifar_resnet20')
    model.reset_heads(grid_size=1)
    global_pool = sum(p.numel() for p in model.head_parameters())
    model.reset_heads(grid_size=4)
    grid = sum(p.numel() for p in model.head_parameters())

    assert global_pool == (16 * 10 + 10) + (32 * 10 + 10)
    assert grid == (16 * 16 * 10 + 10) + (32 * 16 * 10 + 10)
    with torch.inference_mode():
        assert torch.isfinite(model(torch.zeros(1, 3, 32, 32), 0)).all()


def test_heads_metadata_saved_as_builtin_types(tmp_path):
    path = tmp_path / 'heads.pt'
    model = CifarResNet('cifar_resnet20')
    model.save_exit_heads(path, {'torch': torch.__version__, 'accuracy': [np.float64(0.5)]})

    metadata = CifarResNet('cifar_resnet20').load_exit_heads(path)

    assert metadata == {'torch': str(torch.__version__), 'accuracy': [0.5]}
    assert type(metadata['torch']) is str


def test_heads_metadata_of_other_type_raises(tmp_path):
    with pytest.raises(TypeError, match=r'metadata.images\[0\] is a int64'):
        CifarResNet('cifar_resnet20').save_exit_heads(tmp_path / 'h.pt',
                                                      {'images': [np.int64(3)]})
