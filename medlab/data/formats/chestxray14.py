"""ChestX-ray14 (NIH, Wang et al., CVPR 2017) in its official on-disk layout.

Expected under ``root`` (as the NIH archives extract)::

    Data_Entry_2017.csv             (or Data_Entry_2017_v2020.csv)
    train_val_list.txt              test_list.txt
    images_001/images/00000001_000.png ... images_012/images/...

The PNGs may also sit directly in ``images_001/`` ... ``images_012/`` or all together in ``images/``.
The labels CSV has the columns ``Image Index``, ``Finding Labels`` (findings joined by ``|``, or
``No Finding``) and ``Patient ID`` among others. Every image named in a list file must be labelled and
on disk, every PNG on disk must be in a list file, and no image or patient may be in both list files;
any mismatch, a malformed CSV or an unreadable image raises an error that names the file at fault.

Each radiograph is decoded and resized to ``image_size`` squared; that uint8 image is kept in the
on-disk item cache (:mod:`medlab.data.formats.cache`) unless ``cache=False``. The findings and their
frequencies are in :mod:`medlab.data.constants` (shared with the synthetic look-alike in
:mod:`medlab.data.synth.chest_xrays`) and importable from here too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torchvision.transforms import v2

from medlab.data.constants import (  # noqa: F401 (re-exported: the reader's names, as before)
    FINDING_COUNTS,
    FINDINGS,
    NO_FINDING,
    PREVALENCE,
    TOTAL_IMAGES,
)
from medlab.data.formats.cache import ImageReader
from medlab.data.formats.common import check_data_dir, check_image_size, examples

SPLITS = ("train", "val", "test", "unlabeled")
LABEL_FILES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
LIST_FILES = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
REQUIRED_COLUMNS = ("Image Index", "Finding Labels", "Patient ID")
IMAGE_FOLDER = re.compile(r"images(_\d{3})?")
DOCS = "see data/README.md (ChestX-ray14) for where to get the data and the layout medlab expects"


def labels_csv(root: Path, labels_file: str | Path | None = None) -> Path:
    """The labels CSV: ``labels_file`` (relative to ``root`` unless absolute) when given, else
    ``Data_Entry_2017.csv``, else ``Data_Entry_2017_v2020.csv``."""
    if labels_file is not None:
        path = root / Path(labels_file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"labels_file {path} does not exist or is not a file; {DOCS}")
        return path
    for name in LABEL_FILES:
        if (root / name).is_file():
            return root / name
    found = sorted(p.name for p in root.iterdir())[:10]
    raise FileNotFoundError(
        f"{root} is not in the ChestX-ray14 layout: it has neither {LABEL_FILES[0]} nor {LABEL_FILES[1]} "
        f"(found: {found or 'nothing'}); {DOCS}"
    )


def parse_findings(text: str) -> tuple[np.ndarray, list[str], bool]:
    """Parse a ``Finding Labels`` value such as ``"Mass|Nodule"``: the multi-hot vector (14,) in FINDINGS
    order, the names in it that are not findings, and whether ``No Finding`` is combined with a finding.
    ``"No Finding"`` alone gives zeros."""
    vector = np.zeros(len(FINDINGS), dtype=np.float32)
    names = [name.strip() for name in text.split("|")]
    if names == [NO_FINDING]:
        return vector, [], False
    unknown = []
    for name in names:
        if name in FINDINGS:
            vector[FINDINGS.index(name)] = 1.0
        elif name != NO_FINDING:
            unknown.append(name)
    return vector, unknown, NO_FINDING in names


def read_data_entry(csv_path: str | Path) -> pd.DataFrame:
    """Read and validate ``Data_Entry_2017.csv`` (or its v2020 revision).

    Returns one row per image, in file order, with the columns ``image`` (str, e.g. ``00000001_000.png``),
    ``patient`` (int) and one 0/1 float column per finding named as in ``FINDINGS`` (so
    ``table[list(FINDINGS)].to_numpy()`` is the N x 14 multi-hot matrix). Other columns of the file are
    dropped. Raises ValueError naming the file, and the images at fault, for a missing column, a row
    without an image name, a duplicated image, a missing or non-integer patient id, an unknown finding
    name, or ``No Finding`` combined with a finding.
    """
    csv_path = Path(csv_path)
    try:
        # index_col=False: the 2017 file ends every line with a comma (an empty last column)
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, na_values=[""], index_col=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise ValueError(f"{csv_path} is not a readable CSV ({error})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"{csv_path} has no column(s) {missing}; found {list(table.columns)}; "
            f"expected at least {', '.join(REQUIRED_COLUMNS)}"
        )
    images = table["Image Index"]
    if images.isna().any():
        rows = list(np.where(images.isna())[0] + 2)
        raise ValueError(f"{csv_path} has rows without an Image Index (lines {examples(map(str, rows))})")
    duplicated = images[images.duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{csv_path} lists these images more than once: {examples(duplicated)}")
    patient = pd.to_numeric(table["Patient ID"], errors="coerce")
    bad_patient = patient.isna() | (patient != patient.round())
    if bad_patient.any():
        bad = [f"{i} ({p!r})" for i, p in zip(images[bad_patient], table["Patient ID"][bad_patient])]
        raise ValueError(f"{csv_path}: these rows have no integer Patient ID: {examples(bad)}")

    labels = np.zeros((len(table), len(FINDINGS)), dtype=np.float32)
    empty, unknown, mixed = [], [], []
    for row, (image, text) in enumerate(zip(images, table["Finding Labels"])):
        if not isinstance(text, str):
            empty.append(image)
            continue
        labels[row], bad, no_finding_with_finding = parse_findings(text)
        unknown.extend(f"{image} ({name!r})" for name in bad)
        if no_finding_with_finding:
            mixed.append(f"{image} ({text!r})")
    if empty:
        raise ValueError(f"{csv_path}: these rows have no Finding Labels: {examples(empty)}")
    if unknown:
        raise ValueError(
            f"{csv_path}: unknown finding name(s) in {examples(unknown)}; expected names from "
            f"{', '.join(FINDINGS)} joined by '|', or '{NO_FINDING}' alone"
        )
    if mixed:
        raise ValueError(f"{csv_path}: '{NO_FINDING}' is combined with a finding in {examples(mixed)}")
    result = pd.DataFrame({"image": images.to_numpy(), "patient": patient.astype(np.int64).to_numpy()})
    return pd.concat([result, pd.DataFrame(labels, columns=list(FINDINGS))], axis=1)


def read_list(path: str | Path) -> list[str]:
    """Image names of an official split file (one per line; blank lines are ignored).
    Raises FileNotFoundError if it is missing and ValueError if it names an image twice."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list {path} does not exist; {DOCS}")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    seen: set[str] = set()
    twice = {name for name in names if name in seen or seen.add(name)}
    if twice:
        raise ValueError(f"{path} lists these images more than once: {examples(twice)}")
    return names


