"""Synthetic 3D brain volumes on the MNI152 template: head CT with haemorrhage, multi-contrast MR with tumour.

Chapter 3 reproduces Zhuang et al., "Self-supervised feature learning for 3D medical images by playing a
Rubik's cube" (MICCAI 2019), whose downstream tasks are brain haemorrhage classification on head CT (a
private set of 1,486 scans, four classes) and brain tumour segmentation on BraTS 2018 (four MR contrasts).
This module generates look-alikes of both from the real anatomy nilearn ships in its wheel, so nothing is
downloaded:

* **Anatomy** (:func:`anatomy`): the 2 mm MNI152 2009 templates (``load_mni152_template`` and its grey and
  white matter probability maps). The T1 template is skull-stripped: the brain is the set of voxels with
  T1 above 0.02 (or grey + white matter above 0.5), holes filled. Cerebrospinal fluid (CSF) is the brain
  minus grey and white matter; the ventricles are the CSF components inside a central ellipsoid (lateral
  and third ventricles); a skull is a shell 2 to 9 mm outside the brain surface (a signed distance map,
  ``Anatomy.distance``), with scalp beyond it. The head's bounding box (cut through the medulla, 60 mm
  below the AC-PC plane) is padded to a cube (230 mm a side) and resampled to ``size`` cubed: voxels of
  9.9 mm at size 24, 7.4 mm at 32, 4.9 mm at 48, 3.6 mm at 64.
* **Subjects**: each volume warps the anatomy by a random affine (rotation up to 10 degrees about each
  axis, scale within 8 %, shift up to 2 voxels at size 32) composed with a smooth random displacement
  (about 1.5 voxels at size 32, the same in millimetres at every size), with tissue contrast, noise and,
  for MR, a multiplicative low-frequency bias field drawn per subject. A lesion pushes the tissue around it
  (mass effect: a smooth radial displacement).
* **Axes**: those of the template's voxel array, as a NIfTI reader returns them (like
  :func:`medlab.data.formats.brats.read_case`, nothing is transposed): axis 0 runs from the patient's left
  to right (MNI x), axis 1 from posterior to anterior (y), axis 2 from inferior to superior (z).
  :func:`slices` turns a volume into display-ready axial, coronal and sagittal slices.

Head CT (:class:`SyntheticHeadCTs`) is simulated in Hounsfield units (HU), each voxel mixing the tissues
it contains (partial volume), then shown through a brain window (centre 40, width 80: 0 HU maps to -1,
80 HU to +1, bone saturates at +1, air is -1):

=====================  ================  ==========================================================
tissue                 HU (per subject)  note
=====================  ================  ==========================================================
air                    -1000             outside the head: -1 after windowing
CSF                    2 to 10           sulci, ventricles, the thin subarachnoid space under the skull
white matter           23 to 30
grey matter            34 to 42          cortex, basal ganglia, thalamus
fresh blood            55 to 85          acute haemorrhage (clot retraction raises it)
oedema                 parenchyma - 6-12 hypodense rim around an intraparenchymal haematoma
scalp                  10 to 40
bone (skull)           700 to 1600       saturates the window; its partial volume brightens the cortex
calcification          +80 to +300 peak  pineal gland, choroid plexus, falx, basal ganglia (distractors)
=====================  ================  ==========================================================

The four classes (:data:`HEAD_CT_CLASSES`): *no haemorrhage*; *intraparenchymal*, a compact irregular clot
8 to 24 mm in radius (about 1 to 80 mL) in the grey or white matter of one hemisphere, with a thin
hypodense oedema rim and mass effect; *subdural*, a crescent 7 to 20 mm thick at its centre, thinning over
25 to 40 mm (about 25 to 230 mL), between the inner table of the skull and the brain over the convexity of
one hemisphere, which it compresses (the falx stops it at the midline); *intraventricular*, blood filling
35 to 100 % of the ventricles (5 to 25 mL), layering posteriorly (the dependent part in a supine patient),
in both lateral ventricles or one, often with hydrocephalus (enlarged ventricles). Every class
carries the distractors at random, so that "a bright voxel inside the head" does not solve the task:
calcifications (as bright as blood or brighter, near the midline and in the ventricles), a slight
beam-hardening brightening under the skull, the skull's partial volume over the cortex, age-related
ventricular enlargement, noise (3 HU by default). Small lesions at size 32 occupy a few voxels. Checks at
size 32 with the default class weights (majority class 40 %), 200 test volumes: counts of bright voxels in
the interior and the periphery of the head, fed to a logistic regression trained on 100 volumes, classify
83 % right; a small 3D CNN (three conv-conv-pool stages of 8, 16, 32 channels) trained from scratch for 60
epochs reaches 53 % from 100 training volumes and 79 % from 200, intraparenchymal clots being the hardest
class: learnable, not trivial.

Brain MR (:class:`SyntheticBrainTumours`) follows BraTS: four co-registered, skull-stripped contrasts
(:data:`MODALITIES`) and a mask of tumour sub-regions (:data:`TUMOUR_CLASSES`, training indices 0..3 for
the BraTS labels 0, 1, 2, 4). One glioma per subject sits in the white matter of one cerebral hemisphere:
an irregular core (a deformed ellipsoid whose radius is perturbed by smooth noise) holding necrosis, an
enhancing rim around the necrosis (high-grade, "HGG"), and a larger irregular oedema that spreads
preferentially along white matter and spares CSF. A quarter of the subjects (``lgg_fraction``) are
low-grade ("LGG"): a non-enhancing core without necrosis and less oedema. The nesting BraTS evaluates holds
by construction: enhancing tumour and necrosis lie in the tumour core, the core in the whole tumour, the
whole tumour in the brain. Relative signal per tissue (white matter on T1 = 1, jittered per subject):

================  =====  =====  =====  =====
tissue            t1     t1ce   t2     flair
================  =====  =====  =====  =====
white matter      1.00   1.00   0.45   0.55
grey matter       0.68   0.70   0.70   0.75
CSF               0.22   0.22   1.50   0.12   (FLAIR suppresses free water)
oedema            0.62   0.62   1.15   1.25
non-enh. core     0.50   0.55   0.95   1.05
necrosis          0.28   0.30   1.35   0.70
enhancing rim     0.62   1.55   0.85   0.95   (gadolinium shortens T1)
================  =====  =====  =====  =====

Each channel then gets its own bias field and noise and is scaled like a real BraTS case by
:func:`medlab.data.formats.brats.read_case`: clipped to the 0.5 and 99.5 percentiles of the brain voxels
and mapped linearly to [-1, 1], the background (outside the brain) at -1. The choroid plexus enhances a
little on t1ce, as it does in patients.

Both datasets generate every volume at construction, deterministically from ``spec.seed`` (subject ``i``
from its own seed drawn from it), and store them as uint8 (``round((x + 1) * 127.5)``), converted back to
float32 in [-1, 1] by ``__getitem__``. :func:`head_ct_lookalike` and :func:`brats_lookalike` draw the
splits the registry's ``load("head_ct", ...)`` and ``load("brats", ...)`` return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from medlab.data.constants import BRATS_LABELS, GRADES, MODALITIES, TUMOUR_CLASSES  # noqa: F401 (re-exported)
from medlab.data.splits import require_n, split_seed

HEAD_CT_CLASSES = ("no haemorrhage", "intraparenchymal", "subdural", "intraventricular")
CT_WINDOW = (40.0, 80.0)  # brain window: centre and width in HU
MIN_SIZE = 16

# --- the template -------------------------------------------------------------------------------------

_TEMPLATE_MM = 2.0  # nilearn's resolution=2 templates
_CUT_MNI_Z = -60.0  # the head is cut through the medulla, below the cerebellum (mm)
_GAP_MM, _SKULL_MM, _SCALP_MM = 2.0, 7.0, 5.0  # reference layers outside the brain (subjects vary them)
_HEAD_MM = 3.0 + 9.0 + 8.0 + 2.0  # thickest gap + skull + scalp, plus air: the head's extent beyond the brain
_AIR_MM = 100.0  # the signed distance given to voxels below the cut
# Ventricles: CSF inside this ellipsoid (MNI centre and radii, mm), in components of at least 20 voxels.
_VENTRICLE_CENTRE, _VENTRICLE_RADII = (0.0, -12.0, 10.0), (26.0, 42.0, 24.0)
# Calcification sites (MNI mm): pineal gland, the choroid plexus glomus in each trigone, the globus pallidi.
_PINEAL = (0.0, -30.0, 3.0)
_CHOROID = ((-27.0, -42.0, 14.0), (27.0, -42.0, 14.0))
_PALLIDUM = ((-19.0, -3.0, 0.0), (19.0, -3.0, 0.0))


@dataclass(frozen=True, eq=False)
class Anatomy:
    """The MNI152 anatomy resampled to a ``size`` cube: float32 ``(size, size, size)`` maps.

    ``brain``, ``gm``, ``wm``, ``csf``, ``ventricles``, ``skull`` and ``scalp`` are fractions of each voxel
    in [0, 1] (``gm + wm + csf = brain``; ``ventricles`` is part of ``csf``; the skull and scalp use the
    reference thicknesses, 2 mm below a 7 mm skull and 5 mm of scalp). ``distance`` is the signed distance
    to the brain surface in mm (negative inside the brain, 100 below the cut through the medulla).
    ``affine`` maps voxel indices to MNI coordinates in mm; ``voxel_mm`` is the voxel side. Read-only
    (cached and shared).
    """

    size: int
    voxel_mm: float
    affine: np.ndarray
    brain: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    ventricles: np.ndarray
    skull: np.ndarray
    scalp: np.ndarray
    distance: np.ndarray


def _ramp(x):
    """Partial volume of a half-space: 0 for ``x < -0.5``, 1 for ``x > 0.5`` (``x`` in voxels)."""
    return np.clip(x + 0.5, 0.0, 1.0)


_TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def _load_templates() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The MNI152 2009 T1, grey and white matter templates at 2 mm, each in [0, 1], and their affine.

    These are the files behind nilearn's ``load_mni152_template``, ``load_mni152_gm_template`` and
    ``load_mni152_wm_template`` (1 mm, in the nilearn wheel). They are read with nibabel and averaged over
    2 x 2 x 2 blocks, which is what those functions give with ``resolution=2`` (up to their interpolation)
    without importing ``nilearn.datasets`` (scikit-learn and all, ~2 s) or resampling (~1.5 s). If the
    files are not where nilearn 0.10 to 0.14 keep them, nilearn's functions are called instead.
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("nilearn")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data" if spec else None
    if folder is not None and all((folder / name).is_file() for name in _TEMPLATE_FILES.values()):
        import nibabel as nib

        images = {key: nib.load(folder / name) for key, name in _TEMPLATE_FILES.items()}
        affine = images["t1"].affine
        if np.allclose(affine[:3, :3], np.eye(3)):
            out = []
            for key in ("t1", "gm", "wm"):
                a = images[key].get_fdata(dtype=np.float32)
                a /= max(float(a.max()), 1e-6)  # as nilearn's loaders do
                a = a[: a.shape[0] // 2 * 2, : a.shape[1] // 2 * 2, : a.shape[2] // 2 * 2]
                out.append(a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, a.shape[2] // 2, 2).mean((1, 3, 5)))
            affine = affine @ np.diag([2.0, 2.0, 2.0, 1.0])
            affine[:3, 3] += 0.5  # a block's centre
            return (*out, affine)
    from nilearn.datasets import load_mni152_gm_template, load_mni152_template, load_mni152_wm_template

    images = [load(resolution=2) for load in (load_mni152_template, load_mni152_gm_template, load_mni152_wm_template)]
    return (*(img.get_fdata(dtype=np.float32) for img in images), images[0].affine.copy())


@lru_cache(maxsize=1)
def _template() -> dict:
    """The template's maps, padded, cut and cropped to the head's cube at 2 mm (about 110 voxels a side)."""
    t1, gm, wm, affine = _load_templates()
    gm, wm = np.clip(gm, 0, 1), np.clip(wm, 0, 1)
    # The T1 template is skull-stripped: everything above ~0 is brain or CSF inside it.
    brain = ndimage.binary_fill_holes((t1 > 0.02) | (gm + wm > 0.5))
    labels, count = ndimage.label(brain)
    if count > 1:
        brain = labels == 1 + int(np.argmax(ndimage.sum(brain, labels, range(1, count + 1))))
    gm, wm = gm * brain, wm * brain
    total = gm + wm
    over = total > 1
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.clip(brain - gm - wm, 0, 1)

    x, y, z = (affine[a, a] * np.arange(brain.shape[a]) + affine[a, 3] for a in range(3))

    # ventricles: CSF components in a central ellipsoid
    ell = (
        ((x[:, None, None] - _VENTRICLE_CENTRE[0]) / _VENTRICLE_RADII[0]) ** 2
        + ((y[None, :, None] - _VENTRICLE_CENTRE[1]) / _VENTRICLE_RADII[1]) ** 2
        + ((z[None, None, :] - _VENTRICLE_CENTRE[2]) / _VENTRICLE_RADII[2]) ** 2
    ) <= 1
    seeds = (csf > 0.5) & ell & (np.abs(x)[:, None, None] > 1.0)  # not the interhemispheric fissure
    labels, count = ndimage.label(seeds)
    sizes = ndimage.sum(seeds, labels, range(1, count + 1))
    kept = np.isin(labels, 1 + np.flatnonzero(sizes >= 20))
    ventricles = csf * ndimage.binary_dilation(kept) * ell

    # the head's cube: the brain above the cut, grown by the layers outside it, centred in a cube
    margin = int(math.ceil(_HEAD_MM / _TEMPLATE_MM))
    above = brain & (z >= _CUT_MNI_Z)[None, None, :]
    box = [np.flatnonzero(above.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
    lows = [int(b[0]) - margin for b in box]
    lows[2] = int(np.searchsorted(z, _CUT_MNI_Z))
    highs = [int(b[-1]) + margin + 1 for b in box]
    side = max(h - lo for lo, h in zip(lows, highs)) + 2
    starts = [(lo + h - side) // 2 for lo, h in zip(lows, highs)]

    def in_cube(a, fill=0.0):
        pads = [(max(0, -s), max(0, s + side - n)) for s, n in zip(starts, a.shape)]
        a = np.pad(a, pads, constant_values=fill)
        return np.ascontiguousarray(a[tuple(slice(s + p[0], s + p[0] + side) for s, p in zip(starts, pads))])

    brain, gm, wm, csf, ventricles = (in_cube(a.astype(np.float32)) for a in (brain, gm, wm, csf, ventricles))
    affine[:3, 3] += np.diag(affine)[:3] * np.array(starts)
    inside = brain > 0.5
    d_out = ndimage.distance_transform_edt(~inside)
    d_in = ndimage.distance_transform_edt(inside)
    distance = ((d_out - d_in) * _TEMPLATE_MM - np.where(inside, -1.0, 1.0)).astype(np.float32)

    # cut through the medulla: nothing below (the brain continued when the distances were measured)
    below = (affine[2, 2] * np.arange(side) + affine[2, 3] < _CUT_MNI_Z)[None, None, :]
    brain, gm, wm, csf, ventricles = (np.where(below, np.float32(0), a) for a in (brain, gm, wm, csf, ventricles))
    distance = np.where(below, np.float32(_AIR_MM), distance)
    maps = {"brain": brain, "gm": gm, "wm": wm, "csf": csf, "ventricles": ventricles, "distance": distance}
    return {"side": side, "affine": affine, **maps}


@lru_cache(maxsize=8)
def anatomy(size: int) -> Anatomy:
    """The MNI152 head resampled to ``size`` cubed (cached: the same object for the same size).

    The 2 mm template cube is smoothed (a Gaussian of 0.4 output voxels, against aliasing) and resampled
    with ``scipy.ndimage.zoom`` (order 1). The first call reads the templates from the nilearn wheel
    (about 2 s); each new size then takes about half a second.
    """
    _check_size(size)
    t = _template()
    side = t["side"]
    factor = size / side
    sigma = 0.4 / factor if factor < 1 else 0.0

    def resample(a, lo=None, hi=None):
        a = ndimage.gaussian_filter(a, sigma) if sigma else a
        out = ndimage.zoom(a, factor, order=1, mode="nearest", grid_mode=False).astype(np.float32)
        assert out.shape == (size,) * 3, out.shape
        return np.clip(out, lo, hi) if lo is not None else out

    step = (side - 1) / (size - 1)
    affine = t["affine"] @ np.diag([step, step, step, 1.0])
    vox = float(_TEMPLATE_MM * step)
    brain = resample(t["brain"], 0, 1)
    gm, wm = resample(t["gm"], 0, 1), resample(t["wm"], 0, 1)
    total = np.maximum(gm + wm, 1e-6)
    scale = np.minimum(1.0, brain / total)
    gm, wm = gm * scale, wm * scale
    csf = np.clip(brain - gm - wm, 0, 1)
    ventricles = np.minimum(resample(t["ventricles"], 0, 1), csf)
    distance = resample(t["distance"])
    inner = _ramp((distance - _GAP_MM) / vox)
    outer = _ramp((distance - _GAP_MM - _SKULL_MM) / vox)
    skin = _ramp((distance - _GAP_MM - _SKULL_MM - _SCALP_MM) / vox)
    maps = dict(brain=brain, gm=gm, wm=wm, csf=csf, ventricles=ventricles, skull=inner - outer, scalp=outer - skin)
    maps = {k: v.astype(np.float32) for k, v in maps.items()}
    for a in (*maps.values(), distance, affine):
        a.setflags(write=False)
    return Anatomy(size=size, voxel_mm=vox, affine=affine, distance=distance, **maps)


def _to_voxel(anat: Anatomy, mni) -> np.ndarray:
    """MNI mm -> (continuous) voxel indices of ``anat``."""
    mni = np.asarray(mni, dtype=np.float64)
    return (mni - anat.affine[:3, 3]) / np.diag(anat.affine)[:3]


@lru_cache(maxsize=8)
def _sites(size: int) -> dict:
    """Where lesions may be centred, in the template cube of ``size``: voxel indices, depth below the brain
    surface (mm) and side (+1 right hemisphere, -1 left), per lesion kind."""
    anat = anatomy(size)
    idx = np.indices((size,) * 3).reshape(3, -1).T
    x, y, z = (anat.affine[a, a] * idx[:, a] + anat.affine[a, 3] for a in range(3))
    depth = -anat.distance.reshape(-1)
    par = (anat.gm + anat.wm).reshape(-1)
    vent = anat.ventricles.reshape(-1)
    wm = anat.wm.reshape(-1)

    def pick(keep):
        return {"voxel": idx[keep].astype(np.float64), "depth": depth[keep], "side": np.sign(x[keep])}

    sites = {
        "parenchyma": pick((par > 0.7) & (vent < 0.05) & (z > -10) & (np.abs(x) > 12) & (depth > 6)),
        "white matter": pick((wm > 0.45) & (vent < 0.05) & (z > 0) & (np.abs(x) > 15) & (depth > 10)),
    }
    surface = (np.abs(depth) < 0.75 * anat.voxel_mm) & (z > 0) & (np.abs(x) > 25) & (y > -85)
    grad = np.stack(np.gradient(anat.distance), -1).reshape(-1, 3)[surface]
    sites["convexity"] = pick(surface)
    sites["convexity"]["normal"] = grad / np.maximum(np.linalg.norm(grad, axis=1, keepdims=True), 1e-6)
    return sites


# --- smooth random fields and the subject's warp ---------------------------------------------------------


@lru_cache(maxsize=64)
def _basis(size: int, n: int) -> np.ndarray:
    """``(size, n)`` Gaussian bumps at ``n`` evenly spaced centres, rows of unit norm (so a field with iid
    unit coefficients has unit variance at every voxel)."""
    centres = np.linspace(0, size - 1, n)
    spacing = (size - 1) / (n - 1)
    b = np.exp(-0.5 * ((np.arange(size)[:, None] - centres[None, :]) / spacing) ** 2)
    return (b / np.sqrt((b**2).sum(1, keepdims=True))).astype(np.float32)


def _smooth(rng: np.random.Generator, size: int, n: int, count: int = 1) -> np.ndarray:
    """``count`` smooth random fields ``(count, size, size, size)``, unit variance, feature spacing
    ``1/(n-1)`` of the cube (the same in mm at every size): a tensor-product of Gaussian bumps."""
    coef = rng.standard_normal((count, n, n, n), dtype=np.float32)
    b = _basis(size, n)
    out = coef @ b.T  # (c, i, j, z)
    out = np.swapaxes(np.swapaxes(out, 2, 3) @ b.T, 2, 3)  # (c, i, y, z)
    out = np.moveaxis(np.moveaxis(out, 1, 3) @ b.T, 3, 1)  # (c, x, y, z)
    return np.ascontiguousarray(out)


@lru_cache(maxsize=8)
def _grid(size: int) -> np.ndarray:
    """Voxel indices ``(3, size, size, size)`` relative to the cube's centre."""
    return np.indices((size,) * 3, dtype=np.float32) - np.float32((size - 1) / 2)


