"""OASIS-1 as prepared for learning-based registration (the "neurite-OASIS" release of Hoopes and Dalca,
also the basis of Learn2Reg 2021 task 3), read as one atlas and labelled T1 brain volumes.

Expected under ``root``, one folder per subject (the release's own names)::

    OASIS_OAS1_0001_MR1/aligned_norm.nii.gz    skull-stripped, bias-corrected, intensity-normalised T1,
                        aligned_seg4.nii.gz    affinely aligned to a common space (160 x 192 x 224, 1 mm)
                        aligned_seg35.nii.gz   its label maps: 4 tissue classes, or 35 structures
                        (aligned_orig.nii.gz, slice_*.nii.gz and the rest are ignored)
    OASIS_OAS1_0002_MR1/...

Every subject folder (a name matching ``OASIS_OAS1_NNNN_MR1``) must hold ``aligned_norm.nii.gz`` and the
chosen label map (``labels="seg4"`` or ``"seg35"``); a missing file, a label map whose shape differs from
its image, a label value beyond the map's range or an unreadable file raises an error naming the file.
Other entries of ``root`` are ignored.

One-shot protocol: the **atlas** is one subject (``atlas``, a folder name or its number, e.g. ``"0001"``;
by default the first subject in sorted order); an atlas that is not among the subjects raises an error
naming it. The other subjects, sorted by name, are split into ``test`` (the last 20 %, at least one),
``val`` (the 10 % before them, at least one) and ``unlabeled`` (the rest; their labels are used only by a
fully supervised reference and for scoring); ``train`` is the same set as ``unlabeled``. Volumes are
resampled to ``shape`` (the image trilinearly, scaled to [0, 1] by its 99.5th percentile; the labels by
nearest neighbour).
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from nibabel.filebasedimages import ImageFileError
from torch.utils.data import Dataset

from medlab.data.formats.common import check_data_dir, examples, found
from medlab.data.splits import SPLITS

SUBJECT = re.compile(r"OASIS_OAS1_(\d{4})_MR1")
IMAGE = "aligned_norm.nii.gz"
LABEL_MAPS = {"seg4": ("aligned_seg4.nii.gz", 4), "seg35": ("aligned_seg35.nii.gz", 35)}
DOCS = "see data/README.md (OASIS) for where to get the data and the layout medlab expects"
_READ_ERRORS = (ImageFileError, OSError, EOFError, ValueError, zlib.error)


def find_subjects(root: str | Path, labels: str = "seg4") -> dict[str, Path]:
    """The subject folders under ``root`` (name -> folder), each checked to hold the image and the label
    map (no voxel is read)."""
    if labels not in LABEL_MAPS:
        raise ValueError(f"labels must be one of {', '.join(LABEL_MAPS)}, got {labels!r}")
    root = check_data_dir(root, "the OASIS folder (holding OASIS_OAS1_0001_MR1/ ...)", DOCS)
    subjects = {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and SUBJECT.fullmatch(p.name)}
    if not subjects:
        raise FileNotFoundError(f"no subject folder OASIS_OAS1_NNNN_MR1 under {root} (it holds {found(root)}); {DOCS}")
    for name, folder in subjects.items():
        for file in (IMAGE, LABEL_MAPS[labels][0]):
            if not (folder / file).is_file():
                raise FileNotFoundError(f"{folder / file} is missing (subject {name} has {found(folder)}); {DOCS}")
    return subjects


def _read(path: Path) -> np.ndarray:
    try:
        return np.asanyarray(nib.load(path).dataobj)
    except _READ_ERRORS as error:
        raise ValueError(f"cannot read {path}: {error}") from None


def read_subject(folder: Path, labels: str = "seg4") -> tuple[np.ndarray, np.ndarray]:
    """A subject's image (float32) and label map (int64) at full resolution, checked against each other."""
    file, count = LABEL_MAPS[labels]
    image = _read(folder / IMAGE).astype(np.float32)
    seg = _read(folder / file)
    if image.ndim != 3 or seg.shape != image.shape:
        raise ValueError(f"{folder / file} has shape {seg.shape}, but {folder / IMAGE} has {image.shape}")
    seg = np.rint(seg).astype(np.int64)
    bad = np.setdiff1d(np.unique(seg), np.arange(count + 1))
    if bad.size:
        raise ValueError(f"{folder / file} holds label value(s) {examples(bad.tolist())} outside 0-{count}")
    return image, seg


