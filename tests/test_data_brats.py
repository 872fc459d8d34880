"""The BraTS reader, on tiny fixtures written with nibabel in the official layouts: grade folders
HGG/ and LGG/ (BraTS 2018, 2019) or case folders directly under the root (2020 on)."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medlab.data.formats.brats import (
    CLASS_NAMES,
    LABELS,
    MODALITIES,
    REGIONS,
    BraTS,
    find_cases,
    labels_to_indices,
    read_case,
)

SHAPE = (20, 24, 16)
# BraTS volumes are stored with x and y flipped (LPS-like) and 1 mm voxels
AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
N_HGG, N_LGG = 5, 3


def case_names(layout: str) -> list[tuple[str, str | None]]:
    """(case name, grade) of the fixture: BraTS 2018 names in grade folders, or BraTS 2020 names."""
    if layout == "graded":
        return [(f"Brats18_TCIA0{k}_{100 + k}_1", "HGG") for k in range(N_HGG)] + [
            (f"Brats18_2013_{k}_1", "LGG") for k in range(N_LGG)
        ]
    return [(f"BraTS20_Training_{k:03d}", None) for k in range(1, N_HGG + N_LGG + 1)]


def case_volumes(k: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Four int16 modalities (an ellipsoidal 'brain' of positive intensities in a zero background) and a
    uint8 segmentation with the labels 0/1/2/4 inside the brain; shifted a little with ``k``."""
    rng = np.random.default_rng(k)
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    cx, cy, cz = 9.5 + k % 2, 11.5 - k % 3 + 1, 7.5
    brain = ((x - cx) / 8) ** 2 + ((y - cy) / 10) ** 2 + ((z - cz) / 6.5) ** 2 <= 1
    r = np.sqrt((x - cx - 1) ** 2 + (y - cy) ** 2 + (z - cz) ** 2)
    seg = np.zeros(SHAPE, np.uint8)
    seg[(r <= 5) & brain] = 2
    seg[r <= 3.2] = 4
    seg[r <= 1.8] = 1
    modalities = {}
    for m, name in enumerate(MODALITIES):
        values = 300 + 100 * m + 4 * y + 150 * (seg > 0) * (1 + m % 2) + rng.normal(0, 20, SHAPE)
        modalities[name] = np.where(brain, np.clip(values, 1, None), 0).astype(np.int16)
    return modalities, seg


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    nib.save(nib.Nifti1Image(data, affine), path)


def write_brats(
    root: Path, layout: str = "graded", suffix: str = ".nii.gz", seg: bool = True
) -> list[tuple[str, str | None]]:
    """Write a tiny BraTS training release under ``root`` and return its (case, grade) pairs."""
    cases = case_names(layout)
    for k, (name, grade) in enumerate(cases):
        folder = root / grade / name if grade else root / name
        folder.mkdir(parents=True)
        modalities, labels = case_volumes(k)
        for modality, data in modalities.items():
            write_nifti(folder / f"{name}_{modality}{suffix}", data)
        if seg:
            write_nifti(folder / f"{name}_seg{suffix}", labels)
    (root / ("survival_data.csv" if layout == "graded" else "name_mapping.csv")).write_text("BraTS_ID\n")
    return cases


@pytest.fixture(name="brats", params=["graded", "flat"])
def _brats(request, fresh_copy):
    """A fresh copy of a release in each layout (some tests damage it) and its cases."""
    return fresh_copy(write_brats, request.param, name="brats"), sorted(case_names(request.param))


@pytest.fixture(name="graded")
def _graded(fresh_copy):
    root = fresh_copy(write_brats, "graded", name="brats")
    return root, sorted(case_names("graded"))  # as find_cases orders them: LGG ones first here


def at(path: Path) -> str:
    """``path`` as a regular expression that matches it literally."""
    return re.escape(str(path))


def file_of(root: Path, case: str, kind: str) -> Path:
    return next(root.glob(f"**/{case}/{case}_{kind}.nii*"))


# --- reading ---------------------------------------------------------------------------------------


def test_constants():
    assert MODALITIES == ("t1", "t1ce", "t2", "flair") and LABELS == (0, 1, 2, 4)
    assert len(CLASS_NAMES) == 4 and CLASS_NAMES[0] == "background"
    assert REGIONS == {"whole tumour": (1, 2, 3), "tumour core": (1, 3), "enhancing tumour": (3,)}


