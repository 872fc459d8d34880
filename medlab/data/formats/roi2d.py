"""Helpers of the 2D region-of-interest readers of chapter 5 (KiTS19, ACDC, INbreast): a square box
around a structure, cropping with a fill value, resizing an image and its mask to a fixed size,
splitting cases by name, and the Dataset of crops they return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medlab.data.formats.common import item_index

MIN_SIZE = 16


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` (exclusive ends) of the nonzero pixels of a 2D mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        raise ValueError("the mask is empty: no box around it")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def square_box(box: tuple[int, int, int, int], margin: float, min_side: int = 1) -> tuple[int, int, int, int]:
    """The square around ``box`` (same centre), ``margin`` times its longer side and at least ``min_side``."""
    top, left, bottom, right = box
    side = max(int(np.ceil(max(bottom - top, right - left) * margin)), min_side)
    cy, cx = (top + bottom) / 2, (left + right) / 2
    top, left = int(np.floor(cy - side / 2)), int(np.floor(cx - side / 2))
    return top, left, top + side, left + side


def crop(array: np.ndarray, box: tuple[int, int, int, int], fill: float) -> np.ndarray:
    """``array[top:bottom, left:right]`` of a 2D array, ``fill`` where the box leaves the array."""
    top, left, bottom, right = box
    out = np.full((bottom - top, right - left), fill, dtype=array.dtype)
    h, w = array.shape
    t, l, b, r = max(top, 0), max(left, 0), min(bottom, h), min(right, w)
    if t < b and l < r:
        out[t - top : b - top, l - left : r - left] = array[t:b, l:r]
    return out


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """An image (float, bilinear with antialiasing) and its binary mask (nearest pixel centre) resized
    to ``size`` x ``size``."""
    image_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    mask_t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    antialias = image.shape[0] > size
    resized = F.interpolate(image_t, size=(size, size), mode="bilinear", align_corners=False, antialias=antialias)
    labels = F.interpolate(mask_t, size=(size, size), mode="nearest-exact")
    return resized[0, 0].numpy(), labels[0, 0].numpy().astype(np.uint8)


def split_names(names: Sequence[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """Divide case names into train, val and test: the sorted names permuted by
    ``numpy.random.default_rng(seed)``; the first ``round(test_fraction * n)`` go to test, the next
    ``round(val_fraction * n)`` to val, the rest to train. Each part is returned sorted."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be below 1, got {val_fraction!r} + {test_fraction!r}")
    names = sorted(names)
    n = len(names)
    order = np.random.default_rng(seed).permutation(n)
    n_test, n_val = int(np.floor(test_fraction * n + 0.5)), int(np.floor(val_fraction * n + 0.5))
    parts = {
        "test": [names[i] for i in order[:n_test]],
        "val": [names[i] for i in order[n_test : n_test + n_val]],
        "train": [names[i] for i in order[n_test + n_val :]],
    }
    return {k: sorted(v) for k, v in parts.items()}


def check_split(split: str, splits: Sequence[str] = ("train", "val", "test")) -> str:
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(splits)}")
    return split


def check_size(image_size: Any) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < MIN_SIZE:
        raise ValueError(f"image_size must be an integer of at least {MIN_SIZE}, got {image_size!r}")
    return int(image_size)


@dataclass
class RoiCrops(Dataset):
    """Region-of-interest crops of a real dataset: ``(image, mask)`` with ``image`` float32 (1, S, S) in
    [0, 1] and ``mask`` int64 (S, S), 1 on the target. ``sources`` says where each crop comes from."""

    images: np.ndarray
    masks: np.ndarray
    sources: list[dict]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        i = item_index(index, len(self))
        return torch.from_numpy(self.images[i][None].copy()), torch.from_numpy(self.masks[i].astype(np.int64))

    @property
    def info(self) -> dict:
        return {"kind": "real", **self.meta, "n": len(self)}


def stack_crops(images: list[np.ndarray], masks: list[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    if not images:
        return np.zeros((0, size, size), np.float32), np.zeros((0, size, size), np.uint8)
    return np.stack(images).astype(np.float32), np.stack(masks).astype(np.uint8)
