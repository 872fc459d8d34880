"""What the REFUGE and Drishti-GS1 readers share: reading fundus images and grey masks, the square crop
around the optic disc and its resizing, and :class:`FundusReader`, their base class (the item cache,
crop-and-resize, tensors, ``transform``, :meth:`FundusReader.check`)."""

from __future__ import annotations

import math
import numbers
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from medlab.data.constants import FUNDUS_CLASSES as CLASSES
from medlab.data.formats.cache import CachedReader
from medlab.data.formats.common import check_image_size

ROIS = ("disc", "full")
DEFAULT_ROI_FRACTION = 0.35
MIN_IMAGE_SIZE = 8
LEVEL_TOLERANCE = 32  # a pixel farther than this from every level is "off-level"
MAX_OFF_LEVEL = 0.01  # the share of off-level (or colour) pixels a mask may hold (JPEG-like edges)
MAX_DISC_FRACTION = 0.5  # a disc covering more of the image is an inverted or foreign mask
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError)


# --- reading images ---------------------------------------------------------------------------------

def header_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of the image at ``path`` from its header (no pixel is decoded). Raises
    ValueError naming ``path`` when it is not a readable image."""
    try:
        with Image.open(path) as image:
            return image.size
    except READ_ERRORS as error:
        raise ValueError(f"cannot read image {path}: {error}") from None


def read_rgb(path: Path) -> np.ndarray:
    """The image at ``path`` as uint8 (H, W, 3) RGB. Raises ValueError naming ``path`` when it cannot be
    decoded (not an image, truncated)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except READ_ERRORS as error:
        raise ValueError(f"cannot read image {path}: {error}") from None


class _ModeError(Exception):
    pass