def test_find_cases_finds_every_case_with_its_grade(brats):
    root, expected = brats
    cases = find_cases(root)
    assert [(c.name, c.grade) for c in cases] == sorted(expected)
    for case in cases:
        assert set(case.files) == {"t1", "t1ce", "t2", "flair", "seg"}
        assert case.folder.name == case.name and case.folder.parent.name in (root.name, "HGG", "LGG")
        assert all(path == case.folder / f"{case.name}_{kind}.nii.gz" for kind, path in case.files.items())


def test_uncompressed_nii_and_a_grade_folder_as_root(tmp_path):
    expected = write_brats(tmp_path, "graded", suffix=".nii")
    cases = find_cases(tmp_path)
    assert len(cases) == len(expected) and all(p.suffix == ".nii" for p in cases[0].files.values())
    volume, mask = read_case(cases[0], 8)
    assert volume.shape == (4, 8, 8, 8) and mask.shape == (8, 8, 8)
    hgg = find_cases(tmp_path / "HGG")  # pointing at the grade folder: its cases, without grade
    assert [c.name for c in hgg] == sorted(n for n, g in expected if g == "HGG")
    assert {c.grade for c in hgg} == {None}


@pytest.mark.parametrize("seed", [0, 1])
def test_splits_partition_the_cases_and_are_deterministic(brats, seed):
    root, expected = brats
    options = dict(val_fraction=0.2, test_fraction=0.2, seed=seed)
    splits = {s: BraTS(root, s, **options) for s in ("train", "val", "test")}
    names = {s: [c.name for c in d.cases] for s, d in splits.items()}
    assert sorted(names["train"] + names["val"] + names["test"]) == sorted(n for n, _ in expected)
    assert all(names[s] == sorted(names[s]) for s in names)
    again = BraTS(root, "val", val_fraction=0.2, test_fraction=0.2, seed=seed)
    assert [c.name for c in again.cases] == names["val"]
    draws = {tuple(c.name for c in BraTS(root, "test", seed=s, test_fraction=0.3).cases) for s in range(6)}
    assert len(draws) > 1  # the seed matters


def test_splits_are_stratified_by_grade(graded):
    root, _ = graded
    grades = {s: BraTS(root, s, val_fraction=0.2, test_fraction=0.2).grades for s in ("train", "val", "test")}
    # per grade, round(0.2 * n) cases to val and to test: HGG 5 -> 1, 1, 3; LGG 3 -> 1, 1, 1
    assert sorted(grades["test"]) == sorted(grades["val"]) == ["HGG", "LGG"]
    assert grades["train"].count("HGG") == 3 and grades["train"].count("LGG") == 1
    defaults = {s: BraTS(root, s).grades for s in ("train", "val", "test")}  # 0.15: HGG 5 -> 1, 1, 3
    assert defaults["val"] == defaults["test"] == ["HGG"] and len(defaults["train"]) == 6


def test_unlabeled_is_train(brats):
    root, _ = brats
    train, unlabeled = BraTS(root, "train"), BraTS(root, "unlabeled")
    assert [c.name for c in unlabeled.cases] == [c.name for c in train.cases]
    assert unlabeled.split == "unlabeled" and unlabeled.grades == train.grades


def test_items_are_cubes_in_minus_one_to_one_with_index_masks(brats):
    root, _ = brats
    dataset = BraTS(root, "test", size=16, test_fraction=0.3)
    assert dataset.classes == CLASS_NAMES and dataset.modalities == MODALITIES
    assert len(dataset) == len(dataset.cases) == len(dataset.grades) >= 2
    for index in range(len(dataset)):
        volume, mask = dataset[index]
        assert volume.shape == (4, 16, 16, 16) and volume.dtype == torch.float32
        assert mask.shape == (16, 16, 16) and mask.dtype == torch.int64
        assert float(volume.min()) == -1.0 and float(volume.max()) <= 1.0
        assert float(volume.max()) > 0.5  # the 99.5th percentile maps to 1 (before resizing)
        corners = volume[:, [0, 0, -1, -1], [0, -1, 0, -1], [0, -1, -1, 0]]
        assert bool((corners == -1).all())  # outside the brain
        assert set(mask.unique().tolist()) <= {0, 1, 2, 3}
    assert dataset[-1][0].shape == (4, 16, 16, 16)
    with pytest.raises(IndexError, match="out of range"):
        dataset[len(dataset)]
    info = dataset.info
    assert info["kind"] == "real" and info["name"] == "BraTS" and info["n"] == len(dataset)
    assert info["split"] == "test" and info["size"] == 16 and info["path"] == str(root)


