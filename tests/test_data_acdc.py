"""The ACDC reader on fixtures written in the official layout: crops of the ED and ES frames, splits, and
the bad inputs (missing folder, missing Info.cfg or frame, unreadable file, labels that do not match)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medlab.data.formats.acdc import ACDC, read_info, write_fixture


def test_crops_of_the_ed_and_es_frames_hold_the_myocardium(written):
    root = written(write_fixture, 6)
    parts = {split: ACDC(root, split, image_size=32) for split in ("train", "val", "test")}
    assert sorted(sum((p.info["patients"] for p in parts.values()), [])) == [f"patient{i:03d}" for i in range(1, 7)]
    image, mask = parts["train"][0]
    assert image.shape == (1, 32, 32) and 0 <= image.min() and image.max() <= 1 and set(mask.unique().tolist()) == {0, 1}
    assert {s["phase"] for s in parts["train"].sources} == {"ED", "ES"} and {s["frame"] for s in parts["train"].sources} == {1, 5}
    assert ACDC(root / "training", "test", image_size=32).info["patients"] == parts["test"].info["patients"]  # root may be training/


def test_info_cfg_is_read_and_checked(tmp_path):
    path = tmp_path / "Info.cfg"
    path.write_text("ED: 1\nES: 12\nGroup: DCM\n")
    assert read_info(path)["ES"] == "12"
    path.write_text("ED: 1\nGroup: DCM\n")
    with pytest.raises(ValueError, match="Info.cfg has no integer ES"):
        read_info(path)
    with pytest.raises(FileNotFoundError, match="nowhere/Info.cfg"):
        read_info(tmp_path / "nowhere" / "Info.cfg")


def test_missing_folder_missing_frame_and_wrong_layout(tmp_path, fresh_copy):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ACDC(tmp_path / "nowhere")
    (tmp_path / "empty" / "training").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no ACDC patient folder"):
        ACDC(tmp_path / "empty")
    root = fresh_copy(write_fixture, 6)
    every = {s: ACDC(root, s, image_size=32).info["patients"] for s in ("train", "val", "test")}
    patient = root / "training" / every["train"][0]
    (patient / f"{patient.name}_frame05_gt.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=f"{patient.name}_frame05_gt.nii.gz is missing"):
        ACDC(root, "train")


def test_unreadable_files_and_labels_that_do_not_match(fresh_copy):
    root = fresh_copy(write_fixture, 6)
    patient = root / "training" / ACDC(root, "train", image_size=32).info["patients"][0]
    gt = patient / f"{patient.name}_frame01_gt.nii.gz"
    gt.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=f"cannot read NIfTI file .*{gt.name}"):
        ACDC(root, "train")
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 2), np.uint8), np.eye(4)), gt)
    with pytest.raises(ValueError, match="do not match the image"):
        ACDC(root, "train")
    image = nib.load(patient / f"{patient.name}_frame01.nii.gz")
    nib.save(nib.Nifti1Image(np.full(image.shape, 7, np.uint8), image.affine), gt)
    with pytest.raises(ValueError, match=r"unexpected label value\(s\) \[7\]"):
        ACDC(root, "train")
