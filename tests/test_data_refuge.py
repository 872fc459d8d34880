"""The REFUGE reader, on tiny fixtures written with PIL in the official layout (JPEG images, BMP masks with
0 = cup, 128 = disc rim, 255 = background)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medlab.data.formats.refuge import (
    CLASSES,
    REFUGE,
    crop_square,
    find_pairs,
    read_rgb,
    refuge_mask_to_classes,
    roi_box,
)

H, W = 40, 48  # image height and width (real REFUGE images are about 2000 pixels)
DISC_RADII, CUP_RADII = (8.0, 7.0), (4.0, 3.5)  # (rows, columns)
# name, glaucoma label (None: unknown), and the disc centre (row, column) of each fixture image
FIXTURE = {
    "train": [
        ("g0001", True, (19.5, 23.5)),
        ("g0002", True, (14.5, 30.5)),
        ("n0001", False, (22.5, 17.5)),
        ("n0002", False, (19.5, 21.5)),
        ("n0003", False, (25.5, 26.5)),
    ],
    "val": [("V0001", None, (19.5, 23.5)), ("V0002", None, (16.5, 28.5)), ("V0003", None, (21.5, 19.5))],
    "test": [
        ("T0001", True, (19.5, 23.5)),
        ("T0002", False, (18.5, 25.5)),
        ("T0003", False, (23.5, 20.5)),
        ("T0004", True, (20.5, 27.5)),
    ],
}
TRAIN_GROUPS = {True: "Glaucoma", False: "Non-Glaucoma"}
TEST_GROUPS = {True: "G", False: "N"}


def draw(centre: tuple[float, float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fundus-like RGB image (uint8) and its REFUGE mask (uint8: 0 cup, 128 rim, 255 background) with
    an elliptical disc and cup around ``centre``."""
    y, x = np.mgrid[:H, :W].astype(np.float32)
    cy, cx = centre

    def inside(radii):
        return ((y - cy) / radii[0]) ** 2 + ((x - cx) / radii[1]) ** 2 <= 1

    disc, cup = inside(DISC_RADII), inside(CUP_RADII)
    grey = np.full((H, W), 255, np.uint8)
    grey[disc] = 128
    grey[cup] = 0
    rng = np.random.default_rng(seed)
    image = np.empty((H, W, 3), np.float32)
    image[:] = (150, 60, 30)
    image[disc] = (230, 170, 110)
    image[cup] = (250, 225, 190)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), grey


def expected_classes(grey: np.ndarray) -> np.ndarray:
    return np.select([grey == 0, grey == 128], [2, 1], 0).astype(np.int64)


def image_path(root: Path, split: str, name: str, glaucoma: bool | None) -> Path:
    if split == "train":
        return root / "Training400" / TRAIN_GROUPS[glaucoma] / f"{name}.jpg"
    return root / ("REFUGE-Validation400" if split == "val" else "Test400") / f"{name}.jpg"


def mask_path(root: Path, split: str, name: str, glaucoma: bool | None) -> Path:
    if split == "train":
        return root / "Annotation-Training400" / "Disc_Cup_Masks" / TRAIN_GROUPS[glaucoma] / f"{name}.bmp"
    if split == "val":
        return root / "REFUGE-Validation400-GT" / "Disc_Cup_Masks" / f"{name}.bmp"
    return root / "REFUGE-Test-GT" / "Disc_Cup_Masks" / TEST_GROUPS[glaucoma] / f"{name}.bmp"


def write_refuge(root: Path, splits=("train", "val", "test")) -> None:
    """Write the fixture's ``splits`` under ``root`` in the layout the REFUGE zips unpack to."""
    for split in splits:
        for k, (name, glaucoma, centre) in enumerate(FIXTURE[split]):
            image, grey = draw(centre, seed=k)
            for path in (image_path(root, split, name, glaucoma), mask_path(root, split, name, glaucoma)):
                path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(image_path(root, split, name, glaucoma), quality=95)
            Image.fromarray(grey).save(mask_path(root, split, name, glaucoma))
    if "train" in splits:  # files the reader ignores
        (root / "Training400" / "Glaucoma" / "Thumbs.db").write_bytes(b"\0\1")
    if "val" in splits:
        (root / "REFUGE-Validation400-GT" / "Fovea_locations.xlsx").write_bytes(b"PK")