def read_grey(path: Path, what: str = "mask") -> np.ndarray:
    """The grey image at ``path`` (a mask or soft map) as uint8 (H, W). Grey (``L``), black-and-white,
    palette and RGB(A) files are accepted as long as they are grey: a file whose red, green and blue
    differ (by more than ``LEVEL_TOLERANCE``) in more than ``MAX_OFF_LEVEL`` of its pixels is a colour
    image and raises ValueError naming ``path``; so does a 16-bit or float image."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode in ("L", "1", "LA"):
                return np.asarray(image.convert("L"), dtype=np.uint8).copy()
            if mode not in ("P", "PA", "RGB", "RGBA"):
                raise _ModeError(mode)
            rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    except _ModeError as error:
        raise ValueError(
            f"{what} {path} has pixel mode {error.args[0]!r}; expected an 8-bit grey image"
        ) from None
    except READ_ERRORS as error:
        raise ValueError(f"cannot read {what} {path}: {error}") from None
    spread = rgb.max(axis=2) - rgb.min(axis=2)
    coloured = spread > LEVEL_TOLERANCE
    if coloured.mean() > MAX_OFF_LEVEL:
        raise ValueError(
            f"{what} {path} is a colour image ({int(coloured.sum())} of {coloured.size} pixels have red, "
            f"green and blue differing by more than {LEVEL_TOLERANCE}); expected a grey {what}"
        )
    return np.rint(rgb.mean(axis=2)).astype(np.uint8)


def check_same_size(
    image_path: Path, image_size: tuple[int, int], mask_path: Path, mask_size: tuple[int, int]
) -> None:
    """Raise ValueError naming both files when an image and its mask differ in size (``(width, height)``)."""
    if tuple(image_size) != tuple(mask_size):
        raise ValueError(
            f"image {image_path} is {image_size[0]}x{image_size[1]} but its mask {mask_path} is "
            f"{mask_size[0]}x{mask_size[1]} (width x height); an image and its mask must have the same size"
        )


# --- the crop around the disc and the resizing ------------------------------------------------------


def is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_options(image_size: int, roi: str, roi_fraction: float) -> None:
    """Raise ValueError for an ``image_size`` below ``MIN_IMAGE_SIZE``, an unknown ``roi`` or a
    ``roi_fraction`` that is not a positive number."""
    check_image_size(image_size, MIN_IMAGE_SIZE)
    if roi not in ROIS:
        raise ValueError(f"unknown roi {roi!r}; expected one of {', '.join(ROIS)}")
    if not (is_number(roi_fraction) and math.isfinite(roi_fraction) and roi_fraction > 0):
        raise ValueError(f"roi_fraction must be a positive number, got {roi_fraction!r}")


def _start(centre: float, side: int, n: int) -> int:
    """The first index of a window of ``side`` pixels centred on ``centre`` (in pixel-edge coordinates),
    moved to lie inside ``[0, n)``; a window longer than ``n`` is centred on the image instead."""
    if side > n:
        return -((side - n) // 2)
    start = math.floor(centre - side / 2 + 0.5)
    return min(max(start, 0), n - side)


def roi_box(
    mask: np.ndarray, roi: str = "disc", roi_fraction: float = DEFAULT_ROI_FRACTION
) -> tuple[int, int, int]:
    """The square crop ``(top, left, side)`` of an image of ``mask.shape`` (class indices, disc >= 1).

    ``roi="disc"``: ``side = round(roi_fraction * min(H, W))``, centred on the centre of the bounding box of
    the disc in ``mask`` and moved to stay inside the image (when ``side`` exceeds a dimension of the
    image, the crop is centred on the image there and :func:`crop_square` pads with zeros). Taking the disc
    from the ground truth is an oracle localisation: it stands in for the usual first stage of disc and
    cup segmentation, a disc detector, so the segmentation is measured on well-centred crops.
    ``roi="full"``: the centred square of side ``min(H, W)``."""
    h, w = mask.shape
    if roi == "full":
        side = min(h, w)
        return (h - side) // 2, (w - side) // 2, side
    if roi != "disc":
        raise ValueError(f"unknown roi {roi!r}; expected one of {', '.join(ROIS)}")
    side = max(1, math.floor(roi_fraction * min(h, w) + 0.5))
    rows = np.flatnonzero((mask >= 1).any(axis=1))
    cols = np.flatnonzero((mask >= 1).any(axis=0))
    if rows.size == 0:
        raise ValueError("the mask holds no disc pixel: cannot centre the crop on the disc")
    centre_y = (rows[0] + rows[-1] + 1) / 2
    centre_x = (cols[0] + cols[-1] + 1) / 2
    return _start(centre_y, side, h), _start(centre_x, side, w), side


def crop_square(array: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """``array[top:top+side, left:left+side]`` (over the first two axes), with zeros where the square
    extends beyond the array."""
    h, w = array.shape[:2]
    out = np.zeros((side, side, *array.shape[2:]), dtype=array.dtype)
    y0, y1 = max(top, 0), min(top + side, h)
    x0, x1 = max(left, 0), min(left + side, w)
    if y1 > y0 and x1 > x0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = array[y0:y1, x0:x1]
    return out


def prepare_pair(
    image: np.ndarray,
    mask: np.ndarray,
    image_size: int,
    roi: str = "disc",
    roi_fraction: float = DEFAULT_ROI_FRACTION,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop a full-resolution pair (uint8 (H, W, 3) image, class-index (H, W) mask) to :func:`roi_box`
    and resize it to ``image_size`` squared: the image with PIL's bilinear filter (antialiased when
    shrinking), the mask with nearest neighbour. Returns uint8 (S, S, 3) and uint8 (S, S)."""
    top, left, side = roi_box(mask, roi, roi_fraction)
    image = crop_square(image, top, left, side)
    mask = crop_square(mask.astype(np.uint8), top, left, side)
    if side != image_size:
        size = (image_size, image_size)
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    return np.array(image, dtype=np.uint8), np.array(mask, dtype=np.uint8)  # writable copies


