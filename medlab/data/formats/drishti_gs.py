"""Drishti-GS1 (Sivaswamy et al., ISBI 2014; JSM Biomedical Imaging Data Papers 2015) in its official
on-disk layout, for optic disc and cup segmentation.

Expected under ``root`` (``Drishti-GS1_files`` as it unpacks, or the folder holding it)::

    Training/Images/drishtiGS_002.png ...                                      50 images
    Training/GT/drishtiGS_002/SoftMap/drishtiGS_002_ODsegSoftmap.png           disc soft map
    Training/GT/drishtiGS_002/SoftMap/drishtiGS_002_cupsegSoftmap.png          cup soft map
    Test/Images/drishtiGS_001.png ...                                          51 images
    Test/Test_GT/drishtiGS_001/SoftMap/drishtiGS_001_ODsegSoftmap.png ...      (the test ground truth)

Other files (``AvgBoundary/`` text files, disc centres, the notching and diagnosis sheets) are ignored.
Every image must have its ground-truth folder with both soft maps, every ground-truth folder an image;
a missing soft map, a soft map of another size than its image, an unreadable file, a colour soft map or
a soft map that marks nothing at the threshold raises an error that names the file.

The soft maps are grey 0..255: the fraction of the annotators (four for Drishti-GS1) who marked the pixel
as disc (or cup), 255 where all agree. They are binarised at ``soft_threshold`` (default 0.5): a pixel is
disc when ``softmap >= soft_threshold * 255``, so by default the region most annotators agree on
(bob.ip.binseg's "all agree" protocol corresponds to ``soft_threshold=1``, pixel 255, and its "any
annotator" to a threshold just above 0). Cup pixels outside the disc are dropped (the cup is clipped to
the disc), so the three classes are background, disc rim (disc but not cup) and cup, as for REFUGE.

Crops around the disc, resizing and the item cache are those of REFUGE, in :mod:`medlab.data.formats.fundus`.
Drishti-GS1 publishes no validation part: ``train`` and ``val`` divide ``Training`` (:func:`split_names`),
``test`` is ``Test``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from medlab.data.formats.common import check_data_dir, examples, found, item_index
from medlab.data.formats.fundus import (  # noqa: F401 (check_decoded ... to_tensors: importable here, as before)
    CLASSES,
    DEFAULT_ROI_FRACTION,
    MAX_DISC_FRACTION,
    FundusReader,
    check_decoded,
    check_options,
    check_same_size,
    header_size,
    is_number,
    prepare_pair,
    read_grey,
    read_rgb,
    to_tensors,
)

SPLITS = ("train", "val", "test")
FOLDER = "Drishti-GS1_files"
# part folder, images folder, ground-truth folder
PARTS = {"train": ("Training", "Images", "GT"), "test": ("Test", "Images", "Test_GT")}
IMAGE_SUFFIXES = (".png",)
SOFT_MAPS = {"disc": "ODsegSoftmap", "cup": "cupsegSoftmap"}
DOCS = "see data/README.md (Drishti-GS1) for where to get the data and the layout medlab expects"


@dataclass(frozen=True)
class Sample:
    """One Drishti-GS1 image: its name (file stem), image path and the paths of its two soft maps."""

    name: str
    image: Path
    disc: Path
    cup: Path


def locate(root: str | Path) -> Path:
    """The ``Drishti-GS1_files`` folder: ``root`` itself when it holds ``Training/`` or ``Test/``, else
    ``root/Drishti-GS1_files``. Raises FileNotFoundError (listing what ``root`` holds) when neither is
    there, NotADirectoryError when ``root`` is a file."""
    root = check_data_dir(root, f"the folder {FOLDER} or its parent", DOCS)
    if any((root / part).is_dir() for part, _, _ in PARTS.values()):
        return root
    if (root / FOLDER).is_dir():
        return root / FOLDER
    raise FileNotFoundError(
        f"{root} is not in the Drishti-GS1 layout: it has neither Training/ and Test/ nor {FOLDER}/ "
        f"(found: {found(root)}); {DOCS}"
    )


def soft_map_path(gt_dir: Path, name: str, kind: str) -> Path:
    """Where the ``kind`` ("disc" or "cup") soft map of image ``name`` lies under ``gt_dir``."""
    return gt_dir / name / "SoftMap" / f"{name}_{SOFT_MAPS[kind]}.png"


def find_samples(root: str | Path, part: str) -> list[Sample]:
    """Every image of ``part`` ("train": ``Training``, "test": ``Test``) with its soft maps, sorted by
    name. Checks the layout only (no file is opened): FileNotFoundError for a missing ``root`` or part
    folder (listing what is there), NotADirectoryError when ``root`` is a file, ValueError for an image
    without its ground-truth folder or soft maps and for a ground-truth folder without an image."""
    base = locate(root)
    part_name, images_name, gt_name = PARTS[part]
    image_dir, gt_dir = base / part_name / images_name, base / part_name / gt_name
    absent = [f"{part_name}/{d}/" for d, p in ((images_name, image_dir), (gt_name, gt_dir)) if not p.is_dir()]
    if absent:
        where = base / part_name if (base / part_name).is_dir() else base
        raise FileNotFoundError(
            f"{base} is not in the Drishti-GS1 layout for the {part_name} part: it has no "
            f"{', '.join(absent)} (found in {where}: {found(where)}); {DOCS}"
        )
    images = {
        p.stem: p for p in sorted(image_dir.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    }
    if not images:
        raise FileNotFoundError(f"{image_dir} holds no .png image (found: {found(image_dir)}); {DOCS}")
    truths = {p.name for p in gt_dir.iterdir() if p.is_dir()}
    without_truth = sorted(images.keys() - truths)
    if without_truth:
        raise ValueError(
            f"{len(without_truth)} image(s) in {image_dir} have no ground-truth folder in {gt_dir}: "
            f"{examples(without_truth)} (expected e.g. {gt_dir / without_truth[0]}/)"
        )
    without_image = sorted(truths - images.keys())
    if without_image:
        raise ValueError(
            f"{len(without_image)} ground-truth folder(s) in {gt_dir} have no image in {image_dir}: "
            f"{examples(without_image)} (expected e.g. {image_dir / without_image[0]}.png)"
        )
    missing = [
        str(soft_map_path(gt_dir, name, kind))
        for name in sorted(images)
        for kind in SOFT_MAPS
        if not soft_map_path(gt_dir, name, kind).is_file()
    ]
    if missing:
        raise ValueError(f"{len(missing)} soft map(s) are missing: {examples(missing, limit=3)}")
    return [
        Sample(name, images[name], soft_map_path(gt_dir, name, "disc"), soft_map_path(gt_dir, name, "cup"))
        for name in sorted(images)
    ]


def split_names(names: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """Divide the Training images into train and val: the sorted ``names`` are permuted by
    ``numpy.random.default_rng(seed)``; the first ``round(val_fraction * n)`` (halves up) go to val, the
    rest to train. Each part is returned sorted."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    names = sorted(names)
    n_val = int(np.floor(val_fraction * len(names) + 0.5))
    order = np.random.default_rng(seed).permutation(len(names))
    val = sorted(names[i] for i in order[:n_val])
    train = sorted(names[i] for i in order[n_val:])
    if not train:
        raise ValueError(f"val_fraction {val_fraction!r} leaves no train image out of {len(names)}")
    return {"train": train, "val": val}