@pytest.fixture(name="refuge")
def _refuge(fresh_copy):
    """A fresh copy of the fixture (some tests damage it)."""
    return fresh_copy(write_refuge, name="refuge")


def at(path: Path) -> str:
    """``path`` as a regular expression that matches it literally."""
    return re.escape(str(path))


def entry(split: str, name: str):
    return next(e for e in FIXTURE[split] if e[0] == name)


# --- reading ---------------------------------------------------------------------------------------


def test_constants():
    assert CLASSES == ("background", "disc rim", "cup")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_every_split_pairs_images_and_masks_with_glaucoma_labels(refuge, split):
    pairs = find_pairs(refuge, split)
    expected = sorted(FIXTURE[split])
    assert [p.name for p in pairs] == [name for name, _, _ in expected]
    assert [p.glaucoma for p in pairs] == [label for _, label, _ in expected]
    for pair, (name, label, _) in zip(pairs, expected):
        assert pair.image == image_path(refuge, split, name, label)
        assert pair.mask == mask_path(refuge, split, name, label)
    dataset = REFUGE(refuge, split, image_size=16)
    assert dataset.glaucoma == [label for _, label, _ in expected]
    assert dataset.names == [p.name for p in pairs]
    info = dataset.info
    assert info["kind"] == "real" and info["name"] == "REFUGE" and info["split"] == split
    assert info["n"] == len(dataset) == len(expected) and info["path"] == str(refuge)
    assert info["image_size"] == 16 and info["roi"] == "disc"
    counts = {"train": (2, 3, 0), "val": (0, 0, 3), "test": (2, 2, 0)}[split]
    assert info["glaucoma_counts"] == dict(zip(("glaucoma", "non-glaucoma", "unknown"), counts))


def test_load_pair_maps_the_official_encoding(refuge):
    dataset = REFUGE(refuge, "test")
    for index, name in enumerate(dataset.names):
        image, mask = dataset.load_pair(index)
        _, grey = draw(entry("test", name)[2], seed=[e[0] for e in FIXTURE["test"]].index(name))
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        assert mask.shape == (H, W) and mask.dtype == np.int64
        assert np.array_equal(mask, expected_classes(grey))
        counts = np.bincount(mask.ravel(), minlength=3)
        assert counts.tolist() == [int((grey == 255).sum()), int((grey == 128).sum()), int((grey == 0).sum())]
        assert counts[2] > 30 and counts[1] > 100  # the ellipses are drawn


def test_mask_thresholds_tolerate_values_near_the_levels():
    grey = np.full((10, 10), 255, np.uint8)
    grey[2:8, 2:8] = [[128, 131, 120, 140, 150, 126]] * 6  # rim, JPEG-like
    grey[4:6, 4:6] = [[0, 9], [22, 100]]  # cup
    grey[0, 0] = 151  # background (just above the disc threshold)
    classes = refuge_mask_to_classes(grey, "m.bmp")
    assert classes.dtype == np.int64 and classes[0, 0] == 0 and (classes[4:6, 4:6] == 2).all()
    assert np.bincount(classes.ravel()).tolist() == [64, 32, 4]


def test_rgb_and_palette_masks_read_as_grey(refuge):
    name, label, centre = FIXTURE["train"][0]
    path = mask_path(refuge, "train", name, label)
    before = REFUGE(refuge, "train").load_pair(0)[1]
    Image.open(path).convert("RGB").save(path)
    assert np.array_equal(REFUGE(refuge, "train").load_pair(0)[1], before)
    indices = np.select([np.asarray(Image.open(path).convert("L")) == v for v in (255, 128)], [0, 1], 2)
    palette = Image.fromarray(indices.astype(np.uint8), "P")
    palette.putpalette([255, 255, 255, 128, 128, 128, 0, 0, 0])  # not a grey ramp: read as a palette image
    palette.save(path)
    assert Image.open(path).mode == "P"
    assert np.array_equal(REFUGE(refuge, "train").load_pair(0)[1], before)