def test_native_size_crops_the_brain_pads_a_cube_and_keeps_voxel_order(graded):
    root, _ = graded
    case = find_cases(root)[0]
    volume, mask = read_case(case, size=None)
    brain = np.asarray(nib.load(case.files["flair"]).dataobj) > 0
    seg = np.asarray(nib.load(case.files["seg"]).dataobj)
    hits = [np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    extent = [int(h[-1] - h[0] + 1) for h in hits]
    side = max(extent)
    assert volume.shape == (4, side, side, side) and mask.shape == (side, side, side)
    # the brain's box sits centred in the cube, in nibabel's voxel order (no axis transposed or flipped)
    offsets = [(side - n) // 2 for n in extent]
    inner = tuple(slice(o, o + n) for o, n in zip(offsets, extent))
    box = tuple(slice(int(h[0]), int(h[-1]) + 1) for h in hits)
    expected = seg[box].astype(np.int64)
    expected[expected == 4] = 3
    assert np.array_equal(mask[inner], expected)
    assert mask.sum() == expected.sum()  # nothing outside the box
    brain_in_cube = np.pad(brain[box], [(o, side - n - o) for o, n in zip(offsets, extent)])
    assert bool((volume[:, ~brain_in_cube] == -1).all())
    for channel in volume:
        inside = channel[inner][brain[box]]
        assert inside.min() == -1.0 and inside.max() == 1.0  # the clipped 0.5 / 99.5 percentiles


def test_resized_mask_keeps_every_label(brats):
    root, _ = brats
    for case in find_cases(root)[:3]:
        for size in (16, 32):
            _, mask = read_case(case, size)
            assert set(np.unique(mask).tolist()) == {0, 1, 2, 3}


def test_labels_to_indices():
    seg = np.array([[0, 1, 2, 4], [4, 4, 0, 2]], dtype=np.float32)
    indices = labels_to_indices(seg, "x_seg.nii.gz")
    assert indices.dtype == np.int64 and indices.tolist() == [[0, 1, 2, 3], [3, 3, 0, 2]]
    with pytest.raises(
        ValueError, match=r"segmentation x_seg.nii.gz holds 3 voxel\(s\) with unexpected value\(s\) 0.5, 3, 5"
    ):
        labels_to_indices(np.array([0, 3, 5, 0.5, 4]), "x_seg.nii.gz")
    with pytest.raises(ValueError, match=r"unexpected value\(s\) nan"):
        labels_to_indices(np.array([0, np.nan]), "x_seg.nii.gz")


def test_cache_and_transform(graded):
    root, _ = graded
    dataset = BraTS(root, "val", size=8, transform=lambda v, m: (v.flip(1), m.flip(0)))
    plain = BraTS(root, "val", size=8, cache=False)
    volume, mask = dataset[0]
    expected_volume, expected_mask = plain[0]
    assert torch.equal(volume, expected_volume.flip(1)) and torch.equal(mask, expected_mask.flip(0))
    volume.fill_(7)  # callers may change what they get; the cache keeps its own copy
    for path in dataset.cases[0].files.values():
        path.unlink()
    assert torch.equal(dataset[0][0], expected_volume.flip(1))  # from the cache
    with pytest.raises(ValueError, match="cannot read NIfTI file"):
        plain[0]


# --- bad inputs ------------------------------------------------------------------------------------


def test_empty_grade_folders_list_what_was_found(tmp_path):
    (tmp_path / "HGG").mkdir()
    (tmp_path / "LGG" / "readme").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"HGG/ holds nothing; LGG/ holds \['readme/'\]"):
        find_cases(tmp_path)


def test_case_missing_a_file(graded):
    root, cases = graded
    name, grade = cases[-1]
    file_of(root, name, "t1ce").unlink()
    with pytest.raises(
        ValueError,
        match=rf"1 case\(s\) .* are missing files .*{grade}/{name} lacks {name}_t1ce.nii.gz "
        rf"\(found: {name}_flair",
    ):
        BraTS(root)


def test_validation_release_without_segmentations(tmp_path):
    write_brats(tmp_path, "flat", seg=False)
    with pytest.raises(
        ValueError, match=r"none of the 8 cases .* has a segmentation.*validation and test releases"
    ):
        BraTS(tmp_path)


def test_one_case_without_segmentation(graded):
    root, cases = graded
    file_of(root, cases[0][0], "seg").unlink()
    with pytest.raises(ValueError, match=rf"lacks {cases[0][0]}_seg.nii.gz"):
        find_cases(root)


@pytest.mark.parametrize("content", [b"", b"this is not a nifti file" * 20])
def test_unreadable_file_names_its_path(graded, content):
    root, cases = graded
    bad = file_of(root, cases[2][0], "t2")
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=rf"cannot read NIfTI file {at(bad)}"):
        BraTS(root, "train", val_fraction=0, test_fraction=0)  # the header check, at construction


