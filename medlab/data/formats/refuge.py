"""REFUGE (the MICCAI 2018 Retinal Fundus Glaucoma Challenge, Orlando et al., Medical Image Analysis 2020)
in its official on-disk layout, for optic disc and cup segmentation.

Expected under ``root`` (the folder holding the unpacked zips; a split needs only its own two folders)::

    Training400/Glaucoma/g0001.jpg ... g0040.jpg                               train images
    Training400/Non-Glaucoma/n0001.jpg ... n0360.jpg
    Annotation-Training400/Disc_Cup_Masks/Glaucoma/g0001.bmp ...               train masks
    Annotation-Training400/Disc_Cup_Masks/Non-Glaucoma/n0001.bmp ...
    REFUGE-Validation400/V0001.jpg ... V0400.jpg                               val images
    REFUGE-Validation400-GT/Disc_Cup_Masks/V0001.bmp ...                       val masks
    Test400/T0001.jpg ... T0400.jpg                                            test images
    REFUGE-Test-GT/Disc_Cup_Masks/G/T0001.bmp ...  .../N/T0002.bmp ...         test masks (G glaucoma, N not)

Images are ``.jpg`` (or ``.jpeg``), masks ``.bmp`` (or ``.png``); other files (the ``.xlsx`` sheets of
fovea locations and labels) are ignored. Every image must have a mask of the same name (in the same
group folder for train) and every mask an image; the glaucoma label of an image comes from its group
folder (train: ``Glaucoma`` / ``Non-Glaucoma``; test: ``G`` / ``N``; val: unknown, ``None``: the
validation labels are in a spreadsheet this reader does not read).

Masks are grey images with 0 = optic cup, 128 = disc rim (disc but not cup), 255 = background. They are
mapped by thresholds, as bob.ip.binseg's loader does: disc = pixel <= 150, cup = pixel <= 100, so that
JPEG-like values near the three levels are tolerated (:func:`refuge_mask_to_classes`). A mask in colour,
with many values far from 0, 128 and 255, without any disc, or whose disc covers more than half the
image (an inverted mask, or another encoding) raises an error that names the file.

The crop around the optic disc and the resizing (:func:`roi_box`, :func:`prepare_pair`) and the image
readers are shared with :mod:`medlab.data.formats.drishti_gs`.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

CLASSES = ("background", "disc rim", "cup")  # mask indices 0, 1, 2: disc = mask >= 1, cup = mask == 2
SPLITS = ("train", "val", "test")
ROIS = ("disc", "full")
DEFAULT_ROI_FRACTION = 0.35
MIN_IMAGE_SIZE = 8
IMAGE_SUFFIXES = (".jpg", ".jpeg")
MASK_SUFFIXES = (".bmp", ".png")
# REFUGE mask grey levels and the thresholds that map them to classes (those of bob.ip.binseg)
LEVELS = (0, 128, 255)  # cup, disc rim, background
CUP_MAX, DISC_MAX = 100, 150  # cup: pixel <= 100; disc (rim or cup): pixel <= 150
LEVEL_TOLERANCE = 32  # a pixel farther than this from every level is "off-level"
MAX_OFF_LEVEL = 0.01  # the share of off-level (or colour) pixels a mask may hold (JPEG-like edges)
MAX_DISC_FRACTION = 0.5  # a disc covering more of the image is an inverted or foreign mask
DOCS = "see data/README.md (REFUGE) for where to get the data and the layout medlab expects"
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError)


@dataclass(frozen=True)
class _Part:
    images: str  # folder of the images, relative to root
    masks: str  # folder of the masks
    groups: dict[str, bool] | None  # glaucoma label of each group sub-folder; None: flat, label unknown
    grouped_images: bool  # the images sit in the group sub-folders too (train), or flat (test)


PARTS = {
    "train": _Part(
        "Training400",
        "Annotation-Training400/Disc_Cup_Masks",
        {"Glaucoma": True, "Non-Glaucoma": False},
        True,
    ),
    "val": _Part("REFUGE-Validation400", "REFUGE-Validation400-GT/Disc_Cup_Masks", None, False),
    "test": _Part("Test400", "REFUGE-Test-GT/Disc_Cup_Masks", {"G": True, "N": False}, False),
}


def _examples(items, limit: int = 5) -> str:
    items = sorted(items)
    shown = ", ".join(items[:limit])
    return shown + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def _found(folder: Path, limit: int = 10) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "nothing"
    return str(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


# --- reading images (shared with drishti_gs) --------------------------------------------------------


def header_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of the image at ``path`` from its header (no pixel is decoded). Raises
    ValueError naming ``path`` when it is not a readable image."""
    try:
        with Image.open(path) as image:
            return image.size
    except _READ_ERRORS as error:
        raise ValueError(f"cannot read image {path}: {error}") from None