def test_items_are_square_crops_in_zero_one_with_index_masks(refuge):
    dataset = REFUGE(refuge, "train", image_size=16, roi_fraction=0.5)
    assert dataset.classes == CLASSES and len(dataset) == 5
    for index in range(len(dataset)):
        image, mask = dataset[index]
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32
        assert mask.shape == (16, 16) and mask.dtype == torch.int64
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
        assert set(mask.unique().tolist()) == {0, 1, 2}
    assert dataset[-1][0].shape == (3, 16, 16)
    with pytest.raises(IndexError, match="out of range"):
        dataset[5]


def test_full_roi_is_the_centred_square_unresized(refuge):
    dataset = REFUGE(refuge, "val", image_size=H, roi="full")
    for index in range(len(dataset)):
        image, mask = dataset[index]
        full_image, full_mask = dataset.load_pair(index)
        left = (W - H) // 2
        assert torch.equal(mask, torch.from_numpy(full_mask[:, left : left + H]))
        expected = torch.from_numpy(full_image[:, left : left + H]).permute(2, 0, 1).float() / 255
        assert torch.equal(image, expected)
        counts = np.bincount(full_mask[:, left : left + H].ravel(), minlength=3)
        assert np.bincount(mask.numpy().ravel(), minlength=3).tolist() == counts.tolist()


def _disc_centre(mask: np.ndarray) -> tuple[float, float]:
    rows = np.flatnonzero((mask >= 1).any(axis=1))
    cols = np.flatnonzero((mask >= 1).any(axis=0))
    return (rows[0] + rows[-1] + 1) / 2, (cols[0] + cols[-1] + 1) / 2


def test_disc_roi_is_centred_on_the_disc(refuge):
    side = 20  # 0.5 * min(40, 48)
    native = REFUGE(refuge, "train", image_size=side, roi_fraction=0.5)
    resized = REFUGE(refuge, "train", image_size=16, roi_fraction=0.5)
    for index, name in enumerate(native.names):
        full_image, full_mask = native.load_pair(index)
        cy, cx = entry("train", name)[2]
        top, left, crop = roi_box(full_mask, "disc", 0.5)
        assert crop == side and (top, left) == (round(cy + 0.5 - side / 2), round(cx + 0.5 - side / 2))
        image, mask = native[index]
        assert torch.equal(mask, torch.from_numpy(full_mask[top : top + side, left : left + side]))
        expected = full_image[top : top + side, left : left + side]
        assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1).float() / 255)
        assert _disc_centre(mask.numpy()) == (side / 2, side / 2)  # the disc sits in the middle
        centre = _disc_centre(resized[index][1].numpy())
        assert abs(centre[0] - 8) <= 1 and abs(centre[1] - 8) <= 1


def test_roi_box_stays_inside_the_image_and_pads_when_larger():
    mask = np.zeros((40, 48), np.int64)
    mask[1:9, 2:8] = 1  # a disc in the top-left corner
    assert roi_box(mask, "disc", 0.5) == (0, 0, 20)
    mask[:] = 0
    mask[35:40, 44:48] = 2  # bottom right
    assert roi_box(mask, "disc", 0.5) == (20, 28, 20)
    assert roi_box(mask, "full") == (0, 4, 40)
    top, left, side = roi_box(mask, "disc", 1.5)  # larger than the image's height: centred there, padded
    assert (top, left, side) == (-10, -6, 60)
    crop = crop_square(mask, top, left, side)
    assert crop.shape == (60, 60) and crop.sum() == mask.sum() and (crop[:10] == 0).all()
    assert (crop[:, :6] == 0).all() and np.array_equal(crop[10:50, 6:54], mask)


def test_transform_and_cache(refuge):
    dataset = REFUGE(refuge, "val", image_size=16, transform=lambda i, m: (i.flip(2), m.flip(1)))
    plain = REFUGE(refuge, "val", image_size=16, cache=False)
    image, mask = dataset[1]
    expected_image, expected_mask = plain[1]
    assert torch.equal(image, expected_image.flip(2)) and torch.equal(mask, expected_mask.flip(1))
    image.fill_(7)  # callers may change what they get; the cache keeps its own copy
    pair = dataset.pairs[1]
    pair.image.unlink()
    assert torch.equal(dataset[1][0], expected_image.flip(2))  # from the cache
    with pytest.raises(ValueError, match=rf"cannot read image {at(pair.image)}"):
        plain[1]