def _rotation(angles) -> np.ndarray:
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


class _Frame:
    """One subject's geometry: output voxel ``p`` shows the template at ``q = c + M (p - c) + t + d(p)``
    (``M`` a rotation and scaling, ``t`` a shift, ``d`` a smooth displacement), plus, for the tissue inside
    the skull, the mass effect of lesions (:meth:`push`)."""

    def __init__(self, anat: Anatomy, rng: np.random.Generator):
        size = anat.size
        self.anat, self.size, self.c = anat, size, (size - 1) / 2
        scale = rng.uniform(0.92, 1.08) * rng.uniform(0.97, 1.03, 3)
        self.M = (_rotation(np.deg2rad(rng.uniform(-10, 10, 3))) / scale[None, :]).astype(np.float32)
        self.t = (rng.uniform(-2, 2, 3) * size / 32).astype(np.float32)
        self.d = _smooth(rng, size, 7, 3) * np.float32(0.75 * size / 32)
        g = _grid(size)
        q = np.tensordot(self.M, g, axes=1)
        q += (self.c + self.t)[:, None, None, None]
        q += self.d
        self.base = q
        self.u = np.zeros_like(q)  # mass effect, in output voxels

    def to_output(self, q) -> np.ndarray:
        """The output voxel showing template voxel ``q`` (inverse of the warp, to within a tenth of a voxel)."""
        minv = np.linalg.inv(self.M.astype(np.float64))
        p = self.c + minv @ (np.asarray(q, dtype=np.float64) - self.c - self.t)
        for _ in range(2):
            i = tuple(np.clip(np.rint(p), 0, self.size - 1).astype(int))
            p = self.c + minv @ (np.asarray(q) - self.c - self.t - self.d[(slice(None), *i)])
        return p

    def push(self, centre, strength: float, width: float) -> None:
        """Mass effect: displace the tissue radially away from ``centre`` (output voxels) by
        ``strength * r * exp(-r^2 / (2 width^2))`` (``strength < 1`` keeps the warp one-to-one)."""
        diff = _grid(self.size) - (np.asarray(centre, dtype=np.float32) - np.float32(self.c))[:, None, None, None]
        r2 = (diff**2).sum(0)
        self.u += diff * (np.float32(strength) * np.exp(r2 * np.float32(-0.5 / width**2)))

    def sample(self, maps, pushed: bool = True) -> list[np.ndarray]:
        """The template maps as this subject shows them (trilinear, ``map_coordinates`` order 1)."""
        coords = self.base - np.tensordot(self.M, self.u, axes=1) if pushed and self.u.any() else self.base
        return [ndimage.map_coordinates(m, coords, order=1, mode="nearest", output=np.float32) for m in maps]

    def side(self) -> np.ndarray:
        """Which hemisphere each output voxel shows: MNI x of its template source (mm, > 0 right)."""
        return self.anat.affine[0, 0] * self.base[0] + self.anat.affine[0, 3]


