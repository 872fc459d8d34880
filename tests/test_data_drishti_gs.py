"""The Drishti-GS1 reader, on tiny fixtures written with PIL in the official layout (``Drishti-GS1_files``
with PNG images and grey soft maps of the annotators' agreement)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medlab.data.formats.drishti_gs import (
    CLASSES,
    DrishtiGS,
    find_samples,
    locate,
    soft_maps_to_classes,
    split_names,
)

H, W = 40, 48
TRAIN = [f"drishtiGS_{k:03d}" for k in (2, 4, 8, 10, 12, 15, 16, 17, 18, 22)]
TEST = [f"drishtiGS_{k:03d}" for k in (1, 3, 5)]
DISC_RADII, CUP_RADII = (8.0, 7.0), (4.0, 3.5)
# soft values: the ellipse grown by 15 % is marked by one annotator of four (64), the ellipse by three
# (191), the ellipse shrunk to 80 % by all four (255)
RINGS = ((1.15, 64), (1.0, 191), (0.8, 255))


def centre_of(k: int) -> tuple[float, float]:
    return 19.5 + (k % 3) * 2 - 2, 23.5 + (k % 4) * 2 - 3


def draw(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fundus-like image and its disc and cup soft maps (uint8), around ``centre_of(k)``. The cup soft
    map also marks one pixel in a corner, outside the disc (the reader clips the cup to the disc)."""
    y, x = np.mgrid[:H, :W].astype(np.float32)
    cy, cx = centre_of(k)

    def soft(radii):
        values = np.zeros((H, W), np.uint8)
        for scale, value in RINGS:
            values[((y - cy) / (radii[0] * scale)) ** 2 + ((x - cx) / (radii[1] * scale)) ** 2 <= 1] = value
        return values

    disc, cup = soft(DISC_RADII), soft(CUP_RADII)
    cup[0, 0] = 255
    image = np.empty((H, W, 3), np.float32)
    image[:] = (140, 55, 25)
    image[disc > 0] = (225, 165, 105)
    image[cup > 0] = (250, 225, 190)
    image += np.random.default_rng(k).normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), disc, cup


def gt_dir(base: Path, part: str) -> Path:
    return base / part / ("GT" if part == "Training" else "Test_GT")


def soft_path(base: Path, part: str, name: str, kind: str) -> Path:
    suffix = {"disc": "ODsegSoftmap", "cup": "cupsegSoftmap"}[kind]
    return gt_dir(base, part) / name / "SoftMap" / f"{name}_{suffix}.png"


def write_drishti(root: Path, parts=("Training", "Test")) -> Path:
    """Write the fixture under ``root/Drishti-GS1_files`` and return that folder."""
    base = root / "Drishti-GS1_files"
    for part in parts:
        for name in TRAIN if part == "Training" else TEST:
            k = int(name[-3:])
            image, disc, cup = draw(k)
            (base / part / "Images").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(base / part / "Images" / f"{name}.png")
            soft_path(base, part, name, "disc").parent.mkdir(parents=True)
            Image.fromarray(disc).save(soft_path(base, part, name, "disc"))
            Image.fromarray(cup).save(soft_path(base, part, name, "cup"))
            boundary = gt_dir(base, part) / name / "AvgBoundary"  # ignored
            boundary.mkdir()
            (boundary / f"{name}_ODAvgBoundary.txt").write_text("1 2\n")
            (gt_dir(base, part) / name / f"{name}_diskCenter.txt").write_text("20 24\n")
    return base


@pytest.fixture(name="drishti")
def _drishti(fresh_copy):
    """A fresh copy of the fixture: the folder holding ``Drishti-GS1_files``."""
    return fresh_copy(write_drishti)


def at(path: Path) -> str:
    return re.escape(str(path))


def ellipse_count(radii, scale: float) -> int:
    y, x = np.mgrid[:H, :W].astype(np.float32)
    cy, cx = centre_of(0)
    return int((((y - cy) / (radii[0] * scale)) ** 2 + ((x - cx) / (radii[1] * scale)) ** 2 <= 1).sum())


