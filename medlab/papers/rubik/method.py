"""Rubik's cube recovery (Zhuang, Li, Hu, Ma, Yang, Zheng, MICCAI 2019, arXiv:1910.02241).

Self-supervised pretraining for 3D medical images: a volume is cut into a 2x2x2 arrangement of
cubes, the cubes are rearranged and rotated, and a network with eight weight-sharing 3D branches
(the Siamese-Octad) learns which permutation and which rotations were applied. Its branch then
initialises the downstream networks. Re-written from the paper's description; every choice its text
leaves open is in the chapter's deviation ledger. In the order of chapter 3:

* Eq. (1) the permutation set ``P = {p_1..p_K}``: chosen greedily from the 8! orderings so that the
  smallest Hamming distance between two of them is as large as possible.
* The puzzle: the cubes cut with random gaps, rearranged by a ``p_k`` and turned by 180 degrees about
  the horizontal and/or vertical axis (made on the device for the whole batch).
* Eq. (2) cube rearrangement loss ``L_P = -sum_k y_k log softmax(z)_k`` (cross-entropy over ``K``).
* Eq. (3) cube rotation loss ``L_R = -(1/2M) sum_{i,a} [r_ia log s_ia + (1 - r_ia) log(1 - s_ia)]``,
  ``M = 8`` cubes, ``a`` in {horizontal, vertical}, ``s = sigmoid(logit)`` (multi-label).
* The Siamese-Octad: one 3D encoder applied to every cube, two heads on the concatenated features.
* Eq. (4) ``L = alpha L_P + beta L_R``.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medlab.nets.volumes import VolumeEncoder

CUBES = 8  # the 2x2x2 arrangement
ROTATION_AXES = ("horizontal", "vertical")
# A 180-degree rotation about one axis reverses the other two. Axes of a volume (D, H, W) = dims 2, 3, 4
# of a batch; "horizontal" is the first (left-right for nibabel-ordered brains), "vertical" the second.
_FLIPS = {"horizontal": (-2, -1), "vertical": (-3, -1)}


# ---------------------------------------------------------------------------------------------
# Eq. (1): the permutation set


@lru_cache(maxsize=16)
def _permutation_set(k: int) -> np.ndarray:
    candidates = np.array(list(itertools.permutations(range(CUBES))), dtype=np.int8)
    chosen = [0]  # the identity: the unshuffled volume is one of the classes
    nearest = (candidates != candidates[0]).sum(1)  # Hamming distance to the closest chosen permutation
    for _ in range(k - 1):
        best = int(np.argmax(nearest))  # the first of the farthest candidates: deterministic
        chosen.append(best)
        nearest = np.minimum(nearest, (candidates != candidates[best]).sum(1))
    return candidates[chosen].astype(np.int64)


def permutation_set(k: int) -> torch.Tensor:
    """Eq. (1): ``k`` orderings of the 8 cubes, (k, 8). Starting from the identity, each next one is
    the ordering farthest (in Hamming distance, the number of cubes out of place) from all chosen so
    far, which makes the classes as distinct as a greedy search can (Noroozi and Favaro's selection)."""
    if not 1 <= k <= math.factorial(CUBES):
        raise ValueError(f"k must be in [1, {math.factorial(CUBES)}], got {k}")
    return torch.from_numpy(_permutation_set(k).copy())


def min_hamming_distance(permutations: torch.Tensor) -> int:
    """Eq. (1)'s criterion: the smallest number of positions in which two rows of ``permutations`` differ."""
    p = torch.as_tensor(permutations)
    distances = (p[:, None, :] != p[None, :, :]).sum(-1)
    distances.fill_diagonal_(CUBES + 1)
    return int(distances.min())


# ---------------------------------------------------------------------------------------------
# The puzzle: cutting, rearranging and rotating the cubes (and undoing it)


def random_layout(
    batch: int, volume_size: int, cube_size: int, device: torch.device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Where the 2x2x2 cubes start along each axis, (batch, 3 axes, 2): a random gap between the two
    cubes of every axis (0 to ``volume_size - 2 cube_size`` voxels, so edges cannot simply be matched)
    and a random offset of the pair within the volume."""
    max_gap = volume_size - 2 * cube_size
    if max_gap < 0:
        raise ValueError(f"two cubes of {cube_size} do not fit in a volume of {volume_size}")
    gap = torch.randint(0, max_gap + 1, (batch, 3), device=device, generator=generator)
    room = max_gap - gap  # free voxels left for the offset
    offset = (torch.rand((batch, 3), device=device, generator=generator) * (room + 1)).long().clamp(max=room)
    return torch.stack([offset, offset + cube_size + gap], dim=-1)


def cube_positions(starts: torch.Tensor, cube_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Voxel indices of every cube along D, H and W: three tensors broadcastable to (B, 8, c, c, c).
    Cube ``i`` sits at ``(i // 4, (i // 2) % 2, i % 2)`` in the 2x2x2 arrangement."""
    steps = torch.arange(cube_size, device=starts.device)
    cube = torch.arange(CUBES, device=starts.device)
    corner = torch.stack([cube // 4, (cube // 2) % 2, cube % 2], dim=-1)  # (8, 3)
    first = torch.gather(starts, 2, corner.T[None].expand(starts.shape[0], 3, CUBES))  # (B, 3, 8)
    d = (first[:, 0, :, None] + steps)[:, :, :, None, None]
    h = (first[:, 1, :, None] + steps)[:, :, None, :, None]
    w = (first[:, 2, :, None] + steps)[:, :, None, None, :]
    return d, h, w


def cut_cubes(volumes: torch.Tensor, starts: torch.Tensor, cube_size: int) -> torch.Tensor:
    """The 8 cubes of each volume (B, C, S, S, S) at the layout ``starts``: (B, 8, C, c, c, c)."""
    d, h, w = cube_positions(starts, cube_size)
    batch = torch.arange(volumes.shape[0], device=volumes.device)[:, None, None, None, None]
    cubes = volumes.permute(0, 2, 3, 4, 1)[batch, d, h, w]  # (B, 8, c, c, c, C)
    return cubes.permute(0, 1, 5, 2, 3, 4)


def assemble(cubes: torch.Tensor, starts: torch.Tensor, volume_size: int, fill: float = -1.0) -> torch.Tensor:
    """The inverse of :func:`cut_cubes`: the cubes put back at ``starts`` in volumes filled with ``fill``."""
    batch, _, channels, size = cubes.shape[:4]
    out = cubes.new_full((batch, volume_size, volume_size, volume_size, channels), fill)
    d, h, w = cube_positions(starts, size)
    index = torch.arange(batch, device=cubes.device)[:, None, None, None, None]
    out[index, d, h, w] = cubes.permute(0, 1, 3, 4, 5, 2)
    return out.permute(0, 4, 1, 2, 3)


def slot_after_turn(slot: int, axis: str) -> int:
    """The slot a 180-degree turn of the whole 2x2x2 arrangement about ``axis`` (one of
    :data:`ROTATION_AXES`, or ``"both"``: the two turns together) moves cube ``slot`` to: the turn
    reverses two axes, so the cube's corner moves to the far side along both of them."""
    if not 0 <= slot < CUBES:
        raise ValueError(f"slot must be in [0, {CUBES}), got {slot}")
    if axis not in (*ROTATION_AXES, "both"):
        raise ValueError(f"axis must be one of {ROTATION_AXES + ('both',)}, got {axis!r}")
    corner = [slot // 4, (slot // 2) % 2, slot % 2]
    reversed_dims: set[int] = set()
    for turn in ROTATION_AXES if axis == "both" else (axis,):
        reversed_dims ^= set(_FLIPS[turn])  # an axis reversed twice is back as it was
    for dim in reversed_dims:
        corner[dim + 3] = 1 - corner[dim + 3]
    return corner[0] * 4 + corner[1] * 2 + corner[2]


def _rotate(cubes: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    for a, axis in enumerate(ROTATION_AXES):
        flip = rotations[..., a].reshape(*rotations.shape[:2], 1, 1, 1, 1)
        cubes = torch.where(flip, cubes.flip(_FLIPS[axis]), cubes)
    return cubes


def scramble(cubes: torch.Tensor, order: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rearrange and rotate cubes (B, 8, C, c, c, c): slot ``j`` receives cube ``order[:, j]``, which is
    then turned 180 degrees about the horizontal axis where ``rotations[:, j, 0]`` and about the vertical
    axis where ``rotations[:, j, 1]`` (both: 180 degrees about the third axis; the two commute)."""
    index = order.reshape(*order.shape, 1, 1, 1, 1).expand_as(cubes)
    return _rotate(torch.gather(cubes, 1, index), rotations.bool())


def unscramble(cubes: torch.Tensor, order: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`scramble` given its labels: turn every slot back, then return each cube
    to its place (a 180-degree turn is its own inverse)."""
    turned = _rotate(cubes, rotations.bool())
    index = torch.argsort(order, dim=1).reshape(*order.shape, 1, 1, 1, 1).expand_as(cubes)
    return torch.gather(turned, 1, index)


def draw_proxy_labels(
    batch: int,
    permutations: torch.Tensor,
    device: torch.device,
    generator: torch.Generator | None = None,
    *,
    permute: bool = True,
    rotate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A permutation class per volume (0 = the identity when not ``permute``) and rotation bits
    (B, 8, 2), each drawn with probability 1/2 (all False when not ``rotate``)."""
    if permute:
        classes = torch.randint(0, len(permutations), (batch,), device=device, generator=generator)
    else:
        classes = torch.zeros(batch, dtype=torch.long, device=device)
    if rotate:
        rotations = torch.rand((batch, CUBES, len(ROTATION_AXES)), device=device, generator=generator) < 0.5
    else:
        rotations = torch.zeros((batch, CUBES, len(ROTATION_AXES)), dtype=torch.bool, device=device)
    return classes, rotations


def normalise_cubes(cubes: torch.Tensor) -> torch.Tensor:
    """Each cube's every channel (B, 8, C, c, c, c) mapped to [-1, 1] by its own minimum and maximum:
    the per-cube intensity normalisation of the paper's preprocessing. A constant cube maps to -1."""
    flat = cubes.flatten(3)
    low, high = flat.amin(3)[..., None, None, None], flat.amax(3)[..., None, None, None]
    return 2 * (cubes - low) / (high - low).clamp_min(1e-6) - 1


def make_proxy_batch(
    volumes: torch.Tensor,
    permutations: torch.Tensor,
    cube_size: int,
    generator: torch.Generator | None = None,
    *,
    permute: bool = True,
    rotate: bool = True,
    normalise: bool = False,
) -> dict[str, torch.Tensor]:
    """Cut, rearrange and rotate a batch of volumes on their device: the network's input and labels.
    ``permute=False`` (the rotation-only ablation) or ``rotate=False`` (rearrangement only) leave one
    transformation out; ``normalise=True`` maps each cube to [-1, 1] (:func:`normalise_cubes`)."""
    batch = volumes.shape[0]
    starts = random_layout(batch, volumes.shape[-1], cube_size, volumes.device, generator)
    classes, rotations = draw_proxy_labels(
        batch, permutations, volumes.device, generator, permute=permute, rotate=rotate
    )
    cubes = scramble(cut_cubes(volumes, starts, cube_size), permutations[classes], rotations)
    if normalise:
        cubes = normalise_cubes(cubes)
    return {"cubes": cubes, "classes": classes, "rotations": rotations, "starts": starts}


# ---------------------------------------------------------------------------------------------
# Eqs. (2)-(3): the losses; the Siamese-Octad; Eq. (4)


def rearrangement_loss(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Eq. (2): cross-entropy of the permutation class, averaged over the batch."""
    return F.cross_entropy(logits.float(), classes)


def rotation_loss(logits: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Eq. (3): binary cross-entropy of every cube's two rotation bits (B, 8, 2), averaged."""
    return F.binary_cross_entropy_with_logits(logits.float(), rotations.float())


class SiameseOctad(nn.Module):
    """Eight weight-sharing branches (one :class:`VolumeEncoder` applied to every cube), a shared
    fully connected layer per branch, the eight features concatenated, and two heads: the permutation
    class (``K`` logits) and each cube's horizontal and vertical rotation (8 x 2 logits)."""

    def __init__(self, encoder: VolumeEncoder, permutations: torch.Tensor, hidden: int = 256):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("permutations", torch.as_tensor(permutations, dtype=torch.long).clone())
        width = encoder.out_features
        self.branch = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True))
        joint = CUBES * width
        self.permutation_head = nn.Sequential(
            nn.Linear(joint, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, len(self.permutations))
        )
        self.rotation_head = nn.Sequential(
            nn.Linear(joint, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, CUBES * len(ROTATION_AXES))
        )

    def forward(self, cubes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = cubes.shape[0]
        features = self.branch(self.encoder.features(cubes.flatten(0, 1)))
        joint = features.reshape(batch, -1)
        rotation = self.rotation_head(joint).reshape(batch, CUBES, len(ROTATION_AXES))
        return self.permutation_head(joint), rotation


def proxy_losses(
    model: SiameseOctad,
    cubes: torch.Tensor,
    classes: torch.Tensor,
    rotations: torch.Tensor,
    *,
    permutation_weight: float,
    rotation_weight: float,
    permute: bool = True,
    rotate: bool = True,
) -> dict[str, torch.Tensor]:
    """Eq. (4), ``L = alpha L_P + beta L_R`` (``alpha = permutation_weight``, ``beta = rotation_weight``),
    on already-scrambled cubes, with the accuracy of each prediction; an ablation leaves out the term
    of the transformation it does not apply (``permute=False`` or ``rotate=False``)."""
    permutation_logits, rotation_logits = model(cubes)
    out: dict[str, torch.Tensor] = {}
    loss = torch.zeros((), device=cubes.device)
    if permute:
        out["permutation_loss"] = rearrangement_loss(permutation_logits, classes)
        out["permutation_accuracy"] = (permutation_logits.argmax(1) == classes).float().mean()
        loss = loss + permutation_weight * out["permutation_loss"]
    if rotate:
        out["rotation_loss"] = rotation_loss(rotation_logits, rotations)
        out["rotation_accuracy"] = ((rotation_logits > 0) == rotations).float().mean()
        loss = loss + rotation_weight * out["rotation_loss"]
    out["loss"] = loss
    return out
