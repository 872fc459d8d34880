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