# --- reading ---------------------------------------------------------------------------------------


def test_root_may_be_the_files_folder_or_its_parent(drishti):
    base = drishti / "Drishti-GS1_files"
    assert locate(drishti) == base and locate(base) == base
    for root in (drishti, base):
        samples = find_samples(root, "train")
        assert [s.name for s in samples] == TRAIN
        assert samples[0].image == base / "Training" / "Images" / f"{TRAIN[0]}.png"
        assert samples[0].disc == soft_path(base, "Training", TRAIN[0], "disc")
        assert samples[0].cup == soft_path(base, "Training", TRAIN[0], "cup")
    assert [s.name for s in find_samples(drishti, "test")] == TEST
    assert CLASSES == ("background", "disc rim", "cup") and DrishtiGS.classes == CLASSES


def test_splits_are_disjoint_deterministic_and_seeded(drishti):
    train, val = DrishtiGS(drishti, "train"), DrishtiGS(drishti, "val")
    assert len(val) == 2 and len(train) == 8  # round(0.2 * 10)
    assert not set(train.names) & set(val.names) and sorted(train.names + val.names) == TRAIN
    assert train.names == sorted(train.names) and val.names == sorted(val.names)
    assert DrishtiGS(drishti, "val").names == val.names
    draws = {tuple(DrishtiGS(drishti, "val", seed=s).names) for s in range(6)}
    assert len(draws) > 1  # the seed matters
    assert len(DrishtiGS(drishti, "val", val_fraction=0.5)) == 5
    assert DrishtiGS(drishti, "test").names == TEST
    assert split_names(TRAIN, 0.2, 0) == {"train": train.names, "val": val.names}
    info = val.info
    assert info["kind"] == "real" and info["name"] == "Drishti-GS1" and info["split"] == "val"
    assert info["n"] == 2 and info["images"] == val.names and info["soft_threshold"] == 0.5
    assert info["val_fraction"] == 0.2 and info["seed"] == 0 and info["path"] == str(drishti)


def test_soft_maps_become_classes_at_the_threshold(drishti):
    counts = {}
    for threshold in (0.25, 0.5, 1.0):
        dataset = DrishtiGS(drishti, "test", soft_threshold=threshold)
        image, mask = dataset.load_pair(0)
        _, disc, cup = dataset.load_soft_maps(0)
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        assert mask.shape == (H, W) and mask.dtype == np.int64
        level = threshold * 255
        expected = np.where(disc >= level, 1, 0)
        expected[(cup >= level) & (disc >= level)] = 2
        assert np.array_equal(mask, expected)
        assert mask[0, 0] == 0 and cup[0, 0] == 255  # the stray cup pixel is clipped to the disc
        counts[threshold] = np.bincount(mask.ravel(), minlength=3)
    # soft 64 / 191 / 255: at 0.25 any annotator, at 0.5 three of four, at 1 all four
    scale = {0.25: 1.15, 0.5: 1.0, 1.0: 0.8}
    for threshold, (background, rim, cup) in counts.items():
        disc_pixels = ellipse_count(DISC_RADII, scale[threshold])
        assert cup == ellipse_count(CUP_RADII, scale[threshold]) and rim + cup == disc_pixels
        assert background == H * W - disc_pixels
    assert counts[0.25][1] > counts[0.5][1] > counts[1.0][1]


def test_soft_maps_to_classes_names_empty_maps():
    disc = np.zeros((6, 6), np.uint8)
    disc[1:5, 1:5] = 200
    cup = np.zeros((6, 6), np.uint8)
    cup[2:4, 2:4] = 100
    cup[0, 5] = 255  # outside the disc
    classes = soft_maps_to_classes(disc, cup, 0.3, "d.png", "c.png")
    assert np.bincount(classes.ravel()).tolist() == [20, 12, 4]
    message = r"cup soft map c.png marks no pixel inside the disc at or above 127.5"
    with pytest.raises(ValueError, match=message):
        soft_maps_to_classes(disc, cup, 0.5, "d.png", "c.png")
    message = r"disc soft map d.png marks no pixel at or above 255 .*maximum is 200"
    with pytest.raises(ValueError, match=message):
        soft_maps_to_classes(disc, cup, 1.0, "d.png", "c.png")


