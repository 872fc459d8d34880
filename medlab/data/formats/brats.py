"""BraTS (the MICCAI Brain Tumor Segmentation challenge, 2018-2021 training releases) in its official
on-disk layout.

Expected under ``root`` (as the training zips unpack)::

    HGG/<case>/<case>_t1.nii.gz  <case>_t1ce.nii.gz  <case>_t2.nii.gz  <case>_flair.nii.gz  <case>_seg.nii.gz
    LGG/<case>/...                                              (BraTS 2018 and 2019: grade folders)

or, from BraTS 2020 on, the case folders directly under ``root`` (no grade)::

    <case>/<case>_t1.nii.gz ... <case>_seg.nii.gz

``root`` may be the folder holding ``HGG/`` and ``LGG/`` or the folder holding the case folders; files may
be ``.nii.gz`` or uncompressed ``.nii``. A case folder is a folder holding at least one
``<prefix>_{t1,t1ce,t2,flair,seg}.nii[.gz]`` file; other folders and files (``name_mapping.csv``,
``survival_data.csv``) are ignored. Every case must have the four modalities and the segmentation, named
after its folder. The segmentation labels are 0 (background), 1 (necrotic and non-enhancing tumour core),
2 (peritumoral oedema) and 4 (enhancing tumour); they are mapped to the training indices 0, 1, 2, 3. A
missing or misnamed file, a case in two grade folders, an unreadable NIfTI, volumes of a case that differ
in shape or affine, or an unexpected label value raises an error that names the file or folder at fault.
The validation and test releases carry no segmentations and are refused.

Volumes are preprocessed by :func:`read_case` (brain crop, centred cube, per-channel scaling to [-1, 1]
with background -1, resize to ``size`` cubed): the convention of the chapter's synthetic volumes.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from nibabel.filebasedimages import ImageFileError
from torch.utils.data import Dataset

from medlab.data.constants import BRATS_LABELS as LABELS
from medlab.data.constants import GRADES, MODALITIES
from medlab.data.constants import TUMOUR_CLASSES as CLASS_NAMES  # training indices 0..3
from medlab.data.formats.common import check_data_dir, examples, found

SEG = "seg"
KINDS = (*MODALITIES, SEG)
# The three regions BraTS evaluates, as sets of training indices
REGIONS = {"whole tumour": (1, 2, 3), "tumour core": (1, 3), "enhancing tumour": (3,)}
SPLITS = ("train", "val", "test", "unlabeled")
SUFFIXES = (".nii.gz", ".nii")
CASE_FILE = re.compile(r"(?P<prefix>.+)_(?P<kind>t1ce|t1|t2|flair|seg)\.nii(\.gz)?")
AFFINE_ATOL = 1e-3
MIN_SIZE = 8
DOCS = "see data/README.md (BraTS) for where to get the data and the layout medlab expects"
_READ_ERRORS = (ImageFileError, OSError, EOFError, ValueError, zlib.error)


@dataclass
class Case:
    """One BraTS case: its name (= folder name), folder, grade ("HGG", "LGG" or None from BraTS 2020 on)
    and its five files by kind (``t1``, ``t1ce``, ``t2``, ``flair``, ``seg``)."""

    name: str
    folder: Path
    grade: str | None
    files: dict[str, Path] = field(default_factory=dict)


def _case_files(folder: Path) -> dict[str, list[Path]] | None:
    """The NIfTI files of a case folder by kind, or None when ``folder`` holds none (not a case).
    Raises ValueError for a file whose prefix is not the folder name."""
    files: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        match = CASE_FILE.fullmatch(path.name)
        if match is None or not path.is_file():
            continue
        if match["prefix"] != folder.name:
            raise ValueError(
                f"{path} is in case folder {folder} but is named for case {match['prefix']!r}; every file "
                f"of a case must be named <case folder>_<modality>.nii.gz (here {folder.name}_"
                f"{match['kind']}.nii.gz)"
            )
        files.setdefault(match["kind"], []).append(path)
    return files or None


def find_cases(root: str | Path) -> list[Case]:
    """Every case under ``root`` (the folder holding ``HGG/`` and ``LGG/``, or the folder holding the case
    folders), sorted by name, with the paths of its five files. Checks the layout only (no file is
    opened): raises FileNotFoundError for a missing ``root`` or when it holds no case folder (listing
    what it holds), NotADirectoryError when it is a file, and ValueError for a case missing a file,
    a modality present both as ``.nii`` and ``.nii.gz``, a file not named after its case folder, a case
    in two grade folders, or a release without segmentations (validation or test)."""
    root = check_data_dir(root, "the folder holding BraTS", DOCS)
    grade_dirs = [root / grade for grade in GRADES if (root / grade).is_dir()]
    if grade_dirs:
        candidates = [(d.name, folder) for d in grade_dirs for folder in sorted(d.iterdir())]
        stray = [p.name for p in root.iterdir() if p.is_dir() and p.name not in GRADES and _case_files(p)]
        if stray:
            raise ValueError(
                f"{root} holds grade folders ({', '.join(d.name for d in grade_dirs)}) and also case folders "
                f"outside them: {examples(stray)}; put every case in HGG/ or LGG/, or remove the grade "
                f"folders"
            )
    else:
        candidates = [(None, folder) for folder in sorted(root.iterdir())]

    cases: dict[str, Case] = {}
    missing, doubled, no_seg = [], [], []
    for grade, folder in candidates:
        if not folder.is_dir():
            continue
        files = _case_files(folder)
        if files is None:
            continue
        if folder.name in cases:
            raise ValueError(
                f"case {folder.name} is in two grade folders: {cases[folder.name].folder} and {folder}; "
                f"remove one copy"
            )
        case = Case(folder.name, folder, grade)
        cases[folder.name] = case
        for kind in KINDS:
            paths = files.get(kind, [])
            if len(paths) > 1:
                doubled.append(f"{folder} ({', '.join(p.name for p in paths)})")
            elif paths:
                case.files[kind] = paths[0]
        absent = [f"{folder.name}_{kind}.nii.gz" for kind in KINDS if kind not in files]
        if absent == [f"{folder.name}_{SEG}.nii.gz"]:
            no_seg.append(case)
        if absent:
            present = sorted(p.name for ps in files.values() for p in ps)
            missing.append(f"{folder} lacks {', '.join(absent)} (found: {', '.join(present)})")
    if not cases:
        layout = f"{root}/HGG/<case>/ and {root}/LGG/<case>/" if grade_dirs else f"{root}/<case>/"
        held = "; ".join(f"{d.name}/ holds {found(d)}" for d in grade_dirs) if grade_dirs else found(root)
        raise FileNotFoundError(
            f"{root} has no BraTS case folder: expected {layout} holding <case>_t1.nii.gz, _t1ce, _t2, "
            f"_flair and _seg (found: {held}); {DOCS}"
        )
    if doubled:
        raise ValueError(
            f"these case folders hold a file both as .nii and as .nii.gz; keep one: {examples(doubled)}"
        )
    if len(no_seg) == len(cases):
        raise ValueError(
            f"none of the {len(cases)} cases under {root} has a segmentation (<case>_seg.nii.gz): the BraTS "
            f"validation and test releases carry no labels, and this reader needs the training release "
            f"(e.g. MICCAI_BraTS_2018_Data_Training); {DOCS}"
        )
    if missing:
        raise ValueError(
            f"{len(missing)} case(s) under {root} are missing files (every case needs "
            f"{', '.join(KINDS)}, .nii.gz or .nii): {examples(missing, limit=3)}"
        )
    return [cases[name] for name in sorted(cases)]


def labels_to_indices(seg: np.ndarray, path: str | Path) -> np.ndarray:
    """Map the BraTS labels 0, 1, 2, 4 of ``seg`` (read from ``path``) to the training indices 0, 1, 2, 3
    (int64, same shape). Any other value (3, a fraction, NaN) raises ValueError naming ``path`` and the
    unexpected values."""
    seg = np.asarray(seg)
    bad = ~np.isin(seg, LABELS)
    if bad.any():
        values = np.unique(seg[bad])
        shown = ", ".join(f"{v:g}" for v in values[:10])
        shown += f" ... ({len(values)} in all)" if len(values) > 10 else ""
        raise ValueError(
            f"segmentation {path} holds {int(bad.sum())} voxel(s) with unexpected value(s) {shown}; "
            f"BraTS labels are {', '.join(map(str, LABELS))}"
        )
    indices = seg.astype(np.int64)
    indices[indices == 4] = 3
    return indices


def _open(path: Path) -> nib.Nifti1Image:
    """The NIfTI image at ``path`` (header read, data not yet), checked to be 3D."""
    try:
        image = nib.load(path)
    except _READ_ERRORS as error:
        raise ValueError(f"cannot read NIfTI file {path}: {error}") from None
    if len(image.shape) != 3:
        raise ValueError(f"NIfTI file {path} has shape {image.shape}; expected a 3D volume")
    return image


def _data(image: nib.Nifti1Image, path: Path) -> np.ndarray:
    try:
        data = image.get_fdata(dtype=np.float32)
    except _READ_ERRORS as error:
        raise ValueError(f"cannot read the voxels of NIfTI file {path}: {error}") from None
    if not np.isfinite(data).all():
        count = int((~np.isfinite(data)).sum())
        raise ValueError(f"NIfTI file {path} holds {count} NaN or infinite voxel(s)")
    return data


def _check_consistent(case: Case, images: dict[str, nib.Nifti1Image]) -> None:
    """All volumes of ``case`` have the shape and (to AFFINE_ATOL) the affine of its first modality."""
    reference = MODALITIES[0]
    ref_path, ref = case.files[reference], images[reference]
    for kind, image in images.items():
        path = case.files[kind]
        if image.shape != ref.shape:
            raise ValueError(
                f"{path} has shape {image.shape} but {ref_path} has shape {ref.shape}; "
                f"all volumes of case {case.name} must be on the same grid"
            )
        if not np.allclose(image.affine, ref.affine, atol=AFFINE_ATOL):
            raise ValueError(
                f"{path} has affine {np.round(image.affine, 4).tolist()} but {ref_path} has affine "
                f"{np.round(ref.affine, 4).tolist()} (tolerance {AFFINE_ATOL}); all volumes of case "
                f"{case.name} must be on the same grid"
            )


def check_case(case: Case) -> None:
    """Read the headers of the five files of ``case`` (fast; no voxels) and check that each is a readable
    3D NIfTI and that all share one shape and affine. Raises ValueError naming the file at fault."""
    _check_consistent(case, {kind: _open(case.files[kind]) for kind in KINDS})


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _pad_to_cube(array: np.ndarray, value: float, spatial: int = 3) -> np.ndarray:
    shape = array.shape[-spatial:]
    side = max(shape)
    pads = [(0, 0)] * (array.ndim - spatial)
    pads += [((side - n) // 2, side - n - (side - n) // 2) for n in shape]
    return np.pad(array, pads, constant_values=value)


def read_case(case: Case, size: int | None = 32) -> tuple[np.ndarray, np.ndarray]:
    """Read and preprocess one case: ``(volume, mask)`` with ``volume`` float32 (4, D, H, W) in
    ``MODALITIES`` order and ``mask`` int64 (D, H, W) of training indices 0..3 (see ``CLASS_NAMES``).

    Steps, the convention of the chapter's synthetic volumes:

    1. read the five volumes with nibabel (``get_fdata(dtype=float32)``); they must share shape and affine
       (to 1e-3); the segmentation's labels 0/1/2/4 become indices 0/1/2/3 (:func:`labels_to_indices`);
    2. brain mask = voxels where any modality is > 0; crop all volumes to its bounding box;
    3. pad to a cube, centred (images with 0, mask with background);
    4. per channel, clip to the 0.5 and 99.5 percentiles of the brain voxels and scale linearly so that
       this range becomes [-1, 1]; voxels outside the brain are set to -1 (a channel constant over the
       brain becomes 0 there);
    5. if ``size`` is not None, resize to ``size`` cubed with ``torch.nn.functional.interpolate``:
       trilinear (``align_corners=False``) for the images, nearest neighbour (``nearest-exact``, the
       nearest voxel centre, matching the trilinear grid) for the index mask.

    No axis is transposed or flipped: D, H, W are nibabel's voxel axes i, j, k (for BraTS, x, y, z; the
    volumes are in RAS+ world space through their affine, which is not applied). Errors name the file at
    fault: an unreadable NIfTI, a shape or affine mismatch, an unexpected label value, a NaN voxel, or
    a case whose modalities are all zero.
    """
    if size is not None and size < MIN_SIZE:
        raise ValueError(f"size must be at least {MIN_SIZE} (or None for no resizing), got {size!r}")
    images = {kind: _open(case.files[kind]) for kind in KINDS}
    _check_consistent(case, images)
    volume = np.stack([_data(images[kind], case.files[kind]) for kind in MODALITIES])
    mask = labels_to_indices(_data(images[SEG], case.files[SEG]), case.files[SEG])

    brain = (volume > 0).any(axis=0)
    if not brain.any():
        raise ValueError(f"every modality of case {case.name} ({case.folder}) is zero everywhere: no brain")
    box = _bounding_box(brain)
    volume, mask, brain = volume[(slice(None), *box)], mask[box], brain[box]
    volume, mask, brain = _pad_to_cube(volume, 0.0), _pad_to_cube(mask, 0), _pad_to_cube(brain, False)

    scaled = np.full(volume.shape, -1.0, dtype=np.float32)
    for c, channel in enumerate(volume):
        low, high = np.percentile(channel[brain], [0.5, 99.5])
        if high > low:
            values = (np.clip(channel[brain], low, high) - low) / (high - low) * 2.0 - 1.0
        else:
            values = np.zeros(int(brain.sum()), dtype=np.float32)
        scaled[c][brain] = values
    volume = scaled

    if size is not None:
        image_t = torch.from_numpy(volume)[None]
        volume = F.interpolate(image_t, size=(size,) * 3, mode="trilinear", align_corners=False)[0].numpy()
        mask_t = torch.from_numpy(mask)[None, None].to(torch.float32)
        mask = F.interpolate(mask_t, size=(size,) * 3, mode="nearest-exact")[0, 0].to(torch.int64).numpy()
    return np.ascontiguousarray(volume, dtype=np.float32), np.ascontiguousarray(mask, dtype=np.int64)


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction!r} + {test_fraction!r}"
        )


def split_cases(
    cases: list[Case], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Case]]:
    """Divide ``cases`` into train, val and test, stratified by grade: within each grade (all cases form
    one group when there are no grades), the case names, sorted, are permuted by
    ``numpy.random.default_rng(seed)`` (one generator, grades in sorted order); the first
    ``round(test_fraction * n)`` go to test, the next ``round(val_fraction * n)`` to val, the rest to
    train (halves round up). Each split is returned sorted by name."""
    _check_fractions(val_fraction, test_fraction)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[Case]] = {"train": [], "val": [], "test": []}
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.grade or "", []).append(case)
    for grade in sorted(groups):
        group = sorted(groups[grade], key=lambda c: c.name)
        n = len(group)
        n_test = int(np.floor(test_fraction * n + 0.5))
        n_val = int(np.floor(val_fraction * n + 0.5))
        order = rng.permutation(n)
        parts["test"] += [group[i] for i in order[:n_test]]
        parts["val"] += [group[i] for i in order[n_test : n_test + n_val]]
        parts["train"] += [group[i] for i in order[n_test + n_val :]]
    if not parts["train"]:
        raise ValueError(
            f"val_fraction {val_fraction!r} and test_fraction {test_fraction!r} leave no train case "
            f"out of {len(cases)}"
        )
    return {key: sorted(value, key=lambda c: c.name) for key, value in parts.items()}


class BraTS(Dataset):
    """One split of a BraTS training release: ``(volume, mask)`` with ``volume`` a float32 tensor
    (4, S, S, S) in [-1, 1] (channels ``MODALITIES``, background -1) and ``mask`` an int64 tensor
    (S, S, S) of indices into ``CLASS_NAMES`` (BraTS labels 0/1/2/4 as 0/1/2/3); see :func:`read_case`
    for the preprocessing (``size=None`` keeps the cropped cube at its native resolution).

    BraTS publishes labels for its training release only, so train, val and test are drawn from it by
    :func:`split_cases` (deterministic given ``seed``, stratified by grade when the release has grade
    folders). ``unlabeled`` is the same cases as ``train`` (for self-supervised pretraining, which reads
    only the volumes; masks are still returned). The constructor checks the layout (:func:`find_cases`)
    and the headers of this split's files (:func:`check_case`); voxels are read on ``__getitem__`` and,
    with ``cache=True``, the preprocessed case is kept in memory (a 32-cubed case is 0.6 MB). A
    ``transform`` is called as ``transform(volume, mask)`` on the tensors and returns the pair.
    """

    classes = CLASS_NAMES
    modalities = MODALITIES
    title = "BraTS"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        size: int | None = 32,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        transform: Callable | None = None,
        cache: bool = True,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if size is not None and size < MIN_SIZE:
            raise ValueError(f"size must be at least {MIN_SIZE} (or None for no resizing), got {size!r}")
        _check_fractions(val_fraction, test_fraction)
        root = Path(root).expanduser()
        all_cases = find_cases(root)
        parts = split_cases(all_cases, val_fraction, test_fraction, seed)
        self.cases = parts["train" if split == "unlabeled" else split]
        if not self.cases:
            fraction = val_fraction if split == "val" else test_fraction
            raise ValueError(
                f"split {split!r} is empty: {split}_fraction {fraction!r} of {len(all_cases)} case(s) "
                f"rounds to none"
            )
        for case in self.cases:
            check_case(case)
        self.root, self.split, self.size, self.seed = root, split, size, seed
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.grades = [case.grade for case in self.cases]
        self.transform = transform
        self.cache = cache
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.cases)

    def load_case(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The preprocessed case ``index`` as tensors (from the cache when it holds it)."""
        if index in self._cache:
            return self._cache[index]
        volume, mask = read_case(self.cases[index], self.size)
        item = torch.from_numpy(volume), torch.from_numpy(mask)
        if self.cache:
            self._cache[index] = item
        return item

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} case(s)")
        volume, mask = self.load_case(index % len(self))
        volume, mask = volume.clone(), mask.clone()  # the cached copy stays untouched
        if self.transform is not None:
            return self.transform(volume, mask)
        return volume, mask

    @property
    def info(self) -> dict:
        grades = sorted({g for g in self.grades if g is not None})
        return {
            "kind": "real",
            "name": "BraTS",
            "path": str(self.root),
            "split": self.split,
            "n": len(self),
            "size": self.size,
            "grade_counts": {g: self.grades.count(g) for g in grades},
            "cases": [case.name for case in self.cases],
        }
