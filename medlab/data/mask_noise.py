"""Corrupted segmentation labels, like the ones annotators produce: noisy masks for label-noise studies.

Chapter 4's cross-denoising network learns optic disc and cup segmentation from training labels of which a
fraction are wrong. Its noisy labels are clean ones corrupted by the errors annotators actually make; this
module makes them from any clean label mask, real or synthetic.

**Masks**: an ``(H, W)`` integer (or boolean) label mask of *nested* regions: region ``k`` is ``mask >= k``
for ``k = 1 .. K - 1`` (``K - 1`` the largest label), each inside the one before. For the fundus masks
(:mod:`medlab.data.synth.fundus` and the REFUGE / Drishti-GS readers) region 1 is the optic disc
(``mask >= 1``) and region 2 the cup (``mask >= 2``). A corruption acts on each region's binary mask and
re-composes the label mask with the nesting kept: each region is clipped to the corrupted region
around it. A region that is empty stays empty, and one that is not stays non-empty.

**Kinds** (:data:`NOISE_KINDS`); magnitudes scale with the object (a region's *equivalent radius*
``sqrt(area / pi)``), are drawn at random in a range and multiplied by ``strength``:

* ``"dilation"``: each region grown by a disk of radius 10 to 30 % of its equivalent radius (at least one
  pixel): an annotator who traces outside the boundary, a thick pen, a generous margin, the blurred edge
  taken as object (over-segmentation).
* ``"erosion"``: each region shrunk by a disk of radius 10 to 30 % of its equivalent radius (at least one
  pixel; a few pixels always remain): tracing inside the boundary, a cautious annotator who leaves out
  the faint margin (under-segmentation).
* ``"shift"``: the whole annotation translated by a random vector 15 to 35 % of the outer region's
  equivalent radius long (whole pixels): a misregistered annotation, drawn on another zoom or crop of the
  image, or a contour placed with a systematic offset.
* ``"elastic"``: all regions warped by one smooth random displacement field (Gaussian-filtered noise,
  smoothing about 40 % of the outer radius) whose largest displacement near the object is 10 to 25 % of
  the outer region's equivalent radius: a wobbly, careless free-hand contour, locally too far in and too
  far out.
* ``"polygon"``: each region replaced by the filled polygon through 5 to 8 points of its contour (evenly
  spaced in angle around the centroid, with random phase, angular jitter and a radial jitter of about 6 %
  times ``strength``): a coarse annotation with a few clicks of a polygon tool, which cuts the curved
  boundary short between the clicks. Points are found by angle around the region's centroid, which suits
  star-shaped regions such as discs and cups.

All morphology uses ``scipy.ndimage`` (exact Euclidean disks through distance transforms) on a window
around the object, so a corruption costs about the same on a 64 x 64 crop as on a full-size photograph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

NOISE_KINDS = ("dilation", "erosion", "shift", "elastic", "polygon")

# ranges of the magnitudes (fractions of a region's equivalent radius), before ``strength``
MORPHOLOGY_RANGE = (0.10, 0.30)
SHIFT_RANGE = (0.15, 0.35)
ELASTIC_RANGE = (0.10, 0.25)
POLYGON_VERTICES = (5, 8)
POLYGON_JITTER = 0.06
_MIN_KEEP = 5  # pixels an erosion keeps at least (or the whole region if it is smaller)


def _check_kind(kind) -> str:
    if not isinstance(kind, str) or kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}: valid kinds are {', '.join(NOISE_KINDS)}")
    return kind


def _check_strength(strength) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float, np.number)) or not 0 <= strength < math.inf:
        raise ValueError(f"strength must be a finite number >= 0, got strength={strength!r}")
    return float(strength)


def equivalent_radius(region: np.ndarray) -> float:
    """The radius of the disk with the region's area, ``sqrt(area / pi)`` (pixels)."""
    return math.sqrt(float(np.count_nonzero(region)) / math.pi)


def _window(region: np.ndarray, pad: int) -> tuple[slice, slice]:
    """The region's bounding box grown by ``pad`` pixels, clipped to the image."""
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    h, w = region.shape
    return (
        slice(max(0, rows[0] - pad), min(h, rows[-1] + pad + 1)),
        slice(max(0, cols[0] - pad), min(w, cols[-1] + pad + 1)),
    )


def _dilate(region: np.ndarray, radius: float) -> np.ndarray:
    window = _window(region, int(math.ceil(radius)) + 1)
    out = np.zeros_like(region)
    out[window] = ndimage.distance_transform_edt(~region[window]) <= radius
    return out


def _erode(region: np.ndarray, radius: float) -> np.ndarray:
    window = _window(region, 1)
    depth = ndimage.distance_transform_edt(region[window])  # distance to the nearest background pixel
    kept = depth > radius
    keep = min(_MIN_KEEP, int(region.sum()))
    if kept.sum() < keep:  # never delete the region: keep its deepest pixels
        kept = depth >= np.sort(depth[depth > 0])[-keep]
    out = np.zeros_like(region)
    out[window] = kept
    return out