def _features(anat: Anatomy, mm: float) -> int:
    """Bumps per axis for a smooth field with features about ``mm`` apart (the same at every size)."""
    return max(3, int(round(anat.voxel_mm * (anat.size - 1) / mm)) + 1)


def _ellipsoid_radius(frame: _Frame, centre, radii, rng: np.random.Generator) -> np.ndarray:
    """Normalised radius of a randomly oriented ellipsoid (``radii`` in voxels): 1 on its surface."""
    rot = _rotation(rng.uniform(0, 2 * np.pi, 3)).astype(np.float32)
    diff = _grid(frame.size) - (np.asarray(centre, dtype=np.float32) - np.float32(frame.c))[:, None, None, None]
    e = np.tensordot(rot / np.asarray(radii, dtype=np.float32)[:, None], diff, axes=1)
    return np.sqrt((e**2).sum(0))


def _pick_site(anat: Anatomy, kind: str, rng: np.random.Generator, side: int, depth: float = 0.0) -> int:
    sites = _sites(anat.size)[kind]
    ok = np.flatnonzero((sites["side"] == side) & (sites["depth"] >= depth))
    if ok.size == 0:
        ok = np.flatnonzero(sites["side"] == side)
    return int(ok[rng.integers(ok.size)])


def _centroid(mask: np.ndarray) -> tuple[int, int, int] | None:
    """The voxel of ``mask`` nearest its centroid (on the lesion even when it is a crescent)."""
    if not mask.any():
        return None
    voxels = np.argwhere(mask)
    return tuple(int(v) for v in voxels[np.argmin(((voxels - voxels.mean(0)) ** 2).sum(1))])


