"""Reader for ISIC 2018 Task 3 (lesion diagnosis, 7 classes) in its official on-disk layout.

Expected under ``root`` (as the official zips unpack), for each part (Training, Validation, Test)::

    ISIC2018_Task3_<Part>_Input/ISIC_0024306.jpg ...
    ISIC2018_Task3_<Part>_GroundTruth/ISIC2018_Task3_<Part>_GroundTruth.csv   (or the CSV directly under root)

The ground-truth CSV has the columns ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`` with one-hot rows.
Every image listed must exist and every ``ISIC_*.jpg`` in the input folder must be listed; any mismatch,
a malformed CSV or an unreadable image raises an error that names the file at fault.

Each image is decoded, its shorter side resized to ``image_size`` and centre-cropped to a square; that
uint8 crop is kept in the on-disk item cache (:mod:`medlab.data.formats.cache`) unless ``cache=False``,
so from the second epoch on no JPEG is decoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision.transforms import v2

from medlab.data.constants import ISIC2018_CLASSES as CLASSES
from medlab.data.formats.cache import ImageReader
from medlab.data.formats.common import check_data_dir, check_image_size, examples

PARTS = {"train": "Training", "val": "Validation", "test": "Test"}
IMAGE_SUFFIXES = (".jpg", ".jpeg")
DOCS = "see data/README.md (ISIC 2018) for where to get the data and the layout medlab expects"


def ground_truth_csv(root: Path, part: str) -> Path:
    """The ground-truth CSV of a part, in its folder or directly under ``root``."""
    name = f"ISIC2018_Task3_{part}_GroundTruth.csv"
    candidates = [root / f"ISIC2018_Task3_{part}_GroundTruth" / name, root / name]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no ground truth for the {part} part: expected {candidates[0]} or {candidates[1]}; {DOCS}"
    )


def read_ground_truth(csv_path: Path) -> pd.DataFrame:
    """Read and validate a ground-truth CSV: the expected columns, one-hot rows, unique image ids."""
    try:
        table = pd.read_csv(csv_path, dtype={"image": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise ValueError(f"{csv_path} is not a readable CSV ({error})") from None
    expected = ["image", *CLASSES]
    if sorted(table.columns) != sorted(expected):
        raise ValueError(f"{csv_path} has columns {list(table.columns)}; expected {','.join(expected)}")
    if table["image"].isna().any():
        raise ValueError(
            f"{csv_path} has rows without an image id (rows {list(np.where(table['image'].isna())[0] + 2)})"
        )
    duplicated = table["image"][table["image"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{csv_path} lists these images more than once: {examples(duplicated)}")
    values = table[list(CLASSES)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    binary = np.isin(values, (0.0, 1.0))
    one_hot = binary.all(axis=1) & (np.nan_to_num(values).sum(axis=1) == 1)
    if not one_hot.all():
        bad = table["image"][~one_hot].tolist()
        raise ValueError(
            f"{csv_path}: each row must be one-hot over {','.join(CLASSES)} (exactly one 1, the rest 0); "
            f"these rows are not: {examples(bad)}"
        )
    table = table[expected].copy()
    table["label"] = values.argmax(axis=1)
    return table


def resize_and_crop(image_size: int) -> Callable:
    """A PIL image as a uint8 tensor (3, S, S): the shorter side resized to ``image_size`` (antialiased),
    centre-cropped to a square."""
    return v2.Compose([v2.ToImage(), v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)])


def default_transform(image_size: int) -> Callable:
    """Resize the shorter side, centre-crop to a square, and scale to a float tensor in [0, 1] (what the
    reader does to a PIL image, in one step)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


