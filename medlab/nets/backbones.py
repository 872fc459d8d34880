"""torchvision classification backbones as feature extractors.

``backbone(name)`` returns the network with its classification layer removed, so it maps an image
batch to pooled features ``(N, out_features)``. Chapters put their own heads on top.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

# name -> attribute path of the layer that produces the class logits
_HEADS = {
    "resnet18": "fc",
    "resnet34": "fc",
    "resnet50": "fc",
    "densenet121": "classifier",
    "mobilenet_v3_small": "classifier",
    "mobilenet_v3_large": "classifier",
    "shufflenet_v2_x1_0": "fc",
    "efficientnet_b0": "classifier",
    "regnet_x_400mf": "fc",
}

BACKBONES = tuple(_HEADS)

# ImageNet normalisation, used with pretrained weights
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """A torchvision network without its classifier: images ``(N, 3, H, W)`` -> features ``(N, D)``."""

    def __init__(self, name: str, network: nn.Module, out_features: int):
        super().__init__()
        self.name = name
        self.network = network
        self.out_features = out_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)


def _in_features(head: nn.Module) -> int:
    if isinstance(head, nn.Linear):
        return head.in_features
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"cannot find a linear layer in {head}")
    return linears[0].in_features


def backbone(name: str, pretrained: bool = False) -> Backbone:
    """A torchvision backbone by name; ``pretrained=True`` loads its ImageNet weights.

    Trained from scratch, every batch-norm layer uses PyTorch's default momentum 0.1: torchvision's
    MobileNetV3 sets 0.01, meant for hundreds of ImageNet epochs, and on short schedules its running
    statistics lag so far behind that evaluation-mode predictions collapse to one class.

    Pretrained weights are downloaded by torchvision into ``$TORCH_HOME``; without network access
    this raises with instructions rather than silently training from scratch.
    """
    if name not in _HEADS:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")
    weights = "DEFAULT" if pretrained else None
    try:
        network = torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError, ValueError) as error:
        if not pretrained:
            raise
        raise RuntimeError(
            f"could not load the ImageNet weights of {name} ({type(error).__name__}: {error}). "
            "They are downloaded from download.pytorch.org on first use; without network access, copy the "
            "weights file into $TORCH_HOME/hub/checkpoints/ or set pretrained=False."
        ) from error
    if not pretrained:
        for module in network.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = 0.1
    head_name = _HEADS[name]
    out_features = _in_features(getattr(network, head_name))
    setattr(network, head_name, nn.Identity())
    return Backbone(name, network, out_features)


def narrow_resnet18(width: int = 16, in_channels: int = 1) -> Backbone:
    """ResNet-18's layout (stem, four stages of two torchvision ``BasicBlock``s, global pooling) with
    ``width`` channels in the first stage instead of 64, doubling at every stage.

    For CPU-sized teaching runs: at ``width=16`` it costs about 1/16 of ResNet-18's multiply-adds and
    keeps its depth, blocks and down-sampling. Features: ``8 * width``.
    """
    from torchvision.models.resnet import BasicBlock, conv1x1

    if width < 1 or in_channels < 1:
        raise ValueError(f"width and in_channels must be >= 1, got {width} and {in_channels}")
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    ]
    channels = width
    for stage in range(4):
        planes, stride = width * 2**stage, 1 if stage == 0 else 2
        downsample = None
        if stride != 1 or channels != planes:
            downsample = nn.Sequential(conv1x1(channels, planes, stride), nn.BatchNorm2d(planes))
        layers += [BasicBlock(channels, planes, stride, downsample), BasicBlock(planes, planes)]
        channels = planes
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    network = nn.Sequential(*layers)
    for module in network.modules():  # torchvision's ResNet initialisation
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return Backbone(f"narrow_resnet18_w{width}", network, channels)