def _blob(size: int, centre, sigma: float) -> np.ndarray:
    """An isotropic Gaussian of peak 1 (``centre``, ``sigma`` in voxels), computed in its bounding box."""
    out = np.zeros((size,) * 3, dtype=np.float32)
    lo = np.maximum(np.floor(np.asarray(centre) - 3 * sigma).astype(int), 0)
    hi = np.minimum(np.ceil(np.asarray(centre) + 3 * sigma).astype(int) + 1, size)
    if np.any(hi <= lo):
        return out
    axes = [np.arange(lo[a], hi[a], dtype=np.float32) - np.float32(centre[a]) for a in range(3)]
    g = [np.exp(-0.5 * (ax / sigma) ** 2) for ax in axes]
    out[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    return out


# --- head CT ---------------------------------------------------------------------------------------------


def window(hu: np.ndarray, centre: float = CT_WINDOW[0], width: float = CT_WINDOW[1]) -> np.ndarray:
    """A CT window: ``centre - width/2`` HU maps to -1, ``centre + width/2`` to +1, clipped."""
    return np.clip((hu - (centre - width / 2)) * np.float32(2 / width) - 1, -1, 1).astype(np.float32)


def render_head_ct(
    label: int, size: int = 32, rng: np.random.Generator | int | None = None, noise: float = 3.0,
    severity: float | None = None,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One synthetic head CT: ``(volume, lesion_mask, case)``.

    ``volume`` is float32 ``(size, size, size)`` in [-1, 1] (brain window, :data:`CT_WINDOW`), ``lesion_mask``
    bool (empty for class 0), ``case`` a dict: class, label, lesion centre voxel, lesion volume in voxels
    and mL, hemisphere, and the distractors present. ``label`` indexes :data:`HEAD_CT_CLASSES`; ``noise``
    is the noise standard deviation in HU (scaled by 0.7 to 1.3 per subject). The patient (warp, tissue
    HU, skull, calcifications, noise) is drawn from ``rng`` first, the same way for every label, and the
    lesion from its own stream, so the same ``rng`` state shows one patient with each class in turn.
    ``severity`` in [0, 1] fixes the lesion size (for figures; random when None).
    """
    if label not in range(len(HEAD_CT_CLASSES)):
        raise ValueError(f"label must be in 0..{len(HEAD_CT_CLASSES) - 1}, got label={label!r}")
    anat = anatomy(size)
    rng = np.random.default_rng(rng)
    vox = anat.voxel_mm
    frame = _Frame(anat, rng)
    hu = {
        "gm": rng.uniform(34, 42), "wm": rng.uniform(23, 30), "csf": rng.uniform(2, 10),
        "scalp": rng.uniform(10, 40), "bone": rng.uniform(700, 1600),
    }
    gap, skull_t, scalp_t = rng.uniform(1, 3), rng.uniform(5, 9), rng.uniform(4, 8)
    beam = rng.uniform(0, 10)  # HU added just under the skull
    atrophy = rng.uniform(0.05, 0.3) if rng.uniform() < 0.3 else 0.0
    calcs = []  # (template voxel, sigma mm, peak HU, what)
    if rng.uniform() < 0.55:
        calcs.append((_PINEAL, rng.uniform(2, 3.5), rng.uniform(80, 300), "pineal"))
    for site in _CHOROID:
        if rng.uniform() < 0.45:
            calcs.append((site, rng.uniform(2, 4), rng.uniform(60, 250), "choroid plexus"))
    if rng.uniform() < 0.2:
        falx = (0.0, rng.uniform(-30, 30), rng.uniform(40, 60))
        calcs.append((falx, rng.uniform(1.5, 3), rng.uniform(80, 300), "falx"))
    for site in _PALLIDUM:
        if rng.uniform() < 0.1:
            calcs.append((site, rng.uniform(2, 3.5), rng.uniform(60, 200), "basal ganglia"))
    jitter = rng.normal(0, 3.0, (len(calcs), 3))  # mm
    noise_sd = noise * rng.uniform(0.7, 1.3)
    noise_field = rng.standard_normal((size,) * 3, dtype=np.float32)
    lesion_rng = np.random.default_rng(rng.integers(0, 2**63))

    g = lesion_rng
    sev = g.uniform() if severity is None else float(np.clip(severity, 0, 1))
    side = 1 if g.uniform() < 0.5 else -1
    case = {"class": HEAD_CT_CLASSES[label], "label": int(label), "hemisphere": None}
    if atrophy:
        frame.push(frame.to_output(_to_voxel(anat, _VENTRICLE_CENTRE)), atrophy, 22.0 / vox)
    if label == 1:  # intraparenchymal: the clot's centre and mass effect first
        radius_mm = 8.0 * (24.0 / 8.0) ** sev
        site = _pick_site(anat, "parenchyma", g, side, depth=0.7 * radius_mm)
        centre = frame.to_output(_sites(size)["parenchyma"]["voxel"][site])
        radii = radius_mm / vox * g.uniform(0.75, 1.25, 3)
        frame.push(centre, g.uniform(0.2, 0.45), 1.3 * radii.mean())
    elif label == 2:  # subdural: where on the convexity, how thick, how far it spreads
        site = _pick_site(anat, "convexity", g, side)
        sites = _sites(size)["convexity"]
        centre = frame.to_output(sites["voxel"][site])
        normal = frame.M.T @ sites["normal"][site]
        normal /= np.linalg.norm(normal)
        thick_mm = 7.0 * (20.0 / 7.0) ** sev
        spread = g.uniform(25, 40) / vox
        width = 0.8 * spread
        frame.push(centre + 0.7 * width * normal, min(thick_mm / vox / (0.55 * width), 0.6), width)
    elif label == 3 and g.uniform() < 0.6:  # intraventricular: often with hydrocephalus
        frame.push(frame.to_output(_to_voxel(anat, _VENTRICLE_CENTRE)), g.uniform(0.15, 0.35), 22.0 / vox)

    gm, wm, vent = frame.sample([anat.gm, anat.wm, anat.ventricles])
    (sd,) = frame.sample([anat.distance], pushed=False)
    par = np.minimum(gm + wm, 1.0)
    cavity = _ramp((gap - sd) / vox)  # inside the inner table of the skull
    inner = 1.0 - cavity
    outer = _ramp((sd - gap - skull_t) / vox)
    air = _ramp((sd - gap - skull_t - scalp_t) / vox)
    brain_hu = gm * hu["gm"] + wm * hu["wm"] + (1.0 - par) * hu["csf"]
    brain_hu += beam * np.exp(np.minimum(sd - gap, 0) / 6.0)
    for (where, sigma_mm, peak, _), shift in zip(calcs, jitter):
        brain_hu += peak * _blob(size, frame.to_output(_to_voxel(anat, where)) + shift / vox, sigma_mm / vox)
    mask = np.zeros((size,) * 3, dtype=bool)
    fraction = np.zeros((size,) * 3, dtype=np.float32)
    if label == 1:
        blood = g.uniform(62, 85)
        r = _ellipsoid_radius(frame, centre, radii, g)
        r += 0.25 * _smooth(g, size, _features(anat, 12.0))[0]
        rmean = float(radii.mean())
        fraction = _ramp((1.0 - r) * rmean) * cavity
        rim = _ramp((1.0 + g.uniform(2, 5) / vox / rmean - r) * rmean) * (1 - fraction) * par
        brain_hu -= g.uniform(6, 12) * rim
        brain_hu = brain_hu * (1 - fraction) + blood * fraction
        mask = fraction > 0.5
        if not mask.any():
            mask[np.unravel_index(np.argmax(fraction), fraction.shape)] = True
    elif label == 2:
        blood = g.uniform(55, 78)
        diff = _grid(size) - (np.asarray(centre, dtype=np.float32) - np.float32(frame.c))[:, None, None, None]
        patch = np.exp(-0.5 * (diff**2).sum(0) / spread**2)
        patch *= np.exp(0.15 * _smooth(g, size, _features(anat, 25.0))[0])
        thick = thick_mm * patch
        hemi = _ramp(side * frame.side() / vox - 0.5)  # the falx stops it at the midline
        # the part of each voxel (spanning sd +- vox/2) within ``thick`` of the inner table
        h = np.float32(vox / 2)
        fraction = np.clip((np.minimum(sd + h, gap) - np.maximum(sd - h, gap - thick)) / vox, 0, 1) * hemi
        share = fraction / np.maximum(cavity, 1e-3)
        brain_hu = brain_hu * (1 - share) + blood * share
        mask = fraction > 0.4
        if not mask.any():
            mask[np.unravel_index(np.argmax(fraction), fraction.shape)] = True
    elif label == 3:
        blood = g.uniform(60, 85)
        hemi = np.ones_like(vent)
        if g.uniform() < 0.35:
            hemi = _ramp(side * frame.side() / vox)
        else:
            side = 0
        v = vent * hemi
        profile = np.cumsum(v.sum((0, 2)))  # ventricle volume posterior to each coronal plane
        fill = 0.35 + 0.65 * sev
        level = float(np.searchsorted(profile, fill * profile[-1]))
        layer = _ramp(level - np.arange(size, dtype=np.float32))[None, :, None]  # blood settles posteriorly
        fraction = v * layer
        brain_hu += fraction * (blood - hu["csf"])
        mask = fraction > 0.3
        if not mask.any():
            mask[np.unravel_index(np.argmax(fraction), fraction.shape)] = True
    if label in (1, 2) or (label == 3 and side):
        case["hemisphere"] = "right" if side > 0 else "left"

    volume_hu = cavity * brain_hu + (inner - outer) * hu["bone"] + (outer - air) * hu["scalp"] - 1000.0 * air
    volume_hu += noise_sd * noise_field
    volume = window(volume_hu)
    case.update(
        centre=_centroid(mask) if label else None,
        voxels=int(mask.sum()),
        volume_ml=round(float(fraction.sum()) * vox**3 / 1000, 2) if label else 0.0,
        calcifications=[what for *_, what in calcs],
        enlarged_ventricles=bool(atrophy),
    )
    return volume, mask, case


# --- brain MR with a glioma ------------------------------------------------------------------------------

# Relative signal per tissue (rows) and contrast (columns t1, t1ce, t2, flair); white matter on T1 = 1.
_MR_SIGNAL = {
    "wm": (1.00, 1.00, 0.45, 0.55),
    "gm": (0.68, 0.70, 0.70, 0.75),
    "csf": (0.22, 0.22, 1.50, 0.12),
    "oedema": (0.62, 0.62, 1.15, 1.25),
    "core": (0.50, 0.55, 0.95, 1.05),  # non-enhancing tumour
    "necrosis": (0.28, 0.30, 1.35, 0.70),
    "enhancing": (0.62, 1.55, 0.85, 0.95),
}


def scale_channel(channel: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """BraTS-style scaling (as :func:`medlab.data.formats.brats.read_case`): clip to the 0.5 and 99.5
    percentiles of the brain voxels, map that range linearly to [-1, 1], and set the background to -1."""
    out = np.full(channel.shape, -1.0, dtype=np.float32)
    values = channel[brain]
    low, high = np.percentile(values, [0.5, 99.5])
    if high > low:
        out[brain] = (np.clip(values, low, high) - low) * np.float32(2.0 / (high - low)) - 1.0
    else:
        out[brain] = 0.0
    return out


def render_brain_tumour(
    size: int = 32, rng: np.random.Generator | int | None = None, grade: str = "HGG", noise: float = 0.03,
    bias: float = 0.15,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One synthetic multi-contrast brain MR with a glioma: ``(volume, mask, case)``.

    ``volume`` is float32 ``(4, size, size, size)`` in [-1, 1] (:data:`MODALITIES`; background -1), ``mask``
    uint8 ``(size, size, size)`` of training indices (:data:`TUMOUR_CLASSES`), ``case`` a dict: grade,
    tumour centre voxel, hemisphere, voxels per class, and radii in mm. ``grade`` is "HGG" (necrosis in an
    enhancing rim, large oedema) or "LGG" (non-enhancing core, less oedema). ``noise`` is the noise standard
    deviation relative to white matter on T1, ``bias`` the standard deviation of the log bias field.
    """
    if grade not in GRADES:
        raise ValueError(f"grade must be one of {GRADES}, got grade={grade!r}")
    anat = anatomy(size)
    rng = np.random.default_rng(rng)
    vox = anat.voxel_mm
    frame = _Frame(anat, rng)
    signal = {k: np.asarray(v) * rng.uniform(0.92, 1.08, 4) for k, v in _MR_SIGNAL.items()}
    side = 1 if rng.uniform() < 0.5 else -1
    hgg = grade == "HGG"
    core_mm = rng.uniform(10, 22) if hgg else rng.uniform(10, 24)
    oedema_ratio = rng.uniform(1.4, 2.2) if hgg else rng.uniform(1.1, 1.6)
    necrosis_ratio = rng.uniform(0.4, 0.7)
    site = _pick_site(anat, "white matter", rng, side, depth=0.6 * core_mm)
    centre = frame.to_output(_sites(size)["white matter"]["voxel"][site])
    radii = core_mm / vox * rng.uniform(0.8, 1.2, 3)
    rc = float(radii.mean())
    frame.push(centre, rng.uniform(0.2, 0.45) if hgg else rng.uniform(0.1, 0.3), 1.5 * rc)

    gm, wm = frame.sample([anat.gm, anat.wm])
    (brain_p,) = frame.sample([anat.brain], pushed=False)
    brain = brain_p > 0.5
    csf = np.clip(brain_p - gm - wm, 0, 1)
    par = np.clip(gm + wm, 0, 1)
    wm_share = wm / np.maximum(par, 1e-3)

    fields = _smooth(rng, size, _features(anat, 12.0), 5)
    r = _ellipsoid_radius(frame, centre, radii, rng)
    f_core = _ramp((1.0 - r - 0.2 * fields[0]) * rc) * brain
    score = r / oedema_ratio + 0.25 * fields[1] - 0.3 * (wm_share - 0.5)
    f_oedema = _ramp((1.0 - score) * rc * oedema_ratio) * np.clip(2 * par - 0.5, 0, 1) * brain
    f_whole = np.maximum(f_core, f_oedema)
    if hgg:
        f_nec = np.minimum(_ramp((necrosis_ratio - r - 0.15 * fields[2]) * rc), f_core)
        rim = _ramp(2.0 * fields[3] + 2.5)  # mostly complete, sometimes with gaps
        f_enh = (f_core - f_nec) * rim
    else:
        f_nec = np.zeros_like(f_core)
        f_enh = np.zeros_like(f_core)
    f_net = f_core - f_nec - f_enh

    whole = (f_whole > 0.5) & brain
    core = (f_core > 0.5) & brain
    if not core.any():  # a tumour has a core
        voxel = tuple(np.clip(np.rint(centre), 0, size - 1).astype(int))
        core[voxel] = brain[voxel]
        whole |= core
    enhancing = core & (f_enh > 0.5 * f_core)
    mask = np.zeros((size,) * 3, dtype=np.uint8)
    mask[whole] = 2
    mask[core] = 1
    mask[enhancing] = 3

    texture = 1.0 + 0.08 * fields[4]
    normal_w = 1.0 - f_whole
    bias_fields = _smooth(rng, size, 3, 4)
    noise_fields = rng.standard_normal((4,) + (size,) * 3, dtype=np.float32)
    choroid = sum(_blob(size, frame.to_output(_to_voxel(anat, c)), 4.0 / vox) for c in _CHOROID) * rng.uniform(0.2, 0.5)
    volume = np.empty((4,) + (size,) * 3, dtype=np.float32)
    for ch in range(4):
        s = {k: np.float32(v[ch]) for k, v in signal.items()}
        tissue = gm * s["gm"] + wm * s["wm"] + csf * s["csf"]
        tumour = (f_whole - f_core) * s["oedema"] + f_net * s["core"] + f_nec * s["necrosis"] + f_enh * s["enhancing"]
        image = tissue * normal_w + tumour * texture
        if MODALITIES[ch] == "t1ce":
            image = image + choroid * np.clip(2 * csf, 0, 1)  # the choroid plexus enhances
        image = image * np.exp(np.float32(bias) * bias_fields[ch]) + np.float32(noise) * noise_fields[ch]
        volume[ch] = scale_channel(image, brain)

    counts = np.bincount(mask.reshape(-1), minlength=4)
    case = {
        "grade": grade,
        "centre": _centroid(whole),
        "hemisphere": "right" if side > 0 else "left",
        "voxels": {name: int(counts[k]) for k, name in enumerate(TUMOUR_CLASSES)},
        "core_radius_mm": round(core_mm, 1),
        "oedema_radius_mm": round(core_mm * oedema_ratio, 1),
    }
    return volume, mask, case



# --- specs and datasets ----------------------------------------------------------------------------------


def _check_size(size) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer of at least {MIN_SIZE}, got size={size!r}")


def _check_common(spec) -> None:
    n = spec.n
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer, got n={n!r}")
    _check_size(spec.size)
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, (int, np.integer)) or spec.seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got seed={spec.seed!r}")
    noise = spec.noise
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.number)) or not 0 <= noise < math.inf:
        raise ValueError(f"noise must be a finite number >= 0, got noise={noise!r}")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.rint((x + 1.0) * 127.5).astype(np.uint8)


