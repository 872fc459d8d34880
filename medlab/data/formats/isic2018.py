"""Reader for ISIC 2018 Task 3 (lesion diagnosis, 7 classes) in its official on-disk layout.

Expected under ``root`` (as the official zips unpack), for each part (Training, Validation, Test)::

    ISIC2018_Task3_<Part>_Input/ISIC_0024306.jpg ...
    ISIC2018_Task3_<Part>_GroundTruth/ISIC2018_Task3_<Part>_GroundTruth.csv   (or the CSV directly under root)

The ground-truth CSV has the columns ``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`` with one-hot rows.
Every image listed must exist and every ``ISIC_*.jpg`` in the input folder must be listed; any mismatch,
a malformed CSV or an unreadable image raises an error that names the file at fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2

CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
PARTS = {"train": "Training", "val": "Validation", "test": "Test"}
IMAGE_SUFFIXES = (".jpg", ".jpeg")
DOCS = "see data/README.md (ISIC 2018) for where to get the data and the layout medlab expects"


def _examples(items, limit: int = 5) -> str:
    items = sorted(items)
    shown = ", ".join(items[:limit])
    return shown + (f" ... ({len(items)} in all)" if len(items) > limit else "")


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
        raise ValueError(f"{csv_path} lists these images more than once: {_examples(duplicated)}")
    values = table[list(CLASSES)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    binary = np.isin(values, (0.0, 1.0))
    one_hot = binary.all(axis=1) & (np.nan_to_num(values).sum(axis=1) == 1)
    if not one_hot.all():
        bad = table["image"][~one_hot].tolist()
        raise ValueError(
            f"{csv_path}: each row must be one-hot over {','.join(CLASSES)} (exactly one 1, the rest 0); "
            f"these rows are not: {_examples(bad)}"
        )
    table = table[expected].copy()
    table["label"] = values.argmax(axis=1)
    return table


def default_transform(image_size: int) -> Callable:
    """Resize the shorter side, centre-crop to a square, and scale to a float tensor in [0, 1]."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(image_size, antialias=True),
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


class ISIC2018Task3(Dataset):
    """One part of ISIC 2018 Task 3: ``(image, label)`` with ``image`` a float tensor in [0, 1]."""

    classes = CLASSES

    def __init__(
        self, root: str | Path, split: str = "train", image_size: int = 224, transform: Callable | None = None
    ):
        root = Path(root).expanduser()
        if split not in PARTS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(PARTS)}")
        if not root.exists():
            raise FileNotFoundError(f"data_dir {root} does not exist; {DOCS}")
        if not root.is_dir():
            raise NotADirectoryError(
                f"data_dir {root} is a file, expected the folder holding the ISIC 2018 Task 3 parts"
            )
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
                f"{self.csv_path} lists {len(missing)} image(s) that are not in {image_dir}: {_examples(missing)}"
            )
        if unlisted:
            raise ValueError(
                f"{image_dir} holds {len(unlisted)} image(s) that {self.csv_path} does not label: {_examples(unlisted)}"
            )
        self.root, self.split, self.part, self.image_size = root, split, part, image_size
        self.paths = [on_disk[name] for name in table["image"]]
        self.targets = torch.tensor(table["label"].to_numpy(), dtype=torch.long)
        self.transform = transform or default_transform(image_size)

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except (OSError, UnidentifiedImageError) as error:
            raise RuntimeError(f"cannot read image {path}: {error}") from None

    def __getitem__(self, index: int):
        return self.transform(self.load_image(index)), self.targets[index]

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
