"""Synthetic short-axis cine-MR crops around the left ventricle, with exact myocardium masks: the
look-alike of the ACDC slices of chapter 5 (Crossover-Net's "MR cardiac" task).

The target, the left-ventricle myocardium, is a ring (not elongated), its inner boundary is ambiguous
(papillary muscles and trabeculations inside the bright blood pool are as dark as the myocardium but
belong to the cavity, as ACDC draws it), and its outer boundary runs next to similar-looking tissue
(the right ventricle's thin free wall, the liver, the chest wall) and partly against dark lung.

**Anatomy** (crop units: the crop spans [-1, 1], one unit is ``S / 2`` pixels), intensities of a
balanced steady-state free-precession (SSFP) sequence scaled to [0, 1]:

* *Left-ventricle cavity*: an ellipse of radius 0.16-0.30 (smaller at end systole, drawn in a third of
  the crops), eccentricity up to 10 %, bright blood (0.75-0.9) with a smooth flow inhomogeneity.
* *Myocardium* (the target): the band around the cavity, 0.07-0.12 thick (up to 0.17 at end systole),
  its outer outline irregular (radial harmonics 2-4 of up to 6 %), grey (0.22-0.32).
* *Papillary muscles and trabeculations*: two blobs of radius 0.04-0.07 against the wall inside the
  cavity and a few small specks along it, myocardium-dark, labelled cavity.
* *Right ventricle*: a crescent of blood (0.7-0.85) against the septum on one side, its free wall a
  thin grey line of myocardial intensity (not the target).
* *Surroundings*: lung (0.03-0.08) on one side, the liver (0.25-0.35) entering from below, chest wall
  (0.3-0.4), and epicardial fat (0.8-0.9) in patches around the heart.
* *Scanner*: a smooth multiplicative bias field of 10 %, a blur of 0.7 pixel and Rician noise
  (the magnitude of a complex Gaussian of sd 0.02-0.05).

``labels`` follows ACDC: 0 background, 1 right-ventricle cavity, 2 myocardium, 3 left-ventricle cavity.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medlab.data.splits import require_n, split_seed
from medlab.data.synth.shapes2d import Blob, SyntheticSlices, check_size, grid, random_harmonics, smooth_noise

LABEL_NAMES = ("background", "right-ventricle cavity", "myocardium", "left-ventricle cavity")


def render_cardiac_mr(size: int, rng: np.random.Generator, noise: tuple[float, float] = (0.02, 0.05)) -> tuple[np.ndarray, np.ndarray, dict]:
    """One crop: image (S, S) float32 in [0, 1], ACDC label map (S, S) uint8, and what was drawn."""
    yy, xx = grid(size)
    labels = np.zeros((size, size), dtype=np.uint8)
    image = rng.uniform(0.3, 0.4) + 0.03 * smooth_noise(rng, size, 3.0)  # chest wall and mediastinum
    lung_side = rng.choice([-1.0, 1.0])
    lung = Blob(rng.uniform(-0.6, 0.0), lung_side * 1.2, rng.uniform(0.7, 1.0), rng.uniform(0.45, 0.7), rng.uniform(0, np.pi))
    image = np.where(lung.inside(yy, xx), rng.uniform(0.03, 0.08), image)
    liver = Blob(1.25, rng.uniform(-0.4, 0.4), rng.uniform(0.45, 0.65), rng.uniform(0.8, 1.1), rng.uniform(-0.3, 0.3))
    image = np.where(liver.inside(yy, xx), rng.uniform(0.25, 0.35) + 0.02 * smooth_noise(rng, size, 2.0), image)

    systole = rng.random() < 1 / 3
    cy, cx = rng.normal(0, 0.06, size=2)
    cavity_r = rng.uniform(0.16, 0.22) if systole else rng.uniform(0.2, 0.3)
    thickness = rng.uniform(0.1, 0.17) if systole else rng.uniform(0.07, 0.12)
    angle = rng.uniform(0, np.pi)
    stretch = rng.uniform(0.92, 1.08)
    cavity = Blob(cy, cx, cavity_r * stretch, cavity_r / stretch, angle, random_harmonics(rng, 0.04))
    outer_r = cavity_r + thickness
    wall = Blob(cy, cx, outer_r * stretch, outer_r / stretch, angle, random_harmonics(rng, 0.06))

    # epicardial fat in patches around the heart, then the right ventricle against the septum
    fat = Blob(cy, cx, outer_r * 1.25, outer_r * 1.25, 0.0, random_harmonics(rng, 0.15)).inside(yy, xx) & (smooth_noise(rng, size, 2.5) > 0.4)
    image = np.where(fat, rng.uniform(0.8, 0.9), image)
    rv_angle = rng.uniform(0, 2 * np.pi)
    reach = outer_r + rng.uniform(0.05, 0.15)
    rv = Blob(cy + reach * np.sin(rv_angle), cx + reach * np.cos(rv_angle), rng.uniform(0.22, 0.32), rng.uniform(0.35, 0.5), rv_angle + np.pi / 2)
    rv_outer = Blob(rv.y, rv.x, rv.ry + 0.04, rv.rx + 0.04, rv.angle)
    in_rv_wall = rv_outer.inside(yy, xx) & ~wall.inside(yy, xx)
    image = np.where(in_rv_wall, rng.uniform(0.22, 0.32), image)
    in_rv = rv.inside(yy, xx) & ~wall.inside(yy, xx)
    blood = rng.uniform(0.75, 0.9)
    image = np.where(in_rv, rng.uniform(0.7, 0.85) + 0.03 * smooth_noise(rng, size, 2.0), image)
    labels[in_rv] = 1

    myo_level = rng.uniform(0.22, 0.32)
    in_wall = wall.inside(yy, xx)
    image = np.where(in_wall, myo_level + 0.02 * smooth_noise(rng, size, 1.0), image)
    in_cavity = cavity.inside(yy, xx)
    image = np.where(in_cavity, blood + 0.04 * smooth_noise(rng, size, 2.5), image)
    labels[in_wall] = 2
    labels[in_cavity] = 3
    # papillary muscles and trabeculations: myocardium-dark, inside the cavity (labelled cavity)
    for k in range(2):
        a = rng.uniform(0, 2 * np.pi) if k == 0 else a + rng.uniform(2.0, 3.0)
        d = cavity_r - rng.uniform(0.04, 0.08)
        muscle = Blob(cy + d * np.sin(a), cx + d * np.cos(a), *rng.uniform(0.04, 0.07, size=2))
        image = np.where(muscle.inside(yy, xx) & in_cavity, myo_level + 0.03, image)
    specks = (smooth_noise(rng, size, 0.8) > 1.4) & in_cavity & (cavity.ratio(yy, xx) > 0.8)
    image = np.where(specks, myo_level + 0.05, image)

    bias = 1.0 + 0.1 * smooth_noise(rng, size, size / 4)
    image = ndimage.gaussian_filter((image * bias).astype(np.float32), 0.7)
    sd = rng.uniform(*noise)
    image = np.hypot(image + sd * rng.standard_normal(image.shape), sd * rng.standard_normal(image.shape))
    case = {"phase": "ES" if systole else "ED", "cavity_radius_px": float(cavity_r * size / 2), "thickness_px": float(thickness * size / 2)}
    return np.clip(image, 0, 1).astype(np.float32), labels, case


def cardiac_mr_slices(n: int, image_size: int = 64, seed: int = 0, title: str = "synthetic cine-MR short axis") -> SyntheticSlices:
    """``n`` crops drawn from ``seed`` (crop ``i`` from its own stream); the target is the myocardium."""
    size = check_size(image_size)
    drawn = [render_cardiac_mr(size, np.random.default_rng([seed, i])) for i in range(n)]
    images = np.stack([d[0] for d in drawn]) if n else np.zeros((0, size, size), np.float32)
    labels = np.stack([d[1] for d in drawn]) if n else np.zeros((0, size, size), np.uint8)
    return SyntheticSlices(
        images=images, masks=(labels == 2).astype(np.uint8), labels=labels, label_names=LABEL_NAMES,
        cases=[d[2] for d in drawn], meta={"name": title, "target": "myocardium", "image_size": size, "seed": seed},
    )


def acdc_lookalike(split: str, n: int | None = None, image_size: int = 64, seed: int = 0) -> SyntheticSlices:
    """The ``split`` of the synthetic ACDC look-alike: ``n`` short-axis crops around the left ventricle."""
    n = require_n(n, "the synthetic ACDC look-alike needs n, the number of crops")
    data = cardiac_mr_slices(n, image_size, split_seed(seed, split))
    data.meta["split"] = split
    return data