def _to_float(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).float().div_(127.5).sub_(1.0)


def class_counts(n: int, weights) -> np.ndarray:
    """``n`` split over the classes in proportion to ``weights`` (largest remainders)."""
    raw = np.asarray(weights, dtype=np.float64) / np.sum(weights) * n
    counts = np.floor(raw).astype(np.int64)
    for k in np.argsort(-(raw - counts), kind="stable")[: n - int(counts.sum())]:
        counts[k] += 1
    return counts


@dataclass(frozen=True)
class SyntheticHeadCTSpec:
    """How to generate one split of synthetic head CTs.

    ``class_weights`` are the class proportions (:data:`HEAD_CT_CLASSES` order; the split has exactly
    ``round``-ed counts, in random order), ``noise`` the noise standard deviation in HU (before windowing).
    """

    n: int
    size: int = 32
    seed: int = 0
    class_weights: tuple[float, ...] = (0.4, 0.2, 0.2, 0.2)
    noise: float = 3.0

    def __post_init__(self):
        _check_common(self)
        try:
            weights = tuple(float(w) for w in self.class_weights)
        except (TypeError, ValueError):
            raise ValueError(
                f"class_weights must be {len(HEAD_CT_CLASSES)} numbers, got class_weights={self.class_weights!r}"
            ) from None
        if len(weights) != len(HEAD_CT_CLASSES):
            raise ValueError(
                f"class_weights must have {len(HEAD_CT_CLASSES)} entries ({', '.join(HEAD_CT_CLASSES)}), "
                f"got class_weights={self.class_weights!r}"
            )
        if not all(0 <= w < math.inf for w in weights):
            raise ValueError(f"class_weights must be finite and >= 0, got class_weights={self.class_weights!r}")
        if abs(sum(weights) - 1) > 1e-6:
            raise ValueError(
                f"class_weights must sum to 1, got class_weights={self.class_weights!r} (sum {sum(weights):.6g})"
            )
        object.__setattr__(self, "class_weights", weights)