class ISIC2018Task3(ImageReader):
    """One part of ISIC 2018 Task 3: ``(image, label)`` with ``image`` a float32 tensor (3, S, S) in [0, 1]
    (the shorter side resized to ``S = image_size``, centre-cropped). The uint8 crop is kept in the item
    cache under ``cache_dir`` unless ``cache=False``; ``transform``, if given, is applied to the tensor."""

    classes = CLASSES
    title = "ISIC 2018"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: int = 224,
        transform: Callable | None = None,
        cache: bool = True,
        cache_dir: str | Path | None = None,
    ):
        if split not in PARTS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(PARTS)}")
        image_size = check_image_size(image_size)
        root = check_data_dir(root, "the folder holding the ISIC 2018 Task 3 parts", DOCS)
        part = PARTS[split]
        image_dir = root / f"ISIC2018_Task3_{part}_Input"
        if not image_dir.is_dir():
            found = sorted(p.name for p in root.iterdir())[:10]
            raise FileNotFoundError(
                f"{root} is not in the ISIC 2018 Task 3 layout: it has no folder {image_dir.name}/ "
                f"(found: {found or 'nothing'}); {DOCS}"
            )
        self.csv_path = ground_truth_csv(root, part)
        table = read_ground_truth(self.csv_path)

        on_disk = {p.stem: p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        listed = set(table["image"])
        missing = listed - on_disk.keys()
        unlisted = on_disk.keys() - listed
        if missing:
            raise FileNotFoundError(
                f"{self.csv_path} lists {len(missing)} image(s) that are not in {image_dir}: {examples(missing)}"
            )
        if unlisted:
            raise ValueError(
                f"{image_dir} holds {len(unlisted)} image(s) that {self.csv_path} does not label: {examples(unlisted)}"
            )
        self.root, self.split, self.part, self.image_size = root, split, part, image_size
        self.paths = [on_disk[name] for name in table["image"]]
        self.targets = torch.tensor(table["label"].to_numpy(), dtype=torch.long)
        self.transform = transform
        self.resize = resize_and_crop(self.image_size)
        options = {"image_size": self.image_size}
        self.use_cache(cache, cache_dir, "isic2018", options, self.paths, (self.image_size, self.image_size, 3))

    @property
    def info(self) -> dict:
        return {
            "kind": "real",
            "name": "ISIC 2018 Task 3",
            "path": str(self.root),
            "part": self.part,
            "n": len(self),
            "image_size": self.image_size,
            "class_counts": np.bincount(self.targets.numpy(), minlength=len(CLASSES)).tolist(),
        }


def write_fixture(
    root: str | Path,
    part: str = "Training",
    labels: tuple[int, ...] = (0, 1, 1, 2, 6),
    size: tuple[int, int] = (60, 45),
    seed: int = 0,
    csv_inside_folder: bool = True,
) -> list[str]:
    """Write a small ISIC 2018 Task 3 ``part`` in the official layout under ``root`` (for tests and
    benchmarks): one ``size`` (width, height) JPEG per label, smooth colour blotches with noise, a
    licence file the reader ignores, and the one-hot ground-truth CSV. Returns the image ids."""
    root = Path(root)
    image_dir = root / f"ISIC2018_Task3_{part}_Input"
    image_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    ids = [f"ISIC_{24306 + i:07d}" for i in range(len(labels))]
    width, height = size
    for name in ids:
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
        pixels = np.asarray(coarse, dtype=np.float32) + rng.normal(0, 8, (height, width, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(image_dir / f"{name}.jpg", quality=90)
    (image_dir / "LICENSE.txt").write_text("licence text shipped with the data")
    rows = ["image," + ",".join(CLASSES)]
    for name, label in zip(ids, labels):
        rows.append(name + "," + ",".join("1.0" if k == label else "0.0" for k in range(len(CLASSES))))
    csv_dir = root / f"ISIC2018_Task3_{part}_GroundTruth" if csv_inside_folder else root
    csv_dir.mkdir(exist_ok=True)
    (csv_dir / f"ISIC2018_Task3_{part}_GroundTruth.csv").write_text("\n".join(rows) + "\n")
    return ids
