"""Synthetic colour-fundus crops around the optic disc, in two camera domains, with disc and cup masks.

Chapter 4 reproduces the cross-denoising network (CDNet) for optic disc and cup segmentation under label
noise and domain shift (IJCAI 2020), trained on REFUGE and tested on Drishti-GS. This module generates
look-alikes of the square region-of-interest (ROI) crops those pipelines feed the network: a crop of a
colour fundus photograph centred near the optic disc, with a label mask of the same size.

**Masks** (the convention the real readers share): int64 ``(S, S)``, 0 background, 1 optic disc rim
(disc but not cup, the neuroretinal rim), 2 optic cup. The disc is ``mask >= 1``, the cup ``mask == 2``;
the cup lies strictly inside the disc (every cup pixel's four neighbours are disc pixels). The masks are
the exact clean shapes the image was drawn from, computed at the output resolution from the same
continuous geometry (lengths are fractions of the image size, so a spec renders the same eyes at any
``image_size``). :func:`vertical_cup_to_disc_ratio` measures the clinical vCDR on them.

**What each component imitates** (coordinates are "crop units": the crop spans [-1, 1] on both axes, rows
growing downwards; one crop unit is ``S / 2`` pixels):

* *Retina*: an orange-red background (the choroid seen through the retinal pigment epithelium) whose
  colour and pigmentation vary per eye, with low-frequency texture (uneven pigmentation, the choroidal
  vessel pattern) made of a few random plane waves, and an illumination gradient.
* *Field of view*: a fundus camera images a circular field; the crop is taken around the disc, which sits
  off the field's centre, on the nasal side. The field's centre is placed 2.5 to 4 crop units away on the
  temporal side; vignetting darkens the image with the squared distance from it, and in some crops (the
  domain's ``fov_edge_probability``) the dark edge of the field enters the crop on the nasal side.
* *Optic disc*: a bright yellowish ellipse, a little taller than wide (vertical / horizontal radius 1.03 to
  1.2), rotated up to 12 degrees, its outline mildly irregular (random radial harmonics 2 to 4, a few per
  cent), its edge soft over about one pixel at 64. The disc's vertical radius is drawn in the domain's
  ``disc_radius`` range (a fraction of ``S``: the camera's zoom), its centre jittered around the crop
  centre by ``centre_jitter``.
* *Optic cup*: a paler, whiter ellipse inside the disc, displaced slightly temporally (towards the
  macula), with a softer edge than the disc (the cup's border is where the rim's slope bends, which is
  harder to see than the disc margin). Its vertical radius is the disc's times a vertical cup-to-disc
  ratio (vCDR) drawn uniformly in 0.30 to 0.60 for a healthy eye and 0.55 to 0.85 for a glaucomatous one
  (a domain's ``glaucoma_fraction`` of the eyes); glaucomatous cups are also more vertically elongated.
  The vCDR measured on the pixel mask (``cases[i]["vcdr"]``) differs from the drawn one by the
  discretisation (within about 0.1 at ``S = 64``) and the cup's irregular outline.
* *Vessels*: the central retinal artery and vein emerge from the cup, slightly nasal to its centre, and
  run dark red (veins darker and wider than arteries) along the superior and inferior arcades, bending
  temporally, with nasal branches, small nasal and macular vessels and side branches; their width tapers
  with the distance from the disc and scales with the disc. They are paler inside the cup (they dive down
  its wall) and change direction where they leave it (the "kinking" of vessels at the cup margin that
  clinicians use to locate the cup). They cross the disc margin with full contrast, as on real images.
* *Peripapillary atrophy* (PPA): in some eyes (the domain's ``atrophy_probability``, more often in
  glaucoma) a pale, mottled crescent hugs the disc on its temporal side, bordered by a thin dark
  pigmented band: a realistic distractor, as bright as the disc rim but outside the disc mask.
* *Camera*: colour gains (the cast), brightness, contrast around the image mean and a gamma, vignetting,
  rendering at a lower resolution and upsampling bilinearly (a lower-resolution sensor, or a smaller
  image resized to the crop), a Gaussian blur (optics, focus, compression) and Gaussian noise.

**What differs between REFUGE and Drishti-GS** (:data:`DOMAINS`; an approximation of the two sets as they
look in ROI crops, not a measurement on them):

* *Camera and colour*: REFUGE's training images come from a Zeiss Visucam 500 (2124 x 2056 pixels); they
  are rendered bright with a yellow-orange cast (gains 1.06, 1.00, 0.78 on R, G, B, brightness 1.04).
  Drishti-GS (101 images, 2896 x 1944, taken at Aravind Eye Hospital with a 30-degree field) is rendered
  darker (brightness 0.94) with a redder cast (gains 1.04, 0.86, 0.74: less green and blue for the red)
  and lower contrast (0.92 around the image mean). Every photograph also gets its own exposure (a gain of
  0.88 to 1.12) and white balance (5 % per channel), in both domains.
* *Vignetting*: stronger in Drishti-GS (0.35 against 0.20), and the dark edge of the field enters more
  crops (30 % against 10 %).
* *Zoom*: the narrower field of Drishti-GS shows the disc larger in a crop of the same size: vertical disc
  radius 0.20 to 0.27 of the crop side against 0.14 to 0.20 (discs about twice the area).
* *Resolution and sharpness*: Drishti-GS crops are rendered at 0.6 of the output size and upsampled,
  then blurred more (sigma 0.8 % of the crop side against 0.5 %), with twice the noise (sd 0.025 against
  0.012) and vessels of lower contrast (0.65 against 0.80).
* *Population*: Drishti-GS is mostly glaucomatous (70 of 101 eyes), REFUGE's training set mostly not
  (40 of 400), so cups are larger on average in the drishti domain (``glaucoma_fraction`` 0.7 against
  0.1), as is peripapillary atrophy (0.35 against 0.25, plus 0.2 in glaucoma).

How large the shift is, measured once (a small 2D U-Net, 16-32-64 channels, trained from scratch for 15
epochs on 400 crops of 64 pixels with horizontal flips only, Dice on 100 test crops of each domain): trained
on refuge, disc 0.95 and cup 0.91 on refuge, 0.85 and 0.66 on drishti; trained on drishti, 0.95 and 0.87
on drishti, 0.88 and 0.65 on refuge. The colour and brightness differences cause most of the drop (the
zoom alone costs nothing, the resolution, blur and noise alone about 0.04 of disc Dice): a noticeable
drop, the cup suffering most, on a task that stays learnable.

Datasets (:class:`SyntheticFundus`) generate every image at construction, deterministically from
``spec.seed`` (image ``i`` from its own random stream seeded from it), store them as uint8 and return
float32 tensors in [0, 1]. Rendering one 64 x 64 crop takes about 2 ms on one CPU core (numpy and scipy,
no loops over pixels; each vessel segment is evaluated on the 8 x 8 tiles it reaches), 4 ms at 128.
:func:`refuge_lookalike` and :func:`drishti_gs_lookalike` draw the splits the registry's ``load("refuge",
...)`` and ``load("drishti_gs", ...)`` return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from medlab.data.constants import FUNDUS_CLASSES as CLASSES
from medlab.data.splits import require_n, split_seed
from medlab.metrics import vertical_cup_to_disc_ratio

MIN_SIZE = 16

# Canonical colours (linear RGB in [0, 1]) before the camera: retina, disc rim, cup, atrophy, vessels.
_RETINA = np.array([0.80, 0.40, 0.16], dtype=np.float32)
_RIM = np.array([0.98, 0.70, 0.40], dtype=np.float32)
_CUP = np.array([1.00, 0.94, 0.80], dtype=np.float32)
_ATROPHY = np.array([0.93, 0.82, 0.64], dtype=np.float32)
_PIGMENT = np.array([0.30, 0.14, 0.07], dtype=np.float32)
_VEIN = np.array([0.40, 0.09, 0.06], dtype=np.float32)
_ARTERY = np.array([0.62, 0.16, 0.09], dtype=np.float32)
_FIELD_EDGE = np.array([0.02, 0.01, 0.01], dtype=np.float32)


@dataclass(frozen=True)
class FundusDomain:
    """A camera and a population: how one data set's ROI crops look.

    Lengths are fractions of the image size ``S`` (so they hold at every resolution).

    * ``colour_gain``: R, G, B gains (the colour cast); ``brightness``: an overall gain; ``contrast``: the
      image is scaled by it around its mean; ``gamma``: applied last (above 1 darkens the mid-tones).
    * ``disc_radius``: the range of the disc's vertical radius / ``S`` (the zoom); ``centre_jitter``: the
      standard deviation of the disc centre's offset from the crop centre / ``S``.
    * ``resolution``: the image is rendered at ``resolution * S`` pixels and upsampled bilinearly to ``S``
      (1: full resolution); ``blur``: the Gaussian blur's sigma / ``S``; ``noise``: the noise standard
      deviation (intensities in [0, 1]); ``vignetting``: the darkening at the field's edge (0: none).
    * ``vessel_contrast``: the vessels' opacity (0 invisible, 1 their full colour).
    * ``glaucoma_fraction``: the fraction of glaucomatous eyes (large cups); ``atrophy_probability``:
      the probability of peripapillary atrophy in a healthy eye (+0.2 in glaucoma);
      ``fov_edge_probability``: the probability that the field of view's dark edge enters the crop.
    """

    name: str
    description: str
    colour_gain: tuple[float, float, float]
    brightness: float
    contrast: float
    gamma: float
    disc_radius: tuple[float, float]
    centre_jitter: float
    resolution: float
    blur: float
    noise: float
    vignetting: float
    vessel_contrast: float
    glaucoma_fraction: float
    atrophy_probability: float
    fov_edge_probability: float

    def __post_init__(self):
        gains = tuple(float(g) for g in self.colour_gain)
        if len(gains) != 3 or not all(0 < g < math.inf for g in gains):
            raise ValueError(f"colour_gain must be 3 positive numbers, got colour_gain={self.colour_gain!r}")
        object.__setattr__(self, "colour_gain", gains)
        low, high = (float(r) for r in self.disc_radius)
        if not 0.02 <= low <= high <= 0.4:
            raise ValueError(
                f"disc_radius must satisfy 0.02 <= low <= high <= 0.4, got disc_radius={self.disc_radius!r}"
            )
        object.__setattr__(self, "disc_radius", (low, high))
        if not 0 < self.resolution <= 1:
            raise ValueError(f"resolution must be in (0, 1], got resolution={self.resolution!r}")
        for name in ("brightness", "contrast", "gamma"):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a positive number, got {name}={getattr(self, name)!r}")
        for name in ("centre_jitter", "blur", "noise", "vignetting"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0, got {name}={getattr(self, name)!r}")
        for name in ("vessel_contrast", "glaucoma_fraction", "atrophy_probability", "fov_edge_probability"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {name}={getattr(self, name)!r}")


DOMAINS: dict[str, FundusDomain] = {
    "refuge": FundusDomain(
        name="refuge",
        description="REFUGE training set (Zeiss Visucam 500): bright, yellow-orange, sharp, wide field",
        colour_gain=(1.06, 1.00, 0.78),
        brightness=1.04,
        contrast=1.0,
        gamma=1.0,
        disc_radius=(0.14, 0.20),
        centre_jitter=0.035,
        resolution=1.0,
        blur=0.005,
        noise=0.012,
        vignetting=0.20,
        vessel_contrast=0.80,
        glaucoma_fraction=0.10,
        atrophy_probability=0.25,
        fov_edge_probability=0.10,
    ),
    "drishti": FundusDomain(
        name="drishti",
        description="Drishti-GS (30-degree field): darker, redder, lower contrast, stronger vignetting, "
        "larger disc, lower resolution, blurrier and noisier, mostly glaucomatous",
        colour_gain=(1.04, 0.86, 0.74),
        brightness=0.94,
        contrast=0.92,
        gamma=1.0,
        disc_radius=(0.20, 0.27),
        centre_jitter=0.05,
        resolution=0.6,
        blur=0.008,
        noise=0.025,
        vignetting=0.35,
        vessel_contrast=0.65,
        glaucoma_fraction=0.70,
        atrophy_probability=0.35,
        fov_edge_probability=0.30,
    ),
}


def describe() -> str:
    """A plain-text table of the domains' parameters, one row per :class:`FundusDomain` field."""
    names = list(DOMAINS)
    rows = [("parameter", *names)]
    for f in fields(FundusDomain):
        if f.name in ("name", "description"):
            continue
        values = []
        for name in names:
            v = getattr(DOMAINS[name], f.name)
            values.append(", ".join(f"{x:g}" for x in v) if isinstance(v, tuple) else f"{v:g}")
        rows.append((f.name, *values))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [""] + [f"{name}: {DOMAINS[name].description}" for name in names]
    return "\n".join(lines)