def read_rgb(path: Path) -> np.ndarray:
    """The image at ``path`` as uint8 (H, W, 3) RGB. Raises ValueError naming ``path`` when it cannot be
    decoded (not an image, truncated)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except _READ_ERRORS as error:
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
    except _READ_ERRORS as error:
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


# --- the REFUGE mask encoding ------------------------------------------------------------------------


def refuge_mask_to_classes(grey: np.ndarray, path: str | Path) -> np.ndarray:
    """Map a REFUGE mask (grey levels 0 cup, 128 disc rim, 255 background), read from ``path``, to int64
    class indices (0 background, 1 disc rim, 2 cup): pixel <= 100 is cup, 100 < pixel <= 150 disc rim,
    the rest background. Values near the three levels (JPEG-like edges) are tolerated by these
    thresholds; a mask with more than ``MAX_OFF_LEVEL`` of its pixels farther than ``LEVEL_TOLERANCE``
    from every level, with no disc pixel, or whose disc covers more than ``MAX_DISC_FRACTION`` of the
    image raises ValueError naming ``path``."""
    grey = np.asarray(grey, dtype=np.uint8)
    counts = np.bincount(grey.ravel(), minlength=256)  # a histogram: the checks below cost nothing per pixel
    values = np.arange(256)
    off_level = np.min(np.abs(values[:, None] - np.array(LEVELS)[None]), axis=1) > LEVEL_TOLERANCE
    n_off, n_disc = int(counts[off_level].sum()), int(counts[: DISC_MAX + 1].sum())
    if n_off > MAX_OFF_LEVEL * grey.size:
        found = np.flatnonzero(counts * off_level)
        shown = ", ".join(map(str, found[:10]))
        shown += f" ... ({len(found)} in all)" if len(found) > 10 else ""
        raise ValueError(
            f"mask {path} holds {n_off} of {grey.size} pixels with values far from the REFUGE levels "
            f"0 (cup), 128 (disc rim) and 255 (background): {shown}"
        )
    if n_disc == 0:
        raise ValueError(
            f"mask {path} marks no optic disc (no pixel <= {DISC_MAX}; values "
            f"{np.flatnonzero(counts)[:10].tolist()}); REFUGE masks draw the disc rim 128 and the cup 0 on a "
            f"255 background"
        )
    if n_disc > MAX_DISC_FRACTION * grey.size:
        raise ValueError(
            f"mask {path}: the disc (pixels <= {DISC_MAX}) covers {n_disc / grey.size:.0%} of the image; "
            f"REFUGE masks draw the disc rim 128 and the cup 0 on a 255 background (is this mask inverted or "
            f"in another encoding?)"
        )
    lookup = np.where(values <= CUP_MAX, 2, np.where(values <= DISC_MAX, 1, 0)).astype(np.int64)
    return lookup[grey]


# --- the crop around the disc and the resizing (shared with drishti_gs) -------------------------------


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_options(image_size: int, roi: str, roi_fraction: float) -> None:
    """Raise ValueError for an ``image_size`` below ``MIN_IMAGE_SIZE``, an unknown ``roi`` or a
    ``roi_fraction`` that is not a positive number."""
    if not isinstance(image_size, (int, np.integer)) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer of at least {MIN_IMAGE_SIZE}, got {image_size!r}")
    if roi not in ROIS:
        raise ValueError(f"unknown roi {roi!r}; expected one of {', '.join(ROIS)}")
    if not (_is_number(roi_fraction) and math.isfinite(roi_fraction) and roi_fraction > 0):
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


# --- the layout ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One REFUGE image: its name (file stem), image and mask paths, and glaucoma label (None: unknown)."""

    name: str
    image: Path
    mask: Path
    glaucoma: bool | None


