"""Synthetic contrast-enhanced CT crops around a kidney with a renal tumour, in Hounsfield units, with
exact tumour masks: the look-alike of the KiTS19 region-of-interest slices of chapter 5 (Crossover-Net).

What the chapter needs from it is what Crossover-Net is about: a target that is *not elongated* (the
tumour: a roundish, irregular blob), whose boundary is *weak or ambiguous* (it grows out of the kidney
and enhances almost like it), next to *similar-looking tissue* (the kidney itself, bowel loops and the
psoas muscle). Every crop is drawn in HU and then windowed like the real reader does.

**Anatomy** (crop units: the crop spans [-1, 1], one unit is ``S / 2`` pixels):

* *Perirenal fat* around everything, about -100 HU with a faint texture.
* *Kidney*: an ellipse (semi-axes 0.55-0.75 by 0.30-0.40), rotated up to 40 degrees, with the hilum, a
  notch of renal sinus fat (-60 HU) on its medial side. In the corticomedullary phase (half of the
  crops) the cortex, a rim of about 0.08, enhances to 160-200 HU and the medullary pyramids stay at
  60-100 HU; in the nephrographic phase the parenchyma is homogeneous, 140-180 HU.
* *Renal vessels*: a thick bright tube (180-240 HU) leaving the hilum medially.
* *Tumour* (the target): a blob of radius 0.16-0.36 with an irregular outline (radial harmonics 2-4 of
  up to 10 %, so its aspect ratio stays near 1), centred on the kidney's outline at a random angle and
  shifted inwards or outwards by up to 0.6 radius (endophytic to exophytic); it replaces the kidney
  tissue it overlaps. It enhances heterogeneously: a mean of ``tumour_hu`` (60-150 HU: renal cell
  carcinoma enhances less than cortex, sometimes as much as medulla) with a smooth texture of 15 HU,
  and in 40 % of crops a necrotic core (10-40 HU). Its edge is softened over ``edge_softness`` crop
  units (partial volume), which is what makes its boundary with the kidney weak.
* *Neighbours*: the psoas muscle (40-60 HU), the liver or spleen (55-70 HU) entering from one corner,
  and one to three bowel loops (20-130 HU: some of them as bright as the tumour; some with gas, -700,
  or oral contrast, 250) that may touch the kidney: tumour-like blobs that are not tumour.
* *Scanner*: Gaussian noise of 8-18 HU and a blur of 0.6 pixel (reconstruction kernel).

Images are windowed to [-79, 304] HU (the window several KiTS19 pipelines use) and scaled to [0, 1];
``dataset.hu`` keeps the HU values. ``labels`` holds 0 background, 1 kidney, 2 tumour, 3 bowel,
4 psoas, 5 liver or spleen, 6 vessels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medlab.data.splits import require_n, split_seed
from medlab.data.synth.shapes2d import Blob, SyntheticSlices, check_size, grid, random_harmonics, smooth_noise

WINDOW_HU = (-79.0, 304.0)
LABEL_NAMES = ("background", "kidney", "tumour", "bowel", "psoas", "liver or spleen", "vessels")
TUMOUR_HU = (60.0, 150.0)


def window(hu: np.ndarray, low: float = WINDOW_HU[0], high: float = WINDOW_HU[1]) -> np.ndarray:
    """HU clipped to ``[low, high]`` and scaled to [0, 1] (float32)."""
    return ((np.clip(hu, low, high) - low) / (high - low)).astype(np.float32)


def render_kidney_ct(
    size: int, rng: np.random.Generator, tumour_hu: tuple[float, float] = TUMOUR_HU, edge_softness: float = 0.06,
    noise_hu: tuple[float, float] = (8.0, 18.0),
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One crop: HU image (S, S) float32, label map (S, S) uint8 (see :data:`LABEL_NAMES`), and what was
    drawn."""
    yy, xx = grid(size)
    px = 2.0 / size  # one pixel in crop units
    labels = np.zeros((size, size), dtype=np.uint8)
    hu = -100.0 + 8.0 * smooth_noise(rng, size, 2.0)

    side = rng.choice([-1.0, 1.0])  # the hilum faces medially: -1 left, +1 right
    corner = (rng.choice([-1.0, 1.0]), -side)
    organ = Blob(corner[0] * 1.25, corner[1] * 1.25, rng.uniform(0.55, 0.8), rng.uniform(0.55, 0.8), rng.uniform(0, np.pi))
    inside = organ.inside(yy, xx)
    hu = np.where(inside, rng.uniform(55, 70) + 6 * smooth_noise(rng, size, 3.0), hu)
    labels[inside] = 5
    psoas = Blob(rng.uniform(0.3, 0.9), side * rng.uniform(0.75, 1.0), rng.uniform(0.25, 0.4), rng.uniform(0.18, 0.3), rng.uniform(-0.5, 0.5))
    inside = psoas.inside(yy, xx)
    hu = np.where(inside, rng.uniform(40, 60) + 5 * smooth_noise(rng, size, 2.0), hu)
    labels[inside] = 4

    cy, cx = rng.normal(0, 0.08, size=2)
    angle = rng.uniform(-0.7, 0.7)
    kidney = Blob(cy, cx, rng.uniform(0.55, 0.75), rng.uniform(0.30, 0.40), angle + np.pi / 2, random_harmonics(rng, 0.03))
    hilum = Blob(cy, cx + side * 0.33, 0.22, 0.16, angle + np.pi / 2)
    vessel = Blob(cy + rng.normal(0, 0.05), cx + side * 0.62, 0.07, 0.35, rng.uniform(-0.3, 0.3))
    bowel = []
    for _ in range(rng.integers(1, 4)):
        a = rng.uniform(0, 2 * np.pi)
        reach = rng.uniform(0.55, 0.95)
        bowel.append((Blob(cy + reach * np.sin(a), cx + reach * np.cos(a), *rng.uniform(0.12, 0.26, size=2), 0.0, random_harmonics(rng, 0.1)), rng.random()))
    for blob, kind in bowel:
        inside = blob.inside(yy, xx)
        wall = rng.uniform(20, 130) + 10 * smooth_noise(rng, size, 1.5)
        content = np.where(kind < 0.2, -700.0, np.where(kind < 0.35, 250.0, wall))
        core = Blob(blob.y, blob.x, blob.ry * 0.55, blob.rx * 0.55).inside(yy, xx)
        hu = np.where(inside, np.where(core, content, wall), hu)
        labels[inside] = 3

    phase = "corticomedullary" if rng.random() < 0.5 else "nephrographic"
    in_kidney = kidney.inside(yy, xx) & ~hilum.inside(yy, xx)
    depth = 1.0 - kidney.ratio(yy, xx)  # 0 on the outline, up to 1 in the centre
    if phase == "corticomedullary":
        cortex, medulla = rng.uniform(160, 200), rng.uniform(60, 100)
        pyramids = smooth_noise(rng, size, 1.5) > 0.3
        parenchyma = np.where((depth > 0.2) & pyramids, medulla, cortex)
    else:
        parenchyma = np.full((size, size), rng.uniform(140, 180))
    parenchyma = parenchyma + 8 * smooth_noise(rng, size, 1.0)
    hu = np.where(in_kidney, parenchyma, hu)
    hu = np.where(hilum.inside(yy, xx) & kidney.inside(yy, xx), -60.0, hu)
    labels[in_kidney] = 1
    in_vessel = vessel.inside(yy, xx) & ~in_kidney
    hu = np.where(in_vessel, rng.uniform(180, 240), hu)
    labels[in_vessel] = 6

    # the tumour: centred on the kidney's outline, pushed inwards or outwards, not elongated
    t = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(angle + np.pi / 2), np.sin(angle + np.pi / 2)
    u, v = kidney.rx * np.cos(t), kidney.ry * np.sin(t)
    by, bx = cy + s * u + c * v, cx + c * u - s * v  # a point of the kidney's outline
    radius = rng.uniform(0.16, 0.36)
    shift = rng.uniform(-0.6, 0.6) * radius
    norm = np.hypot(by - cy, bx - cx) + 1e-6
    ty, tx = by + shift * (by - cy) / norm, bx + shift * (bx - cx) / norm
    aspect = rng.uniform(0.88, 1.12)
    tumour = Blob(ty, tx, radius * aspect, radius / aspect, rng.uniform(0, np.pi), random_harmonics(rng, 0.10))
    mean = rng.uniform(*tumour_hu)
    texture = mean + 15 * smooth_noise(rng, size, 1.2)
    necrosis = rng.random() < 0.4
    if necrosis:
        core = Blob(ty, tx, radius * 0.45, radius * 0.45, 0.0, random_harmonics(rng, 0.15)).soft(yy, xx, 2 * px)
        texture = texture * (1 - core) + rng.uniform(10, 40) * core
    weight = tumour.soft(yy, xx, max(edge_softness, px))
    hu = hu * (1 - weight) + texture * weight
    target = tumour.inside(yy, xx)
    labels[target] = 2

    hu = ndimage.gaussian_filter(hu.astype(np.float32), 0.6) + rng.uniform(*noise_hu) * rng.standard_normal((size, size))
    case = {
        "phase": phase, "tumour_hu": float(mean), "tumour_radius_px": float(radius * size / 2),
        "exophytic": float(shift / radius), "necrosis": bool(necrosis), "bowel_loops": len(bowel),
    }
    return hu.astype(np.float32), labels, case


