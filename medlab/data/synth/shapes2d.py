"""Building blocks of the synthetic 2D slices of chapter 5 (kidney CT, cardiac MR, mammograms): a pixel
grid in crop units, irregular blobs (radial harmonics: round, not elongated), soft edges, smooth noise,
and a Dataset of fixed crops with exact masks.

Coordinates are *crop units*: the crop spans [-1, 1] on both axes, rows growing downwards; one crop
unit is ``S / 2`` pixels, so a specification renders the same anatomy at any image size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

MIN_SIZE = 16


@lru_cache(maxsize=8)
def grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an ``n`` x ``n`` crop in crop units: rows ``yy``, columns ``xx``."""
    u = ((2 * np.arange(n) + 1) / n - 1).astype(np.float32)
    yy, xx = np.meshgrid(u, u, indexing="ij")
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


@dataclass(frozen=True)
class Blob:
    """A star-shaped region: centre ``(y, x)``, radii ``(ry, rx)`` rotated by ``angle`` (radians), and a
    boundary radius modulated by ``1 + sum_k a_k cos(k phi + p_k)`` (``harmonics`` as ``(k, a_k, p_k)``)."""

    y: float
    x: float
    ry: float
    rx: float
    angle: float = 0.0
    harmonics: tuple[tuple[int, float, float], ...] = ()

    def ratio(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """The normalised radius of every pixel: < 1 inside, 1 on the boundary, > 1 outside."""
        dy, dx = yy - self.y, xx - self.x
        c, s = np.cos(self.angle), np.sin(self.angle)
        u, v = c * dx + s * dy, -s * dx + c * dy
        rho = np.sqrt((u / self.rx) ** 2 + (v / self.ry) ** 2)
        if self.harmonics:
            phi = np.arctan2(v / self.ry, u / self.rx)
            scale = np.ones_like(phi)
            for k, a, p in self.harmonics:
                scale = scale + a * np.cos(k * phi + p)
            rho = rho / scale
        return rho

    def inside(self, yy, xx) -> np.ndarray:
        return self.ratio(yy, xx) <= 1.0

    def soft(self, yy, xx, softness: float) -> np.ndarray:
        """A soft indicator in [0, 1]: the boundary blurred over about ``softness`` crop units."""
        mean_radius = 0.5 * (self.ry + self.rx)
        return _sigmoid((1.0 - self.ratio(yy, xx)) * mean_radius / max(softness, 1e-6))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def random_harmonics(rng: np.random.Generator, amplitude: float, orders=(2, 3, 4)) -> tuple:
    """Radial harmonics of random phases and amplitudes up to ``amplitude`` (an irregular outline)."""
    return tuple((int(k), float(rng.uniform(0, amplitude)), float(rng.uniform(0, 2 * np.pi))) for k in orders)


def smooth_noise(rng: np.random.Generator, n: int, sigma_px: float) -> np.ndarray:
    """White noise smoothed by a Gaussian of ``sigma_px`` pixels, rescaled to zero mean and unit sd."""
    noise = ndimage.gaussian_filter(rng.standard_normal((n, n)).astype(np.float32), sigma_px, mode="reflect")
    return (noise - noise.mean()) / (noise.std() + 1e-8)


def check_size(image_size: Any) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < MIN_SIZE:
        raise ValueError(f"image_size must be an integer of at least {MIN_SIZE}, got {image_size!r}")
    return int(image_size)


@dataclass
class SyntheticSlices(Dataset):
    """Synthetic crops with exact masks: ``(image, mask)`` with ``image`` float32 (1, S, S) in [0, 1]
    and ``mask`` int64 (S, S), 1 on the target. ``labels`` keeps every structure the generator drew
    (``label_names``), ``cases`` what each crop was drawn with."""

    images: np.ndarray  # (N, S, S) float32 in [0, 1]
    masks: np.ndarray  # (N, S, S) uint8 in {0, 1}
    labels: np.ndarray  # (N, S, S) uint8
    label_names: tuple[str, ...]
    cases: list[dict]
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} item(s)")
        return torch.from_numpy(self.images[index][None].copy()), torch.from_numpy(self.masks[index].astype(np.int64))

    @property
    def info(self) -> dict:
        fraction = float(self.masks.mean()) if len(self) else 0.0
        return {"kind": "synthetic", **self.meta, "n": len(self), "target_fraction": round(fraction, 4)}
