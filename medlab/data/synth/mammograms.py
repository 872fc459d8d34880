"""Synthetic mammogram crops around a breast mass, with exact mass masks: the look-alike of the INbreast
mass regions of chapter 5 (Crossover-Net's "X-ray breast mass" task).

The target, a mass, is roundish or lobulated (not elongated); how visible its boundary is depends on
its *margin*, the property radiologists grade it by (BI-RADS), and it sits in fibroglandular tissue
that is about as dense as it is.

**What is drawn** (crop units: the crop spans [-1, 1], one unit is ``S / 2`` pixels), brightness is
X-ray attenuation scaled to [0, 1]:

* *Breast parenchyma*: fat (0.2-0.3) with fibroglandular tissue (up to +0.25) as a cloudy random field
  (smooth noise at two scales, softly thresholded), crossed by thin bright curvilinear structures
  (Cooper's ligaments, vessels, ducts).
* *Mass* (the target): radius 0.3-0.5 (the crop is centred on it with a jitter), its outline irregular
  (radial harmonics 2-4 of up to 12 %), denser than the surrounding fat by ``mass_contrast`` (0.12-0.25)
  with a smooth dome profile, and one of four margins, drawn with equal probability:
  *circumscribed* (a sharp edge), *microlobulated* (harmonics 5-7 added and a softer edge),
  *ill-defined* (the edge blurred over 0.15) and *spiculated* (a soft edge with 6-14 thin bright
  spicules radiating out, which are not part of the mass outline, as INbreast draws it).
  *Obscured* margins arise by themselves where fibroglandular tissue overlaps the mass.
* *Similar tissue*: one or two dense islands of fibroglandular tissue of the mass's brightness nearby.
* *Detector*: a blur of 0.8 pixel and noise of sd 0.01-0.03.

``labels``: 0 background, 1 mass, 2 dense island, 3 spicules.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medlab.data.splits import require_n, split_seed
from medlab.data.synth.shapes2d import Blob, SyntheticSlices, check_size, grid, random_harmonics, smooth_noise

LABEL_NAMES = ("background", "mass", "dense island", "spicules")
MARGINS = ("circumscribed", "microlobulated", "ill-defined", "spiculated")


def _line_mask(yy, xx, start, direction, length, width) -> np.ndarray:
    """Pixels within ``width`` of the segment from ``start`` along unit ``direction`` for ``length``."""
    dy, dx = yy - start[0], xx - start[1]
    t = np.clip(dy * direction[0] + dx * direction[1], 0, length)
    distance = np.hypot(dy - t * direction[0], dx - t * direction[1])
    return distance <= width


def render_mammogram(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """One crop: image (S, S) float32 in [0, 1], label map (S, S) uint8, and what was drawn."""
    yy, xx = grid(size)
    px = 2.0 / size
    labels = np.zeros((size, size), dtype=np.uint8)
    fat = rng.uniform(0.2, 0.3)
    cloud = 0.6 * smooth_noise(rng, size, size / 10) + 0.4 * smooth_noise(rng, size, size / 25)
    gland = 0.25 / (1 + np.exp(-3 * (cloud - rng.uniform(-0.3, 0.6))))
    image = fat + gland
    for _ in range(rng.integers(3, 7)):  # curvilinear structures
        a = rng.uniform(0, np.pi)
        start = rng.uniform(-1.2, 1.2, size=2)
        line = _line_mask(yy, xx, start, (np.sin(a), np.cos(a)), rng.uniform(0.8, 2.5), rng.uniform(0.6, 1.2) * px)
        image = image + line * rng.uniform(0.04, 0.1)

    contrast = rng.uniform(0.12, 0.25)
    for _ in range(rng.integers(1, 3)):  # dense islands as bright as a mass
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0.55, 0.95)
        island = Blob(d * np.sin(a), d * np.cos(a), *rng.uniform(0.15, 0.3, size=2), rng.uniform(0, np.pi), random_harmonics(rng, 0.2))
        weight = island.soft(yy, xx, 0.08)
        image = image + weight * contrast * rng.uniform(0.7, 1.0)
        labels[island.inside(yy, xx)] = 2

    margin = MARGINS[rng.integers(len(MARGINS))]
    radius = rng.uniform(0.3, 0.5)
    harmonics = random_harmonics(rng, 0.12)
    if margin == "microlobulated":
        harmonics = harmonics + random_harmonics(rng, 0.05, orders=(5, 6, 7))
    aspect = rng.uniform(0.88, 1.12)
    cy, cx = rng.normal(0, 0.08, size=2)
    mass = Blob(cy, cx, radius * aspect, radius / aspect, rng.uniform(0, np.pi), harmonics)
    softness = {"circumscribed": px, "microlobulated": 0.05, "ill-defined": 0.15, "spiculated": 0.06}[margin]
    dome = np.clip(1.0 - mass.ratio(yy, xx) ** 2, 0, 1) ** 0.5
    image = image + contrast * mass.soft(yy, xx, softness) * (0.75 + 0.25 * dome)
    if margin == "spiculated":
        for _ in range(rng.integers(6, 15)):
            a = rng.uniform(0, 2 * np.pi)
            start = (cy + 0.85 * radius * np.sin(a), cx + 0.85 * radius * np.cos(a))
            spicule = _line_mask(yy, xx, start, (np.sin(a), np.cos(a)), rng.uniform(0.25, 0.6), rng.uniform(0.5, 1.0) * px)
            image = image + spicule * contrast * 0.6
            labels[spicule] = 3
    target = mass.inside(yy, xx)
    labels[target] = 1

    image = ndimage.gaussian_filter(image.astype(np.float32), 0.8) + rng.uniform(0.01, 0.03) * rng.standard_normal((size, size))
    case = {"margin": margin, "radius_px": float(radius * size / 2), "contrast": float(contrast)}
    return np.clip(image, 0, 1).astype(np.float32), labels, case


def mammogram_slices(n: int, image_size: int = 64, seed: int = 0, title: str = "synthetic mammogram mass crops") -> SyntheticSlices:
    """``n`` crops drawn from ``seed`` (crop ``i`` from its own stream); the target is the mass."""
    size = check_size(image_size)
    drawn = [render_mammogram(size, np.random.default_rng([seed, i])) for i in range(n)]
    images = np.stack([d[0] for d in drawn]) if n else np.zeros((0, size, size), np.float32)
    labels = np.stack([d[1] for d in drawn]) if n else np.zeros((0, size, size), np.uint8)
    return SyntheticSlices(
        images=images, masks=(labels == 1).astype(np.uint8), labels=labels, label_names=LABEL_NAMES,
        cases=[d[2] for d in drawn], meta={"name": title, "target": "mass", "image_size": size, "seed": seed},
    )


def inbreast_lookalike(split: str, n: int | None = None, image_size: int = 64, seed: int = 0) -> SyntheticSlices:
    """The ``split`` of the synthetic INbreast look-alike: ``n`` crops centred on a mass."""
    n = require_n(n, "the synthetic INbreast look-alike needs n, the number of crops")
    data = mammogram_slices(n, image_size, split_seed(seed, split))
    data.meta["split"] = split
    return data
