"""Axial 2D slices of BraTS (the 2018 training release, or any release chapter 3's reader accepts), chosen,
resized and scaled as the preprocessing of TC-MGAN's official code does (``generate_data.py``, read for
the method only), for chapter 7.

The cases are found and checked by chapter 3's reader (:func:`medlab.data.formats.brats.find_cases`,
:func:`~medlab.data.formats.brats.check_case`: every case needs its four modalities and the
segmentation, in the ``HGG/`` + ``LGG/`` or flat layout; errors name the file at fault). Then:

1. **Split by case**, as the code does but with the case names sorted first (the code shuffles the
   unsorted output of ``glob``, so its split depends on the file system): the sorted cases are permuted
   by ``numpy.random.default_rng(seed)`` (``seed=10``, the code's ``random.seed(10)``); the first 85 of
   every 285 (rounded) are ``test``, the next 100 of 285 train the GAN and the segmentors (the code's
   "gan" cases, our ``train`` split), the rest train the downstream segmentor (the code's "train" cases,
   our ``val`` split). On BraTS 2018 (285 cases) that is the code's 85 / 100 / 100.
2. **Slices**: every axial slice (last voxel axis) on which every modality has more than
   ``min_pixels`` non-zero pixels: 2000 of a 240 x 240 slice in the code, scaled to the slice's area
   otherwise (fixtures). No tumour is required. Slices are taken from the top down (the code's order).
3. **Resize** each slice to ``size`` x ``size`` by area averaging (``torch.nn.functional.interpolate``
   with ``mode="area"``; the code uses OpenCV's ``INTER_AREA`` to 128 x 128, which averages exactly the
   same pixels when the ratio is an integer and nearly the same otherwise).
4. **Scale** (:func:`scale_slice`): each modality divided by its maximum over the slice, giving [0, 1],
   then mapped to [-1, 1] as the code's loader does (``(x - 0.5) / 0.5``); the background is -1.
5. **Label**: the whole tumour (BraTS label != 0), resized the same way and thresholded at 0.5.

Items are ``(image, mask)``: a float32 ``(4, S, S)`` tensor (channels :data:`MODALITIES`) and an int64
``(S, S)`` mask (0/1), as the synthetic look-alike (:mod:`medlab.data.synth.brain_slices`) gives them.
Slices are read at construction and kept as float16 (100 cases at 64 x 64 take about 100 MB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medlab.data.constants import MODALITIES
from medlab.data.formats.brats import DOCS, KINDS, SEG, Case, _check_consistent, _data, _open, check_case, find_cases, labels_to_indices

SPLITS = ("train", "val", "test")
OFFICIAL_CASES = 285
OFFICIAL_TEST, OFFICIAL_GAN = 85, 100  # of 285: test cases, then the GAN's ("train" here); the rest: "val"
OFFICIAL_SIDE, OFFICIAL_MIN_PIXELS = 240, 2000
SPLIT_SEED = 10
MIN_SIZE = 8


def scale_slice(image: np.ndarray) -> np.ndarray:
    """TC-MGAN's scaling of one slice ``(C, H, W)`` of non-negative signal: each channel divided by its
    maximum (an all-zero channel stays 0), then ``(x - 0.5) / 0.5``, giving [-1, 1] with the background -1."""
    image = np.asarray(image, dtype=np.float32)
    peak = image.reshape(len(image), -1).max(1)
    scaled = image / np.where(peak > 0, peak, 1.0)[:, None, None]
    return (scaled - 0.5) / 0.5


def split_cases(cases: list[Case], seed: int = SPLIT_SEED) -> dict[str, list[Case]]:
    """The code's case split on the sorted cases (see the module's docstring): test, then train (the
    GAN's), then val (the downstream segmentor's), each in name order. Needs at least 3 cases."""
    ordered = sorted(cases, key=lambda c: c.name)
    n = len(ordered)
    if n < 3:
        raise ValueError(f"{n} BraTS case(s) cannot be split into test, train and val: at least 3 are needed")
    n_test = min(max(1, int(np.floor(OFFICIAL_TEST / OFFICIAL_CASES * n + 0.5))), n - 2)
    n_gan = min(max(1, int(np.floor(OFFICIAL_GAN / OFFICIAL_CASES * n + 0.5))), n - n_test - 1)
    order = np.random.default_rng(seed).permutation(n)
    parts = {"test": order[:n_test], "train": order[n_test : n_test + n_gan], "val": order[n_test + n_gan :]}
    return {k: sorted((ordered[i] for i in v), key=lambda c: c.name) for k, v in parts.items()}


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    """``(C, H, W)`` -> ``(C, size, size)`` by area averaging."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    return F.interpolate(tensor, size=(size, size), mode="area")[0].numpy()


