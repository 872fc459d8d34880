"""LT-Net (Wang, Cao, Wei et al., "LT-Net: Label Transfer by Learning Reversible Voxel-wise
Correspondence for One-shot Medical Image Segmentation", CVPR 2020, arXiv:2003.07072).

No code is public and only the abstract could be read, so every formula below is a reconstruction from
it (the chapter's deviation ledger lists each choice). The parts, in the abstract's order:

* (1) the correspondence generator ``G``: a 3D registration U-Net (MONAI's ``VoxelMorphUNet``) that maps
  a (moving, fixed) pair to a dense displacement field ``u`` in voxels; the moving image warped by it,
  ``moving(p + u(p))`` (MONAI's ``Warp``), should look like the fixed one;
* (2) label transfer: the forward field ``u_F = G(x_a, x_u)`` from the atlas to an unlabelled image warps
  the atlas image and its label, ``x~ = x_a o u_F`` and ``y~ = y_a o u_F`` (one-hot maps, trilinear);
  ``y~`` is the segmentation of ``x_u``;
* (3) the backward correspondence ``u_B = G(x~, x_a)`` from the warped atlas back to the atlas (the same
  network, shared weights), which reconstructs the atlas image ``x^ = x~ o u_B`` and label ``y^ = y~ o u_B``;
* (4) the cycle-consistency supervision: image cycle ``|x^ - x_a|_1``, label (anatomy) cycle
  ``1 - Dice(y^, y_a)``, and the correspondence cycle: forward and backward fields that undo each other,
  ``|u_B + u_F o (id + u_B)|^2`` (the displacement the whole cycle applies to the atlas);
* (5) image similarity ``LNCC(x~, x_u)`` (MONAI's ``LocalNormalizedCrossCorrelationLoss``) and smoothness
  of both fields (MONAI's ``DiffusionLoss``, VoxelMorph's squared gradient);
* the one-way baseline is (1), (2) and (5) on the forward field only (VoxelMorph with label warping).

Metrics of a field: :func:`jacobian_determinant` and :func:`folding_share`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------------------------
# (1) The correspondence generator and the spatial transformer


class RegistrationNet(nn.Module):
    """``G(moving, fixed)``: MONAI's VoxelMorph U-Net on the two images stacked as channels, giving a
    displacement field (N, 3, D, H, W) in voxels along the volume's axes. Its last convolution starts
    near zero (VoxelMorph's N(0, 1e-5)), so training starts from the identity."""

    def __init__(self, channels: Sequence[int] = (8, 16, 16, 16, 16, 8), final_channels: Sequence[int] = (8,)):
        super().__init__()
        from monai.networks.nets import VoxelMorphUNet

        self.unet = VoxelMorphUNet(
            spatial_dims=3, in_channels=2, unet_out_channels=int(channels[-1]), channels=tuple(channels),
            final_conv_channels=tuple(final_channels),
        )
        self.levels = len(channels) // 2
        last = [m for m in self.unet.modules() if isinstance(m, nn.Conv3d)][-1]
        nn.init.normal_(last.weight, 0.0, 1e-5)
        nn.init.zeros_(last.bias)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.cat([moving, fixed], dim=1))


_WARP: dict[str, nn.Module] = {}


def warp(volume: torch.Tensor, field: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """``volume(p + field(p))`` by trilinear interpolation (MONAI's ``Warp``): ``volume`` (N, C, D, H, W),
    ``field`` (N, 3, D, H, W) in voxels."""
    if padding_mode not in _WARP:
        from monai.networks.blocks import Warp

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _WARP[padding_mode] = Warp(mode="bilinear", padding_mode=padding_mode)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _WARP[padding_mode](volume, field)


# ---------------------------------------------------------------------------------------------
# (2)-(3) Label transfer and the forward-backward cycle


@dataclass
class Cycle:
    """The tensors of one forward-backward pass (backward ones are None for the one-way baseline)."""

    forward: torch.Tensor  # u_F, (N, 3, *S)
    warped_image: torch.Tensor  # x~ = x_a o u_F
    warped_label: torch.Tensor  # y~ = y_a o u_F, one-hot probabilities (N, K, *S)
    backward: torch.Tensor | None = None  # u_B = G(x~, x_a)
    cycled_image: torch.Tensor | None = None  # x^ = x~ o u_B
    cycled_label: torch.Tensor | None = None  # y^ = y~ o u_B
    residual: torch.Tensor | None = None  # u_B + u_F o (id + u_B): the cycle's net displacement


def transfer(net: nn.Module, atlas_image: torch.Tensor, atlas_onehot: torch.Tensor, target: torch.Tensor, cycle: bool = True) -> Cycle:
    """(2) the forward field and the atlas image and label warped by it; with ``cycle``, (3) the backward
    field from the warped atlas to the atlas and the atlas reconstructed through both.

    ``atlas_image`` (N or 1, 1, *S), ``atlas_onehot`` (N or 1, K, *S) and ``target`` (N, 1, *S)."""
    n = target.shape[0]
    atlas_image = atlas_image.expand(n, *atlas_image.shape[1:])
    atlas_onehot = atlas_onehot.expand(n, *atlas_onehot.shape[1:])
    u_f = net(atlas_image, target)
    warped_image = warp(atlas_image, u_f)
    warped_label = warp(atlas_onehot, u_f)
    out = Cycle(u_f, warped_image, warped_label)
    if cycle:
        u_b = net(warped_image, atlas_image)
        out.backward = u_b
        out.cycled_image = warp(warped_image, u_b)
        out.cycled_label = warp(warped_label, u_b)
        out.residual = compose(u_b, u_f)
    return out


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """The displacement of sampling through ``first`` then ``second``: ``v(p) = first(p) + second(p +
    first(p))``, so that ``(x o second) o first = x o v`` (MONAI's warp of the second field by the first)."""
    return first + warp(second, first)


# ---------------------------------------------------------------------------------------------
# (4)-(5) The losses


@dataclass(frozen=True)
class Weights:
    """The weight of each term of the total loss; the one-way baseline sets the cycle terms to 0 and
    skips the backward pass."""

    similarity: float = 1.0
    smoothness: float = 1.0
    image_cycle: float = 1.0
    label_cycle: float = 1.0
    field_cycle: float = 0.1

    @property
    def cycle(self) -> bool:
        return any(w > 0 for w in (self.image_cycle, self.label_cycle, self.field_cycle))


_LOSSES: dict[tuple, nn.Module] = {}


def similarity_loss(warped: torch.Tensor, fixed: torch.Tensor, kernel_size: int = 5) -> torch.Tensor:
    """(5) local normalised cross-correlation (MONAI), as a loss in [-1, 0]: -LNCC."""
    key = ("lncc", kernel_size)
    if key not in _LOSSES:
        from monai.losses import LocalNormalizedCrossCorrelationLoss

        _LOSSES[key] = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=kernel_size, kernel_type="rectangular")
    return _LOSSES[key](warped, fixed)


