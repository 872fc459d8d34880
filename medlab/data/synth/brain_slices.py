"""Synthetic 2D axial brain MR slices with a glioma, in four co-registered contrasts (T1, T1ce, T2, FLAIR).

Chapter 7 reproduces Xin et al., "Multi-modality generative adversarial networks with tumor consistency
loss for brain MR image synthesis" (TC-MGAN, ISBI 2020), which trains on axial slices of BraTS 2018. This
module draws look-alikes of those slices from the anatomy and the contrast model of chapter 3's 3D
generator (:mod:`medlab.data.synth.brains3d`), in 2D so that a slice costs milliseconds instead of the
second a 64-cubed volume takes:

* **Anatomy**: an axial slice of the MNI152 grey and white matter maps resampled to ``size`` cubed
  (:func:`medlab.data.synth.brains3d.anatomy`), at a level drawn between 8 mm below and 48 mm above the
  AC-PC plane (the cerebrum with the lateral ventricles), in the display orientation of
  :func:`medlab.data.synth.brains3d.slices` (anterior at the top, the patient's right on the left).
  Cerebrospinal fluid (CSF) is the brain minus grey and white matter.
* **Subject**: a random 2D affine warp (rotation up to 10 degrees, scale within 8 %, shift up to 2
  pixels at size 32) composed with a smooth displacement, as the 3D generator draws them; a tumour pushes
  the tissue around it (mass effect).
* **Tumour** (all but ``healthy_fraction`` of the slices): a section through a glioma centred in the white
  matter, as the 3D generator builds it: an irregular core 8 to 22 mm in radius holding necrosis inside an
  enhancing rim (high grade), or a non-enhancing core (low grade, ``lgg_fraction``), and a larger irregular
  oedema (1.4 to 2.2 times the core's radius, 1.1 to 1.6 for low grade) that spreads along white matter and
  spares CSF.
* **Contrast**: the relative signals of :data:`medlab.data.synth.brains3d._MR_SIGNAL` (jittered by 8 % per
  subject): CSF dark in FLAIR (0.12) and bright in T2 (1.50), oedema bright in T2 (1.15) and FLAIR (1.25),
  the enhancing rim bright in T1ce (1.55) only, necrosis dark in T1; a texture inside the tumour, one
  multiplicative bias field and Gaussian noise per contrast; zero outside the brain (skull-stripped).
* **Scaling**: what TC-MGAN's preprocessing does to a real slice (:func:`~medlab.data.formats.brats_slices.scale_slice`):
  each contrast is divided by its maximum over the slice and mapped to [-1, 1] (background -1).

Items are ``(image, mask)``: a float32 ``(4, S, S)`` tensor in [-1, 1] (channels :data:`MODALITIES`) and an
int64 ``(S, S)`` whole-tumour mask (0/1), the items of :class:`medlab.data.formats.brats_slices.BraTSSlices`.
``regions`` keeps the tumour sub-regions (0 background, 1 necrosis or non-enhancing core, 2 oedema, 3
enhancing rim, as :data:`medlab.data.constants.TUMOUR_CLASSES`) for figures and tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from medlab.data.constants import MODALITIES, TUMOUR_CLASSES
from medlab.data.formats.brats_slices import scale_slice
from medlab.data.splits import require_n, split_seed
from medlab.data.synth.brains3d import _MR_SIGNAL, _basis, _ramp, anatomy

MIN_SIZE = 16
LEVELS_MM = (-8.0, 48.0)  # the axial levels drawn (MNI z, mm)


@lru_cache(maxsize=4)
def _levels(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The grey matter, white matter and brain maps ``(L, size, size)`` of the axial slices between
    :data:`LEVELS_MM`, in display orientation, and the pixel side in mm."""
    anat = anatomy(size)
    z = anat.affine[2, 2] * np.arange(size) + anat.affine[2, 3]
    ks = np.flatnonzero((z >= LEVELS_MM[0]) & (z <= LEVELS_MM[1]))

    def display(a):  # (x, y, k) -> rows anterior to posterior, columns right to left
        return np.ascontiguousarray(np.swapaxes(a[::-1, :, :], 0, 1)[::-1, :, :].transpose(2, 0, 1))

    gm, wm, brain = (display(m[:, :, ks]) for m in (anat.gm, anat.wm, anat.brain))
    return gm, wm, brain, float(anat.voxel_mm)


def _smooth2d(rng: np.random.Generator, size: int, n: int, count: int = 1) -> np.ndarray:
    """``count`` smooth unit-variance fields ``(count, size, size)`` with ``n`` Gaussian bumps per axis."""
    b = _basis(size, n)
    return b @ rng.standard_normal((count, n, n), dtype=np.float32) @ b.T


def _rotation2d(angle: float) -> np.ndarray:
    return np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=np.float32)