def test_check_decodes_every_pair_and_flags_discs_larger_than_the_crop(refuge):
    report = REFUGE(refuge, "train", roi_fraction=0.5).check()
    assert report == {"n": 5, "sizes": {f"{W}x{H}": 5}, "disc_exceeds_roi": []}
    small = REFUGE(refuge, "train", roi_fraction=0.3).check()  # 12-pixel crops, 16-row discs
    assert small["disc_exceeds_roi"] == ["g0001", "g0002", "n0001", "n0002", "n0003"]


def test_only_the_requested_split_needs_its_folders(tmp_path):
    write_refuge(tmp_path, splits=("val",))
    assert len(REFUGE(tmp_path, "val")) == 3
    with pytest.raises(
        FileNotFoundError,
        match=r"not in the REFUGE layout for split 'test': it has no Test400/, "
        r"REFUGE-Test-GT/Disc_Cup_Masks/G/, REFUGE-Test-GT/Disc_Cup_Masks/N/ "
        r"\(found: \['REFUGE-Validation400-GT/', 'REFUGE-Validation400/'\]\).*data/README.md",
    ):
        REFUGE(tmp_path, "test")


# --- bad inputs ------------------------------------------------------------------------------------


def test_empty_image_folders(tmp_path):
    for folder in ("Test400", "REFUGE-Test-GT/Disc_Cup_Masks/G", "REFUGE-Test-GT/Disc_Cup_Masks/N"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "Test400" / "T0001.png").write_bytes(b"x")
    message = r"no .jpg/.jpeg image for split 'test'.*Test400/ holds \['T0001.png'\]"
    with pytest.raises(FileNotFoundError, match=message):
        REFUGE(tmp_path, "test")


def test_image_without_mask(refuge):
    name, label, _ = FIXTURE["test"][2]
    mask_path(refuge, "test", name, label).unlink()
    expected = [refuge / "REFUGE-Test-GT" / "Disc_Cup_Masks" / g / f"{name}.bmp" for g in ("G", "N")]
    with pytest.raises(
        ValueError,
        match=rf"1 image\(s\) of split 'test' have no mask: {at(image_path(refuge, 'test', name, label))} "
        rf"\(expected {at(expected[0])} or {at(expected[1])}\)",
    ):
        REFUGE(refuge, "test")


def test_train_image_without_mask_names_the_expected_path(refuge):
    name, label, _ = FIXTURE["train"][3]
    mask_path(refuge, "train", name, label).unlink()
    with pytest.raises(ValueError, match=rf"\(expected {at(mask_path(refuge, 'train', name, label))}\)"):
        REFUGE(refuge, "train")


def test_mask_without_image(refuge):
    name, label, _ = FIXTURE["val"][1]
    image_path(refuge, "val", name, label).unlink()
    with pytest.raises(
        ValueError,
        match=rf"1 mask\(s\) of split 'val' have no image in .*REFUGE-Validation400: "
        rf"{at(mask_path(refuge, 'val', name, label))}",
    ):
        REFUGE(refuge, "val")


def test_image_and_mask_in_different_groups(refuge):
    name, label, _ = FIXTURE["train"][0]
    source = mask_path(refuge, "train", name, label)
    source.rename(mask_path(refuge, "train", name, not label))
    with pytest.raises(ValueError, match=rf"in different group folders: {name} \(.*Glaucoma/{name}.jpg but "):
        REFUGE(refuge, "train")


def test_same_name_twice(refuge):
    name, label, _ = FIXTURE["val"][0]
    shutil.copy(image_path(refuge, "val", name, label), refuge / "REFUGE-Validation400" / f"{name}.jpeg")
    with pytest.raises(ValueError, match=rf"{name} is there twice: .*{name}.jpeg and .*{name}.jpg; keep one"):
        REFUGE(refuge, "val")


def test_unreadable_image_names_its_path(refuge):
    name, label, _ = FIXTURE["val"][2]
    bad = image_path(refuge, "val", name, label)
    bad.write_bytes(b"this is not a jpeg" * 10)
    with pytest.raises(ValueError, match=rf"cannot read image {at(bad)}"):
        REFUGE(refuge, "val")  # the header check, at construction


def test_truncated_image_names_its_path_when_read(refuge):
    name, label, _ = FIXTURE["val"][0]
    bad = image_path(refuge, "val", name, label)
    bad.write_bytes(bad.read_bytes()[:700])  # the header survives, the pixels do not
    dataset = REFUGE(refuge, "val", image_size=16)
    dataset[1]
    with pytest.raises(ValueError, match=rf"cannot read image {at(bad)}"):
        dataset[0]


