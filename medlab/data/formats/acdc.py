"""ACDC (the MICCAI 2017 Automated Cardiac Diagnosis Challenge, Bernard et al., IEEE TMI 2018) in its
official on-disk layout, as 2D short-axis crops around the left ventricle with myocardium masks.

Expected under ``root`` (the unpacked release; ``root`` may also be the ``training`` folder itself)::

    training/patient001/Info.cfg
    training/patient001/patient001_4d.nii.gz                       (the whole cine; ignored)
    training/patient001/patient001_frame01.nii.gz                  end diastole (ED: 1 in Info.cfg)
    training/patient001/patient001_frame01_gt.nii.gz               its labels
    training/patient001/patient001_frame12.nii.gz, _frame12_gt     end systole (ES: 12)
    ...
    testing/patient101/ ...                                        (optional; used when it has labels)

``Info.cfg`` holds ``key: value`` lines, among them ``ED`` and ``ES`` (the frame numbers, from 1) and
``Group``. Volumes load with nibabel as ``(columns, rows, slices)``: the short-axis slices are the last
axis. Labels: 0 background, 1 right-ventricle cavity, 2 myocardium, 3 left-ventricle cavity. A patient
folder without ``Info.cfg``, an ``Info.cfg`` without ``ED`` or ``ES``, a frame it names that is
missing, labels whose shape or affine differs from their image, an unexpected label value or an
unreadable file raises an error naming the file at fault. Patient folders of ``testing/`` without any
``_gt`` file (the original test release) take no part and are counted in ``info``.

Every slice of the ED and ES frames whose myocardium covers at least ``min_area`` pixels gives one
crop: the square around the left ventricle (myocardium and cavity), ``margin`` times its longer side,
of the slice scaled to [0, 1] by the 1st and 99th percentiles of its frame, resized to
``image_size``. The mask is the myocardium (``target="myocardium"``). Patients are split into train,
val and test by :func:`medlab.data.formats.roi2d.split_names` (the patient names, seeded).
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from medlab.data.formats.common import check_data_dir, examples, found
from medlab.data.formats.roi2d import RoiCrops, bounding_box, check_size, check_split, crop, resize_pair, split_names, square_box, stack_crops

PATIENT = re.compile(r"patient\d{3}")
LABELS = (0, 1, 2, 3)  # background, RV cavity, myocardium, LV cavity
TARGETS = {"myocardium": (2,), "left ventricle": (2, 3)}
DOCS = "see data/README.md (ACDC) for where to get the data and the layout medlab expects"
_READ_ERRORS = (ImageFileError, OSError, EOFError, ValueError, zlib.error)


def read_info(path: Path) -> dict[str, str]:
    """The ``key: value`` lines of an ``Info.cfg``; ED and ES must be there, as integers."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: every ACDC patient folder holds an Info.cfg naming its ED and ES frames")
    info = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    for key in ("ED", "ES"):
        if not re.fullmatch(r"\d+", info.get(key, "")):
            raise ValueError(f"{path} has no integer {key} line (found {sorted(info)}); ACDC's Info.cfg says e.g. 'ED: 1'")
    return info


def patient_folders(root: str | Path) -> tuple[dict[str, Path], list[str]]:
    """The labelled patient folders (name -> folder) and the names of the unlabelled ones (a testing
    folder without ``_gt`` files); checks the layout only."""
    root = check_data_dir(root, "the ACDC folder (holding training/)", DOCS)
    parents = [root / part for part in ("training", "testing") if (root / part).is_dir()] or [root]
    labelled, unlabelled = {}, []
    for parent in parents:
        folders = [f for f in sorted(parent.iterdir()) if f.is_dir() and PATIENT.fullmatch(f.name)]
        if parent.name == "testing" and folders and not any(any(f.glob("*_gt.nii*")) for f in folders):
            unlabelled += [f.name for f in folders]
            continue
        for folder in folders:
            if folder.name in labelled:
                raise ValueError(f"patient {folder.name} is both in {labelled[folder.name].parent} and in {parent}")
            labelled[folder.name] = folder
    if not labelled:
        held = "; ".join(f"{p} holds {found(p)}" for p in parents)
        raise FileNotFoundError(f"no ACDC patient folder (patientXXX/) with labels under {root} ({held}); {DOCS}")
    return labelled, unlabelled