# --- geometry ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=16)
def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an ``n`` x ``n`` image in crop units: rows ``yy`` and columns ``xx``."""
    u = ((2 * np.arange(n) + 1) / n - 1).astype(np.float32)
    yy, xx = np.meshgrid(u, u, indexing="ij")
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


@lru_cache(maxsize=16)
def _upsample_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Bilinear interpolation from ``n_in`` to ``n_out`` samples (pixel centres aligned), as a matrix."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = (pos - lo).astype(np.float32)
    m = np.zeros((n_out, n_in), dtype=np.float32)
    np.add.at(m, (np.arange(n_out), lo), 1 - w)
    np.add.at(m, (np.arange(n_out), hi), w)
    m.setflags(write=False)
    return m


@dataclass(frozen=True)
class _Ellipse:
    """A rotated ellipse with a radius perturbed by harmonics 2..4 (crop units; ``angle`` in radians)."""

    cy: float
    cx: float
    ry: float
    rx: float
    angle: float
    amplitudes: tuple[float, ...] = (0.0, 0.0, 0.0)
    phases: tuple[float, ...] = (0.0, 0.0, 0.0)

    def ratio(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """Distance from the centre over the boundary's, along each pixel's direction: inside where <= 1."""
        dy, dx = yy - np.float32(self.cy), xx - np.float32(self.cx)
        c, s = np.float32(math.cos(self.angle)), np.float32(math.sin(self.angle))
        u = (c * dx + s * dy) / np.float32(self.rx)
        v = (c * dy - s * dx) / np.float32(self.ry)
        rho = np.sqrt(u * u + v * v)
        if not any(self.amplitudes):
            return rho
        theta = np.arctan2(v, u)
        bound = np.ones_like(rho)
        for k, (a, p) in enumerate(zip(self.amplitudes, self.phases), start=2):
            bound += np.float32(a) * np.cos(k * theta + np.float32(p))
        return rho / bound

    def soft(self, yy, xx, softness: float) -> np.ndarray:
        """A soft indicator: 1 inside, 0 outside, the edge ramping over about ``softness`` crop units."""
        r = 0.5 * (self.ry + self.rx)
        return _sigmoid((1 - self.ratio(yy, xx)) * np.float32(r / softness))

    def exit_distance(self, origin: np.ndarray, direction: np.ndarray) -> float:
        """How far a ray from ``origin`` (inside, (x, y)) along ``direction`` runs before leaving the
        (unperturbed) ellipse."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        ox, oy = origin[0] - self.cx, origin[1] - self.cy
        dx, dy = direction
        a = np.array([(c * ox + s * oy) / self.rx, (c * oy - s * ox) / self.ry])
        b = np.array([(c * dx + s * dy) / self.rx, (c * dy - s * dx) / self.ry])
        qa, qb, qc = b @ b, 2 * a @ b, a @ a - 1
        return float((-qb + math.sqrt(max(qb * qb - 4 * qa * qc, 0.0))) / (2 * qa))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _waves(rng: np.random.Generator, yy, xx, count: int, frequency: tuple[float, float]) -> np.ndarray:
    """A smooth random field of unit standard deviation: ``count`` plane waves of random direction, phase
    and frequency (cycles per crop unit) in ``frequency``."""
    k = 2 * np.pi * rng.uniform(*frequency, size=count)
    phi = rng.uniform(0, 2 * np.pi, size=count)
    ky, kx = (k * np.sin(phi)).astype(np.float32), (k * np.cos(phi)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=count).astype(np.float32)
    amp = rng.uniform(0.5, 1.0, size=count).astype(np.float32)
    field = np.zeros_like(yy)
    for i in range(count):
        field += amp[i] * np.cos(ky[i] * yy + kx[i] * xx + phase[i])
    return field * np.float32(math.sqrt(2.0 / float((amp**2).sum())))