def test_items_and_the_disc_crop(drishti):
    dataset = DrishtiGS(drishti, "train", image_size=16, roi_fraction=0.5)
    native = DrishtiGS(drishti, "train", image_size=20, roi_fraction=0.5)  # 0.5 * 40: no resizing
    for index in range(len(dataset)):
        image, mask = dataset[index]
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32
        assert mask.shape == (16, 16) and mask.dtype == torch.int64
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        assert set(mask.unique().tolist()) == {0, 1, 2}
        _, crop = native[index]
        rows = np.flatnonzero((crop.numpy() >= 1).any(axis=1))
        cols = np.flatnonzero((crop.numpy() >= 1).any(axis=0))
        assert (rows[0] + rows[-1] + 1) / 2 == 10 and (cols[0] + cols[-1] + 1) / 2 == 10  # centred
        full_image, full_mask = native.load_pair(index)
        cy, cx = centre_of(int(native.names[index][-3:]))
        top, left = round(cy + 0.5 - 10), round(cx + 0.5 - 10)
        assert torch.equal(crop, torch.from_numpy(full_mask[top : top + 20, left : left + 20]))


def test_full_roi_and_transform(drishti):
    dataset = DrishtiGS(drishti, "test", image_size=H, roi="full", transform=lambda i, m: (i * 0 + 1, m))
    image, mask = dataset[2]
    full_mask = dataset.load_pair(2)[1]
    left = (W - H) // 2
    assert torch.equal(mask, torch.from_numpy(full_mask[:, left : left + H])) and bool((image == 1).all())


def test_check_decodes_every_image(drishti):
    report = DrishtiGS(drishti, "test", roi_fraction=0.5).check()
    assert report == {"n": 3, "sizes": {f"{W}x{H}": 3}, "disc_exceeds_roi": []}


def test_test_ground_truth_missing_leaves_training_usable(tmp_path):
    base = write_drishti(tmp_path)
    shutil.rmtree(base / "Test" / "Test_GT")
    assert len(DrishtiGS(tmp_path, "train")) == 8
    with pytest.raises(
        FileNotFoundError,
        match=r"not in the Drishti-GS1 layout for the Test part: it has no Test/Test_GT/ "
        r"\(found in .*Test: \['Images/'\]\).*data/README.md",
    ):
        DrishtiGS(tmp_path, "test")


# --- bad inputs ------------------------------------------------------------------------------------


def test_image_without_ground_truth(drishti):
    base = drishti / "Drishti-GS1_files"
    shutil.rmtree(gt_dir(base, "Training") / TRAIN[3])
    with pytest.raises(
        ValueError,
        match=rf"1 image\(s\) in .*Training/Images have no ground-truth folder in .*Training/GT: {TRAIN[3]} "
        rf"\(expected e.g. {at(gt_dir(base, 'Training') / TRAIN[3])}/\)",
    ):
        DrishtiGS(drishti, "train")


def test_ground_truth_without_image(drishti):
    base = drishti / "Drishti-GS1_files"
    (base / "Test" / "Images" / f"{TEST[1]}.png").unlink()
    with pytest.raises(
        ValueError,
        match=rf"1 ground-truth folder\(s\) in .*Test/Test_GT have no image in .*Test/Images: {TEST[1]}",
    ):
        DrishtiGS(drishti, "test")


def test_soft_map_missing(drishti):
    bad = soft_path(drishti / "Drishti-GS1_files", "Test", TEST[2], "cup")
    bad.unlink()
    with pytest.raises(ValueError, match=rf"1 soft map\(s\) are missing: {at(bad)}"):
        DrishtiGS(drishti, "test")


def test_soft_map_of_another_size(drishti):
    base = drishti / "Drishti-GS1_files"
    bad = soft_path(base, "Test", TEST[0], "disc")
    Image.new("L", (W - 1, H)).save(bad)
    with pytest.raises(
        ValueError,
        match=rf"image {at(base / 'Test' / 'Images' / (TEST[0] + '.png'))} is 48x40 but its mask {at(bad)} "
        r"is 47x40",
    ):
        DrishtiGS(drishti, "test")