def _files(
    folder: Path, suffixes: tuple[str, ...], group: str | None, seen: dict[str, tuple[Path, str | None]]
) -> None:
    """Add the files of ``folder`` with one of ``suffixes`` to ``seen`` (stem: (path, group))."""
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        if path.stem in seen:
            raise ValueError(f"{path.stem} is there twice: {seen[path.stem][0]} and {path}; keep one")
        seen[path.stem] = (path, group)


def find_pairs(root: str | Path, split: str) -> list[Pair]:
    """The image and mask of every image of ``split`` under ``root``, sorted by name. Checks the layout
    only (no file is opened): raises FileNotFoundError for a missing ``root`` or a missing folder of the
    split (listing what ``root`` holds), NotADirectoryError when ``root`` is a file, and ValueError for an
    image without a mask, a mask without an image, or a name present twice."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data_dir {root} does not exist; {DOCS}")
    if not root.is_dir():
        raise NotADirectoryError(f"data_dir {root} is a file, expected the folder holding the REFUGE folders")
    part = PARTS[split]
    groups = list(part.groups or {})
    image_dirs = [f"{part.images}/{g}" for g in groups] if part.grouped_images else [part.images]
    mask_dirs = [f"{part.masks}/{g}" for g in groups] if groups else [part.masks]
    absent = [d + "/" for d in image_dirs + mask_dirs if not (root / d).is_dir()]
    if absent:
        raise FileNotFoundError(
            f"{root} is not in the REFUGE layout for split {split!r}: it has no {', '.join(absent)} "
            f"(found: {_found(root)}); {DOCS}"
        )

    images: dict[str, tuple[Path, str | None]] = {}
    masks: dict[str, tuple[Path, str | None]] = {}
    for folder in image_dirs:
        group = folder.rsplit("/", 1)[-1] if part.grouped_images else None
        _files(root / folder, IMAGE_SUFFIXES, group, images)
    for folder in mask_dirs:
        _files(root / folder, MASK_SUFFIXES, folder.rsplit("/", 1)[-1] if groups else None, masks)
    if not images:
        listing = "; ".join(f"{d}/ holds {_found(root / d)}" for d in image_dirs)
        raise FileNotFoundError(
            f"no {'/'.join(IMAGE_SUFFIXES)} image for split {split!r} under {root} ({listing}); {DOCS}"
        )
    without_mask = sorted(images.keys() - masks.keys())
    if without_mask:

        def expected(name: str) -> str:
            group = images[name][1]
            if group is not None:
                return str(root / part.masks / group / f"{name}.bmp")
            if groups:
                return " or ".join(str(root / part.masks / g / f"{name}.bmp") for g in groups)
            return str(root / part.masks / f"{name}.bmp")

        shown = [f"{images[n][0]} (expected {expected(n)})" for n in without_mask[:3]]
        more = f" ... ({len(without_mask)} in all)" if len(without_mask) > 3 else ""
        raise ValueError(
            f"{len(without_mask)} image(s) of split {split!r} have no mask: {'; '.join(shown)}{more}"
        )
    without_image = sorted(masks.keys() - images.keys())
    if without_image:
        shown = [str(masks[n][0]) for n in without_image[:3]]
        more = f" ... ({len(without_image)} in all)" if len(without_image) > 3 else ""
        raise ValueError(
            f"{len(without_image)} mask(s) of split {split!r} have no image in {root / part.images}: "
            f"{'; '.join(shown)}{more}"
        )
    if part.grouped_images:
        moved = [f"{n} ({images[n][0]} but {masks[n][0]})" for n in images if images[n][1] != masks[n][1]]
        if moved:
            raise ValueError(
                f"these images and their masks are in different group folders: {_examples(moved, limit=3)}"
            )
    pairs = []
    for name in sorted(images):
        group = images[name][1] if part.grouped_images else masks[name][1]
        label = part.groups[group] if part.groups else None
        pairs.append(Pair(name, images[name][0], masks[name][0], label))
    return pairs


def read_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """The full-resolution ``(image, mask)`` of ``pair``: uint8 (H, W, 3) RGB and int64 (H, W) class
    indices (:func:`refuge_mask_to_classes`). Errors name the file at fault: an unreadable file, an image
    and a mask of different sizes, or a mask with unexpected values."""
    image = read_rgb(pair.image)
    grey = read_grey(pair.mask)
    check_same_size(pair.image, image.shape[1::-1], pair.mask, grey.shape[::-1])
    return image, refuge_mask_to_classes(grey, pair.mask)


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


class REFUGE(Dataset):
    """One split of REFUGE: ``(image, mask)`` with ``image`` a float32 tensor (3, S, S) in [0, 1] (RGB) and
    ``mask`` an int64 tensor (S, S) of indices into ``CLASSES`` (0 background, 1 disc rim, 2 cup; the disc
    is ``mask >= 1``, the cup ``mask == 2``), ``S = image_size``.

    Region of interest. Fundus images are about 2000 pixels wide and the disc a few hundred, so the
    segmentation works on a square crop around the optic disc: ``roi="disc"`` (default) crops a square of
    side ``roi_fraction * min(H, W)`` centred on the centre of the disc's bounding box *taken from the
    ground-truth mask*, moved to stay inside the image (padded with zeros if the image is smaller than the
    crop). This is an oracle localisation: it replaces the usual first stage of disc and cup pipelines,
    detecting the disc, by the ground truth, so scores are those of a perfect detector's crops (and the
    test masks are read to place the test crops). ``roi="full"`` takes the centred square of the whole
    image instead. The crop is then resized to ``image_size`` (bilinear, antialiased, for the image;
    nearest neighbour for the mask); see :func:`prepare_pair`.

    The constructor checks the layout (:func:`find_pairs`) and reads the headers of this split's files
    (an unreadable file or an image and mask of different sizes is an error naming both); pixels are
    decoded in ``__getitem__`` (which checks the mask values) and, with ``cache=True``, the resized uint8
    crop is kept (4 bytes per pixel: 105 MB for 400 items at 256). :meth:`check` decodes every pair.
    ``glaucoma[i]`` is True, False or None (unknown: the val split). A ``transform`` is called as
    ``transform(image, mask)`` on the tensors and returns the pair.
    """

    classes = CLASSES

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: int = 256,
        roi: str = "disc",
        roi_fraction: float = DEFAULT_ROI_FRACTION,
        transform: Callable | None = None,
        cache: bool = True,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        check_options(image_size, roi, roi_fraction)
        root = Path(root).expanduser()
        self.pairs = find_pairs(root, split)
        for pair in self.pairs:
            check_same_size(pair.image, header_size(pair.image), pair.mask, header_size(pair.mask))
        self.root, self.split, self.image_size = root, split, int(image_size)
        self.roi, self.roi_fraction = roi, roi_fraction
        self.names = [p.name for p in self.pairs]
        self.glaucoma = [p.glaucoma for p in self.pairs]
        self.transform = transform
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def _index(self, index: int) -> int:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} image(s)")
        return index % len(self)

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The full-resolution ``(image, mask)`` of item ``index``: uint8 (H, W, 3) RGB and int64 (H, W)
        class indices, before the crop and resizing."""
        return read_pair(self.pairs[self._index(index)])

    def __getitem__(self, index: int):
        index = self._index(index)
        if index in self._cache:
            image, mask = self._cache[index]
        else:
            image, mask = prepare_pair(*self.load_pair(index), self.image_size, self.roi, self.roi_fraction)
            if self.cache:
                self._cache[index] = image, mask
        image_t, mask_t = to_tensors(image, mask)
        if self.transform is not None:
            return self.transform(image_t, mask_t)
        return image_t, mask_t

    def check(self) -> dict:
        """Decode every pair of the split and check it (readable, same size, mask values); returns the
        number of pairs, their sizes (``"WxH"``: count) and the names of the images whose disc does not fit
        in the ``roi="disc"`` crop (a ``roi_fraction`` too small for them)."""
        return check_decoded(self.load_pair, [pair.name for pair in self.pairs], self.roi_fraction)

    @property
    def info(self) -> dict:
        return {
            "kind": "real",
            "name": "REFUGE",
            "path": str(self.root),
            "split": self.split,
            "n": len(self),
            "image_size": self.image_size,
            "roi": self.roi,
            "roi_fraction": self.roi_fraction,
            "glaucoma_counts": {
                "glaucoma": sum(g is True for g in self.glaucoma),
                "non-glaucoma": sum(g is False for g in self.glaucoma),
                "unknown": sum(g is None for g in self.glaucoma),
            },
        }