def test_unreadable_mask(refuge):
    name, label, _ = FIXTURE["test"][0]
    bad = mask_path(refuge, "test", name, label)
    bad.write_bytes(b"BM garbage")
    with pytest.raises(ValueError, match=rf"cannot read image {at(bad)}"):
        REFUGE(refuge, "test")


def test_image_and_mask_of_different_sizes(refuge):
    name, label, _ = FIXTURE["train"][1]
    bad = mask_path(refuge, "train", name, label)
    Image.new("L", (W, H + 2), 255).save(bad)
    with pytest.raises(
        ValueError,
        match=rf"image {at(image_path(refuge, 'train', name, label))} is 48x40 but its mask {at(bad)} is "
        r"48x42 \(width x height\)",
    ):
        REFUGE(refuge, "train")


def _damage_mask(refuge: Path, grey: np.ndarray | None = None, image: Image.Image | None = None) -> Path:
    name, label, _ = FIXTURE["val"][0]
    bad = mask_path(refuge, "val", name, label)
    (image if image is not None else Image.fromarray(grey)).save(bad)
    return bad


def test_mask_without_a_disc(refuge):
    bad = _damage_mask(refuge, np.full((H, W), 255, np.uint8))
    dataset = REFUGE(refuge, "val", image_size=16)  # the layout is fine
    with pytest.raises(ValueError, match=rf"mask {at(bad)} marks no optic disc \(no pixel <= 150"):
        dataset[0]
    with pytest.raises(ValueError, match=rf"mask {at(bad)} marks no optic disc"):
        dataset.check()


def test_mask_with_values_far_from_the_levels(refuge):
    gradient = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))  # a grey ramp, not a mask
    bad = _damage_mask(refuge, gradient)
    with pytest.raises(ValueError, match=rf"mask {at(bad)} holds \d+ of 1920 pixels with values far from"):
        REFUGE(refuge, "val")[0]


def test_colour_mask(refuge):
    _, grey = draw(FIXTURE["val"][0][2])
    rgb = np.stack([grey, grey, grey], axis=2)
    rgb[grey == 128] = (255, 0, 0)  # the disc drawn in red
    bad = _damage_mask(refuge, image=Image.fromarray(rgb))
    with pytest.raises(ValueError, match=rf"mask {at(bad)} is a colour image"):
        REFUGE(refuge, "val")[0]


def test_inverted_mask(refuge):
    _, grey = draw(FIXTURE["val"][0][2])
    bad = _damage_mask(refuge, 255 - grey)
    with pytest.raises(ValueError, match=rf"mask {at(bad)}: the disc .* covers 9\d% of the image.*inverted"):
        REFUGE(refuge, "val")[0]


def test_sixteen_bit_mask(refuge):
    name, label, _ = FIXTURE["val"][0]
    mask_path(refuge, "val", name, label).unlink()
    bad = mask_path(refuge, "val", name, label).with_suffix(".png")  # .png masks are accepted too
    Image.fromarray(np.full((H, W), 1000, np.uint16)).save(bad)
    with pytest.raises(ValueError, match=rf"mask {at(bad)} has pixel mode 'I(;16)?'; expected an 8-bit"):
        REFUGE(refuge, "val")[0]


def test_unknown_split(refuge):
    with pytest.raises(ValueError, match=r"unknown split 'validation'; expected one of train, val, test"):
        REFUGE(refuge, "validation")


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(roi="optic disc"), r"unknown roi 'optic disc'; expected one of disc, full"),
        (dict(roi_fraction=0), r"roi_fraction must be a positive number, got 0"),
        (dict(image_size=4), r"image_size must be an integer of at least 8, got 4"),
    ],
)
def test_bad_options(refuge, options, message):
    with pytest.raises(ValueError, match=message):
        REFUGE(refuge, "val", **options)


def test_read_rgb_converts_grey_images(tmp_path):
    path = tmp_path / "grey.jpg"
    Image.new("L", (6, 4), 90).save(path)
    image = read_rgb(path)
    assert image.shape == (4, 6, 3) and image.dtype == np.uint8