def smoothness_loss(field: torch.Tensor) -> torch.Tensor:
    """(5) the mean squared spatial gradient of a displacement field (MONAI's ``DiffusionLoss``)."""
    if "diffusion" not in _LOSSES:
        from monai.losses import DiffusionLoss

        _LOSSES["diffusion"] = DiffusionLoss()
    with warnings.catch_warnings():  # MONAI's own indexing, deprecated by torch; not ours to fix
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
        return _LOSSES["diffusion"](field)


def soft_dice_loss(probabilities: torch.Tensor, onehot: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(4) the label cycle: 1 - soft Dice between two one-hot/probability maps (N, K, *S), averaged over
    the foreground structures (channel 0, the background, left out)."""
    dims = tuple(range(2, probabilities.ndim))
    p, t = probabilities[:, 1:], onehot[:, 1:]
    dice = (2 * (p * t).sum(dims) + eps) / (p.sum(dims) + t.sum(dims) + eps)
    return 1 - dice.mean()


def ltnet_loss(out: Cycle, atlas_image: torch.Tensor, atlas_onehot: torch.Tensor, target: torch.Tensor, weights: Weights, kernel_size: int = 5) -> dict[str, torch.Tensor]:
    """The total loss and each term: similarity of the warped atlas to the target, smoothness of the
    fields, and (with a backward pass) the image, label and correspondence cycles. Terms whose weight is
    0 are still reported (watched, not trained)."""
    terms = {
        "similarity": similarity_loss(out.warped_image, target, kernel_size),
        "smoothness": smoothness_loss(out.forward),
    }
    if out.backward is not None:
        n = target.shape[0]
        terms["smoothness"] = (terms["smoothness"] + smoothness_loss(out.backward)) / 2
        terms["image_cycle"] = (out.cycled_image - atlas_image.expand(n, *atlas_image.shape[1:])).abs().mean()
        terms["label_cycle"] = soft_dice_loss(out.cycled_label, atlas_onehot.expand(n, *atlas_onehot.shape[1:]))
        terms["field_cycle"] = out.residual.pow(2).sum(1).mean()
    loss = sum(getattr(weights, name) * value for name, value in terms.items())
    return {"loss": loss, **terms}


# ---------------------------------------------------------------------------------------------
# Inference and the field's measures


@torch.no_grad()
def segment(net: nn.Module, atlas_image: torch.Tensor, atlas_onehot: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Label transfer at test time: one forward pass; the labels (N, *S) are the argmax of the warped
    one-hot atlas label, returned with the forward fields (N, 3, *S)."""
    out = transfer(net, atlas_image, atlas_onehot, targets, cycle=False)
    return out.warped_label.argmax(1), out.forward


def jacobian_determinant(field: torch.Tensor) -> torch.Tensor:
    """The determinant of the Jacobian of ``p -> p + field(p)`` (N, *S), by central differences (one-sided
    at the borders; ``torch.gradient``)."""
    grads = [torch.stack(torch.gradient(field[:, c], dim=(1, 2, 3)), 1) for c in range(3)]  # d u_c / d x_k
    j = torch.stack(grads, 1) + torch.eye(3, dtype=field.dtype, device=field.device)[None, :, :, None, None, None]
    return torch.linalg.det(j.permute(0, 3, 4, 5, 1, 2))


def folding_share(field: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The share of voxels (within ``mask`` when given) where the field folds: a non-positive Jacobian
    determinant; one value per volume (N,)."""
    folded = (jacobian_determinant(field) <= 0).float()
    if mask is None:
        return folded.flatten(1).mean(1)
    mask = mask.float()
    return (folded * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


def onehot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Integer labels (N, *S) as float one-hot maps (N, K, *S)."""
    return F.one_hot(labels.long(), num_classes).movedim(-1, 1).float()