def _translate(region: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``region`` moved by whole pixels (rows ``dy``, columns ``dx``), what leaves the image is lost."""
    out = np.zeros_like(region)
    h, w = region.shape
    src = region[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out


def _displacement(rng: np.random.Generator, shape, smoothing: float) -> np.ndarray:
    """A smooth random displacement field ``(2, h, w)`` of unit largest magnitude: white noise on a coarse
    grid, Gaussian-filtered (``smoothing`` pixels) and interpolated to ``shape``."""
    step = max(1, int(smoothing / 3))
    coarse = tuple(-(-n // step) + 2 for n in shape)
    noise = rng.standard_normal((2, *coarse))
    field = np.stack([ndimage.gaussian_filter(c, smoothing / step, mode="wrap") for c in noise])
    if step > 1:
        grid = np.indices(shape, dtype=np.float64) / step
        field = np.stack([ndimage.map_coordinates(c, grid, order=1, mode="nearest") for c in field])
    else:
        field = field[:, : shape[0], : shape[1]]
    return field / max(float(np.sqrt((field**2).sum(0)).max()), 1e-12)


def _warp(region: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Pull ``region`` through a displacement field ``(2, H, W)``: the pixel at ``p`` takes the value at
    ``p + field[p]`` (bilinear, thresholded at one half)."""
    coords = np.indices(region.shape, dtype=np.float64) + field
    return ndimage.map_coordinates(region.astype(np.float32), coords, order=1, mode="constant") >= 0.5


def _polygon(region: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """The filled polygon through a few jittered points of the region's contour."""
    from matplotlib.path import Path

    boundary = region & ~ndimage.binary_erosion(region, border_value=0)
    by, bx = np.nonzero(boundary)
    cy, cx = np.argwhere(region).mean(0)
    angle = np.arctan2(by - cy, bx - cx)
    radius = np.hypot(by - cy, bx - cx) + 0.5  # from the boundary pixels' centres to their outer edges
    count = int(rng.integers(POLYGON_VERTICES[0], POLYGON_VERTICES[1] + 1))
    targets = rng.uniform(0, 2 * np.pi) + 2 * np.pi * (np.arange(count) + rng.uniform(-0.2, 0.2, count)) / count
    gap = np.abs(np.angle(np.exp(1j * (angle[None, :] - targets[:, None]))))  # wrapped angular distance
    nearest = np.argmin(gap - 1e-3 * radius[None, :], axis=1)  # ties: the farthest pixel
    r = radius[nearest] * (1 + POLYGON_JITTER * strength * rng.standard_normal(count))
    a = angle[nearest]
    vertices = np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)  # (x, y)
    order = np.argsort(np.mod(a - a[0], 2 * np.pi))
    vertices = vertices[order]
    h, w = region.shape
    r0, r1 = max(0, int(np.floor(vertices[:, 1].min()))), min(h, int(np.ceil(vertices[:, 1].max())) + 1)
    c0, c1 = max(0, int(np.floor(vertices[:, 0].min()))), min(w, int(np.ceil(vertices[:, 0].max())) + 1)
    out = np.zeros_like(region)
    if r1 > r0 and c1 > c0:
        yy, xx = np.mgrid[r0:r1, c0:c1]
        inside = Path(np.vstack([vertices, vertices[:1]]), closed=True).contains_points(
            np.stack([xx.reshape(-1), yy.reshape(-1)], 1)
        )
        out[r0:r1, c0:c1] = inside.reshape(yy.shape)
    if not out.any():  # a region of a pixel or two: its centroid's pixel
        out[min(h - 1, max(0, int(round(cy)))), min(w - 1, max(0, int(round(cx))))] = True
    return out


def corrupt_mask(mask: np.ndarray, kind: str, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """A corrupted copy of a nested label mask (same shape and dtype): ``kind`` is one of
    :data:`NOISE_KINDS`, its magnitude drawn from ``rng`` and multiplied by ``strength`` (0 returns an
    unchanged copy). See the module's docstring for what each kind does and imitates."""
    _check_kind(kind)
    strength = _check_strength(strength)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2D label mask (H, W), got shape {mask.shape}")
    top = int(mask.max()) if mask.size else 0
    if top <= 0 or strength == 0:
        return mask.copy()
    regions = [mask >= k for k in range(1, top + 1)]
    present = [bool(r.any()) for r in regions]
    outer = equivalent_radius(regions[0])

    if kind == "shift":
        length = rng.uniform(*SHIFT_RANGE) * strength * outer
        phi = rng.uniform(0, 2 * np.pi)
        dy, dx = int(round(length * math.sin(phi))), int(round(length * math.cos(phi)))
        if dy == 0 and dx == 0:  # at least one pixel
            dy, dx = (0, 1 if math.cos(phi) >= 0 else -1) if abs(math.cos(phi)) >= abs(math.sin(phi)) else (
                1 if math.sin(phi) >= 0 else -1, 0)
        corrupted = [_translate(r, dy, dx) for r in regions]
    elif kind == "elastic":
        amplitude = rng.uniform(*ELASTIC_RANGE) * strength * outer
        pad = int(math.ceil(amplitude)) + 2
        window = _window(regions[0], pad)
        shape = (window[0].stop - window[0].start, window[1].stop - window[1].start)
        field = _displacement(rng, shape, max(1.5, 0.4 * outer)) * amplitude
        corrupted = []
        for r in regions:
            out = np.zeros_like(r)
            out[window] = _warp(r[window], field)
            corrupted.append(out)
    else:
        corrupted = []
        for r, there in zip(regions, present):
            if not there:
                corrupted.append(r)
                continue
            if kind == "polygon":
                corrupted.append(_polygon(r, rng, strength))
                continue
            radius = max(1.0, rng.uniform(*MORPHOLOGY_RANGE) * strength * equivalent_radius(r))
            corrupted.append(_dilate(r, radius) if kind == "dilation" else _erode(r, radius))

    # re-compose: each region inside the corrupted one around it; present regions stay present
    out = np.zeros(mask.shape, dtype=np.int64)
    around = np.ones(mask.shape, dtype=bool)
    for k, (r, there) in enumerate(zip(corrupted, present), start=1):
        if not there:
            break  # nested: every region inside an empty one is empty
        r = r & around
        if not r.any():
            r = _deepest(around)
        out += r
        around = r
    return out.astype(mask.dtype)


def _deepest(region: np.ndarray) -> np.ndarray:
    """The pixels of ``region`` farthest from its boundary (at least one pixel if the region has any)."""
    if not region.any():
        return region.copy()
    depth = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    return depth >= depth.max()


def corrupt_masks(
    masks: np.ndarray,
    rate: float,
    kinds: Sequence[str] | str = NOISE_KINDS,
    seed: int = 0,
    strength: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Corrupt a fraction of a batch of label masks ``(N, H, W)``.

    Exactly ``round(rate * N)`` masks (Python's ``round``), chosen at random, are corrupted by
    :func:`corrupt_mask`, each with a kind drawn uniformly from ``kinds`` (one kind or a sequence of them)
    and its own random stream; the others are copied unchanged. Deterministic given ``seed``. Returns the
    noisy masks (same dtype), a bool array ``corrupted`` ``(N,)`` and the kind applied to each mask (None
    where it was left clean). A chosen mask with nothing in it stays empty (it is still marked corrupted).
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be a batch of 2D label masks (N, H, W), got shape {masks.shape}")
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.number)) or not 0 <= rate <= 1:
        raise ValueError(f"rate must be a number in [0, 1], got rate={rate!r}")
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not kinds:
        raise ValueError(f"kinds must name at least one of {', '.join(NOISE_KINDS)}, got kinds={kinds!r}")
    for kind in kinds:
        _check_kind(kind)
    strength = _check_strength(strength)
    n = len(masks)
    count = int(round(rate * n))
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(n, size=count, replace=False)) if count else np.zeros(0, dtype=np.int64)
    drawn = rng.integers(len(kinds), size=count)
    seeds = rng.integers(0, 2**63, size=count)
    noisy = masks.copy()
    corrupted = np.zeros(n, dtype=bool)
    applied: list[str | None] = [None] * n
    for i, k, s in zip(chosen, drawn, seeds):
        noisy[i] = corrupt_mask(masks[i], kinds[k], np.random.default_rng(s), strength)
        corrupted[i] = True
        applied[i] = kinds[k]
    return noisy, corrupted, applied


def mask_disagreement(a, b) -> np.ndarray:
    """The fraction of pixels whose labels differ between ``a`` and ``b``: per sample over the last two
    axes (``(N, H, W)`` gives ``(N,)``, ``(H, W)`` a 0-d array)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"masks must have the same shape, at least 2D, got {a.shape} and {b.shape}")
    return (a != b).mean(axis=(-2, -1))


def region_dice(a, b, level: int = 1):
    """The Dice overlap of region ``level`` (``mask >= level``) between ``a`` and ``b``, per sample over the
    last two axes (a float for ``(H, W)``, an array for a batch); 1 where the region is empty in both."""
    a, b = np.asarray(a) >= level, np.asarray(b) >= level
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"masks must have the same shape, at least 2D, got {a.shape} and {b.shape}")
    inter = (a & b).sum(axis=(-2, -1))
    total = a.sum(axis=(-2, -1)) + b.sum(axis=(-2, -1))
    dice = np.where(total > 0, 2 * inter / np.maximum(total, 1), 1.0)
    return float(dice) if a.ndim == 2 else dice
