"""KiTS19 (the 2019 Kidney Tumor Segmentation challenge, Heller et al., Medical Image Analysis 2021) in
its official on-disk layout, as 2D region-of-interest crops around the kidney that holds a tumour.

Expected under ``root`` (the ``data/`` folder of the ``neheller/kits19`` repository after its download
script ran)::

    case_00000/imaging.nii.gz  case_00000/segmentation.nii.gz
    ...
    case_00209/...                                    the 210 training cases, with labels
    case_00210/imaging.nii.gz ... case_00299/         the 90 test cases, *without* labels
    kits.json                                         clinical data (ignored)

Volumes load as ``(slices, rows, columns)`` with nibabel: the axial axis first. ``imaging`` is in
Hounsfield units; ``segmentation`` holds 0 background, 1 kidney, 2 tumour. The unlabelled test cases
(00210-00299, no ``segmentation.nii.gz``) take no part in the splits and are refused as training data
with an error naming them; a training case (00000-00209) without its segmentation, a segmentation
whose shape or affine differs from its image, an unexpected label value or an unreadable file raises
an error naming the file at fault.

Every axial slice whose tumour covers at least ``min_area`` pixels (every ``slice_step``-th of them)
gives one crop: the square around the connected kidney-and-tumour region that holds the tumour,
``margin`` times its longer side (at least ``min_side`` pixels), filled with -1024 HU outside the
volume, windowed to [-79, 304] HU, scaled to [0, 1] and resized to ``image_size``. The mask is the
tumour (``target="tumour"``) or the kidney with its tumour (``target="kidney"``). Cases are split into
train, val and test by :func:`medlab.data.formats.roi2d.split_names` (the case names, seeded).
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from scipy import ndimage

from medlab.data.formats.common import check_data_dir, examples, found
from medlab.data.formats.roi2d import RoiCrops, bounding_box, check_size, check_split, crop, resize_pair, split_names, square_box, stack_crops

CASE = re.compile(r"case_(\d{5})")
IMAGING, SEGMENTATION = "imaging.nii.gz", "segmentation.nii.gz"
LABELS = (0, 1, 2)  # background, kidney, tumour
FIRST_TEST_CASE = 210  # cases 00210-00299 are the challenge's test set, released without labels
WINDOW_HU = (-79.0, 304.0)
TARGETS = {"tumour": (2,), "kidney": (1, 2)}
DOCS = "see data/README.md (KiTS19) for where to get the data and the layout medlab expects"
_READ_ERRORS = (ImageFileError, OSError, EOFError, ValueError, zlib.error)


def find_cases(root: str | Path) -> tuple[dict[str, Path], list[str]]:
    """The labelled case folders under ``root`` (name -> folder) and the names of the unlabelled test
    cases; checks the layout only (no voxel is read)."""
    root = check_data_dir(root, "the KiTS19 data folder (holding case_00000/ ...)", DOCS)
    labelled, unlabelled, missing = {}, [], []
    for folder in sorted(root.iterdir()):
        match = CASE.fullmatch(folder.name)
        if match is None or not folder.is_dir():
            continue
        if not (folder / IMAGING).is_file():
            missing.append(f"{folder / IMAGING}")
        elif (folder / SEGMENTATION).is_file():
            labelled[folder.name] = folder
        elif int(match[1]) >= FIRST_TEST_CASE:
            unlabelled.append(folder.name)
        else:
            missing.append(f"{folder / SEGMENTATION} (case {folder.name} is a training case: it must have its labels)")
    if not labelled and not unlabelled and not missing:
        raise FileNotFoundError(f"{root} holds no KiTS19 case folder case_XXXXX/ (found: {found(root)}); {DOCS}")
    if missing:
        raise FileNotFoundError(f"{len(missing)} KiTS19 file(s) missing under {root}: {examples(missing, 3)}")
    if not labelled:
        raise ValueError(
            f"none of the {len(unlabelled)} case(s) under {root} has a {SEGMENTATION}: they are KiTS19's unlabelled "
            f"test cases ({examples(unlabelled)}), which cannot be used for training or evaluation; {DOCS}"
        )
    return labelled, unlabelled


def _open(path: Path) -> nib.Nifti1Image:
    try:
        image = nib.load(path)
    except _READ_ERRORS as error:
        raise ValueError(f"cannot read NIfTI file {path}: {error}") from None
    if len(image.shape) != 3:
        raise ValueError(f"NIfTI file {path} has shape {image.shape}; expected a 3D volume (slices, rows, columns)")
    return image


def read_segmentation(folder: Path) -> np.ndarray:
    """The label volume of a case (uint8, slices first), checked against its image's grid and labels."""
    image, seg = _open(folder / IMAGING), _open(folder / SEGMENTATION)
    if image.shape != seg.shape:
        raise ValueError(f"{folder / SEGMENTATION} has shape {seg.shape} but {folder / IMAGING} has {image.shape}: the labels do not match the image")
    if not np.allclose(image.affine, seg.affine, atol=1e-3):
        raise ValueError(f"{folder / SEGMENTATION} and {folder / IMAGING} have different affines: the labels do not match the image")
    try:
        values = np.asarray(seg.dataobj)
    except _READ_ERRORS as error:
        raise ValueError(f"cannot read the voxels of {folder / SEGMENTATION}: {error}") from None
    bad = ~np.isin(values, LABELS)
    if bad.any():
        raise ValueError(f"{folder / SEGMENTATION} holds unexpected label value(s) {np.unique(values[bad])[:10].tolist()}; KiTS19 labels are 0, 1, 2")
    return values.astype(np.uint8)


