"""Synthetic dermoscopy-like images of seven skin-lesion classes with known inter-class similarity.

Each class is a prototype in an eight-dimensional space of visual attributes a dermatologist reads
(pigment, redness, border irregularity, colour variegation, dots and globules, size, scale, vessels).
An image draws its attributes from a Gaussian around its class prototype and renders them on a
random skin background with nuisances (skin tone, illumination, position, orientation, hair, the dark
corners of a dermoscope). Classes whose prototypes are close produce images that look alike, to a
degree the generator knows: :func:`similarity_matrix` is the ground truth a method that learns
inter-class correlations can be checked against.

Class names, their order and their imbalance are ISIC 2018 Task 3's (:mod:`medlab.data.constants`).
:func:`isic2018_lookalike` draws the split the registry's ``load("isic2018", split, n=...)`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from medlab.data.constants import ISIC2018_CLASS_DESCRIPTIONS as CLASS_DESCRIPTIONS  # noqa: F401 (re-exported)
from medlab.data.constants import ISIC2018_CLASSES as CLASSES
from medlab.data.constants import ISIC2018_TRAIN_COUNTS
from medlab.data.splits import require_n, split_seed

ATTRIBUTES = ("pigment", "redness", "irregularity", "variegation", "dots", "size", "scale", "vessels")

# Class prototypes in attribute space (rows follow CLASSES, columns ATTRIBUTES), values in [0, 1].
PROTOTYPES = np.array(
    [
        # pig  red   irr   var   dots  size  scale vess
        [0.80, 0.20, 0.80, 0.80, 0.60, 0.70, 0.10, 0.15],  # MEL: dark, irregular, variegated, large
        [0.65, 0.10, 0.25, 0.30, 0.45, 0.45, 0.05, 0.05],  # NV: brown, regular, symmetric
        [0.30, 0.45, 0.50, 0.40, 0.25, 0.45, 0.25, 0.85],  # BCC: pinkish, arborising vessels
        [0.25, 0.55, 0.55, 0.30, 0.10, 0.40, 0.80, 0.35],  # AKIEC: red, scaly
        [0.55, 0.15, 0.45, 0.45, 0.30, 0.55, 0.65, 0.10],  # BKL: brown, waxy scale
        [0.45, 0.30, 0.25, 0.35, 0.15, 0.25, 0.20, 0.15],  # DF: small, light brown
        [0.10, 0.95, 0.20, 0.20, 0.80, 0.30, 0.00, 0.20],  # VASC: red-purple lacunae
    ]
)


def similarity_matrix(prototypes: np.ndarray = PROTOTYPES, bandwidth: float | None = None) -> np.ndarray:
    """The ground-truth class similarity: a Gaussian kernel of the prototype distances.

    ``S_ij = exp(-||a_i - a_j||^2 / (2 h^2))`` with ``h`` the median distance between prototypes
    (unless given). Any decreasing function of the distance orders the class pairs the same way, and
    the chapter compares matrices by rank, so ``h`` only sets the contrast of the heat map.
    """
    diff = prototypes[:, None, :] - prototypes[None, :, :]
    sq = (diff**2).sum(-1)
    if bandwidth is None:
        bandwidth = float(np.median(np.sqrt(sq[np.triu_indices(len(prototypes), 1)])))
    return np.exp(-sq / (2 * bandwidth**2))


def class_counts(total: int, weights: np.ndarray = ISIC2018_TRAIN_COUNTS, minimum: int = 1) -> np.ndarray:
    """Split ``total`` samples over the classes in the proportions of ``weights`` (each class >= minimum)."""
    if total < minimum * len(weights):
        raise ValueError(f"{total} samples cannot give each of {len(weights)} classes {minimum}")
    raw = weights / weights.sum() * total
    counts = np.maximum(np.floor(raw).astype(int), minimum)
    while counts.sum() > total:
        counts[np.argmax(counts)] -= 1
    remainders = raw - np.floor(raw)
    for i in np.argsort(-remainders):
        if counts.sum() == total:
            break
        counts[i] += 1
    return counts


@dataclass(frozen=True)
class SkinLesionSpec:
    """How to generate one split."""

    n: int
    image_size: int = 64
    attribute_noise: float = 0.16  # std of the attributes around the prototype
    seed: int = 0
    balanced: bool = False  # equal classes instead of ISIC 2018's imbalance


def _smooth_field(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, blobs: int) -> np.ndarray:
    """A smooth random field in [0, 1] made of a few Gaussian blobs."""
    field = np.zeros_like(xx)
    for _ in range(blobs):
        cy, cx = rng.uniform(-0.8, 0.8, size=2)
        width = rng.uniform(0.15, 0.45)
        field += rng.uniform(0.5, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
    return field / max(field.max(), 1e-6)


def _curve_distance(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, spread: float, segments: int = 12
):
    """Distance from each pixel to a random quadratic Bezier curve (as a polyline of ``segments``)."""
    p0, p1, p2 = rng.uniform(-spread, spread, size=(3, 2))
    t = np.linspace(0, 1, segments + 1)[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    start, step = curve[:-1], np.diff(curve, axis=0)
    rel_y, rel_x = yy[..., None] - start[:, 0], xx[..., None] - start[:, 1]
    along = np.clip((rel_y * step[:, 0] + rel_x * step[:, 1]) / (step**2).sum(1).clip(1e-12), 0, 1)
    d2 = (rel_y - along * step[:, 0]) ** 2 + (rel_x - along * step[:, 1]) ** 2
    return np.sqrt(d2.min(-1))


def render_lesion(attributes: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one lesion with the given attributes as an RGB float image in [0, 1], ``(size, size, 3)``."""
    pigment, redness, irregularity, variegation, dots, lesion_size, scale, vessels = attributes
    lin = np.linspace(-1, 1, size)
    yy, xx = np.meshgrid(lin, lin, indexing="ij")
    pixel = 2.0 / size

    # skin: tone, illumination gradient, fine texture
    tone = rng.uniform(0.0, 1.0)
    skin = np.array([0.92, 0.74, 0.64]) * (1 - 0.35 * tone) + np.array([0.05, 0.02, 0.0]) * tone
    gy, gx = rng.normal(0, 0.12, size=2)
    light = 1 + gy * yy + gx * xx
    image = skin[None, None, :] * light[..., None]
    image = image + rng.normal(0, 0.015, size=(size, size, 1))

    # lesion shape: an ellipse whose radius is perturbed by random harmonics (border irregularity)
    cy, cx = rng.normal(0, 0.08, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    aspect = 1 + rng.uniform(0, 0.35)
    dy, dx = yy - cy, xx - cx
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = (-np.sin(angle) * dx + np.cos(angle) * dy) * aspect
    radius = np.sqrt(u**2 + v**2)
    theta = np.arctan2(v, u)
    base_radius = 0.22 + 0.45 * lesion_size
    wobble = np.zeros_like(theta)
    for k in range(2, 7):
        wobble += rng.normal(0, 0.22 / np.sqrt(k)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    boundary = base_radius * (1 + irregularity * wobble)
    softness = pixel * (1.0 + 3.0 * (1 - irregularity))
    mask = 1 / (1 + np.exp(-(boundary - radius) / softness))

    # lesion colour: brown pigment and red vascular tint, darker where variegation says so
    brown = np.array([0.55, 0.36, 0.22]) * (1 - 0.6 * pigment)
    red = np.array([0.72, 0.18, 0.30]) * (1 - 0.25 * redness) + np.array([0.0, 0.0, 0.12]) * redness
    mix = redness / (pigment + redness + 1e-6)
    colour = (1 - mix) * brown + mix * red
    strength = 0.35 + 0.6 * max(pigment, redness)
    field = _smooth_field(rng, yy, xx, blobs=4)
    darken = 1 - 0.55 * variegation * field
    veil = (
        variegation
        * np.clip(field - 0.6, 0, 1)[..., None]
        * np.array([0.05, 0.12, 0.25])[None, None, :]
        * 2.5
    )
    lesion = colour[None, None, :] * darken[..., None] + veil
    image = image * (1 - strength * mask[..., None]) + lesion * (strength * mask[..., None])

    # dots and globules (red lacunae when the lesion is vascular)
    n_dots = rng.poisson(3 + 22 * dots)
    if n_dots:
        r = boundary.mean() * np.sqrt(rng.uniform(0, 0.7, n_dots))
        phi = rng.uniform(0, 2 * np.pi, n_dots)
        py, px = cy + r * np.sin(phi), cx + r * np.cos(phi)
        widths = rng.uniform(1.0, 2.2, n_dots) * pixel
        d2 = (yy[..., None] - py) ** 2 + (xx[..., None] - px) ** 2
        spots = np.clip(np.exp(-d2 / (2 * widths**2)).sum(-1), 0, 1) * mask
        dot_colour = np.array([0.45, 0.05, 0.15]) if redness > 0.6 else np.array([0.18, 0.10, 0.07])
        image = image * (1 - 0.8 * spots[..., None]) + dot_colour * (0.8 * spots[..., None])

    # scale / keratin: whitish crust speckles
    if scale > 0.05:
        speckle = rng.uniform(0, 1, size=(size, size))
        crust = ((speckle > 1 - 0.45 * scale) * mask * _smooth_field(rng, yy, xx, blobs=2)).astype(float)
        image = image * (1 - 0.7 * crust[..., None]) + np.array([0.93, 0.90, 0.80]) * (0.7 * crust[..., None])

    # vessels: thin branching red lines
    for _ in range(rng.poisson(5 * vessels)):
        distance = _curve_distance(rng, yy - cy, xx - cx, spread=0.8 * base_radius)
        line = np.exp(-(distance**2) / (2 * (0.8 * pixel) ** 2)) * mask
        image = image * (1 - 0.75 * line[..., None]) + np.array([0.75, 0.10, 0.15]) * (0.75 * line[..., None])

    # nuisances: hair and the dark corners of a dermoscope
    for _ in range(rng.binomial(3, 0.25)):
        distance = _curve_distance(rng, yy, xx, spread=1.2)
        hair = np.exp(-(distance**2) / (2 * (0.6 * pixel) ** 2))
        image = image * (1 - 0.8 * hair[..., None]) + 0.08 * (0.8 * hair[..., None])
    if rng.uniform() < 0.4:
        corner = np.clip((np.sqrt(yy**2 + xx**2) - rng.uniform(1.05, 1.3)) / 0.08, 0, 1)
        image = image * (1 - corner[..., None])
    return np.clip(image, 0.0, 1.0)


class SyntheticSkinLesions(Dataset):
    """A split of synthetic skin-lesion images: ``(image, label)`` with ``image`` a float tensor in [0, 1].

    All images are generated at construction from ``spec.seed`` (the same seed gives the same data).
    ``attributes`` holds each image's sampled attributes, ``targets`` its labels.
    """

    classes = CLASSES

    def __init__(self, spec: SkinLesionSpec, transform=None):
        self.spec = spec
        self.transform = transform
        rng = np.random.default_rng(spec.seed)
        k = len(CLASSES)
        counts = np.full(k, spec.n // k) if spec.balanced else class_counts(spec.n)
        if spec.balanced:
            counts[: spec.n - counts.sum()] += 1
        labels = np.repeat(np.arange(k), counts)
        labels = labels[rng.permutation(labels.size)]
        attributes = np.clip(
            PROTOTYPES[labels] + rng.normal(0, spec.attribute_noise, size=(labels.size, len(ATTRIBUTES))),
            0,
            1,
        )
        images = np.empty((labels.size, 3, spec.image_size, spec.image_size), dtype=np.float32)
        for i, a in enumerate(attributes):
            images[i] = render_lesion(a, spec.image_size, rng).transpose(2, 0, 1)
        self.images = torch.from_numpy(images)
        self.targets = torch.from_numpy(labels).long()
        self.attributes = attributes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = self.images[index]
        return (self.transform(image) if self.transform is not None else image), self.targets[index]

    @property
    def info(self) -> dict:
        return {
            "kind": "synthetic",
            "name": "synthetic-skin-lesions",
            "generator": "medlab.data.synth.skin_lesions",
            "n": len(self),
            "image_size": self.spec.image_size,
            "attribute_noise": self.spec.attribute_noise,
            "seed": self.spec.seed,
            "class_counts": np.bincount(self.targets.numpy(), minlength=len(CLASSES)).tolist(),
        }


def isic2018_lookalike(
    split: str,
    n: int | None = None,
    image_size: int = 64,
    attribute_noise: float = 0.16,
    seed: int = 2018,
    transform=None,
) -> SyntheticSkinLesions:
    """The synthetic look-alike of ISIC 2018 Task 3's ``split``: ``n`` images drawn with
    :func:`medlab.data.splits.split_seed` of ``seed`` (what ``load("isic2018", split, n=n)`` returns)."""
    require_n(n, "the synthetic ISIC 2018 look-alike needs n, the number of images of the split")
    spec = SkinLesionSpec(
        n=n, image_size=image_size, attribute_noise=attribute_noise, seed=split_seed(seed, split)
    )
    return SyntheticSkinLesions(spec, transform=transform)
