"""Crossover-Net (Yu et al., arXiv:2004.01397): segmentation as the classification of every pixel from
a cross-shaped patch centred on it.

In the paper's order:

* Eq. (1) the crossover-patch: a vertical patch (``L`` rows by ``W`` columns) and a horizontal patch
  (``W`` by ``L``) centred on the same pixel; they overlap in the ``W`` x ``W`` square around it. The
  horizontal patch is *transposed* into ``L`` x ``W``, so one trunk reads both arms along their length.
* Eq. (2) the network: one trunk shared by both arms (convolutions without padding, ReLU, max-pooling)
  that turns an arm into a feature line ``F`` (``C`` channels by ``n`` positions along the arm) and
  then into an embedding; a head on the two concatenated embeddings predicts the centre pixel's class.
* Eq. (3) the loss: cross-entropy, plus the *consistency* of the two arms' feature lines on their
  overlap, minus their *diversity* on the non-overlapping ends. Per channel ``k`` and position ``j``
  the arms' distance over the batch is ``d_kj = sqrt(sum_b (F^v_bkj - F^h_bkj)^2)``; each distance map
  is min-max normalised and averaged:
  ``L = CE + lambda_c mean(norm(d^overlap)) - lambda_d mean(norm(d^ends))``.
* Eq. (4) sampling of training centres: denser near the target's boundary, balanced between classes.
* Eq. (5) dense prediction of every pixel of a region, then the clean-up: closing, hole filling and
  the largest connected component.

Dense prediction runs the patch network fully convolutionally: each max-pooling becomes a stride-1
pooling and every later layer is dilated by the strides it skipped, which computes, at every pixel,
exactly what the network computes on the patch centred there (tested against patch-by-patch
evaluation) at a fraction of the cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

ARMS = ("vertical", "horizontal", "square")

# ---------------------------------------------------------------------------------------------
# Eq. (1): the crossover-patch


def pad_for_patches(images: torch.Tensor, length: int) -> torch.Tensor:
    """Eq. (1): pad images (N, 1, H, W) with zeros by ``length // 2`` before and ``length - 1 -
    length // 2`` after on both axes, so that a patch of any orientation, up to ``length`` long,
    centred on any pixel lies inside. Zero is the bottom of the intensity window (the images are in
    [0, 1])."""
    before, after = length // 2, length - 1 - length // 2
    return F.pad(images, (before, after, before, after))


def extract_patches(
    padded: torch.Tensor, index: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, length: int,
    width: int, arm: str, pad_length: int,
) -> torch.Tensor:
    """Eq. (1): the ``arm`` patches (B, 1, length, width) centred on pixels ``(rows, cols)`` of images
    ``index`` of ``padded`` ((N, 1, H', W'), made by :func:`pad_for_patches` with ``pad_length``),
    gathered in one indexing operation (no loop over patches).

    ``vertical``: ``length`` rows by ``width`` columns. ``horizontal``: ``width`` rows by ``length``
    columns, returned *transposed* (its long axis first, running left to right), so that the trunk
    reads both arms along their length. ``square``: ``length`` x ``length`` (``width == length``)."""
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; expected one of {', '.join(ARMS)}")
    if arm == "square" and width != length:
        raise ValueError(f"a square patch needs width == length, got {length} x {width}")
    if length > pad_length:
        raise ValueError(f"a patch {length} long needs images padded for at least {length}, got {pad_length}")
    offset = pad_length // 2
    along = torch.arange(length, device=padded.device) - length // 2 + offset  # (L,)
    across = torch.arange(width, device=padded.device) - width // 2 + offset  # (W,)
    n = index[:, None, None]
    if arm == "horizontal":  # element (j, k) of the transposed patch is pixel (r + across_k, c + along_j)
        r = rows[:, None, None] + across[None, None, :]
        c = cols[:, None, None] + along[None, :, None]
    else:
        r = rows[:, None, None] + along[None, :, None]
        c = cols[:, None, None] + across[None, None, :]
    return padded[n, 0, r, c][:, None]


# ---------------------------------------------------------------------------------------------
# Eq. (2): one trunk shared by the arms, a head on the concatenated embeddings


@dataclass(frozen=True)
class TrunkSpec:
    """The trunk for a patch of ``length`` x ``width`` pixels: ``layers`` up to the feature line, each
    ``("conv", channels, kernel_rows, kernel_cols)`` (followed by a ReLU) or ``("pool", rows, cols)``
    (max-pooling); then ``column`` convolutions ``(channels, kernel_rows, kernel_cols)`` that reduce the
    line to a 1 x 1 embedding (ReLU between them, none after the last)."""

    length: int
    width: int
    layers: tuple[tuple, ...]
    column: tuple[tuple[int, int, int], ...]

    @property
    def embedding(self) -> int:
        return self.column[-1][0]


TRUNKS: dict[str, TrunkSpec] = {
    # the official network for 100 x 20 arms: feature line 64 x 19, embedding 500
    "paper": TrunkSpec(
        100, 20,
        (("conv", 16, 5, 3), ("conv", 36, 5, 3), ("pool", 2, 2), ("conv", 64, 5, 3), ("pool", 2, 2), ("conv", 64, 3, 3)),
        ((64, 7, 1), (64, 7, 1), (500, 7, 1)),
    ),
    # a square patch of about the same area (44 x 44 = 1936 against 2000 pixels), the same depth and widths
    "paper_square": TrunkSpec(
        44, 44,
        (("conv", 16, 5, 5), ("conv", 36, 5, 5), ("pool", 2, 2), ("conv", 64, 5, 5), ("pool", 2, 2), ("conv", 64, 3, 3)),
        ((64, 3, 3), (500, 3, 3)),
    ),
    # the teaching size: 40 x 8 arms (the paper's 5:1), one pooling, feature line 32 x 14, embedding 64
    "small": TrunkSpec(
        40, 8,
        (("conv", 8, 5, 3), ("conv", 16, 5, 3), ("pool", 2, 2), ("conv", 32, 3, 2)),
        ((32, 5, 1), (32, 5, 1), (64, 6, 1)),
    ),
    # 18 x 18 = 324 against 320 pixels
    "small_square": TrunkSpec(
        18, 18,
        (("conv", 8, 3, 3), ("conv", 16, 3, 3), ("pool", 2, 2), ("conv", 32, 3, 3)),
        ((32, 3, 3), (64, 3, 3)),
    ),
}


class ArmTrunk(nn.Module):
    """Eq. (2): the trunk shared by the arms (convolutions without padding, ReLU, max-pooling).

    ``trunk(patches)`` reads patches (B, 1, length, width) and returns the embedding (B, E) and the
    feature line (B, C, n): the ``n`` positions run along an arm's length. ``trunk.dense(image)`` runs
    the same weights fully convolutionally on an image (N, 1, H, W): its output (N, E, H', W') at
    ``(i, j)`` is the embedding of the patch whose top-left pixel is ``(i, j)``."""

    def __init__(self, spec: TrunkSpec):
        super().__init__()
        self.spec = spec
        convs, channels = [], 1
        for layer in spec.layers:
            if layer[0] == "conv":
                convs.append(nn.Conv2d(channels, layer[1], tuple(layer[2:])))
                channels = layer[1]
            elif layer[0] != "pool":
                raise ValueError(f"unknown trunk layer {layer!r}")
        self.convs = nn.ModuleList(convs)
        self.column = nn.ModuleList()
        for out, kh, kw in spec.column:
            self.column.append(nn.Conv2d(channels, out, (kh, kw)))
            channels = out
        with torch.no_grad():
            embedding, line = self._run(torch.zeros(1, 1, spec.length, spec.width), dense=False)
        is_arm = spec.length != spec.width
        if embedding.shape[-2:] != (1, 1) or (is_arm and line.shape[-1] != 1):
            raise ValueError(
                f"the trunk does not reduce a {spec.length} x {spec.width} patch to a feature line and a 1 x 1 "
                f"embedding (line {tuple(line.shape[-2:])}, embedding {tuple(embedding.shape[-2:])})"
            )
        self.positions = line.shape[-2]  # n: the feature line's length (an arm)

    def _run(self, x: torch.Tensor, dense: bool) -> tuple[torch.Tensor, torch.Tensor]:
        dilation = [1, 1]
        convs = iter(self.convs)
        for layer in self.spec.layers:
            if layer[0] == "conv":
                conv = next(convs)
                x = F.relu(F.conv2d(x, conv.weight, conv.bias, dilation=tuple(dilation)))
            elif dense:  # a stride-1 pooling; every later layer is dilated by the stride it skipped
                x = F.max_pool2d(x, tuple(layer[1:]), stride=1, dilation=tuple(dilation))
                dilation = [dilation[0] * layer[1], dilation[1] * layer[2]]
            else:
                x = F.max_pool2d(x, tuple(layer[1:]))
        line = x
        for k, conv in enumerate(self.column):
            x = F.conv2d(x, conv.weight, conv.bias, dilation=tuple(dilation))
            if k < len(self.column) - 1:
                x = F.relu(x)
        return x, line

    def forward(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, line = self._run(patches, dense=False)
        return embedding.flatten(1), line.flatten(2)

    def dense(self, image: torch.Tensor) -> torch.Tensor:
        return self._run(image, dense=True)[0]


class CrossoverNet(nn.Module):
    """Eq. (2): the trunk applied to each of ``arms`` (both arms: Crossover-Net; one arm, or a square
    patch: the baselines) and a head, ReLU then a linear layer, on the concatenated embeddings.
    ``forward(patches)`` takes a dict arm -> patches (B, 1, L, W) and returns the logits (B, classes)
    and the feature lines by arm; :meth:`dense_logits` predicts every pixel of whole images."""

    def __init__(self, spec: TrunkSpec, arms: tuple[str, ...] = ("vertical", "horizontal"), num_classes: int = 2):
        super().__init__()
        unknown = [a for a in arms if a not in ARMS]
        if unknown or not arms or len(set(arms)) != len(arms):
            raise ValueError(f"arms must be distinct names from {ARMS}, got {arms}")
        if "square" in arms and (len(arms) > 1 or spec.length != spec.width):
            raise ValueError("a square patch is used alone, with a square trunk")
        self.spec, self.arms = spec, tuple(arms)
        self.trunk = ArmTrunk(spec)
        self.head = nn.Linear(spec.embedding * len(arms), num_classes)

    def forward(self, patches: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if len(self.arms) == 2:  # one trunk call for both arms (a shared trunk: the same weights)
            both, lines = self.trunk(torch.cat([patches[a] for a in self.arms]))
            embeddings, lines = both.chunk(2), dict(zip(self.arms, lines.chunk(2)))
        else:
            embedding, line = self.trunk(patches[self.arms[0]])
            embeddings, lines = (embedding,), {self.arms[0]: line}
        return self.head(F.relu(torch.cat(embeddings, dim=1))), lines

    def dense_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Eq. (5): the logits (N, classes, H, W) of every pixel of ``images`` (N, 1, H, W), each from the
        patches centred on it (zero padding outside the image), computed fully convolutionally: the
        horizontal arm is the vertical arm of the transposed image."""
        length, width = self.spec.length, self.spec.width
        h, w = images.shape[-2:]
        embeddings = []
        for arm in self.arms:
            source = images.transpose(-1, -2) if arm == "horizontal" else images
            padded = F.pad(source, (width // 2, width - 1 - width // 2, length // 2, length - 1 - length // 2))
            out = self.trunk.dense(padded)
            out = out[..., : source.shape[-2], : source.shape[-1]]
            embeddings.append(out.transpose(-1, -2) if arm == "horizontal" else out)
        features = F.relu(torch.cat(embeddings, dim=1))
        weight = self.head.weight[:, :, None, None]
        return F.conv2d(features, weight, self.head.bias)[..., :h, :w]


# ---------------------------------------------------------------------------------------------
# Eq. (3): cross-entropy + consistency on the overlap - diversity on the ends


def overlap_and_ends(positions: int, ratio: float) -> tuple[list[int], list[int]]:
    """Eq. (3): the feature-line positions over the arms' overlap (the ``W`` x ``W`` square around the
    centre) and over their two ends, for an arm ``ratio = L / W`` times as long as wide. Overlap: the
    ``2 round(n / 2 ratio)`` positions around ``n // 2``; ends: the first and the last ``n // ratio``.
    With the paper's ``n = 19``, ratio 5: overlap 7-10, ends 0-2 and 16-18 (the official code's)."""
    half = max(1, round(positions / (2 * ratio)))
    end = max(1, int(positions // ratio))
    centre = positions // 2
    overlap = list(range(centre - half, centre + half))
    ends = list(range(end)) + list(range(positions - end, positions))
    if set(overlap) & set(ends) or overlap[0] < 0:
        raise ValueError(f"a feature line of {positions} positions is too short for ratio {ratio}")
    return overlap, ends


def arm_distance(vertical: torch.Tensor, horizontal: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. (3): ``d_kj = sqrt(sum_b (F^v_bkj - F^h_bkj)^2)`` for feature lines (B, C, P): the distance
    between the arms per channel and position over the batch (C, P). Each sample's vertical line is
    compared with *its own* horizontal line (the official code's reshape mixes samples and channels)."""
    return torch.sqrt(((vertical - horizontal) ** 2).sum(0) + eps)


def min_max(values: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. (3): ``(d - min d) / (max d - min d)``, over all elements: the regulariser in [0, 1]."""
    low, high = values.min(), values.max()
    return (values - low) / (high - low + eps)


def crossover_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    vertical: torch.Tensor | None = None,
    horizontal: torch.Tensor | None = None,
    *,
    ratio: float = 5.0,
    consistency_weight: float = 1.0,
    diversity_weight: float = 1.0,
    normalise: str = "minmax",
) -> dict[str, torch.Tensor]:
    """Eq. (3): ``CE + lambda_c mean(norm(d^overlap)) - lambda_d mean(norm(d^ends))`` for feature lines
    (B, C, n) of the two arms. ``normalise="minmax"`` is the official min-max normalisation of each
    distance map; ``"none"`` uses the distances themselves, as root mean squares over the batch
    (``d / sqrt(B)``), so that their scale does not grow with the batch. Without feature lines (one
    arm), or with both weights 0, the loss is the cross-entropy. Returns every term (``loss`` is the
    total; the two terms are returned with two arms even where their weight is 0, to be watched)."""
    if normalise not in ("minmax", "none"):
        raise ValueError(f"normalise must be 'minmax' or 'none', got {normalise!r}")
    ce = F.cross_entropy(logits, labels)
    out = {"ce": ce}
    total = ce
    if vertical is not None and horizontal is not None:
        overlap, ends = overlap_and_ends(vertical.shape[-1], ratio)
        scale = 1.0 if normalise == "minmax" else vertical.shape[0] ** -0.5
        norm = min_max if normalise == "minmax" else (lambda d: d)
        common = norm(arm_distance(vertical[..., overlap], horizontal[..., overlap]) * scale).mean()
        special = norm(arm_distance(vertical[..., ends], horizontal[..., ends]) * scale).mean()
        out.update(consistency=common, diversity=special)  # logged even where a weight is 0
        if consistency_weight:
            total = total + consistency_weight * common
        if diversity_weight:
            total = total - diversity_weight * special
    out["loss"] = total
    return out


# ---------------------------------------------------------------------------------------------
# Eq. (4): training centres, denser near the boundary, balanced between classes


def sample_centres(
    mask: np.ndarray,
    rng: np.random.Generator,
    *,
    grid_step: int,
    boundary_fraction: float,
    ring_offsets: tuple[float, ...],
    ring_rates: tuple[float, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq. (4): the training centres of one image with target ``mask`` (H, W): a regular grid every
    ``grid_step`` pixels (random phase), a ``boundary_fraction`` of the pixels on the target's boundary
    (within one pixel of it, inside or outside), and, in rings at distances up to each of
    ``ring_offsets`` from the boundary (both sides), each pixel with the ring's rate (the rates falling
    outwards: denser near the edge). Returns rows, columns and labels (0/1)."""
    if len(ring_offsets) != len(ring_rates):
        raise ValueError(f"{len(ring_offsets)} ring offsets but {len(ring_rates)} rates")
    mask = np.asarray(mask, dtype=bool)
    distance = np.where(mask, ndimage.distance_transform_edt(mask), ndimage.distance_transform_edt(~mask))
    chosen = np.zeros(mask.shape, dtype=bool)
    phase = rng.integers(0, grid_step, size=2)
    chosen[phase[0] :: grid_step, phase[1] :: grid_step] = True
    if mask.any() and not mask.all():
        draw = rng.random(mask.shape)
        chosen |= (distance <= 1) & (draw < boundary_fraction)
        inner = 1.0
        for offset, rate in zip(ring_offsets, ring_rates):
            ring = (distance > inner) & (distance <= offset)
            chosen |= ring & (rng.random(mask.shape) < rate)
            inner = max(inner, offset)
    rows, cols = np.nonzero(chosen)
    return rows, cols, mask[rows, cols].astype(np.int64)


def balance_classes(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Eq. (4): the indices of a class-balanced subset of ``labels``: every sample of the rarer class and
    as many, drawn without replacement, of the other (sorted)."""
    labels = np.asarray(labels)
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    keep = min(len(positives), len(negatives))
    chosen = [rng.choice(group, keep, replace=False) if len(group) > keep else group for group in (positives, negatives)]
    return np.sort(np.concatenate(chosen))


# ---------------------------------------------------------------------------------------------
# Eq. (5): dense prediction and the clean-up


def disk(radius: int) -> np.ndarray:
    """A disk structuring element of ``radius`` pixels."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return yy**2 + xx**2 <= radius**2


def clean_up(mask: np.ndarray, radius: int, fill_holes: bool = True) -> np.ndarray:
    """Eq. (5): the paper's post-processing of a predicted mask (H, W): a closing by a disk of
    ``radius`` pixels (skipped at 0), the filling of holes (``fill_holes``; not for a ring such as the
    myocardium) and the largest 8-connected component."""
    mask = np.asarray(mask, dtype=bool)
    if radius > 0:
        padded = np.pad(mask, radius)
        mask = ndimage.binary_closing(padded, structure=disk(radius))[radius:-radius, radius:-radius]
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count > 1:
        sizes = np.bincount(labelled.ravel())[1:]
        mask = labelled == 1 + int(sizes.argmax())
    return mask