def _threshold_level(soft_threshold: float) -> float:
    if not (is_number(soft_threshold) and 0 < soft_threshold <= 1):
        raise ValueError(f"soft_threshold must be in (0, 1], got {soft_threshold!r}")
    return soft_threshold * 255


def soft_maps_to_classes(
    disc_soft: np.ndarray,
    cup_soft: np.ndarray,
    soft_threshold: float = 0.5,
    disc_path: str | Path = "disc soft map",
    cup_path: str | Path = "cup soft map",
) -> np.ndarray:
    """Binarise the disc and cup soft maps (uint8 0..255) at ``soft_threshold * 255`` (a pixel is in the
    region when its soft value is at least that), clip the cup to the disc and return int64 class indices
    (0 background, 1 disc rim, 2 cup). A soft map that marks no pixel at the threshold, or a disc that
    covers more than half the image (an inverted map), raises ValueError naming the file."""
    level = _threshold_level(soft_threshold)
    if disc_soft.shape != cup_soft.shape:
        raise ValueError(
            f"disc soft map {disc_path} has shape {disc_soft.shape} but cup soft map {cup_path} has shape "
            f"{cup_soft.shape}"
        )
    disc = disc_soft >= level
    cup = (cup_soft >= level) & disc
    if not disc.any():
        raise ValueError(
            f"disc soft map {disc_path} marks no pixel at or above {level:g} (soft_threshold "
            f"{soft_threshold!r}; its maximum is {int(disc_soft.max())})"
        )
    if disc.mean() > MAX_DISC_FRACTION:
        raise ValueError(
            f"disc soft map {disc_path} marks {disc.mean():.0%} of the image at or above {level:g}; "
            f"Drishti-GS1 soft maps are 0 outside the disc (is this map inverted?)"
        )
    if not cup.any():
        inside = " inside the disc" if (cup_soft >= level).any() else ""
        raise ValueError(
            f"cup soft map {cup_path} marks no pixel{inside} at or above {level:g} (soft_threshold "
            f"{soft_threshold!r}; its maximum is {int(cup_soft.max())})"
        )
    classes = np.zeros(disc.shape, dtype=np.int64)
    classes[disc] = 1
    classes[cup] = 2
    return classes