class SyntheticHeadCTs(Dataset):
    """A split of synthetic head CTs: ``(volume, target)``, a float32 ``(1, S, S, S)`` tensor in [-1, 1]
    (brain window; -1 outside the head) and an int64 scalar tensor indexing :data:`HEAD_CT_CLASSES`.

    Every volume is generated at construction from ``spec.seed`` (:func:`render_head_ct`, volume ``i``
    from its own seed): ``volumes`` holds them as uint8 ``(N, 1, S, S, S)`` (``round((x + 1) * 127.5)``),
    ``targets`` the labels (int64 numpy ``(N,)``), ``lesion_masks`` the lesions (bool ``(N, S, S, S)``,
    empty for "no haemorrhage"), ``cases`` a dict per volume (class, lesion centre voxel, lesion volume,
    hemisphere, distractors). ``info`` describes the split. ``transform(volume)``, if given, is applied to
    the volume tensor.
    """

    classes = HEAD_CT_CLASSES

    def __init__(self, spec: SyntheticHeadCTSpec, transform=None):
        self.spec = spec
        self.transform = transform
        rng = np.random.default_rng(spec.seed)
        labels = rng.permutation(np.repeat(np.arange(len(HEAD_CT_CLASSES)), class_counts(spec.n, spec.class_weights)))
        seeds = rng.integers(0, 2**63, size=spec.n)
        size = spec.size
        self.volumes = np.empty((spec.n, 1) + (size,) * 3, dtype=np.uint8)
        self.lesion_masks = np.zeros((spec.n,) + (size,) * 3, dtype=bool)
        self.cases = []
        for i, (label, seed) in enumerate(zip(labels, seeds)):
            volume, mask, case = render_head_ct(int(label), size, np.random.default_rng(seed), spec.noise)
            self.volumes[i, 0] = _to_uint8(volume)
            self.lesion_masks[i] = mask
            self.cases.append(case)
        self.targets = labels.astype(np.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        volume = _to_float(self.volumes[index])
        target = torch.tensor(self.targets[index], dtype=torch.int64)
        return (self.transform(volume) if self.transform is not None else volume), target

    @property
    def info(self) -> dict:
        return {
            "kind": "synthetic",
            "name": "synthetic-head-ct",
            "generator": "medlab.data.synth.brains3d",
            "n": len(self),
            "size": self.spec.size,
            "voxel_mm": round(anatomy(self.spec.size).voxel_mm, 2),
            "seed": self.spec.seed,
            "class_weights": list(self.spec.class_weights),
            "noise_hu": self.spec.noise,
            "class_counts": np.bincount(self.targets, minlength=len(HEAD_CT_CLASSES)).tolist(),
        }


@dataclass(frozen=True)
class SyntheticBrainTumourSpec:
    """How to generate one split of synthetic brain-tumour MR volumes.

    ``lgg_fraction`` of the subjects (drawn at random) have a low-grade tumour (no enhancement, no
    necrosis); ``noise`` is the noise standard deviation relative to white matter on T1, ``bias`` the
    standard deviation of each channel's log bias field.
    """

    n: int
    size: int = 32
    seed: int = 0
    lgg_fraction: float = 0.25
    noise: float = 0.03
    bias: float = 0.15

    def __post_init__(self):
        _check_common(self)
        for name, top, what in (("lgg_fraction", 1.0, "in [0, 1]"), ("bias", math.inf, "a finite number >= 0")):
            value = getattr(self, name)
            number = not isinstance(value, bool) and isinstance(value, (int, float, np.number))
            if not number or not 0 <= value <= top or value == math.inf:
                raise ValueError(f"{name} must be {what}, got {name}={value!r}")


class SyntheticBrainTumours(Dataset):
    """A split of synthetic brain-tumour MR volumes: ``(volume, mask)``, a float32 ``(4, S, S, S)`` tensor
    in [-1, 1] (channels :data:`MODALITIES`, background -1) and an int64 ``(S, S, S)`` mask of training
    indices (:data:`TUMOUR_CLASSES`: 0 background, 1 necrotic / non-enhancing core, 2 oedema, 3 enhancing
    tumour, i.e. BraTS labels 0, 1, 2, 4), the items of :class:`medlab.data.formats.brats.BraTS`.

    Every volume is generated at construction from ``spec.seed`` (:func:`render_brain_tumour`): ``volumes``
    holds them as uint8 ``(N, 4, S, S, S)``, ``masks`` uint8 ``(N, S, S, S)`` with values 0..3, ``grades``
    "HGG" or "LGG" per subject, ``cases`` a dict per subject (grade, tumour centre, hemisphere, voxels per
    class). ``transform(volume, mask)``, if given, is applied to the tensors and returns the pair.
    """

    classes = TUMOUR_CLASSES
    modalities = MODALITIES

    def __init__(self, spec: SyntheticBrainTumourSpec, transform=None):
        self.spec = spec
        self.transform = transform
        rng = np.random.default_rng(spec.seed)
        lgg = rng.uniform(size=spec.n) < spec.lgg_fraction
        seeds = rng.integers(0, 2**63, size=spec.n)
        size = spec.size
        self.volumes = np.empty((spec.n, len(MODALITIES)) + (size,) * 3, dtype=np.uint8)
        self.masks = np.empty((spec.n,) + (size,) * 3, dtype=np.uint8)
        self.cases = []
        for i, (low, seed) in enumerate(zip(lgg, seeds)):
            volume, mask, case = render_brain_tumour(
                size, np.random.default_rng(seed), "LGG" if low else "HGG", spec.noise, spec.bias
            )
            self.volumes[i] = _to_uint8(volume)
            self.masks[i] = mask
            self.cases.append(case)
        self.grades = [case["grade"] for case in self.cases]

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int):
        volume = _to_float(self.volumes[index])
        mask = torch.from_numpy(self.masks[index].astype(np.int64))
        if self.transform is not None:
            return self.transform(volume, mask)
        return volume, mask

    @property
    def info(self) -> dict:
        return {
            "kind": "synthetic",
            "name": "synthetic-brain-tumours",
            "generator": "medlab.data.synth.brains3d",
            "n": len(self),
            "size": self.spec.size,
            "voxel_mm": round(anatomy(self.spec.size).voxel_mm, 2),
            "seed": self.spec.seed,
            "lgg_fraction": self.spec.lgg_fraction,
            "noise": self.spec.noise,
            "bias": self.spec.bias,
            "grade_counts": {g: self.grades.count(g) for g in GRADES},
            "voxel_counts": np.bincount(self.masks.reshape(-1), minlength=len(TUMOUR_CLASSES)).tolist(),
        }