def resample(image: np.ndarray, seg: np.ndarray, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The image (1, *shape) in [0, 1] (trilinear, scaled by its 99.5th percentile) and labels (*shape)."""
    img = F.interpolate(torch.from_numpy(image)[None, None], size=tuple(shape), mode="trilinear", align_corners=True)[0]
    img = (img / max(float(np.percentile(img.numpy(), 99.5)), 1e-6)).clamp(0, 1)
    lab = F.interpolate(torch.from_numpy(seg)[None, None].float(), size=tuple(shape), mode="nearest")[0, 0].long()
    return img, lab


def split_subjects(names: Sequence[str], atlas: str) -> dict[str, list[str]]:
    """The one-shot splits of the subjects other than the atlas (sorted): test the last 20 %, val the
    10 % before them (at least one each), unlabeled (and train) the rest."""
    rest = sorted(n for n in names if n != atlas)
    if len(rest) < 3:
        raise ValueError(f"{len(rest)} subjects besides the atlas {atlas}: at least 3 are needed (unlabeled, val, test)")
    n_test = max(1, round(0.2 * len(rest)))
    n_val = max(1, round(0.1 * len(rest)))
    unlabeled = rest[: len(rest) - n_test - n_val]
    return {"unlabeled": unlabeled, "train": unlabeled, "val": rest[len(unlabeled) : len(rest) - n_test], "test": rest[len(rest) - n_test :]}


def _atlas_name(names: Sequence[str], atlas: str | None) -> str:
    if atlas in (None, ""):
        return sorted(names)[0]
    atlas = str(atlas)
    candidates = [n for n in names if n == atlas or SUBJECT.fullmatch(n).group(1) == atlas.zfill(4)]
    if not candidates:
        raise ValueError(f"the atlas {atlas!r} is not among the {len(names)} subjects ({examples(names)})")
    return candidates[0]


class OASIS(Dataset):
    """The subjects of ``split``, ``(image (1, *shape) float32, labels (*shape) int64)``, with the atlas as
    ``.atlas`` and the structure names as ``.structures`` (label k is ``structures[k - 1]``)."""

    def __init__(self, root: str | Path, split: str, shape: Sequence[int] = (32, 40, 32), labels: str = "seg4", atlas: str | None = None):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        subjects = find_subjects(root, labels)
        self.shape = tuple(int(s) for s in shape)
        atlas_name = _atlas_name(list(subjects), atlas)
        self.names = split_subjects(list(subjects), atlas_name)[split]
        self.atlas = resample(*read_subject(subjects[atlas_name], labels), self.shape)
        count = LABEL_MAPS[labels][1]
        self.structures = tuple(f"label {k}" for k in range(1, count + 1))
        items = [resample(*read_subject(subjects[n], labels), self.shape) for n in self.names]
        self.images = torch.stack([i for i, _ in items]) if items else torch.zeros((0, 1, *self.shape))
        self.labels = torch.stack([y for _, y in items]) if items else torch.zeros((0, *self.shape), dtype=torch.int64)
        self.info = {
            "kind": "real", "dataset": "OASIS-1 (neurite-oasis)", "split": split, "labels": labels, "atlas": atlas_name,
            "shape": list(self.shape), "n": len(self.names), "subjects": list(self.names),
        }

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]


def write_fixture(root: str | Path, subjects: int = 6, shape: Sequence[int] = (20, 24, 28), seed: int = 0) -> list[str]:
    """Write a tiny release under ``root`` for tests: ``subjects`` folders with an image and both label
    maps (nested ellipsoids of grey values, shifted per subject). Returns the folder names."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    names = []
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij"))
    for k in range(1, subjects + 1):
        name = f"OASIS_OAS1_{k:04d}_MR1"
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        centre = rng.uniform(-0.1, 0.1, 3)[:, None, None, None]
        r = np.sqrt((((grid - centre) / np.array([0.8, 0.85, 0.8])[:, None, None, None]) ** 2).sum(0))
        seg4 = np.select([r < 0.3, r < 0.5, r < 0.7, r < 0.85], [4, 3, 2, 1], 0).astype(np.int16)
        seg35 = (seg4 * 2 - (grid[0] > 0) * (seg4 > 0)).astype(np.int16)
        image = np.choose(seg4, [0.0, 0.3, 0.9, 0.6, 0.2]).astype(np.float32) + rng.normal(0, 0.02, shape).astype(np.float32)
        for file, data in ((IMAGE, image), ("aligned_seg4.nii.gz", seg4), ("aligned_seg35.nii.gz", seg35)):
            nib.save(nib.Nifti1Image(data, np.eye(4)), folder / file)
        names.append(name)
    (root / "README.txt").write_text("fixture\n")
    return names
