"""CCL-Net: learning inter-class visual correlations as soft labels (Wei et al., MICCAI 2020,
arXiv:2007.06371).

The official code is not public and only the paper's abstract and introduction could be read, so this
is a reconstruction from the abstract's description; every choice is listed in the chapter's deviation
ledger. In the order of chapter 1 (``sg`` is stop-gradient):

* Eq. (1) the CCL block embeds a sample's pooled backbone feature ``h`` on the unit sphere,
  ``z = P h / ||P h||``, next to one learnable embedding per class, ``e_k = E_k / ||E_k||``.
* Eq. (2) distance metric learning: ``p(k | x) = softmax_k(s <z, e_k>)``, ``L_dml = -log p(y | x)``.
* Eq. (3) the class-correlation matrix: ``R_ij = <e_i, e_j>``, the cosine of the angle between two
  class embeddings (the geometric reading of a correlation coefficient).
* Eq. (4) soft labels, generated on the fly: ``q_i = softmax_j(R_ij / tau)``.
* Eq. (5) the correlation loss: class geometry must match sample geometry,
  ``L_cc = mean_x mean_{j != y} (R_yj - sg<z, e_j>)^2``.
* Eq. (6) the classifier learns from the soft labels: ``L_cls = -sum_j sg(q_yj) log softmax(o)_j``.
* Eq. (7) ``L = L_cls + lambda_dml L_dml + lambda_cc L_cc``, trained end to end.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medlab.nets.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone, backbone, narrow_resnet18


class CCLBlock(nn.Module):
    """The plug-in CCL block: sample and class embeddings on the unit sphere (Eq. 1)."""

    def __init__(self, in_features: int, num_classes: int, embedding_dim: int = 128):
        super().__init__()
        self.project = nn.Linear(in_features, embedding_dim)
        self.class_embeddings = nn.Parameter(torch.randn(num_classes, embedding_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``z = P h / ||P h||`` (Eq. 1)."""
        return F.normalize(self.project(features), dim=-1)

    def class_vectors(self) -> torch.Tensor:
        """``e_k = E_k / ||E_k||`` (Eq. 1)."""
        return F.normalize(self.class_embeddings, dim=-1)


def dml_logits(embedding: torch.Tensor, class_vectors: torch.Tensor, scale: float) -> torch.Tensor:
    """Eq. (2): the logits ``s <z, e_k>`` of the distance-metric-learning softmax."""
    return scale * embedding @ class_vectors.t()


def dml_loss(embedding: torch.Tensor, class_vectors: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """Eq. (2): ``L_dml = -log softmax_y(s <z, e_k>)``, averaged over the batch."""
    return F.cross_entropy(dml_logits(embedding, class_vectors, scale), labels)


def class_correlation(class_vectors: torch.Tensor) -> torch.Tensor:
    """Eq. (3): ``R_ij = <e_i, e_j>``, the cosine between unit class embeddings (``R_ii = 1``)."""
    return class_vectors @ class_vectors.t()


def soft_labels(correlation: torch.Tensor, temperature: float) -> torch.Tensor:
    """Eq. (4): row ``i`` is the soft label of class ``i``, ``softmax_j(R_ij / tau)``."""
    if temperature <= 0:
        raise ValueError(f"the soft-label temperature must be positive, got {temperature}")
    return torch.softmax(correlation / temperature, dim=1)


def correlation_loss(embedding: torch.Tensor, class_vectors: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. (5): class-to-class cosines must match the cosines of the class's samples to other classes.

    ``L_cc = mean_x mean_{j != y} (R_yj - sg<z, e_j>)^2``. The gradient reaches only the class
    embeddings: samples of class ``y`` that look like class ``j`` pull ``e_y`` and ``e_j`` together.
    """
    k = class_vectors.shape[0]
    correlation = class_correlation(class_vectors)[labels]  # (N, K): R_y.
    target = (embedding @ class_vectors.t()).detach()  # (N, K): <z, e_j>
    off = ~F.one_hot(labels, k).bool()
    return ((correlation - target) ** 2)[off].view(-1, k - 1).mean()


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. (6): ``-sum_j q_j log softmax(o)_j`` averaged over the batch (targets are not differentiated)."""
    return -(targets.detach() * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def ccl_loss(
    logits: torch.Tensor,
    embedding: torch.Tensor,
    class_vectors: torch.Tensor,
    labels: torch.Tensor,
    *,
    scale: float,
    temperature: float,
    lambda_dml: float,
    lambda_cc: float,
    soft: bool = True,
    with_cc: bool = True,
) -> dict[str, torch.Tensor]:
    """Eq. (7): ``L = L_cls + lambda_dml L_dml + lambda_cc L_cc``, with its parts.

    ``soft=False`` trains the classifier on hard labels (the CCL block as an auxiliary head only);
    ``with_cc=False`` drops Eq. (5): the two ablation rows of the chapter.
    """
    if soft:
        q = soft_labels(class_correlation(class_vectors), temperature)
        parts = {"cls": soft_cross_entropy(logits, q[labels])}
    else:
        parts = {"cls": F.cross_entropy(logits, labels)}
    parts["dml"] = dml_loss(embedding, class_vectors, labels, scale)
    total = parts["cls"] + lambda_dml * parts["dml"]
    if with_cc:
        parts["cc"] = correlation_loss(embedding, class_vectors, labels)
        total = total + lambda_cc * parts["cc"]
    return {"loss": total, **parts}


def make_backbone(name: str, pretrained: bool = False, width: int = 16) -> Backbone:
    """A torchvision backbone by name, or ``"narrow_resnet18"``: ResNet-18's layout with ``width``
    channels in its first stage (no ImageNet weights; the CPU-sized demo's network)."""
    if name == "narrow_resnet18":
        if pretrained:
            raise ValueError("narrow_resnet18 has no ImageNet weights: set pretrained=False or choose a torchvision backbone")
        return narrow_resnet18(width, in_channels=3)
    return backbone(name, pretrained=pretrained)


class Classifier(nn.Module):
    """A backbone (:func:`make_backbone`) with a linear classifier and, optionally, the CCL block beside it."""

    def __init__(
        self,
        backbone_name: str,
        num_classes: int,
        pretrained: bool = False,
        with_ccl: bool = False,
        embedding_dim: int = 128,
        width: int = 16,
    ):
        super().__init__()
        self.backbone = make_backbone(backbone_name, pretrained=pretrained, width=width)
        self.head = nn.Linear(self.backbone.out_features, num_classes)
        self.ccl = CCLBlock(self.backbone.out_features, num_classes, embedding_dim) if with_ccl else None
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone((images - self.mean) / self.std)
        out = {"logits": self.head(features)}
        if self.ccl is not None:
            out["embedding"] = self.ccl(features)
        return out


def oracle_soft_labels(similarity: np.ndarray, epsilon: float) -> torch.Tensor:
    """A reference, not part of CCL-Net: label smoothing whose mass follows the true similarity.

    Row ``i`` keeps ``1 - epsilon`` on class ``i`` and spreads ``epsilon`` over the other classes in
    proportion to their true similarity to ``i``: the same mass as label smoothing, placed where the
    correlations say. It asks whether correlation-shaped soft labels help at all on the data.
    """
    if not 0 <= epsilon < 1:
        raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
    s = torch.as_tensor(similarity, dtype=torch.float32).clone()
    s.fill_diagonal_(0)
    return (1 - epsilon) * torch.eye(len(s)) + epsilon * s / s.sum(dim=1, keepdim=True)
