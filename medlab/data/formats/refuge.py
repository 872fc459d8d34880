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

The crop around the optic disc and the resizing (:func:`roi_box`, :func:`prepare_pair`), the image
readers and the base class are in :mod:`medlab.data.formats.fundus`, shared with
:mod:`medlab.data.formats.drishti_gs`; their names are importable from here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from medlab.data.formats.common import check_data_dir, examples, found, item_index
from medlab.data.formats.fundus import (  # noqa: F401 (re-exported: the reader's names, as before)
    CLASSES,
    DEFAULT_ROI_FRACTION,
    LEVEL_TOLERANCE,
    MAX_DISC_FRACTION,
    MAX_OFF_LEVEL,
    MIN_IMAGE_SIZE,
    ROIS,
    FundusReader,
    check_decoded,
    check_options,
    check_same_size,
    crop_square,
    header_size,
    prepare_pair,
    read_grey,
    read_rgb,
    roi_box,
    to_tensors,
)

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg")
MASK_SUFFIXES = (".bmp", ".png")
# REFUGE mask grey levels and the thresholds that map them to classes (those of bob.ip.binseg)
LEVELS = (0, 128, 255)  # cup, disc rim, background
CUP_MAX, DISC_MAX = 100, 150  # cup: pixel <= 100; disc (rim or cup): pixel <= 150
DOCS = "see data/README.md (REFUGE) for where to get the data and the layout medlab expects"


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
        far = np.flatnonzero(counts * off_level)
        shown = ", ".join(map(str, far[:10]))
        shown += f" ... ({len(far)} in all)" if len(far) > 10 else ""
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
    root = check_data_dir(root, "the folder holding the REFUGE folders", DOCS)
    part = PARTS[split]
    groups = list(part.groups or {})
    image_dirs = [f"{part.images}/{g}" for g in groups] if part.grouped_images else [part.images]
    mask_dirs = [f"{part.masks}/{g}" for g in groups] if groups else [part.masks]
    absent = [d + "/" for d in image_dirs + mask_dirs if not (root / d).is_dir()]
    if absent:
        raise FileNotFoundError(
            f"{root} is not in the REFUGE layout for split {split!r}: it has no {', '.join(absent)} "
            f"(found: {found(root)}); {DOCS}"
        )

    images: dict[str, tuple[Path, str | None]] = {}
    masks: dict[str, tuple[Path, str | None]] = {}
    for folder in image_dirs:
        group = folder.rsplit("/", 1)[-1] if part.grouped_images else None
        _files(root / folder, IMAGE_SUFFIXES, group, images)
    for folder in mask_dirs:
        _files(root / folder, MASK_SUFFIXES, folder.rsplit("/", 1)[-1] if groups else None, masks)
    if not images:
        listing = "; ".join(f"{d}/ holds {found(root / d)}" for d in image_dirs)
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
                f"these images and their masks are in different group folders: {examples(moved, limit=3)}"
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


class REFUGE(FundusReader):
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
    decoded in ``__getitem__`` (which checks the mask values) and, unless ``cache=False``, the resized
    uint8 crop is kept in the on-disk item cache under ``cache_dir``
    (:mod:`medlab.data.formats.cache`). :meth:`check` decodes every pair. ``glaucoma[i]`` is True, False
    or None (unknown: the val split). A ``transform`` is called as ``transform(image, mask)`` on the
    tensors and returns the pair.
    """

    title = "REFUGE"
    reader = "refuge"
    dataset_name = "REFUGE"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: int = 256,
        roi: str = "disc",
        roi_fraction: float = DEFAULT_ROI_FRACTION,
        transform: Callable | None = None,
        cache: bool = True,
        cache_dir: str | Path | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        check_options(image_size, roi, roi_fraction)
        root = Path(root).expanduser()
        self.pairs = find_pairs(root, split)
        for pair in self.pairs:
            check_same_size(pair.image, header_size(pair.image), pair.mask, header_size(pair.mask))
        self.glaucoma = [p.glaucoma for p in self.pairs]
        files = [path for pair in self.pairs for path in (pair.image, pair.mask)]
        names = [p.name for p in self.pairs]
        self.setup(root, split, names, files, image_size, roi, roi_fraction, transform, cache, cache_dir)

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return read_pair(self.pairs[item_index(index, len(self))])

    def details(self) -> dict:
        return {
            "glaucoma_counts": {
                "glaucoma": sum(g is True for g in self.glaucoma),
                "non-glaucoma": sum(g is False for g in self.glaucoma),
                "unknown": sum(g is None for g in self.glaucoma),
            },
        }