def test_truncated_voxels_name_the_path_when_read(graded):
    root, cases = graded
    bad = file_of(root, cases[0][0], "flair")
    data = gzip.decompress(bad.read_bytes())
    bad.write_bytes(gzip.compress(data[: len(data) - 100]))
    dataset = BraTS(root, "train", val_fraction=0, test_fraction=0)  # headers are fine
    with pytest.raises(ValueError, match=rf"cannot read the voxels of NIfTI file {at(bad)}"):
        dataset[0]


def test_shape_mismatch(graded):
    root, cases = graded
    bad = file_of(root, cases[0][0], "t2")
    write_nifti(bad, np.ones((20, 24, 17), np.int16))
    with pytest.raises(
        ValueError, match=rf"{at(bad)} has shape \(20, 24, 17\) but .*_t1.nii.gz has shape \(20, 24, 16\)"
    ):
        BraTS(root, "train", val_fraction=0, test_fraction=0)


def test_affine_mismatch(graded):
    root, cases = graded
    bad = file_of(root, cases[0][0], "seg")
    shifted = AFFINE.copy()
    shifted[0, 3] = 0.5
    write_nifti(bad, case_volumes(0)[1], shifted)
    write_nifti(file_of(root, cases[1][0], "seg"), case_volumes(1)[1], AFFINE + 1e-4)  # within tolerance
    with pytest.raises(ValueError, match=rf"{at(bad)} has affine .*0.5.* but .*_t1.nii.gz has affine"):
        BraTS(root, "train", val_fraction=0, test_fraction=0)
    write_nifti(bad, case_volumes(0)[1])
    BraTS(root, "train", val_fraction=0, test_fraction=0)


def test_four_dimensional_volume(graded):
    root, cases = graded
    bad = file_of(root, cases[0][0], "t1")
    write_nifti(bad, np.ones((*SHAPE, 2), np.int16))
    with pytest.raises(ValueError, match=rf"{at(bad)} has shape \(20, 24, 16, 2\); expected a 3D volume"):
        BraTS(root, "train", val_fraction=0, test_fraction=0)


def test_unexpected_label_value(graded):
    root, cases = graded
    bad = file_of(root, cases[0][0], "seg")
    seg = case_volumes(0)[1]
    seg[seg == 4] = 3  # the BraTS 2023 convention
    write_nifti(bad, seg)
    case = find_cases(root)[0]
    message = rf"segmentation {at(bad)} holds \d+ voxel\(s\) with unexpected value\(s\) 3;"
    with pytest.raises(ValueError, match=message):
        read_case(case)


def test_nan_voxels(graded):
    root, cases = graded
    bad = file_of(root, cases[0][0], "flair")
    data = case_volumes(0)[0]["flair"].astype(np.float32)
    data[3, 4, 5] = np.nan
    write_nifti(bad, data)
    with pytest.raises(ValueError, match=rf"NIfTI file {at(bad)} holds 1 NaN or infinite voxel"):
        read_case(find_cases(root)[0])


def test_case_without_brain(graded):
    root, cases = graded
    for modality in MODALITIES:
        write_nifti(file_of(root, cases[0][0], modality), np.zeros(SHAPE, np.int16))
    with pytest.raises(ValueError, match=rf"every modality of case {cases[0][0]} .* is zero everywhere"):
        read_case(find_cases(root)[0])