def case_crops(
    folder: Path, image_size: int, target: str = "tumour", min_area: int = 20, slice_step: int = 1,
    margin: float = 1.3, min_side: int = 32,
) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """The crops of one case: images in [0, 1], masks, and the slice index of each."""
    seg = read_segmentation(folder)
    tumour_area = (seg == 2).sum(axis=(1, 2))
    slices = np.flatnonzero(tumour_area >= min_area)[::slice_step]
    volume = _open(folder / IMAGING).dataobj
    images, masks = [], []
    for k in slices:
        labels = seg[k]
        organ, _ = ndimage.label(labels > 0, structure=np.ones((3, 3)))
        holding = np.unique(organ[labels == 2])
        region = np.isin(organ, holding[holding > 0])
        box = square_box(bounding_box(region), margin, min_side)
        try:
            hu = np.asarray(volume[k], dtype=np.float32)
        except _READ_ERRORS as error:
            raise ValueError(f"cannot read slice {k} of {folder / IMAGING}: {error}") from None
        window = (np.clip(crop(hu, box, -1024.0), *WINDOW_HU) - WINDOW_HU[0]) / (WINDOW_HU[1] - WINDOW_HU[0])
        mask = np.isin(crop(labels, box, 0), TARGETS[target])
        image, mask = resize_pair(window, mask, image_size)
        images.append(image)
        masks.append(mask)
    return images, masks, [int(k) for k in slices]


class KiTS19(RoiCrops):
    """One split of KiTS19's labelled cases as 2D crops (see the module's docstring); ``cases`` restricts
    the cases used (an unlabelled test case among them is an error)."""

    title = "KiTS19"

    def __init__(
        self, root: str | Path, split: str = "train", image_size: int = 64, target: str = "tumour",
        val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0, min_area: int = 20,
        slice_step: int = 1, margin: float = 1.3, min_side: int = 32, cases: Sequence[str] | None = None,
    ):
        check_split(split)
        size = check_size(image_size)
        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
        labelled, unlabelled = find_cases(root)
        names = sorted(labelled)
        if cases is not None:
            refused = sorted(set(cases) & set(unlabelled))
            if refused:
                raise ValueError(
                    f"{examples(refused)} under {root} are KiTS19 test cases without labels (case_00210 to case_00299): "
                    f"they are refused as training or evaluation data"
                )
            unknown = sorted(set(cases) - set(names))
            if unknown:
                raise ValueError(f"no labelled case {examples(unknown)} under {root}")
            names = sorted(cases)
        chosen = split_names(names, val_fraction, test_fraction, seed)[split]
        if not chosen:
            raise ValueError(f"split {split!r} of the {len(names)} labelled KiTS19 case(s) under {root} is empty")
        images, masks, sources = [], [], []
        for name in chosen:
            crops, labels, slices = case_crops(labelled[name], size, target, min_area, slice_step, margin, min_side)
            images += crops
            masks += labels
            sources += [{"case": name, "slice": k} for k in slices]
        if not images:
            raise ValueError(f"no slice of the {split} cases under {root} holds {min_area} or more tumour pixels")
        stacked = stack_crops(images, masks, size)
        super().__init__(
            images=stacked[0], masks=stacked[1], sources=sources,
            meta={"name": "KiTS19", "path": str(Path(root).expanduser()), "split": split, "target": target,
                  "image_size": size, "cases": chosen, "unlabelled_test_cases": len(unlabelled)},
        )


def write_fixture(root: str | Path, cases: int = 3, unlabelled: int = 1, slices: int = 6, size: int = 48, seed: int = 0) -> list[str]:
    """Write a tiny KiTS19 release under ``root`` in the official layout (for tests and examples):
    ``cases`` labelled cases (case_00000 ...) of ``slices`` axial slices of ``size`` pixels drawn by the
    synthetic kidney-CT generator (HU, int16; labels 0/1/2, a tumour on every other slice), and
    ``unlabelled`` test cases from case_00210 with their imaging only. Returns the labelled case names."""
    from medlab.data.synth.kidney_ct import render_kidney_ct

    root = Path(root)
    affine = np.diag([-0.78, -0.78, 3.0, 1.0])
    names = []
    for number in [*range(cases), *range(FIRST_TEST_CASE, FIRST_TEST_CASE + unlabelled)]:
        rng = np.random.default_rng([seed, number])
        hus, segs = [], []
        for k in range(slices):
            hu, labels, _ = render_kidney_ct(size, rng)
            seg = np.where(labels == 1, 1, 0) + np.where(labels == 2, 2 if k % 2 == 0 else 1, 0)
            hus.append(hu)
            segs.append(seg)
        folder = root / f"case_{number:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.round(np.stack(hus)).astype(np.int16), affine), folder / IMAGING)
        if number < FIRST_TEST_CASE:
            nib.save(nib.Nifti1Image(np.stack(segs).astype(np.uint8), affine), folder / SEGMENTATION)
            names.append(folder.name)
    return names