def head_ct_lookalike(
    split: str, n: int | None = None, size: int = 32, seed: int = 2019, transform=None
) -> SyntheticHeadCTs:
    """Synthetic head CTs (the paper's set is private): ``n`` volumes of ``split`` drawn with
    :func:`medlab.data.splits.split_seed` of ``seed`` (what ``load("head_ct", split, n=n)`` returns)."""
    require_n(n, "the synthetic head CTs need n, the number of volumes of the split")
    return SyntheticHeadCTs(SyntheticHeadCTSpec(n=n, size=size, seed=split_seed(seed, split)), transform=transform)


def brats_lookalike(
    split: str, n: int | None = None, size: int = 32, seed: int = 2019, transform=None
) -> SyntheticBrainTumours:
    """Synthetic brain-tumour MR standing in for BraTS's ``split``: ``n`` volumes drawn with
    :func:`medlab.data.splits.split_seed` of ``seed`` (what ``load("brats", split, n=n)`` returns)."""
    require_n(n, "the synthetic brain tumour volumes need n, the number of volumes of the split")
    spec = SyntheticBrainTumourSpec(n=n, size=size, seed=split_seed(seed, split))
    return SyntheticBrainTumours(spec, transform=transform)


# --- figures -----------------------------------------------------------------------------------------------