def find_images(root: Path) -> dict[str, Path]:
    """Every PNG under ``root/images/``, ``root/images_NNN/images/`` or ``root/images_NNN/``, by file name.
    Raises FileNotFoundError when there is no such folder and ValueError when a name is in two folders."""
    folders = []
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and IMAGE_FOLDER.fullmatch(entry.name):
            folders.append(entry)
            if entry.name != "images" and (entry / "images").is_dir():
                folders.append(entry / "images")
    if not folders:
        found = sorted(p.name for p in root.iterdir())[:10]
        raise FileNotFoundError(
            f"{root} has no image folder: expected images/ or images_001/images/ ... images_012/images/ "
            f"(found: {found or 'nothing'}); {DOCS}"
        )
    on_disk: dict[str, Path] = {}
    clashes = []
    for folder in folders:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.lower().endswith(".png") and entry.is_file():
                    if entry.name in on_disk:
                        clashes.append(f"{entry.name} ({on_disk[entry.name].parent} and {folder})")
                    on_disk[entry.name] = Path(entry.path)
    if clashes:
        raise ValueError(f"these images are in two folders under {root}: {examples(clashes)}")
    return on_disk


def split_by_patient(
    names: list[str], patients: np.ndarray, val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Divide ``names`` (with their ``patients``) into train and val so that no patient is in both:
    ``round(val_fraction * number of patients)`` patients (at least one, and one fewer than all),
    drawn by ``numpy.random.default_rng(seed)``, go to val. The order of ``names`` is kept."""
    unique = np.unique(patients)
    if len(unique) < 2:
        raise ValueError(f"cannot divide {len(unique)} patient(s) into train and val; need at least 2")
    n_val = int(np.clip(round(val_fraction * len(unique)), 1, len(unique) - 1))
    val_patients = np.random.default_rng(seed).permutation(unique)[:n_val]
    in_val = np.isin(patients, val_patients)
    return [n for n, v in zip(names, in_val) if not v], [n for n, v in zip(names, in_val) if v]


def resize_square(image_size: int) -> Callable:
    """A grey PIL image as a uint8 tensor (1, S, S), resized (antialiased) to ``image_size`` squared."""
    return v2.Compose([v2.ToImage(), v2.Resize((image_size, image_size), antialias=True)])


def default_transform(image_size: int) -> Callable:
    """Resize the (square) radiograph to ``image_size`` squared and scale to a float tensor in [0, 1]
    (what the reader does to a PIL image, in one step)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((image_size, image_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


class ChestXray14(ImageReader):
    """One split of NIH ChestX-ray14: ``(image, labels)`` with ``image`` a float tensor (1, S, S) in [0, 1]
    (grey scale) and ``labels`` a float multi-hot tensor (14,) in ``FINDINGS`` order.

    ``test`` is the official ``test_list.txt``. ``train`` and ``val`` divide ``train_val_list.txt`` by
    patient (see :func:`split_by_patient`; ``val_fraction`` of the patients, drawn with ``split_seed``).
    ``unlabeled`` is the same images as ``train`` (for self-supervised pretraining; labels are still
    returned). The constructor checks the whole layout and raises an error naming the file, folder or
    images at fault: every image in the list files must be in the labels CSV and on disk, every PNG on
    disk must be in a list file, no image or patient may be in both list files. An image that cannot be
    decoded raises RuntimeError naming its path when it is loaded. The resized uint8 image is kept in the
    item cache under ``cache_dir`` unless ``cache=False``; ``transform``, if given, is applied to the
    float tensor.
    """

    classes = FINDINGS
    title = "ChestX-ray14"
    mode = "L"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: int = 224,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        labels_file: str | Path | None = None,
        transform: Callable | None = None,
        cache: bool = True,
        cache_dir: str | Path | None = None,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}")
        image_size = check_image_size(image_size)
        root = check_data_dir(root, "the folder holding ChestX-ray14", DOCS)
        self.csv_path = labels_csv(root, labels_file)
        table = read_data_entry(self.csv_path).set_index("image")
        lists = {key: read_list(root / name) for key, name in LIST_FILES.items()}
        list_paths = {key: root / name for key, name in LIST_FILES.items()}

        both = set(lists["train_val"]) & set(lists["test"])
        if both:
            raise ValueError(
                f"{len(both)} image(s) are in both {list_paths['train_val']} and {list_paths['test']}: "
                f"{examples(both)}"
            )
        labelled = set(table.index)
        for key, names in lists.items():
            unlabeled = set(names) - labelled
            if unlabeled:
                raise ValueError(
                    f"{list_paths[key]} names {len(unlabeled)} image(s) that {self.csv_path} does not label: "
                    f"{examples(unlabeled)}"
                )
        on_disk = find_images(root)
        for key, names in lists.items():
            missing = set(names) - on_disk.keys()
            if missing:
                raise FileNotFoundError(
                    f"{list_paths[key]} names {len(missing)} image(s) that are not on disk under {root} "
                    f"(extract all of images_001 ... images_012): {examples(missing)}"
                )
        unlisted = on_disk.keys() - set(lists["train_val"]) - set(lists["test"])
        if unlisted:
            raise ValueError(
                f"{len(unlisted)} image(s) on disk under {root} are in neither {LIST_FILES['train_val']} "
                f"nor {LIST_FILES['test']}: {examples(unlisted)}"
            )
        patients = {key: table.loc[names, "patient"].to_numpy() for key, names in lists.items()}
        shared = set(patients["train_val"].tolist()) & set(patients["test"].tolist())
        if shared:
            raise ValueError(
                f"{len(shared)} patient(s) have images in both {list_paths['train_val']} and "
                f"{list_paths['test']} (the official split is by patient): {examples(map(str, shared))}"
            )

        if split == "test":
            names = lists["test"]
        else:
            train, val = split_by_patient(lists["train_val"], patients["train_val"], val_fraction, split_seed)
            names = val if split == "val" else train
        rows = table.loc[names]
        self.root, self.split, self.image_size = root, split, image_size
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.paths = [on_disk[name] for name in names]
        self.targets = torch.tensor(rows[list(FINDINGS)].to_numpy(dtype=np.float32))
        self.patient_ids = rows["patient"].to_numpy(dtype=np.int64)
        self.transform = transform
        self.resize = resize_square(self.image_size)
        options = {"image_size": self.image_size}
        self.use_cache(cache, cache_dir, "chestxray14", options, self.paths, (self.image_size, self.image_size, 1))

    @property
    def info(self) -> dict:
        return {
            "kind": "real",
            "name": "ChestX-ray14",
            "path": str(self.root),
            "labels_file": self.csv_path.name,
            "split": self.split,
            "n": len(self),
            "image_size": self.image_size,
            "finding_counts": self.targets.sum(0).to(torch.int64).tolist(),
            "n_patients": int(len(np.unique(self.patient_ids))),
        }
