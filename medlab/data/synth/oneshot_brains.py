"""Synthetic one-shot brain segmentation: one labelled atlas (the MNI152 template) and unlabelled targets
that are smooth random deformations of it, each with its true labels (chapter 6, LT-Net).

* **Atlas** (:func:`atlas`): the 2 mm MNI152 2009 T1 template and its grey and white matter probability
  maps, as nilearn ships them (``load_mni152_template``, ``load_mni152_gm_template``,
  ``load_mni152_wm_template``; read offline from the nilearn wheel by
  :func:`medlab.data.synth.brains3d._load_templates`). The brain is the set of voxels with T1 above 0.02
  or grey + white matter above 0.5, holes filled. Six structures (:data:`STRUCTURES`) are drawn from the
  tissue maps and MNI coordinates: *cortex* (grey matter of the cerebrum outside the deep-grey ellipsoid),
  *white matter* (of the cerebrum), *deep grey matter* (grey matter inside an ellipsoid around the basal
  ganglia and thalami), *ventricles* (CSF components inside a central ellipsoid), *cerebellum* (brain
  tissue posterior to MNI y = -40 and below z = -10) and *brainstem* (brain tissue within 14 mm of the
  midline, -40 < y < -12, below z = -8). They are coordinate boxes on tissue classes, not an anatomical
  parcellation; what matters here is that they are fixed, known and of different sizes (the ventricles
  and the brainstem are small, the cortex is thin). The brain's bounding box, 4 mm of margin, is resampled
  (image trilinearly, labels as one-hot maps then argmax) to ``shape``: 40 x 48 x 40 voxels of about
  4 mm by default.
* **Targets**: the atlas image and its one-hot label maps (partial volume from the 2 mm resampling),
  warped trilinearly by a random transform, labels by argmax: a random affine (rotation up to ``rotation`` degrees about each axis,
  scale within ``scale``), a smooth random displacement (Gaussian bumps ``deformation`` output voxels
  strong, about 5 output voxels apart), and atrophy-like changes: the ventricles grow by a factor up to
  ``atrophy`` (a radial displacement around their centre) and the whole brain shrinks by up to half of it.
  Intensity: a random gamma (``gamma``), a multiplicative low-frequency bias field (``bias``), Gaussian
  noise (``noise``), scaled to [0, 1] by the 99.5th percentile. The labels are warped with the image, so
  every target's true labels are known.
* **Splits**: each split is drawn from its own seed (:func:`medlab.data.splits.split_seed`):
  ``unlabeled`` (the unlabelled training targets; their labels are used only by the fully supervised
  reference), ``val`` (development targets), ``test`` and ``train`` (labelled subjects, for a real
  dataset's fully supervised reference; here another set of targets). The atlas is the same for every
  split and seed (``dataset.atlas``).

Axes are those of the template's voxel array: axis 0 left to right (MNI x), 1 posterior to anterior (y),
2 inferior to superior (z).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch.utils.data import Dataset

from medlab.data.splits import require_n, split_seed

STRUCTURES = ("cortex", "white matter", "deep grey matter", "ventricles", "cerebellum", "brainstem")
DEFAULT_SHAPE = (40, 48, 40)
_MARGIN_MM = 4.0
_DEEP_CENTRE, _DEEP_RADII = (0.0, -6.0, 4.0), (30.0, 30.0, 18.0)  # basal ganglia and thalami (MNI mm)
_VENTRICLE_CENTRE, _VENTRICLE_RADII = (0.0, -12.0, 10.0), (26.0, 42.0, 24.0)


def _ellipsoid(x, y, z, centre, radii) -> np.ndarray:
    return (
        ((x[:, None, None] - centre[0]) / radii[0]) ** 2
        + ((y[None, :, None] - centre[1]) / radii[1]) ** 2
        + ((z[None, None, :] - centre[2]) / radii[2]) ** 2
    ) <= 1


@lru_cache(maxsize=1)
def _template_labels() -> tuple[np.ndarray, np.ndarray]:
    """The 2 mm T1 template cropped to the brain's box (with margin) and its label map (0 background)."""
    from medlab.data.synth.brains3d import _load_templates

    t1, gm, wm, affine = _load_templates()
    gm, wm = np.clip(gm, 0, 1), np.clip(wm, 0, 1)
    brain = ndimage.binary_fill_holes((t1 > 0.02) | (gm + wm > 0.5))
    parts, count = ndimage.label(brain)
    if count > 1:
        brain = parts == 1 + int(np.argmax(ndimage.sum(brain, parts, range(1, count + 1))))
    csf = np.clip(brain - gm - wm, 0, 1)
    x, y, z = (affine[a, a] * np.arange(brain.shape[a]) + affine[a, 3] for a in range(3))
    tissue = np.argmax(np.stack([np.full_like(gm, 0.35), gm, wm, csf]), 0) * brain  # 1 gm, 2 wm, 3 csf
    labels = np.zeros(brain.shape, np.int64)
    labels[tissue == 1] = 1
    labels[tissue == 2] = 2
    labels[(tissue == 1) & _ellipsoid(x, y, z, _DEEP_CENTRE, _DEEP_RADII)] = 3
    seeds = (tissue == 3) & _ellipsoid(x, y, z, _VENTRICLE_CENTRE, _VENTRICLE_RADII) & (np.abs(x) > 1.0)[:, None, None]
    comps, count = ndimage.label(seeds)
    sizes = ndimage.sum(seeds, comps, range(1, count + 1))
    labels[np.isin(comps, 1 + np.flatnonzero(sizes >= 20))] = 4
    tissue_any = (tissue == 1) | (tissue == 2)
    cerebellum = (y < -40)[None, :, None] & (z < -10)[None, None, :] & tissue_any
    labels[cerebellum] = 5
    stem = (np.abs(x) < 14)[:, None, None] & ((y > -40) & (y < -12))[None, :, None] & (z < -8)[None, None, :] & tissue_any
    labels[stem] = 6
    margin = int(round(_MARGIN_MM / abs(affine[0, 0])))
    box = tuple(
        slice(max(0, int(np.flatnonzero(brain.any(tuple(b for b in range(3) if b != a)))[0]) - margin),
              int(np.flatnonzero(brain.any(tuple(b for b in range(3) if b != a)))[-1]) + margin + 1)
        for a in range(3)
    )
    image = np.where(brain, t1, 0.0)[box].astype(np.float32)
    return np.clip(image / max(float(np.percentile(image, 99.5)), 1e-6), 0, 1), labels[box]