def render_slice(
    size: int = 64, rng: np.random.Generator | int | None = None, grade: str | None = "HGG", noise: float = 0.03,
    bias: float = 0.15,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One synthetic axial slice: ``(image, regions, case)``.

    ``image`` is float32 ``(4, size, size)`` of raw non-negative signal (channels :data:`MODALITIES`, 0
    outside the brain; :func:`scale_slice` scales it as TC-MGAN does), ``regions`` uint8 ``(size, size)``
    of tumour sub-region indices (:data:`TUMOUR_CLASSES`), ``case`` a dict (grade, level, tumour centre
    and radii in mm). ``grade`` is "HGG", "LGG" or None (no tumour); ``noise`` the noise standard deviation
    relative to white matter on T1, ``bias`` the standard deviation of each contrast's log bias field.
    """
    if grade not in ("HGG", "LGG", None):
        raise ValueError(f"grade must be 'HGG', 'LGG' or None, got grade={grade!r}")
    rng = np.random.default_rng(rng)
    gm0, wm0, brain0, mm = _levels(size)
    level = int(rng.integers(len(gm0)))
    c = (size - 1) / 2
    grid = np.indices((size, size), dtype=np.float32) - np.float32(c)
    scale = rng.uniform(0.92, 1.08) * rng.uniform(0.97, 1.03, 2)
    M = (_rotation2d(np.deg2rad(rng.uniform(-10, 10))) / scale[None, :]).astype(np.float32)
    base = np.tensordot(M, grid, axes=1) + (c + rng.uniform(-2, 2, 2) * size / 32).astype(np.float32)[:, None, None]
    base += _smooth2d(rng, size, 7, 2) * np.float32(0.75 * size / 32)
    signal = {k: np.asarray(v, dtype=np.float32) * rng.uniform(0.92, 1.08, 4).astype(np.float32) for k, v in _MR_SIGNAL.items()}

    def sample(coords, maps):
        return [ndimage.map_coordinates(m[level], coords, order=1, mode="nearest", output=np.float32) for m in maps]

    wm, brain_p = sample(base, (wm0, brain0))
    case = {"grade": grade, "level": level, "centre": None, "core_radius_mm": 0.0, "oedema_radius_mm": 0.0}
    fields = _smooth2d(rng, size, max(3, int(round(mm * (size - 1) / 12.0)) + 1), 5)
    f_core = f_oedema = f_nec = f_enh = np.zeros((size, size), np.float32)
    coords = base
    if grade is not None:
        hgg = grade == "HGG"
        core_mm = rng.uniform(8, 22)
        oedema_ratio = rng.uniform(1.4, 2.2) if hgg else rng.uniform(1.1, 1.6)
        depth = ndimage.distance_transform_edt(brain_p > 0.5) * mm
        ok = np.argwhere((wm > 0.45) & (depth > 0.6 * core_mm))
        if len(ok) == 0:
            ok = np.argwhere(depth >= depth.max() * 0.5)
        centre = ok[rng.integers(len(ok))].astype(np.float32)
        radii = core_mm / mm * rng.uniform(0.8, 1.2, 2)
        rc = float(radii.mean())
        diff = grid - (centre - np.float32(c))[:, None, None]
        push = np.float32(rng.uniform(0.2, 0.45) if hgg else rng.uniform(0.1, 0.3))
        u = diff * push * np.exp((diff**2).sum(0) * np.float32(-0.5 / (1.5 * rc) ** 2))
        coords = base - np.tensordot(M, u, axes=1)
        rot = _rotation2d(rng.uniform(0, 2 * np.pi))
        e = np.tensordot(rot / radii[:, None].astype(np.float32), diff, axes=1)
        r = np.sqrt((e**2).sum(0))
        gm, wm, brain_p = sample(coords, (gm0, wm0, brain0))
        par = np.clip(gm + wm, 0, 1)
        wm_share = wm / np.maximum(par, 1e-3)
        f_core = _ramp((1.0 - r - 0.2 * fields[0]) * rc) * brain_p
        score = r / oedema_ratio + 0.25 * fields[1] - 0.3 * (wm_share - 0.5)
        f_oedema = _ramp((1.0 - score) * rc * oedema_ratio) * np.clip(2 * par - 0.5, 0, 1) * brain_p
        if hgg:
            f_nec = np.minimum(_ramp((rng.uniform(0.4, 0.7) - r - 0.15 * fields[2]) * rc), f_core)
            f_enh = (f_core - f_nec) * _ramp(2.0 * fields[3] + 2.5)
        case.update(centre=tuple(int(v) for v in centre), core_radius_mm=round(core_mm, 1),
                    oedema_radius_mm=round(core_mm * oedema_ratio, 1))
    else:
        (gm,) = sample(coords, (gm0,))
    brain = brain_p > 0.5
    csf = np.clip(brain_p - gm - wm, 0, 1)
    f_whole = np.maximum(f_core, f_oedema)
    f_net = f_core - f_nec - f_enh

    regions = np.zeros((size, size), np.uint8)
    regions[(f_whole > 0.5) & brain] = 2
    regions[(f_core > 0.5) & brain] = 1
    regions[(f_core > 0.5) & (f_enh > 0.5 * f_core) & brain] = 3
    texture = 1.0 + 0.08 * fields[4]
    bias_fields = _smooth2d(rng, size, 3, 4)
    noise_fields = rng.standard_normal((4, size, size), dtype=np.float32)
    image = np.empty((4, size, size), np.float32)
    for ch in range(4):
        s = {k: v[ch] for k, v in signal.items()}
        tissue = gm * s["gm"] + wm * s["wm"] + csf * s["csf"]
        tumour = (f_whole - f_core) * s["oedema"] + f_net * s["core"] + f_nec * s["necrosis"] + f_enh * s["enhancing"]
        x = (tissue * (1 - f_whole) + tumour * texture) * np.exp(np.float32(bias) * bias_fields[ch])
        image[ch] = np.clip(x + np.float32(noise) * noise_fields[ch], 0, None) * brain
    return image, regions, case


@dataclass(frozen=True)
class SyntheticBrainSliceSpec:
    """How to generate one split of synthetic slices: ``n`` slices at ``size``, ``healthy_fraction`` of
    them without a tumour, ``lgg_fraction`` of the tumours low grade; ``noise`` and ``bias`` as
    :func:`render_slice` takes them."""

    n: int
    size: int = 64
    seed: int = 0
    healthy_fraction: float = 0.15
    lgg_fraction: float = 0.25
    noise: float = 0.03
    bias: float = 0.15

    def __post_init__(self):
        for name in ("n", "size", "seed"):
            value = getattr(self, name)
            low = {"n": 1, "size": MIN_SIZE, "seed": 0}[name]
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an integer of at least {low}, got {name}={value!r}")
        for name, top in (("healthy_fraction", 1.0), ("lgg_fraction", 1.0), ("noise", math.inf), ("bias", math.inf)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0 <= value <= top or value == math.inf:
                raise ValueError(f"{name} must be a finite number in [0, {top}], got {name}={value!r}")


class SyntheticBrainSlices(Dataset):
    """A split of synthetic slices (see the module's docstring): ``(image, mask)`` items; ``images`` holds
    them scaled, float16 ``(N, 4, S, S)``, ``masks`` the whole tumour (bool ``(N, S, S)``), ``regions`` the
    sub-regions (uint8), ``cases`` a dict per slice. Generated at construction from ``spec.seed`` (slice
    ``i`` from its own seed), about 3 ms a slice at size 64."""

    classes = ("background", "whole tumour")
    modalities = MODALITIES

    def __init__(self, spec: SyntheticBrainSliceSpec):
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        draw = rng.uniform(size=(spec.n, 2))
        seeds = rng.integers(0, 2**63, size=spec.n)
        size = spec.size
        self.images = np.empty((spec.n, 4, size, size), np.float16)
        self.regions = np.empty((spec.n, size, size), np.uint8)
        self.cases = []
        for i, ((healthy, low), seed) in enumerate(zip(draw, seeds)):
            grade = None if healthy < spec.healthy_fraction else "LGG" if low < spec.lgg_fraction else "HGG"
            image, regions, case = render_slice(size, np.random.default_rng(seed), grade, spec.noise, spec.bias)
            self.images[i] = scale_slice(image)
            self.regions[i] = regions
            self.cases.append(case)
        self.masks = self.regions > 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return torch.from_numpy(self.images[index].astype(np.float32)), torch.from_numpy(self.masks[index].astype(np.int64))

    @property
    def info(self) -> dict:
        grades = [c["grade"] for c in self.cases]
        return {
            "kind": "synthetic", "name": "synthetic-brain-slices", "generator": "medlab.data.synth.brain_slices",
            "n": len(self), "size": self.spec.size, "seed": self.spec.seed,
            "healthy_fraction": self.spec.healthy_fraction, "lgg_fraction": self.spec.lgg_fraction,
            "noise": self.spec.noise, "bias": self.spec.bias,
            "grade_counts": {str(g): grades.count(g) for g in ("HGG", "LGG", None)},
            "tumour_slices": int(self.masks.any((1, 2)).sum()),
            "region_pixels": {name: int((self.regions == k).sum()) for k, name in enumerate(TUMOUR_CLASSES)},
        }


def brats_slices_lookalike(
    split: str, n: int | None = None, size: int = 64, seed: int = 2020, healthy_fraction: float = 0.15, noise: float = 0.03,
) -> SyntheticBrainSlices:
    """Synthetic slices standing in for the ``split`` of BraTS slices: ``n`` slices drawn with
    :func:`medlab.data.splits.split_seed` of ``seed`` (what ``load("brats_slices", split, n=n)`` returns)."""
    require_n(n, "the synthetic brain slices need n, the number of slices of the split")
    spec = SyntheticBrainSliceSpec(n=n, size=size, seed=split_seed(seed, split), healthy_fraction=healthy_fraction, noise=noise)
    return SyntheticBrainSlices(spec)