def read_soft_maps(sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full-resolution image (uint8 (H, W, 3)) and disc and cup soft maps (uint8 (H, W)) of
    ``sample``; an unreadable file or a soft map of another size than the image raises ValueError naming
    both files."""
    image = read_rgb(sample.image)
    disc = read_grey(sample.disc, "soft map")
    cup = read_grey(sample.cup, "soft map")
    for path, soft in ((sample.disc, disc), (sample.cup, cup)):
        check_same_size(sample.image, image.shape[1::-1], path, soft.shape[::-1])
    return image, disc, cup


class DrishtiGS(FundusReader):
    """One split of Drishti-GS1: ``(image, mask)`` with ``image`` a float32 tensor (3, S, S) in [0, 1]
    (RGB) and ``mask`` an int64 tensor (S, S) of indices into ``CLASSES`` (0 background, 1 disc rim, 2 cup;
    disc = ``mask >= 1``, cup = ``mask == 2``), ``S = image_size``.

    Ground truth: the soft maps binarised at ``soft_threshold`` (default 0.5, the pixels at least half
    the annotators marked; 1 keeps the pixels all of them marked), the cup clipped to the disc; see
    :func:`soft_maps_to_classes`.

    Region of interest, as :class:`medlab.data.formats.refuge.REFUGE`: ``roi="disc"`` (default) crops a
    square of side ``roi_fraction * min(H, W)`` centred on the centre of the bounding box of the disc
    *of the ground truth*, an oracle localisation standing in for the usual disc-detection stage, moved
    to stay inside the image; ``roi="full"`` takes the centred square of the whole image. The crop is
    resized to ``image_size`` (bilinear, antialiased, for the image; nearest neighbour for the mask).

    Splits: ``test`` is the ``Test`` part; ``train`` and ``val`` divide ``Training`` by
    :func:`split_names` (``val_fraction`` of it to val, drawn with ``seed``; deterministic). The
    constructor checks the layout (:func:`find_samples`) and reads the headers of this split's files
    (sizes); pixels are decoded in ``__getitem__`` and, unless ``cache=False``, the resized uint8 crop is
    kept in the on-disk item cache under ``cache_dir`` (:mod:`medlab.data.formats.cache`). :meth:`check`
    decodes every image of the split. A ``transform`` is called as ``transform(image, mask)`` on the
    tensors and returns the pair.
    """

    title = "Drishti-GS"
    reader = "drishti_gs"
    dataset_name = "Drishti-GS1"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: int = 256,
        roi: str = "disc",
        roi_fraction: float = DEFAULT_ROI_FRACTION,
        soft_threshold: float = 0.5,
        val_fraction: float = 0.2,
        seed: int = 0,
        transform: Callable | None = None,
        cache: bool = True,
        cache_dir: str | Path | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        check_options(image_size, roi, roi_fraction)
        _threshold_level(soft_threshold)
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        root = Path(root).expanduser()
        samples = find_samples(root, "test" if split == "test" else "train")
        if split != "test":
            chosen = set(split_names([s.name for s in samples], val_fraction, seed)[split])
            if not chosen:
                raise ValueError(
                    f"split 'val' is empty: val_fraction {val_fraction!r} of {len(samples)} Training "
                    f"image(s) rounds to none"
                )
            samples = [s for s in samples if s.name in chosen]
        for sample in samples:
            size = header_size(sample.image)
            for path in (sample.disc, sample.cup):
                check_same_size(sample.image, size, path, header_size(path))
        self.samples = samples
        self.soft_threshold, self.val_fraction, self.seed = soft_threshold, val_fraction, seed
        files = [path for s in samples for path in (s.image, s.disc, s.cup)]
        self.setup(
            root, split, [s.name for s in samples], files, image_size, roi, roi_fraction, transform, cache,
            cache_dir, options={"soft_threshold": soft_threshold},
        )

    def load_soft_maps(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The full-resolution image and the raw disc and cup soft maps of item ``index``."""
        return read_soft_maps(self.samples[item_index(index, len(self))])

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.samples[item_index(index, len(self))]
        image, disc, cup = read_soft_maps(sample)
        return image, soft_maps_to_classes(disc, cup, self.soft_threshold, sample.disc, sample.cup)

    def details(self) -> dict:
        return {
            "soft_threshold": self.soft_threshold,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "images": list(self.names),
        }
