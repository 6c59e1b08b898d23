"""torchvision backbones (ResNet-18, ResNet-50, MobileNetV3-Small) as early-exit models.

The backbones come from torchvision without downloaded weights: either randomly initialised or
loaded from a user's state_dict file. Heads use global average pooling (grid size 1) because
with ImageNet's 1000 classes a 4 x 4 grid would give ResNet-50's layer3 head 16 million
parameters.
"""

import torch
import torchvision

from edgeserving_ros.models.early_exit import EarlyExitModel, IMAGENET_MEAN, IMAGENET_STD

TORCHVISION_INPUT_SIZE = 224
TORCHVISION_GRID_SIZE = 1

# Exit names, and the channels of the feature maps that feed the early-exit heads.
RESNET_EXITS = ('layer1', 'layer2', 'layer3', 'final')
RESNET_CHANNELS = {'resnet18': (64, 128, 256), 'resnet50': (256, 512, 1024)}
# MobileNetV3-Small: features[3] ends the stride-8 blocks (24 channels), features[8] the
# stride-16 blocks (48 channels); features[9:] run at stride 32 up to the 576-channel conv.
MOBILENET_SPLITS = (4, 9)
MOBILENET_EXITS = ('features3', 'features8', 'final')
MOBILENET_CHANNELS = (24, 48)


class ResNetExits(EarlyExitModel):
    """torchvision ResNet with exits after layer1, layer2, layer3 and the final classifier."""

    def __init__(self, architecture: str, num_classes: int = 1000,
                 input_size: int = TORCHVISION_INPUT_SIZE):
        if architecture not in RESNET_CHANNELS:
            raise ValueError(f'unknown torchvision ResNet {architecture!r}; known: '
                             f'{", ".join(RESNET_CHANNELS)}')
        super().__init__(architecture=architecture, exit_names=RESNET_EXITS,
                         head_channels=RESNET_CHANNELS[architecture], num_classes=num_classes,
                         input_size=input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                         grid_size=TORCHVISION_GRID_SIZE)
        builder = getattr(torchvision.models, architecture)
        self.backbone = builder(weights=None, num_classes=num_classes)

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        backbone = self.backbone
        if index == 0:
            x = backbone.maxpool(backbone.relu(backbone.bn1(backbone.conv1(x))))
            return backbone.layer1(x)
        return (backbone.layer2, backbone.layer3, backbone.layer4)[index - 1](x)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.backbone.fc(torch.flatten(self.backbone.avgpool(features), 1))


class MobileNetV3SmallExits(EarlyExitModel):
    """torchvision MobileNetV3-Small with exits after features[3], features[8] and the end."""

    def __init__(self, architecture: str = 'mobilenet_v3_small', num_classes: int = 1000,
                 input_size: int = TORCHVISION_INPUT_SIZE):
        if architecture != 'mobilenet_v3_small':
            raise ValueError(f'MobileNetV3SmallExits builds mobilenet_v3_small, not '
                             f'{architecture!r}')
        super().__init__(architecture=architecture, exit_names=MOBILENET_EXITS,
                         head_channels=MOBILENET_CHANNELS, num_classes=num_classes,
                         input_size=input_size, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                         grid_size=TORCHVISION_GRID_SIZE)
        self.backbone = torchvision.models.mobilenet_v3_small(weights=None,
                                                              num_classes=num_classes)
        bounds = (0,) + MOBILENET_SPLITS + (len(self.backbone.features),)
        self._stage_ranges = tuple(zip(bounds[:-1], bounds[1:]))

    def run_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        start, stop = self._stage_ranges[index]
        for block in self.backbone.features[start:stop]:
            x = block(x)
        return x

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        pooled = torch.flatten(self.backbone.avgpool(features), 1)
        return self.backbone.classifier(pooled)


TORCHVISION_BUILDERS: dict[str, type[EarlyExitModel]] = {
    'resnet18': ResNetExits,
    'resnet50': ResNetExits,
    'mobilenet_v3_small': MobileNetV3SmallExits,
}