def test_unreadable_image_names_its_path(drishti):
    bad = drishti / "Drishti-GS1_files" / "Test" / "Images" / f"{TEST[1]}.png"
    bad.write_bytes(b"not a png" * 10)
    with pytest.raises(ValueError, match=rf"cannot read image {at(bad)}"):
        DrishtiGS(drishti, "test")


def test_truncated_soft_map_names_its_path_when_read(drishti):
    bad = soft_path(drishti / "Drishti-GS1_files", "Test", TEST[1], "disc")
    bad.write_bytes(bad.read_bytes()[:60])
    dataset = DrishtiGS(drishti, "test", image_size=16)
    dataset[0]
    with pytest.raises(ValueError, match=rf"cannot read soft map {at(bad)}"):
        dataset[1]


def test_empty_soft_map(drishti):
    bad = soft_path(drishti / "Drishti-GS1_files", "Test", TEST[0], "disc")
    Image.new("L", (W, H), 0).save(bad)
    dataset = DrishtiGS(drishti, "test")
    with pytest.raises(ValueError, match=rf"disc soft map {at(bad)} marks no pixel at or above 127.5"):
        dataset[0]


def test_soft_map_empty_only_at_a_strict_threshold(drishti):
    bad = soft_path(drishti / "Drishti-GS1_files", "Test", TEST[0], "cup")
    _, _, cup = draw(int(TEST[0][-3:]))
    Image.fromarray(np.minimum(cup, 200).astype(np.uint8)).save(bad)  # nobody's unanimous
    DrishtiGS(drishti, "test")[0]
    with pytest.raises(ValueError, match=rf"cup soft map {at(bad)} marks no pixel at or above 255"):
        DrishtiGS(drishti, "test", soft_threshold=1.0)[0]


def test_inverted_soft_map(drishti):
    bad = soft_path(drishti / "Drishti-GS1_files", "Test", TEST[0], "disc")
    _, disc, _ = draw(int(TEST[0][-3:]))
    Image.fromarray(255 - disc).save(bad)
    with pytest.raises(ValueError, match=rf"disc soft map {at(bad)} marks 9\d% of the image .*inverted"):
        DrishtiGS(drishti, "test")[0]


def test_colour_soft_map(drishti):
    bad = soft_path(drishti / "Drishti-GS1_files", "Test", TEST[0], "cup")
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[10:30, 10:30] = (0, 255, 0)
    Image.fromarray(rgb).save(bad)
    with pytest.raises(ValueError, match=rf"soft map {at(bad)} is a colour image"):
        DrishtiGS(drishti, "test")[0]


def test_rgb_soft_maps_are_read_as_grey(drishti):
    before = DrishtiGS(drishti, "test").load_pair(0)[1]
    for kind in ("disc", "cup"):
        path = soft_path(drishti / "Drishti-GS1_files", "Test", TEST[0], kind)
        Image.open(path).convert("RGB").save(path)
    assert np.array_equal(DrishtiGS(drishti, "test").load_pair(0)[1], before)


def test_unknown_split(drishti):
    with pytest.raises(ValueError, match=r"unknown split 'Training'; expected one of train, val, test"):
        DrishtiGS(drishti, "Training")


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(soft_threshold=0), r"soft_threshold must be in \(0, 1\], got 0"),
        (dict(soft_threshold=1.5), r"soft_threshold must be in \(0, 1\], got 1.5"),
        (dict(val_fraction=1), r"val_fraction must be in \[0, 1\), got 1"),
        (
            dict(val_fraction=0),
            r"split 'val' is empty: val_fraction 0 of 10 Training image\(s\) rounds to none",
        ),
        (dict(roi="box"), r"unknown roi 'box'"),
        (dict(roi_fraction=-1), r"roi_fraction must be a positive number, got -1"),
    ],
)
def test_bad_options(drishti, options, message):
    with pytest.raises(ValueError, match=message):
        DrishtiGS(drishti, "val", **options)