def _walk(rng, start, heading, curvature, length, step, wiggle) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random path from ``start`` ((x, y), crop units): its vertices and headings."""
    n = max(2, int(math.ceil(length / step)))
    turns = curvature * step + rng.normal(0.0, wiggle, size=n)
    theta = heading + np.cumsum(turns) - turns[0]
    steps = step * np.stack([np.cos(theta), np.sin(theta)], 1)
    points = np.concatenate([np.asarray(start, dtype=np.float64)[None], start + np.cumsum(steps, 0)])
    return points, theta


def _vessel_tree(rng, disc: _Ellipse, cup: _Ellipse, temporal: int) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """The vessels as polylines: a list of (vertices ``(m, 2)`` in (x, y), half-widths per segment
    ``(m - 1,)``, is_vein)."""
    scale = disc.ry
    origin = np.array([cup.cx - temporal * 0.15 * cup.rx, cup.cy]) + rng.normal(0, 0.05 * cup.ry, 2)
    step = 0.14
    vessels = []

    def add(heading, curvature, width, vein, length, branches=0, kink=True):
        # inside the cup: straight, at an angle to the arcade's heading (the kink at the cup's margin)
        inner = heading + (rng.choice([-1, 1]) * rng.uniform(0.25, 0.6) if kink else 0.0)
        direction = np.array([math.cos(inner), math.sin(inner)])
        exit_point = origin + direction * cup.exit_distance(origin, direction)
        points, theta = _walk(rng, exit_point, heading, curvature, length, step, 0.09)
        points = np.concatenate([origin[None], points])
        seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
        along = np.concatenate([[0.0], np.cumsum(seg)])
        mid = 0.5 * (along[1:] + along[:-1])
        widths = width * (1 - 0.45 * np.clip(mid / 1.6, 0, 1))
        vessels.append((points, widths, vein))
        for _ in range(branches):
            k = int(rng.integers(3, max(4, len(points) - 3)))
            bend = rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
            sub, _ = _walk(rng, points[k], theta[min(k - 1, len(theta) - 1)] + bend, rng.normal(0, 0.6),
                           rng.uniform(0.4, 0.9), step, 0.1)
            vessels.append((sub, np.full(len(sub) - 1, 0.65 * widths[min(k, len(widths) - 1)]), vein))

    for side in (-1, 1):  # superior (up, -1) and inferior (down, +1) arcades
        for vein in (True, False):
            tilt = rng.uniform(0.1, 0.5)
            add(side * math.pi / 2 - side * temporal * tilt, -side * temporal * rng.uniform(0.4, 1.0),
                scale * (0.13 if vein else 0.10) * rng.uniform(0.9, 1.1), vein, 1.7,
                branches=int(rng.random() < 0.6))
        add(side * math.pi / 2 + side * temporal * rng.uniform(0.4, 0.9), side * temporal * rng.uniform(0, 0.5),
            scale * 0.085, bool(rng.random() < 0.5), 1.5)
    nasal = math.pi if temporal > 0 else 0.0
    for _ in range(rng.integers(0, 3)):  # small nasal radial vessels
        add(nasal + rng.normal(0, 0.45), rng.normal(0, 0.3), scale * 0.065, bool(rng.random() < 0.5), 1.2)
    if rng.random() < 0.5:  # a small macular (temporal) vessel
        add(math.pi - nasal + rng.normal(0, 0.3), rng.normal(0, 0.3), scale * 0.055, False, 1.0)
    return vessels


@lru_cache(maxsize=16)
def _tiles(n: int, tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The pixel-centre coordinates of an ``n`` x ``n`` image (padded to whole tiles) cut into ``tile`` x
    ``tile`` tiles: x and y ``(tiles, tile * tile)`` and each tile's x and y extent ``(tiles, 2)``."""
    count = -(-n // tile)
    u = ((2 * np.arange(count * tile) + 1) / n - 1).astype(np.float32).reshape(count, tile)
    ty, tx = np.meshgrid(np.arange(count), np.arange(count), indexing="ij")
    ty, tx = ty.reshape(-1), tx.reshape(-1)
    ys = np.repeat(u[ty], tile, axis=1)
    xs = np.tile(u[tx], (1, tile))
    extent_x, extent_y = u[tx][:, [0, -1]], u[ty][:, [0, -1]]
    for a in (xs, ys, extent_x, extent_y):
        a.setflags(write=False)
    return xs, ys, extent_x, extent_y


def _vessel_map(vessels, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Opacity maps ``(n, n)`` of the veins and the arteries: a Gaussian profile across each segment, the
    maximum over the segments of each kind. Each segment is evaluated on the 8 x 8 tiles it can reach only."""
    tile = 8
    xs, ys, extent_x, extent_y = _tiles(n, tile)
    count = -(-n // tile)
    pixel = 2.0 / n
    out = []
    for want_vein in (True, False):
        chosen = [(v[:-1], np.diff(v, axis=0), w) for v, w, vein in vessels if vein == want_vein]
        result = np.zeros((count * count, tile * tile), dtype=np.float32)
        if chosen:
            a = np.concatenate([c[0] for c in chosen]).astype(np.float32)
            d = np.concatenate([c[1] for c in chosen]).astype(np.float32)
            w = np.maximum(np.concatenate([c[2] for c in chosen]), 0.45 * pixel).astype(np.float32)
            lo = np.minimum(a, a + d) - 3 * w[:, None]
            hi = np.maximum(a, a + d) + 3 * w[:, None]
            near = (
                (extent_x[:, None, 1] >= lo[None, :, 0]) & (extent_x[:, None, 0] <= hi[None, :, 0])
                & (extent_y[:, None, 1] >= lo[None, :, 1]) & (extent_y[:, None, 0] <= hi[None, :, 1])
            )
            tiles, segments = np.nonzero(near)  # sorted by tile
            if len(tiles):
                a, d, w = a[segments], d[segments], w[segments]
                # below a pixel, a vessel gets fainter rather than thinner
                strength = np.minimum(1.0, w / np.float32(0.7 * pixel)) ** 2
                rel_x = xs[tiles] - a[:, :1]
                rel_y = ys[tiles] - a[:, 1:]
                t = (rel_x * d[:, :1] + rel_y * d[:, 1:]) / np.maximum((d * d).sum(1, keepdims=True), 1e-9)
                np.clip(t, 0, 1, out=t)
                rel_x -= t * d[:, :1]
                rel_y -= t * d[:, 1:]
                profile = np.exp(-(rel_x * rel_x + rel_y * rel_y) / (w * w)[:, None]) * strength[:, None]
                starts = np.flatnonzero(np.r_[True, tiles[1:] != tiles[:-1]])
                result[tiles[starts]] = np.maximum.reduceat(profile, starts, axis=0)
        image = result.reshape(count, count, tile, tile).transpose(0, 2, 1, 3).reshape(count * tile, count * tile)
        out.append(np.ascontiguousarray(image[:n, :n]))
    return out[0], out[1]


# --- rendering ---------------------------------------------------------------------------------------------


def _draw_geometry(rng: np.random.Generator, domain: FundusDomain) -> dict:
    """The eye's random geometry (crop units) and its flags."""
    glaucoma = bool(rng.random() < domain.glaucoma_fraction)
    temporal = int(rng.choice([-1, 1]))  # the macula's side: -1 left (a right eye), +1 right (a left eye)
    jitter = 2 * domain.centre_jitter
    cy, cx = np.clip(rng.normal(0, jitter, 2), -3 * jitter, 3 * jitter)
    ry = 2 * rng.uniform(*domain.disc_radius)
    rx = ry / rng.uniform(1.03, 1.2)
    disc = _Ellipse(cy, cx, ry, rx, rng.uniform(-0.2, 0.2), tuple(rng.normal(0, 0.025, 3) / [1, 1.5, 2]),
                    tuple(rng.uniform(0, 2 * np.pi, 3)))
    vcdr = rng.uniform(0.55, 0.85) if glaucoma else rng.uniform(0.30, 0.60)
    cup_ry = vcdr * ry
    cup_rx = min(cup_ry / (rng.uniform(1.0, 1.2) if glaucoma else rng.uniform(0.9, 1.1)), 0.86 * rx)
    off_x = temporal * rng.uniform(0.1, 0.4) * max(0.9 * rx - cup_rx, 0.0)
    off_y = rng.uniform(-0.2, 0.2) * max(0.93 * ry - cup_ry, 0.0)
    cup = _Ellipse(cy + off_y, cx + off_x, cup_ry, cup_rx, disc.angle + rng.normal(0, 0.08),
                   tuple(rng.normal(0, 0.02, 3) / [1, 1.5, 2]), tuple(rng.uniform(0, 2 * np.pi, 3)))
    atrophy = bool(rng.random() < domain.atrophy_probability + (0.2 if glaucoma else 0.0))
    fov_edge = bool(rng.random() < domain.fov_edge_probability)
    return dict(glaucoma=glaucoma, temporal=temporal, disc=disc, cup=cup, vcdr_drawn=float(vcdr),
                atrophy=atrophy, fov_edge=fov_edge)


def render_fundus(size: int, rng: np.random.Generator, domain: FundusDomain | str = "refuge",
                  noise_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render one ROI crop: a float32 ``(3, size, size)`` RGB image in [0, 1], its uint8 ``(size, size)``
    mask (0 background, 1 disc rim, 2 cup) and a dict describing the eye (see :class:`SyntheticFundus`)."""
    if isinstance(domain, str):
        domain = DOMAINS[domain]
    g = _draw_geometry(rng, domain)
    disc, cup, temporal = g["disc"], g["cup"], g["temporal"]
    n = max(8, int(round(size * domain.resolution)))
    yy, xx = _grid(n)
    pixel = 2.0 / n

    # retina: colour per eye, low-frequency pigmentation and choroidal texture, illumination gradient
    retina = _RETINA * np.array([rng.uniform(0.9, 1.08), rng.uniform(0.8, 1.15), rng.uniform(0.8, 1.2)], np.float32)
    texture = 0.06 * _waves(rng, yy, xx, 4, (0.2, 0.7)) + 0.03 * _waves(rng, yy, xx, 5, (1.5, 3.5))
    gy, gx = rng.normal(0, 0.06, 2)
    shade = 1 + texture + np.float32(gy) * yy + np.float32(gx) * xx
    image = retina[:, None, None] * shade[None]

    # peripapillary atrophy: a crescent between the disc and an ellipse pushed temporally, pale and mottled
    if g["atrophy"]:
        push = rng.uniform(0.2, 0.45)
        grow = rng.uniform(0.0, 0.12)
        tilt = rng.normal(0, 0.35)
        outer = _Ellipse(disc.cy + math.sin(tilt) * push * disc.ry,
                         disc.cx + temporal * math.cos(tilt) * push * disc.rx,
                         disc.ry * (1 + grow + 0.3 * push), disc.rx * (1 + grow), disc.angle)
        crescent = outer.soft(yy, xx, 0.6 * pixel + 0.01)  # the disc, drawn next, covers its nasal part
        mottle = 1 - 0.12 * np.abs(_waves(rng, yy, xx, 5, (3.0, 6.0)))
        border = 4 * crescent * (1 - crescent)  # the pigmented border of the crescent
        alpha = rng.uniform(0.7, 0.9) * crescent
        image = image * (1 - alpha) + (_ATROPHY[:, None, None] * mottle) * alpha
        image = image * (1 - 0.35 * border) + _PIGMENT[:, None, None] * (0.35 * border)

    # optic disc and cup: the rim brightens towards the cup, the cup is pale and its edge is soft
    disc_soft = disc.soft(yy, xx, 0.6 * pixel + rng.uniform(0.01, 0.02))
    cup_edge = min(rng.uniform(0.05, 0.09) * (1 + 0.5 * g["glaucoma"]), 0.4 * cup.ry)
    cup_ratio = cup.ratio(yy, xx)
    cup_soft = _sigmoid((1 - cup_ratio) * np.float32(0.5 * (cup.ry + cup.rx) / cup_edge))
    inner_glow = np.clip(1.2 - 0.12 * cup_ratio, 0.9, 1.15)  # the rim is paler next to the cup
    rim = _RIM * np.array([1, rng.uniform(0.92, 1.05), rng.uniform(0.85, 1.1)], np.float32)
    disc_colour = rim[:, None, None] * inner_glow[None] * (1 - cup_soft) + _CUP[:, None, None] * cup_soft
    disc_alpha = rng.uniform(0.9, 1.0) * disc_soft
    image = image * (1 - disc_alpha) + disc_colour * disc_alpha

    # vessels: darker inside the disc's frame of reference, paler where they dive into the cup
    veins, arteries = _vessel_map(_vessel_tree(rng, disc, cup, temporal), n)
    fade = 1 - 0.55 * cup_soft
    for opacity, colour in ((arteries, _ARTERY), (veins, _VEIN)):
        alpha = domain.vessel_contrast * rng.uniform(0.85, 1.0) * opacity * fade
        image = image * (1 - alpha) + colour[:, None, None] * alpha

    # the field of view: its centre lies temporally; vignetting from it, its dark edge on the nasal side
    distance = rng.uniform(2.5, 4.0)
    beta = rng.uniform(-0.35, 0.35)
    fy, fx = distance * math.sin(beta), temporal * distance * math.cos(beta)
    margin = rng.uniform(0.75, 1.3) if g["fov_edge"] else rng.uniform(1.6, 2.2)
    radius = distance + margin
    r = np.sqrt((yy - np.float32(fy)) ** 2 + (xx - np.float32(fx)) ** 2) / np.float32(radius)
    image = image * (1 - domain.vignetting * r**2)[None]
    inside = _sigmoid((1 - r) * np.float32(radius / 0.03))
    image = image * inside + _FIELD_EDGE[:, None, None] * (1 - inside)

    # the camera: cast, brightness, contrast, gamma, resolution, blur, noise
    exposure = rng.uniform(0.88, 1.12) * rng.uniform(0.95, 1.05, 3)  # this photograph's exposure and white balance
    gain = np.array(domain.colour_gain) * domain.brightness * exposure
    image = image * gain.astype(np.float32)[:, None, None]
    image = np.clip(image, 0, 1)
    if domain.contrast != 1:
        mean = image.mean(axis=(1, 2), keepdims=True)
        image = np.clip(mean + np.float32(domain.contrast) * (image - mean), 0, 1)
    if domain.gamma != 1:
        image = image ** np.float32(domain.gamma)
    if n != size:
        m = _upsample_matrix(size, n)
        image = m @ image @ m.T
    if domain.blur > 0:
        image = ndimage.gaussian_filter(image, (0, domain.blur * size, domain.blur * size), mode="nearest", truncate=3)
    sd = domain.noise * noise_scale
    if sd > 0:
        image = image + rng.normal(0, sd, image.shape).astype(np.float32)
    image = np.clip(image, 0, 1).astype(np.float32)

    mask = fundus_mask(size, disc, cup)
    return image, mask, _case(g, mask, size)


def fundus_mask(size: int, disc: _Ellipse, cup: _Ellipse) -> np.ndarray:
    """The label mask of a disc and a cup at ``size``: uint8, 0 background, 1 rim, 2 cup (the cup is kept
    strictly inside the disc)."""
    yy, xx = _grid(size)
    inside_disc = disc.ratio(yy, xx) <= 1
    inside_cup = (cup.ratio(yy, xx) <= 1) & ndimage.binary_erosion(inside_disc)
    return inside_disc.astype(np.uint8) + inside_cup.astype(np.uint8)


def _case(g: dict, mask: np.ndarray, size: int) -> dict:
    half = size / 2

    def px(y, x):  # crop units -> pixel coordinates (row, column), pixel centres at integers
        return (round(float((y + 1) * half - 0.5), 2), round(float((x + 1) * half - 0.5), 2))

    disc, cup = g["disc"], g["cup"]
    return {
        "disc_centre": px(disc.cy, disc.cx),
        "disc_radii": (round(disc.ry * half, 2), round(disc.rx * half, 2)),  # vertical, horizontal (pixels)
        "cup_centre": px(cup.cy, cup.cx),
        "cup_radii": (round(cup.ry * half, 2), round(cup.rx * half, 2)),
        "vcdr": float(vertical_cup_to_disc_ratio(mask)),
        "vcdr_drawn": round(g["vcdr_drawn"], 4),
        "glaucoma": g["glaucoma"],
        "has_atrophy": g["atrophy"],
        "fov_edge": g["fov_edge"],
        "temporal_side": "right" if g["temporal"] > 0 else "left",
        "eye": "left" if g["temporal"] > 0 else "right",
    }


# --- measurements ------------------------------------------------------------------------------------------


# --- spec and dataset --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticFundusSpec:
    """How to generate one split of synthetic fundus ROI crops: ``n`` images of ``image_size`` pixels a
    side, in ``domain`` (a key of :data:`DOMAINS`), from ``seed``; ``noise_scale`` multiplies the
    domain's noise standard deviation."""

    n: int
    image_size: int = 64
    domain: str = "refuge"
    seed: int = 0
    noise_scale: float = 1.0

    def __post_init__(self):
        def integer(v):
            return not isinstance(v, bool) and isinstance(v, (int, np.integer))

        if not integer(self.n) or self.n < 1:
            raise ValueError(f"n must be a positive integer, got n={self.n!r}")
        if not integer(self.image_size) or self.image_size < MIN_SIZE:
            raise ValueError(
                f"image_size must be an integer of at least {MIN_SIZE}, got image_size={self.image_size!r}"
            )
        if not isinstance(self.domain, str) or self.domain not in DOMAINS:
            raise ValueError(f"domain must be one of {', '.join(DOMAINS)}, got domain={self.domain!r}")
        if not integer(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got seed={self.seed!r}")
        v = self.noise_scale
        if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not 0 <= v < math.inf:
            raise ValueError(f"noise_scale must be a finite number >= 0, got noise_scale={v!r}")


class SyntheticFundus(Dataset):
    """A split of synthetic fundus ROI crops: ``(image, mask)``, a float32 ``(3, S, S)`` RGB tensor in
    [0, 1] and an int64 ``(S, S)`` mask (:data:`CLASSES`: 0 background, 1 disc rim, 2 cup).

    Every image is generated at construction from ``spec.seed`` (:func:`render_fundus`, image ``i`` from
    its own random stream): ``images`` holds them as uint8 ``(N, 3, S, S)``, ``masks`` uint8 ``(N, S, S)``,
    ``cases`` a dict per image: ``disc_centre`` and ``cup_centre`` (row, column in pixels), ``disc_radii``
    and ``cup_radii`` (vertical, horizontal in pixels, before the radial perturbation), ``vcdr`` (measured
    on the mask by :func:`vertical_cup_to_disc_ratio`), ``vcdr_drawn``, ``glaucoma``, ``has_atrophy``,
    ``fov_edge``, ``eye`` and ``temporal_side``. ``info`` describes the split. ``transform(image, mask)``,
    if given, is applied to the tensors and returns the pair.
    """

    classes = CLASSES

    def __init__(self, spec: SyntheticFundusSpec, transform=None):
        self.spec = spec
        self.transform = transform
        self.domain = DOMAINS[spec.domain]
        seeds = np.random.default_rng(spec.seed).integers(0, 2**63, size=spec.n)
        size = spec.image_size
        self.images = np.empty((spec.n, 3, size, size), dtype=np.uint8)
        self.masks = np.empty((spec.n, size, size), dtype=np.uint8)
        self.cases = []
        for i, seed in enumerate(seeds):
            image, mask, case = render_fundus(size, np.random.default_rng(seed), self.domain, spec.noise_scale)
            self.images[i] = np.rint(image * 255)
            self.masks[i] = mask
            self.cases.append(case)

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: int):
        image = torch.from_numpy(self.images[index]).float().div_(255)
        mask = torch.from_numpy(self.masks[index].astype(np.int64))
        if self.transform is not None:
            return self.transform(image, mask)
        return image, mask

    @property
    def vcdr(self) -> np.ndarray:
        """The measured vCDR of every image (float64 ``(N,)``)."""
        return np.array([c["vcdr"] for c in self.cases], dtype=np.float64)

    @property
    def info(self) -> dict:
        return {
            "kind": "synthetic",
            "name": f"synthetic-fundus-{self.spec.domain}",
            "generator": "medlab.data.synth.fundus",
            "n": len(self),
            "image_size": self.spec.image_size,
            "domain": self.spec.domain,
            "seed": self.spec.seed,
            "noise_scale": self.spec.noise_scale,
            "mean_vcdr": round(float(np.nanmean(self.vcdr)), 4),
            "glaucoma": sum(c["glaucoma"] for c in self.cases),
            "atrophy": sum(c["has_atrophy"] for c in self.cases),
            "pixel_counts": np.bincount(self.masks.reshape(-1), minlength=len(CLASSES)).tolist(),
        }


def _lookalike(title: str, domain: str, split: str, n, image_size: int, seed: int, transform) -> SyntheticFundus:
    require_n(n, f"the synthetic {title} look-alike needs n, the number of images of the split")
    spec = SyntheticFundusSpec(n=n, image_size=image_size, domain=domain, seed=split_seed(seed, split))
    return SyntheticFundus(spec, transform=transform)


def refuge_lookalike(
    split: str, n: int | None = None, image_size: int = 64, seed: int = 2020, transform=None
) -> SyntheticFundus:
    """Synthetic crops of the refuge domain standing in for REFUGE's ``split``: ``n`` images drawn with
    :func:`medlab.data.splits.split_seed` of ``seed`` (what ``load("refuge", split, n=n)`` returns)."""
    return _lookalike("REFUGE", "refuge", split, n, image_size, seed, transform)


def drishti_gs_lookalike(
    split: str, n: int | None = None, image_size: int = 64, seed: int = 2020, transform=None
) -> SyntheticFundus:
    """Synthetic crops of the drishti domain (another camera) standing in for Drishti-GS1's ``split``
    (what ``load("drishti_gs", split, n=n)`` returns)."""
    return _lookalike("Drishti-GS", "drishti", split, n, image_size, seed, transform)