def _frame_path(folder: Path, frame: int, gt: bool) -> Path:
    stem = f"{folder.name}_frame{frame:02d}{'_gt' if gt else ''}"
    for suffix in (".nii.gz", ".nii"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    raise FileNotFoundError(f"{folder / (stem + '.nii.gz')} is missing (named by {folder / 'Info.cfg'})")


def _load(path: Path) -> nib.Nifti1Image:
    try:
        image = nib.load(path)
    except _READ_ERRORS as error:
        raise ValueError(f"cannot read NIfTI file {path}: {error}") from None
    if len(image.shape) != 3:
        raise ValueError(f"NIfTI file {path} has shape {image.shape}; expected a 3D frame (columns, rows, slices)")
    return image


def read_frame(folder: Path, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """One frame of a patient: the image (float32) and its labels (uint8), slices last, checked."""
    image_path, gt_path = _frame_path(folder, frame, False), _frame_path(folder, frame, True)
    image, gt = _load(image_path), _load(gt_path)
    if image.shape != gt.shape:
        raise ValueError(f"{gt_path} has shape {gt.shape} but {image_path} has {image.shape}: the labels do not match the image")
    if not np.allclose(image.affine, gt.affine, atol=1e-3):
        raise ValueError(f"{gt_path} and {image_path} have different affines: the labels do not match the image")
    try:
        pixels, labels = image.get_fdata(dtype=np.float32), np.asarray(gt.dataobj)
    except _READ_ERRORS as error:
        raise ValueError(f"cannot read the voxels of {image_path} or {gt_path}: {error}") from None
    bad = ~np.isin(labels, LABELS)
    if bad.any():
        raise ValueError(f"{gt_path} holds unexpected label value(s) {np.unique(labels[bad])[:10].tolist()}; ACDC labels are 0, 1, 2, 3")
    return pixels, labels.astype(np.uint8)


def patient_crops(folder: Path, image_size: int, target: str = "myocardium", min_area: int = 20, margin: float = 1.5, min_side: int = 24):
    """The crops of the ED and ES frames of one patient: images, masks and their sources."""
    info = read_info(folder / "Info.cfg")
    images, masks, sources = [], [], []
    for phase in ("ED", "ES"):
        frame = int(info[phase])
        pixels, labels = read_frame(folder, frame)
        low, high = np.percentile(pixels, [1, 99])
        scaled = np.clip((pixels - low) / max(high - low, 1e-6), 0, 1)
        for k in range(pixels.shape[2]):
            if (labels[..., k] == 2).sum() < min_area:
                continue
            heart = np.isin(labels[..., k], (2, 3))
            box = square_box(bounding_box(heart), margin, min_side)
            image, mask = resize_pair(crop(scaled[..., k], box, 0.0), crop(np.isin(labels[..., k], TARGETS[target]), box, False), image_size)
            images.append(image)
            masks.append(mask)
            sources.append({"patient": folder.name, "phase": phase, "frame": frame, "slice": k, "group": info.get("Group")})
    return images, masks, sources


class ACDC(RoiCrops):
    """One split of ACDC's labelled patients as 2D crops around the left ventricle (see the module)."""

    title = "ACDC"

    def __init__(
        self, root: str | Path, split: str = "train", image_size: int = 64, target: str = "myocardium",
        val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0, min_area: int = 20,
        margin: float = 1.5, min_side: int = 24,
    ):
        check_split(split)
        size = check_size(image_size)
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
        labelled, unlabelled = patient_folders(root)
        chosen = split_names(list(labelled), val_fraction, test_fraction, seed)[split]
        if not chosen:
            raise ValueError(f"split {split!r} of the {len(labelled)} ACDC patient(s) under {root} is empty")
        images, masks, sources = [], [], []
        for name in chosen:
            crops, labels, where = patient_crops(labelled[name], size, target, min_area, margin, min_side)
            images += crops
            masks += labels
            sources += where
        if not images:
            raise ValueError(f"no slice of the {split} patients under {root} shows {min_area} or more myocardium pixels")
        stacked = stack_crops(images, masks, size)
        super().__init__(
            images=stacked[0], masks=stacked[1], sources=sources,
            meta={"name": "ACDC", "path": str(Path(root).expanduser()), "split": split, "target": target, "image_size": size,
                  "patients": chosen, "unlabelled_patients": len(unlabelled)},
        )


def write_fixture(root: str | Path, patients: int = 3, slices: int = 4, size: int = 48, seed: int = 0, frames: tuple[int, int] = (1, 5)) -> list[str]:
    """Write a tiny ACDC release under ``root/training`` in the official layout (for tests and examples):
    ``patients`` folders patient001 ... with ``Info.cfg`` (ED and ES = ``frames``) and the ED and ES
    frames (columns, rows, slices) with their ``_gt`` labels, drawn by the synthetic cine-MR generator
    (ACDC's labels 0-3). Returns the patient names."""
    from medlab.data.synth.cardiac_mr import render_cardiac_mr

    names = []
    for p in range(1, patients + 1):
        folder = Path(root) / "training" / f"patient{p:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, p])
        ed, es = frames
        (folder / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\nGroup: NOR\nHeight: 175.0\nNbFrame: {max(frames) + 2}\nWeight: 70.0\n")
        affine = np.diag([1.5, 1.5, 10.0, 1.0])
        for frame in frames:
            drawn = [render_cardiac_mr(size, rng) for _ in range(slices)]
            image = np.stack([np.round(d[0] * 400).T for d in drawn], axis=-1).astype(np.int16)
            labels = np.stack([d[1].T for d in drawn], axis=-1).astype(np.uint8)
            nib.save(nib.Nifti1Image(image, affine), folder / f"{folder.name}_frame{frame:02d}.nii.gz")
            nib.save(nib.Nifti1Image(labels, affine), folder / f"{folder.name}_frame{frame:02d}_gt.nii.gz")
        names.append(folder.name)
    return names