def kidney_ct_slices(
    n: int, image_size: int = 64, seed: int = 0, tumour_hu: tuple[float, float] = TUMOUR_HU,
    edge_softness: float = 0.06, title: str = "synthetic kidney-tumour CT",
) -> SyntheticSlices:
    """``n`` crops drawn from ``seed`` (crop ``i`` from its own stream), windowed to [0, 1]."""
    size = check_size(image_size)
    hus, labels, cases = [], [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        hu, label, case = render_kidney_ct(size, rng, tuple(tumour_hu), edge_softness)
        hus.append(hu)
        labels.append(label)
        cases.append(case)
    hu = np.stack(hus) if n else np.zeros((0, size, size), np.float32)
    label = np.stack(labels) if n else np.zeros((0, size, size), np.uint8)
    data = SyntheticSlices(
        images=window(hu), masks=(label == 2).astype(np.uint8), labels=label, label_names=LABEL_NAMES, cases=cases,
        meta={"name": title, "target": "tumour", "image_size": size, "seed": seed, "window_hu": list(WINDOW_HU)},
    )
    data.hu = hu
    return data


def kits19_lookalike(
    split: str, n: int | None = None, image_size: int = 64, seed: int = 0,
    tumour_hu: tuple[float, float] = TUMOUR_HU, edge_softness: float = 0.06,
) -> SyntheticSlices:
    """The ``split`` of the synthetic KiTS19 look-alike: ``n`` tumour-bearing kidney crops."""
    n = require_n(n, "the synthetic KiTS19 look-alike needs n, the number of crops")
    data = kidney_ct_slices(n, image_size, split_seed(seed, split), tumour_hu, edge_softness)
    data.meta["split"] = split
    return data