def slices(volume, index=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The axial, coronal and sagittal slices of ``volume`` through voxel ``index``, ready for ``imshow``.

    ``volume`` is ``(S, S, S)`` or ``(..., S, S, S)`` (a channel axis is kept in front), numpy or torch, in
    this module's axes (0: left to right, 1: posterior to anterior, 2: inferior to superior). ``index`` is
    None (the centre), an int (the same index on every axis) or ``(i, j, k)``: the sagittal slice is at
    ``i``, the coronal at ``j``, the axial at ``k`` (e.g. a case's lesion ``centre``). The slices are shown
    in the radiological convention: anterior (axial) or superior (coronal, sagittal) at the top, the
    patient's right on the image's left, anterior on the left of the sagittal slice.
    """
    v = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    if v.ndim < 3:
        raise ValueError(f"volume must have at least 3 dimensions, got shape {v.shape}")
    shape = v.shape[-3:]
    if index is None:
        index = tuple(n // 2 for n in shape)
    elif np.ndim(index) == 0:
        index = (int(index),) * 3
    index = tuple(int(i) for i in index)
    if len(index) != 3 or not all(0 <= i < n for i, n in zip(index, shape)):
        raise ValueError(f"index must be an int or 3 ints within the volume's shape {shape}, got {index!r}")
    i, j, k = index
    axial = np.swapaxes(v[..., ::-1, :, k], -1, -2)[..., ::-1, :]  # rows anterior->posterior, cols right->left
    coronal = np.swapaxes(v[..., ::-1, j, :], -1, -2)[..., ::-1, :]  # rows superior->inferior
    sagittal = np.swapaxes(v[..., i, ::-1, :], -1, -2)[..., ::-1, :]  # rows superior->inferior, anterior left
    return tuple(np.ascontiguousarray(s) for s in (axial, coronal, sagittal))