def read_slices(case: Case, size: int = 64, min_pixels: int | None = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The chosen slices of ``case``: images float32 ``(K, 4, size, size)`` scaled by :func:`scale_slice`,
    whole-tumour masks bool ``(K, size, size)`` and the axial indices (top down). ``min_pixels`` defaults
    to 2000 per 240 x 240 pixels of the volume's axial slice. Reading errors name the file."""
    images = {kind: _open(case.files[kind]) for kind in KINDS}
    _check_consistent(case, images)
    volume = np.stack([_data(images[kind], case.files[kind]) for kind in MODALITIES])  # (4, X, Y, Z)
    whole = labels_to_indices(_data(images[SEG], case.files[SEG]), case.files[SEG]) > 0
    area = volume.shape[1] * volume.shape[2]
    threshold = OFFICIAL_MIN_PIXELS * area / OFFICIAL_SIDE**2 if min_pixels is None else min_pixels
    counts = (volume != 0).sum((1, 2))  # (4, Z)
    keep = [k for k in range(volume.shape[3] - 1, -1, -1) if (counts[:, k] > threshold).all()]
    out = np.empty((len(keep), 4, size, size), np.float32)
    masks = np.empty((len(keep), size, size), bool)
    for i, k in enumerate(keep):
        out[i] = scale_slice(_resize(volume[..., k], size))
        masks[i] = _resize(whole[None, :, :, k].astype(np.float32), size)[0] > 0.5
    return out, masks, keep


class BraTSSlices(Dataset):
    """One split (``train``: the GAN's cases, ``val``: the downstream segmentor's, ``test``) of BraTS's
    axial slices, chosen and scaled as TC-MGAN's code does (see the module's docstring): ``(image, mask)``
    items; ``images`` float16 ``(N, 4, S, S)``, ``masks`` bool ``(N, S, S)``, ``slice_cases`` and
    ``slice_levels`` say where each slice comes from. ``max_cases`` (optional) reads only the first cases
    of the split (quick looks)."""

    classes = ("background", "whole tumour")
    modalities = MODALITIES
    title = "BraTS slices"

    def __init__(
        self, root: str | Path, split: str = "train", size: int = 64, seed: int = SPLIT_SEED, min_pixels: int | None = None,
        max_cases: int | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
            raise ValueError(f"size must be an integer of at least {MIN_SIZE}, got size={size!r}")
        root = Path(root).expanduser()
        all_cases = find_cases(root)
        self.cases = split_cases(all_cases, seed)[split][: max_cases or None]
        for case in self.cases:
            check_case(case)
        parts = [read_slices(case, size, min_pixels) for case in self.cases]
        self.images = np.concatenate([p[0] for p in parts]).astype(np.float16)
        self.masks = np.concatenate([p[1] for p in parts])
        self.slice_cases = [case.name for case, p in zip(self.cases, parts) for _ in p[2]]
        self.slice_levels = [k for p in parts for k in p[2]]
        if len(self.images) == 0:
            raise ValueError(
                f"no slice of the {len(self.cases)} {split} case(s) under {root} has more than the minimum of non-zero "
                f"pixels in every modality (min_pixels={min_pixels}, default 2000 per 240 x 240); {DOCS}"
            )
        self.root, self.split, self.size, self.seed = root, split, size, seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} slice(s)")
        return torch.from_numpy(self.images[index].astype(np.float32)), torch.from_numpy(self.masks[index].astype(np.int64))

    @property
    def info(self) -> dict:
        return {
            "kind": "real", "name": "BraTS slices", "path": str(self.root), "split": self.split, "n": len(self),
            "size": self.size, "seed": self.seed, "n_cases": len(self.cases), "cases": [c.name for c in self.cases],
            "tumour_slices": int(self.masks.any((1, 2)).sum()),
        }