def _resample(image: np.ndarray, labels: np.ndarray, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Image (1, *shape) trilinear and the label one-hot maps (K, *shape) trilinear (not yet argmaxed)."""
    k = len(STRUCTURES) + 1
    img = F.interpolate(torch.from_numpy(image)[None, None], size=tuple(shape), mode="trilinear", align_corners=True)[0]
    onehot = F.one_hot(torch.from_numpy(labels), k).permute(3, 0, 1, 2).float()[None]
    return img, F.interpolate(onehot, size=tuple(shape), mode="trilinear", align_corners=True)[0]


@lru_cache(maxsize=4)
def _atlas_maps(shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    image, labels = _template_labels()
    return _resample(image, labels, shape)


def atlas(shape: Sequence[int] = DEFAULT_SHAPE) -> tuple[torch.Tensor, torch.Tensor]:
    """The atlas: the MNI152 T1 template (1, *shape) float32 in [0, 1] and its labels (*shape) int64."""
    shape = check_shape(shape)
    image, onehot = _atlas_maps(shape)
    return image.clone(), onehot.argmax(0)


def check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sides of at least 8 voxels, got {shape}")
    return shape


@dataclass(frozen=True)
class Variation:
    """How far targets depart from the atlas (output voxels, degrees, fractions)."""

    deformation: float = 1.5  # standard deviation of the smooth displacement, output voxels
    rotation: float = 6.0  # degrees about each axis, uniform in [-r, r]
    scale: float = 0.06  # per-axis scale in [1 - s, 1 + s]
    atrophy: float = 0.5  # ventricles grow by a factor up to 1 + atrophy (volume)
    gamma: float = 0.3  # log-uniform gamma in [exp(-g), exp(g)]
    bias: float = 0.15  # std of the log bias field
    noise: float = 0.03  # std of the Gaussian noise


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], spacing: float, channels: int) -> torch.Tensor:
    """``channels`` smooth unit-variance random fields over ``shape``: iid values on a coarse grid of
    ``spacing`` voxels, upsampled trilinearly and smoothed by two 3x3x3 box filters."""
    coarse = [max(2, int(round(s / spacing)) + 1) for s in shape]
    c = torch.from_numpy(rng.standard_normal((1, channels, *coarse)).astype(np.float32))
    f = F.interpolate(c, size=tuple(shape), mode="trilinear", align_corners=True)
    for _ in range(2):
        f = F.avg_pool3d(F.pad(f, (1,) * 6, mode="replicate"), 3, stride=1)
    f = f[0]
    return f / f.flatten(1).std(1).clamp_min(1e-6)[:, None, None, None]


def _target(rng: np.random.Generator, shape: tuple[int, int, int], v: Variation) -> tuple[torch.Tensor, torch.Tensor]:
    """One target image (1, *shape) and its labels (*shape): the atlas warped and re-rendered."""
    fine = shape
    image, onehot = _atlas_maps(shape)
    # the sampling grid in normalised coordinates [-1, 1] (grid_sample's x is the last axis)
    axes = [torch.linspace(-1, 1, s) for s in fine]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)  # (D, H, W, 3) in (d, h, w) order
    angles = np.deg2rad(rng.uniform(-v.rotation, v.rotation, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rot = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    grow = rng.uniform(0, v.atrophy)
    shrink = (1 + grow / 2) ** (1 / 3)  # the brain shrinks: sample from farther out
    matrix = rot @ np.diag(rng.uniform(1 - v.scale, 1 + v.scale, 3) * shrink)
    half = torch.tensor([(s - 1) / 2 for s in fine])  # rotate and scale in voxel units, about the centre
    points = ((grid * half) @ torch.from_numpy(matrix.T.astype(np.float32))) / half
    # ventricles grow: sample from closer to their centre (a Gaussian-windowed radial pull)
    vent = onehot[4] > 0.5
    centre = torch.stack([g[vent].mean() for g in grid.unbind(-1)]) if vent.any() else torch.zeros(3)
    offset = grid - centre
    window = torch.exp(-(offset**2).sum(-1, keepdim=True) / (2 * 0.22**2))
    points = points - (1 - (1 + grow) ** (-1 / 3)) * offset * window
    field = _smooth_field(rng, shape, 5.0, 3) * v.deformation  # output voxels
    field = field.permute(1, 2, 3, 0) * torch.tensor([2.0 / (s - 1) for s in shape])
    points = points + field
    sampled = F.grid_sample(
        torch.cat([image, onehot])[None], points.flip(-1)[None], mode="bilinear", padding_mode="zeros", align_corners=True
    )[0]
    img, labels = sampled[:1].numpy(), sampled[1:].argmax(0)
    gamma = float(np.exp(rng.uniform(-v.gamma, v.gamma)))
    img = np.clip(img, 0, None) ** gamma
    img = img * np.exp(_smooth_field(rng, shape, 12.0, 1).numpy() * v.bias)
    img = img + rng.normal(0, v.noise, img.shape) * (labels.numpy() > 0)[None]
    img = np.clip(img / max(float(np.percentile(img, 99.5)), 1e-6), 0, 1)
    return torch.from_numpy(img.astype(np.float32)), labels


class OneShotBrains(Dataset):
    """``n`` targets ``(image (1, *shape) float32, labels (*shape) int64)`` drawn from ``seed``, with the
    atlas as ``.atlas`` and the structure names as ``.structures`` (label k is ``structures[k - 1]``)."""

    def __init__(self, n: int, seed: int, shape: Sequence[int] = DEFAULT_SHAPE, variation: Variation = Variation(), split: str = "test"):
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.shape = check_shape(shape)
        self.structures = STRUCTURES
        self.atlas = atlas(self.shape)
        rng = np.random.default_rng(seed)
        items = [_target(rng, self.shape, variation) for _ in range(n)]
        self.images = torch.stack([i for i, _ in items]) if items else torch.zeros((0, 1, *self.shape))
        self.labels = torch.stack([y for _, y in items]) if items else torch.zeros((0, *self.shape), dtype=torch.int64)
        self.info = {
            "kind": "synthetic", "split": split, "n": n, "seed": seed, "shape": list(self.shape),
            "structures": list(STRUCTURES), "atlas": "MNI152 2009 template (nilearn)", **vars(variation),
        }

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]


def oneshot_brains_lookalike(
    split: str, n: int | None = None, seed: int = 0, shape: Sequence[int] = DEFAULT_SHAPE, **variation: float
) -> OneShotBrains:
    """The registry's generator: ``n`` targets of ``split`` drawn from ``seed`` (see the module docstring);
    ``variation`` overrides fields of :class:`Variation`."""
    n = require_n(n, "the synthetic one-shot brains need n (how many targets)")
    unknown = set(variation) - set(Variation.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown variation(s) {sorted(unknown)}; expected some of {', '.join(Variation.__dataclass_fields__)}")
    return OneShotBrains(n, split_seed(seed, split), shape, Variation(**variation), split)