def test_case_in_two_grade_folders(graded):
    root, cases = graded
    name = cases[-1][0]
    shutil.copytree(root / "HGG" / name, root / "LGG" / name)
    with pytest.raises(
        ValueError, match=rf"case {name} is in two grade folders: .*HGG/{name} and .*LGG/{name}"
    ):
        BraTS(root)


def test_case_folders_beside_grade_folders(graded):
    root, cases = graded
    name = cases[-1][0]
    shutil.move(root / "HGG" / name, root / name)
    with pytest.raises(
        ValueError, match=rf"holds grade folders \(HGG, LGG\) and also case folders outside them: {name}"
    ):
        BraTS(root)


def test_file_named_for_another_case(graded):
    root, cases = graded
    (name, _), (other, _) = cases[0], cases[1]
    wrong = root / "LGG" / name / f"{other}_t1.nii.gz"
    file_of(root, name, "t1").rename(wrong)
    message = rf"{at(wrong)} is in case folder .*{name} but is named for case '{other}'"
    with pytest.raises(ValueError, match=message):
        BraTS(root)


def test_same_modality_compressed_and_not(graded):
    root, cases = graded
    name = cases[0][0]
    source = file_of(root, name, "t2")
    (source.parent / f"{name}_t2.nii").write_bytes(gzip.decompress(source.read_bytes()))
    with pytest.raises(
        ValueError,
        match=rf"both as .nii and as .nii.gz; keep one: .*{name} \({name}_t2.nii, {name}_t2.nii.gz\)",
    ):
        BraTS(root)


def test_unknown_split(graded):
    root, _ = graded
    with pytest.raises(
        ValueError, match=r"unknown split 'validation'; expected one of train, val, test, unlabeled"
    ):
        BraTS(root, "validation")


@pytest.mark.parametrize(
    "val, test, message",
    [
        (-0.1, 0.1, r"val_fraction must be in \[0, 1\), got -0.1"),
        (1, 0, r"val_fraction must be in \[0, 1\), got 1"),
        (0.1, 1.5, r"test_fraction must be in \[0, 1\), got 1.5"),
        (0.5, 0.5, r"val_fraction \+ test_fraction must be below 1, got 0.5 \+ 0.5"),
        (0.3, 0.6, r"val_fraction 0.3 and test_fraction 0.6 leave no train case out of 8"),
    ],
)
def test_bad_fractions(graded, val, test, message):
    root, _ = graded
    with pytest.raises(ValueError, match=message):
        BraTS(root, val_fraction=val, test_fraction=test)


def test_empty_split(graded):
    root, _ = graded
    with pytest.raises(
        ValueError, match=r"split 'val' is empty: val_fraction 0 of 8 case\(s\) rounds to none"
    ):
        BraTS(root, "val", val_fraction=0)


@pytest.mark.parametrize("size", [0, 4, 7])
def test_size_too_small(graded, size):
    root, _ = graded
    with pytest.raises(ValueError, match=rf"size must be at least 8 .*got {size}"):
        BraTS(root, size=size)
    with pytest.raises(ValueError, match=rf"size must be at least 8 .*got {size}"):
        read_case(find_cases(root)[0], size)


# --- the registry and chapter 3 on the real layout ---------------------------------------------


def test_registry_reads_brats_from_data_dir_and_refuses_the_private_ct_set(graded, tmp_path):
    from medlab import data
    from medlab.data.formats.brats import BraTS
    from medlab.papers import rubik

    root, _ = graded
    train = data.load("brats", "train", data_dir=root, size=16)
    assert isinstance(train, BraTS) and train[0][0].shape == (4, 16, 16, 16)
    with pytest.raises(ValueError, match="cannot be set for the real BraTS"):
        data.load("brats", "train", data_dir=root, n=4)
    with pytest.raises(ValueError, match=r"head CT set .* is private"):
        data.load("head_ct", "train", data_dir=tmp_path)
    config = rubik.settings("smoke", volume_size=16, cube_size=4, widths=(4, 8))
    task = rubik.load_data(config, "segmentation", data_dir=root)
    assert task.info["kind"] == "real" and task.in_channels == 4 and len(task.unlabeled) == len(task.train)
    assert task.classes == ("background", "necrotic core", "oedema", "enhancing tumour")
