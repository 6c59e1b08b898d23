"""CIFAR-10 ResNets of He et al. 2015 (depths 20/32/44/56) as early-exit models.

The backbone follows section 4.2 of "Deep Residual Learning for Image Recognition" (He, Zhang,
Ren, Sun, 2015): a 3x3 stem with 16 channels, three stages of n basic blocks with 16, 32 and 64
channels (depth = 6n + 2), identity shortcuts that subsample by striding and pad the new channels
with zeros (option A), global average pooling and a 10-way linear classifier. Module names match
the pretrained files in `<data root>/cifar10-resnet-weights`, so their state_dicts load strictly.
"""

import pathlib

import torch
from torch import nn
from torch.nn import functional

from edgeserving_ros.data_paths import data_root
from edgeserving_ros.models.early_exit import EarlyExitModel, IMAGENET_MEAN, IMAGENET_STD

CIFAR_DEPTHS = {'cifar_resnet20': 20, 'cifar_resnet32': 32,
                'cifar_resnet44': 44, 'cifar_resnet56': 56}
CIFAR_EXIT_NAMES = ('stage1', 'stage2', 'final')
CIFAR_STAGE_CHANNELS = (16, 32, 64)
CIFAR_INPUT_SIZE = 32
WEIGHTS_FOLDER = 'cifar10-resnet-weights'


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample by 2 and pad the added channels with zeros."""

    def __init__(self, added_channels: int):
        super().__init__()
        self.added_channels = added_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.added_channels // 2
        return functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, self.added_channels - half))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a shortcut, ReLU after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ZeroPadShortcut(out_channels - in_channels)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = functional.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return functional.relu(out + self.shortcut(x))


class CifarResNetBackbone(nn.Module):
    """The plain classifier; `CifarResNet` adds the exits."""

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f'CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}')
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = _make_stage(16, 16, blocks, stride=1)
        self.layer2 = _make_stage(16, 32, blocks, stride=2)
        self.layer3 = _make_stage(32, 64, blocks, stride=2)
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = functional.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(functional.adaptive_avg_pool2d(x, 1), 1))


def _make_stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class CifarResNet(EarlyExitModel):
    """CIFAR ResNet with exits after stage 1 (16 x 32 x 32), stage 2 (32 x 16 x 16) and the end."""

    def __init__(self, architecture: str, num_classes: int = 10,
                 input_size: int = CIFAR_INPUT_SIZE):
        if architecture not in CIFAR_DEPTHS:
            raise ValueError(f'unknown CIFAR ResNet {architecture!r}; known: '
                             f'{", ".join(CIFAR_DEPTHS)}')
        super().__init__(architecture=architecture, exit_names=CIFAR_EXIT_NAMES,
                         head_channels=CIFAR_STAGE_CHANNELS[:2], num_classes=num_classes,
                         input_size=input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        self.backbone = CifarResNetBackbone(CIFAR_DEPTHS[architecture], num_classes)

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        backbone = self.backbone
        if index == 0:
            x = functional.relu(backbone.bn1(backbone.conv1(x)))
            return backbone.layer1(x)
        return (backbone.layer2, backbone.layer3)[index - 1](x)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        pooled = torch.flatten(functional.adaptive_avg_pool2d(features, 1), 1)
        return self.backbone.linear(pooled)


def default_cifar_weights(architecture: str) -> pathlib.Path | None:
    """Return the pretrained file of `architecture` in the data folder, or None when missing.

    The files are named `resnet<depth>-<first 8 hex digits of sha256>.th`.
    """
    if architecture not in CIFAR_DEPTHS:
        raise ValueError(f'unknown CIFAR ResNet {architecture!r}; known: '
                         f'{", ".join(CIFAR_DEPTHS)}')
    folder = data_root() / WEIGHTS_FOLDER
    matches = sorted(folder.glob(f'resnet{CIFAR_DEPTHS[architecture]}-*.th'))
    return matches[0] if matches else None