def to_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (S, S, 3) and (S, S) arrays as a float32 (3, S, S) tensor in [0, 1] and an int64 (S, S) one."""
    image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).to(torch.float32) / 255.0
    return image_t.contiguous(), torch.from_numpy(np.asarray(mask, dtype=np.int64))


def check_decoded(load_pair, names: list[str], roi_fraction: float) -> dict:
    """Decode every item with ``load_pair(index)`` (which checks it) and report the number of items, their
    sizes (``"WxH"``: count) and the names of those whose disc does not fit in the ``roi="disc"`` crop."""
    sizes: Counter = Counter()
    cut = []
    for index, name in enumerate(names):
        _, mask = load_pair(index)
        h, w = mask.shape
        sizes[f"{w}x{h}"] += 1
        top, left, side = roi_box(mask, "disc", roi_fraction)
        if (mask >= 1).sum() != (crop_square(mask, top, left, side) >= 1).sum():
            cut.append(name)
    return {"n": len(names), "sizes": dict(sizes), "disc_exceeds_roi": cut}



# --- the base class of the readers -------------------------------------------------------------------


class FundusReader(CachedReader):
    """Base of the fundus readers: ``(image, mask)`` with ``image`` a float32 tensor (3, S, S) in [0, 1]
    (RGB) and ``mask`` an int64 tensor (S, S) of indices into ``CLASSES`` (0 background, 1 disc rim,
    2 cup), ``S = image_size``.

    A subclass finds its files, calls :meth:`setup` and implements :meth:`load_pair` (the full-resolution
    pair, checked). An item is :func:`prepare_pair`'s crop, kept in the item cache (image and mask packed
    as uint8 (S, S, 4)) unless ``cache=False``; ``transform(image, mask)``, if given, is called on the
    tensors after the cache and returns the pair.
    """

    classes = CLASSES
    reader = "fundus"  # the cache folder's name
    dataset_name = "fundus"  # info's "name"

    def setup(
        self,
        root: Path,
        split: str,
        names: list[str],
        files: list[Path],
        image_size: int,
        roi: str,
        roi_fraction: float,
        transform: Callable | None,
        cache: bool,
        cache_dir: str | Path | None,
        options: dict | None = None,
    ) -> None:
        """Set the attributes every fundus reader has and its item cache, keyed by ``files`` and by the
        options that shape the pixels (``image_size``, ``roi``, ``roi_fraction`` and ``options``)."""
        self.root, self.split, self.names = root, split, list(names)
        self.image_size, self.roi, self.roi_fraction = int(image_size), roi, roi_fraction
        self.transform = transform
        shaping = {"image_size": self.image_size, "roi": roi, "roi_fraction": roi_fraction, **(options or {})}
        self.use_cache(cache, cache_dir, self.reader, shaping, files, (self.image_size, self.image_size, 4))

    def __len__(self) -> int:
        return len(self.names)

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The full-resolution ``(image, mask)`` of item ``index``: uint8 (H, W, 3) RGB and int64 (H, W)
        class indices, before the crop and resizing."""
        raise NotImplementedError

    def prepare(self, index: int) -> np.ndarray:
        image, mask = prepare_pair(*self.load_pair(index), self.image_size, self.roi, self.roi_fraction)
        return np.concatenate([image, mask[..., None]], axis=2)

    def __getitem__(self, index: int):
        item = self.array(index)
        image, mask = to_tensors(item[..., :3], item[..., 3])
        if self.transform is not None:
            return self.transform(image, mask)
        return image, mask

    def check(self) -> dict:
        """Decode every item of the split and check it (readable files of one size, valid masks); returns
        the number of items, their sizes (``"WxH"``: count) and the names of those whose disc does not fit
        in the ``roi="disc"`` crop (a ``roi_fraction`` too small for them)."""
        return check_decoded(self.load_pair, self.names, self.roi_fraction)

    def details(self) -> dict:
        """What :attr:`info` adds for this dataset."""
        return {}

    @property
    def info(self) -> dict:
        return {
            "kind": "real",
            "name": self.dataset_name,
            "path": str(self.root),
            "split": self.split,
            "n": len(self),
            "image_size": self.image_size,
            "roi": self.roi,
            "roi_fraction": self.roi_fraction,
            **self.details(),
        }
