"""Chapter 7's data: the synthetic slices (contrast rules, determinism, the registry) and the BraTS slice
reader on a tiny BraTS 2018 layout written with nibabel (split, slice choice, scaling, bad inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlab import data as datasets
from medlab.data.constants import MODALITIES
from medlab.data.formats.brats_slices import BraTSSlices, scale_slice, split_cases
from medlab.data.formats.brats import find_cases
from medlab.data.synth.brain_slices import SyntheticBrainSliceSpec, SyntheticBrainSlices, render_slice

T1, T1CE, T2, FLAIR = (MODALITIES.index(m) for m in ("t1", "t1ce", "t2", "flair"))


@pytest.fixture(scope="module", name="slices")
def _slices():
    return SyntheticBrainSlices(SyntheticBrainSliceSpec(n=60, size=32, seed=3, healthy_fraction=0.2))


def test_items_are_scaled_images_and_binary_masks(slices):
    image, mask = slices[0]
    assert image.shape == (4, 32, 32) and image.dtype == torch.float32 and mask.dtype == torch.int64
    assert float(image.min()) == -1.0 and float(image.max()) <= 1.0 and set(mask.unique().tolist()) <= {0, 1}
    assert np.array_equal(slices.masks, slices.regions > 0)
    assert slices.info["tumour_slices"] == int(slices.masks.any((1, 2)).sum()) and 35 <= slices.info["tumour_slices"] < 60


def test_the_contrast_rules_hold(slices):
    img, reg = slices.images.astype(np.float32), slices.regions
    brain = img[:, T2] > -1
    tissue = brain & (reg == 0)
    healthy = np.stack([scale_slice(render_slice(64, k, grade=None)[0]) for k in range(6)])  # 3.6 mm pixels
    inside = healthy[:, T2] > -1
    csf = inside & (healthy[:, T2] > np.percentile(healthy[:, T2][inside], 97))  # the brightest T2: CSF
    assert healthy[:, FLAIR][csf].mean() < healthy[:, FLAIR][inside].mean() - 0.2  # CSF dark in FLAIR
    for ch in (T2, FLAIR):  # oedema bright in T2 and FLAIR
        assert img[:, ch][reg == 2].mean() > img[:, ch][tissue].mean() + 0.3
    enh = reg == 3  # the enhancing rim bright on T1ce only
    assert img[:, T1CE][enh].mean() > img[:, T1CE][tissue].mean() + 0.3
    assert img[:, T1][enh].mean() < img[:, T1][tissue].mean()


def test_generation_is_deterministic_and_splits_differ():
    a = datasets.load("brats_slices", "train", n=4, size=32, seed=1)
    b = datasets.load("brats_slices", "train", n=4, size=32, seed=1)
    c = datasets.load("brats_slices", "test", n=4, size=32, seed=1)
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)


def test_render_slice_without_tumour_and_bad_settings():
    image, regions, case = render_slice(32, 0, grade=None)
    assert image.shape == (4, 32, 32) and not regions.any() and case["centre"] is None and image.min() >= 0
    with pytest.raises(ValueError, match="grade"):
        render_slice(32, 0, grade="GBM")
    with pytest.raises(ValueError, match="healthy_fraction"):
        SyntheticBrainSliceSpec(n=2, healthy_fraction=2.0)
    with pytest.raises(ValueError, match="size"):
        SyntheticBrainSliceSpec(n=2, size=8)


def test_scale_slice_divides_by_the_slice_maximum():
    x = np.zeros((2, 4, 4), np.float32)
    x[0, 1, 1], x[0, 2, 2] = 2.0, 4.0
    out = scale_slice(x)
    assert out[0, 2, 2] == 1.0 and out[0, 1, 1] == 0.0 and out[0, 0, 0] == -1.0 and (out[1] == -1).all()


# --- the reader on a BraTS 2018 layout --------------------------------------------------------------------


def write_release(root, cases: int = 7, shape=(40, 40, 12)):
    from test_data_brats import AFFINE, write_nifti

    rng = np.random.default_rng(0)
    x, y = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape[:2]), indexing="ij")
    names = []
    for k in range(cases):
        grade = "HGG" if k < cases - 2 else "LGG"
        name = f"Brats18_TCIA0{k}_{100 + k}_1"
        folder = root / grade / name
        folder.mkdir(parents=True)
        radius = np.array([0, 0, 6, 10, 14, 16, 16, 15, 13, 10, 5, 0], np.float32)  # the brain per axial slice
        brain = ((x - 20) ** 2 + (y - 20) ** 2)[..., None] <= radius[None, None, :] ** 2
        seg = np.zeros(shape, np.uint8)
        seg[(((x - 24 - k % 3) ** 2 + (y - 18) ** 2)[..., None] <= 16) & brain & (np.arange(12) >= 5)] = 2
        seg[(((x - 24 - k % 3) ** 2 + (y - 18) ** 2)[..., None] <= 4) & brain & (np.arange(12) >= 5)] = 4
        for m, modality in enumerate(MODALITIES):
            values = 200 + 50 * m + 300 * (seg > 0) + rng.normal(0, 10, shape)
            write_nifti(folder / f"{name}_{modality}.nii.gz", np.where(brain, np.clip(values, 1, None), 0).astype(np.int16), AFFINE)
        write_nifti(folder / f"{name}_seg.nii.gz", seg, AFFINE)
        names.append(name)
    return sorted(names)


def test_reader_splits_by_sorted_case_and_keeps_the_code_slices(tmp_path):
    names = write_release(tmp_path)
    parts = split_cases(find_cases(tmp_path))
    assert sorted(c.name for p in parts.values() for c in p) == names
    assert [len(parts[s]) for s in ("test", "train", "val")] == [2, 2, 3]  # 85/285 and 100/285 of 7, rounded
    train = BraTSSlices(tmp_path, "train", size=16)
    # 2000 of 240 x 240 pixels -> 55.6 of 40 x 40: radius 6 (113 px) passes, radius 5 (79) passes, 0 does not
    assert train.slice_levels[:3] == [10, 9, 8] and 0 not in train.slice_levels and 11 not in train.slice_levels
    image, mask = train[0]
    assert image.shape == (4, 16, 16) and float(image.max()) == 1.0 and float(image.min()) == -1.0
    assert train.info["n_cases"] == 2 and train.info["tumour_slices"] > 0
    assert BraTSSlices(tmp_path, "train", size=16, min_pixels=300).slice_levels.count(10) == 0
    again = BraTSSlices(tmp_path, "train", size=16)
    assert np.array_equal(train.images, again.images) and train.slice_cases == again.slice_cases


def test_reader_goes_through_the_registry_and_refuses_n(tmp_path):
    write_release(tmp_path)
    test = datasets.load("brats_slices", "test", data_dir=tmp_path, size=16)
    assert test.info["kind"] == "real" and len(test) > 0
    with pytest.raises(ValueError, match="cannot be set"):
        datasets.load("brats_slices", "test", data_dir=tmp_path, n=3)


def test_reader_errors_name_what_is_at_fault(tmp_path):
    names = write_release(tmp_path, cases=3)
    with pytest.raises(ValueError, match="split"):
        BraTSSlices(tmp_path, "unlabeled")
    with pytest.raises(ValueError, match="no slice"):
        BraTSSlices(tmp_path, "train", size=16, min_pixels=10**6)
    (next(tmp_path.rglob(f"{names[0]}_seg.nii.gz"))).unlink()
    with pytest.raises(ValueError, match=f"{names[0]}_seg"):
        BraTSSlices(tmp_path, "train", size=16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BraTSSlices(tmp_path / "nowhere", "train")
