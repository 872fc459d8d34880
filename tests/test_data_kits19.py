"""The KiTS19 reader on fixtures written in the official layout: crops, splits, targets, and the bad inputs
(missing folder, wrong layout, unreadable file, labels that do not match the images, unlabelled test cases)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medlab import data as datasets
from medlab.data.formats import kits19
from medlab.data.formats.kits19 import KiTS19, write_fixture


def test_crops_of_every_split_hold_the_tumour(written):
    root = written(write_fixture, 6, 1)
    parts = {split: KiTS19(root, split, image_size=32) for split in ("train", "val", "test")}
    cases = [set(p.info["cases"]) for p in parts.values()]
    assert set.union(*cases) == {f"case_{i:05d}" for i in range(6)} and sum(map(len, cases)) == 6
    image, mask = parts["train"][0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
    assert mask.shape == (32, 32) and set(mask.unique().tolist()) == {0, 1}
    assert all(s["slice"] % 2 == 0 for s in parts["train"].sources)  # the fixture's tumour is on even slices
    info = parts["train"].info
    assert info["kind"] == "real" and info["unlabelled_test_cases"] == 1 and info["n"] == len(parts["train"])
    kidney = KiTS19(root, "train", image_size=32, target="kidney")
    assert all((k[1] >= t[1]).all() for k, t in zip(kidney, parts["train"]))


def test_the_registry_reads_it_and_refuses_n(written):
    root = written(write_fixture, 6, 1)
    assert len(datasets.load("kits19", "test", data_dir=root, image_size=32)) > 0
    with pytest.raises(ValueError, match="cannot be set for the real KiTS19"):
        datasets.load("kits19", "train", data_dir=root, n=4)


def test_unlabelled_test_cases_are_refused_as_training_data(fresh_copy):
    root = fresh_copy(write_fixture, 6, 1)
    with pytest.raises(ValueError, match="case_00210.*without labels.*refused"):
        KiTS19(root, "train", cases=["case_00000", "case_00210"])
    for folder in root.glob("case_0000*"):
        (folder / "segmentation.nii.gz").rename(folder.parent / f"{folder.name}.seg")
        if int(folder.name[-5:]) < 210:
            import shutil

            shutil.rmtree(folder)
    with pytest.raises(ValueError, match="unlabelled test cases"):
        KiTS19(root, "train")


def test_missing_folder_wrong_layout_and_missing_labels(tmp_path, fresh_copy):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        KiTS19(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "imaging.nii.gz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no KiTS19 case folder"):
        KiTS19(tmp_path / "flat")
    root = fresh_copy(write_fixture, 6, 1)
    (root / "case_00002" / "segmentation.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="case_00002/segmentation.nii.gz.*training case"):
        KiTS19(root, "train")


def test_unreadable_files_and_labels_that_do_not_match(fresh_copy):
    root = fresh_copy(write_fixture, 6, 1)
    every = {split: KiTS19(root, split, image_size=32).info["cases"] for split in ("train", "val", "test")}
    case = every["train"][0]
    seg = root / case / "segmentation.nii.gz"
    seg.write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match=f"cannot read NIfTI file .*{case}/segmentation.nii.gz"):
        KiTS19(root, "train")
    nib.save(nib.Nifti1Image(np.zeros((3, 8, 8), np.uint8), np.eye(4)), seg)
    with pytest.raises(ValueError, match=f"{case}/segmentation.nii.gz has shape .* do not match"):
        KiTS19(root, "train")
    image = nib.load(root / case / "imaging.nii.gz")
    labels = np.zeros(image.shape, np.uint8)
    labels[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(labels, image.affine), seg)
    with pytest.raises(ValueError, match=r"unexpected label value\(s\) \[3\]"):
        KiTS19(root, "train")


def test_bad_options_are_refused(written):
    root = written(write_fixture, 6, 1)
    with pytest.raises(ValueError, match="unknown split"):
        KiTS19(root, "unlabeled")
    with pytest.raises(ValueError, match="unknown target"):
        KiTS19(root, target="cyst")
    with pytest.raises(ValueError, match="image_size"):
        KiTS19(root, image_size=4)
    assert kits19.WINDOW_HU == (-79.0, 304.0)
