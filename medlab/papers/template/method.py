"""Label smoothing (Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016, Section 7).

* Eq. (1) the smoothed target: ``q = (1 - eps) onehot(y) + eps / K``.
* Eq. (2) the loss: the cross-entropy of the prediction against ``q``.

A chapter's ``method.py`` holds the paper's equations and modules only, in the paper's order, each
function naming its equation and taking its hyper-parameters as arguments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def smoothed_targets(labels: torch.Tensor, num_classes: int, epsilon: float) -> torch.Tensor:
    """Eq. (1): ``(1 - eps) onehot(y) + eps / K``."""
    if not 0 <= epsilon < 1:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
    return (1 - epsilon) * F.one_hot(labels, num_classes).float() + epsilon / num_classes


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Eq. (2): ``-sum_k q_k log softmax(z)_k``, averaged over the batch."""
    targets = smoothed_targets(labels, logits.shape[1], epsilon)
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


class TinyConvNet(nn.Module):
    """Two convolutions, global pooling and a linear classifier (no batch norm)."""

    def __init__(self, num_classes: int, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))
