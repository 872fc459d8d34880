"""The synthetic fundus ROI crops: shapes and ranges, determinism, disc and cup masks, the vCDR, the two
camera domains, spec validation and the transform hook."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch
from scipy import ndimage

from medlab.data.synth import fundus
from medlab.data.synth.fundus import (
    CLASSES,
    DOMAINS,
    SyntheticFundus,
    SyntheticFundusSpec,
)
from medlab.metrics import vertical_cup_to_disc_ratio


@pytest.fixture(scope="module")
def refuge():
    return SyntheticFundus(SyntheticFundusSpec(n=40, domain="refuge", seed=1))


@pytest.fixture(scope="module")
def drishti():
    return SyntheticFundus(SyntheticFundusSpec(n=40, domain="drishti", seed=1))


def test_items_have_the_documented_shapes_dtypes_and_ranges(refuge):
    assert refuge.images.shape == (40, 3, 64, 64) and refuge.images.dtype == np.uint8
    assert refuge.masks.shape == (40, 64, 64) and refuge.masks.dtype == np.uint8
    assert set(np.unique(refuge.masks)) == {0, 1, 2}
    image, mask = refuge[3]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert mask.shape == (64, 64) and mask.dtype == torch.int64
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    assert torch.equal(mask, torch.from_numpy(refuge.masks[3].astype(np.int64)))
    assert len(refuge) == 40 and len(refuge.cases) == 40 and refuge.classes == CLASSES
    info = refuge.info
    assert info["kind"] == "synthetic" and info["domain"] == "refuge" and info["n"] == 40
    assert info["image_size"] == 64 and info["seed"] == 1
    assert info["pixel_counts"] == np.bincount(refuge.masks.reshape(-1), minlength=3).tolist()
    assert info["mean_vcdr"] == pytest.approx(np.mean([c["vcdr"] for c in refuge.cases]), abs=1e-4)


def test_generation_is_deterministic_by_seed():
    spec = SyntheticFundusSpec(n=4, image_size=48, domain="drishti", seed=5)
    a, b = SyntheticFundus(spec), SyntheticFundus(spec)
    c = SyntheticFundus(SyntheticFundusSpec(n=4, image_size=48, domain="drishti", seed=6))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks) and a.cases == b.cases
    assert not np.array_equal(a.images, c.images) and not np.array_equal(a.masks, c.masks)
    # one stream per image: the first images do not depend on how many follow
    longer = SyntheticFundus(SyntheticFundusSpec(n=6, image_size=48, domain="drishti", seed=5))
    assert np.array_equal(longer.images[:4], a.images)


def test_the_cup_lies_strictly_inside_the_disc(refuge, drishti):
    for data in (refuge, drishti):
        for mask, case in zip(data.masks, data.cases):
            disc, cup = mask >= 1, mask == 2
            assert cup.any() and disc.sum() > cup.sum()
            assert not (cup & ~ndimage.binary_erosion(disc)).any()  # no cup pixel on the disc's margin
            assert ndimage.label(disc)[1] == 1 and ndimage.label(cup)[1] == 1
            # the disc is near the centre, at the radii the case records
            rows, cols = np.nonzero(disc)
            assert abs(rows.mean() - case["disc_centre"][0]) < 1.5 and abs(cols.mean() - case["disc_centre"][1]) < 1.5
            assert abs((rows.max() - rows.min() + 1) / 2 - case["disc_radii"][0]) < 0.15 * case["disc_radii"][0] + 1
            assert np.hypot(rows.mean() - 31.5, cols.mean() - 31.5) < 0.15 * 64


def test_vcdr_is_in_the_documented_range_and_matches_the_cases(refuge, drishti):
    for data in (refuge, drishti):
        measured = vertical_cup_to_disc_ratio(data.masks)
        assert measured.shape == (len(data),) and measured.dtype == np.float64
        assert np.allclose(measured, [c["vcdr"] for c in data.cases]) and np.allclose(measured, data.vcdr)
        drawn = np.array([c["vcdr_drawn"] for c in data.cases])
        assert np.all((0.30 <= drawn) & (drawn <= 0.85))
        assert np.all((0.2 <= measured) & (measured <= 0.95))
        assert np.abs(measured - drawn).max() < 0.12
    glaucoma = np.array([c["glaucoma"] for c in drishti.cases])
    assert 0 < glaucoma.sum() < len(drishti)  # mostly glaucomatous, with some healthy eyes
    assert drishti.vcdr[glaucoma].mean() > drishti.vcdr[~glaucoma].mean() + 0.1
    assert drishti.info["mean_vcdr"] > refuge.info["mean_vcdr"]  # the population differs too
    assert any(c["has_atrophy"] for c in refuge.cases) and not all(c["has_atrophy"] for c in refuge.cases)


def test_the_images_show_a_bright_disc_a_paler_cup_and_dark_vessels(refuge):
    images = refuge.images.astype(np.float32) / 255
    paler = []
    for image, mask in zip(images, refuge.masks):
        brightness = image.mean(0)
        rim, cup, background = mask == 1, mask == 2, mask == 0
        assert np.median(brightness[mask >= 1]) > np.median(brightness[background]) + 0.08
        paler.append(np.median(image[2][cup]) - np.median(image[2][rim]))  # whiter: more blue
        # vessels: the darkest background pixels are much darker than the background's median
        assert np.percentile(brightness[background], 2) < np.median(brightness[background]) - 0.08
    assert np.mean(np.array(paler) > 0) >= 0.9 and np.mean(paler) > 0.05


def test_the_two_domains_differ_in_colour_and_disc_scale(refuge, drishti):
    pairs = (("r", refuge), ("d", drishti))
    means = {name: d.images.astype(np.float32).mean(axis=(0, 2, 3)) / 255 for name, d in pairs}
    assert means["d"].mean() < means["r"].mean() - 0.05  # darker
    redness = {k: v[0] / v[1] for k, v in means.items()}
    assert redness["d"] > redness["r"] * 1.03  # a redder cast (less green for the red)
    radii = {name: np.median([c["disc_radii"][0] for c in d.cases]) for name, d in pairs}
    assert radii["d"] > 1.2 * radii["r"]  # a different zoom
    areas = [np.median((d.masks >= 1).sum(axis=(1, 2))) for d in (refuge, drishti)]
    assert areas[1] > 1.4 * areas[0]
    assert set(DOMAINS) >= {"refuge", "drishti"}
    assert DOMAINS["drishti"].resolution < DOMAINS["refuge"].resolution
    assert "drishti" in fundus.describe() and "colour_gain" in fundus.describe()


def test_drishti_is_blurrier():
    def detail(domain):  # the mean absolute Laplacian of noise-free images: fine detail
        data = SyntheticFundus(SyntheticFundusSpec(n=8, domain=domain, seed=2, noise_scale=0.0))
        return np.mean([np.abs(ndimage.laplace(x.mean(0) / 255)).mean() for x in data.images.astype(np.float32)])

    assert detail("drishti") < 0.6 * detail("refuge")


def test_resolution_independence():
    small = SyntheticFundus(SyntheticFundusSpec(n=3, image_size=32, seed=2))
    large = SyntheticFundus(SyntheticFundusSpec(n=3, image_size=128, seed=2))
    for a, b in zip(small.cases, large.cases):
        assert a["vcdr_drawn"] == b["vcdr_drawn"] and a["glaucoma"] == b["glaucoma"]
        assert b["disc_radii"][0] == pytest.approx(4 * a["disc_radii"][0], rel=0.01)
        assert abs(a["vcdr"] - b["vcdr"]) < 0.2
    fraction = [(d.masks >= 1).mean() for d in (small, large)]
    assert fraction[0] == pytest.approx(fraction[1], rel=0.15)


def test_transform_hook():
    spec = SyntheticFundusSpec(n=2, image_size=32, seed=3)
    plain = SyntheticFundus(spec)
    flipped = SyntheticFundus(spec, transform=lambda image, mask: (image.flip(-1), mask.flip(-1)))
    image, mask = plain[1]
    fimage, fmask = flipped[1]
    assert torch.equal(fimage, image.flip(-1)) and torch.equal(fmask, mask.flip(-1))


def test_vertical_cup_to_disc_ratio_by_hand():
    mask = np.zeros((10, 8), dtype=np.int64)
    mask[1:9, 2:6] = 1  # the disc spans rows 1..8: 8 rows
    mask[3:6, 3:5] = 2  # the cup spans rows 3..5: 3 rows
    assert vertical_cup_to_disc_ratio(mask) == pytest.approx(3 / 8)
    assert vertical_cup_to_disc_ratio(torch.from_numpy(mask)) == pytest.approx(3 / 8)
    holes = mask.copy()
    holes[4] = 0  # a row without cup or disc in the middle does not shorten the extent
    holes[4, 3] = 1
    assert vertical_cup_to_disc_ratio(holes) == pytest.approx(3 / 8)
    no_cup = np.where(mask == 2, 1, mask)
    assert vertical_cup_to_disc_ratio(no_cup) == 0.0
    empty = np.zeros_like(mask)
    assert np.isnan(vertical_cup_to_disc_ratio(empty))
    batch = vertical_cup_to_disc_ratio(np.stack([mask, no_cup, empty]))
    assert isinstance(batch, np.ndarray) and batch.shape == (3,)
    assert batch[0] == pytest.approx(3 / 8) and batch[1] == 0 and np.isnan(batch[2])
    with pytest.raises(ValueError, match="shape"):
        vertical_cup_to_disc_ratio(np.zeros(5))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=0), "n=0"),
        (dict(n=2.5), "n=2.5"),
        (dict(n=True), "n=True"),
        (dict(n=2, image_size=15), "image_size=15"),
        (dict(n=2, image_size=32.0), "image_size=32.0"),
        (dict(n=2, domain="messidor"), "domain='messidor'"),
        (dict(n=2, seed=-1), "seed=-1"),
        (dict(n=2, noise_scale=-0.5), "noise_scale=-0.5"),
    ],
)
def test_spec_errors_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SyntheticFundusSpec(**kwargs)


def test_noise_scale_zero_removes_the_noise():
    quiet = SyntheticFundus(SyntheticFundusSpec(n=2, image_size=32, domain="drishti", seed=4, noise_scale=0.0))
    noisy = SyntheticFundus(SyntheticFundusSpec(n=2, image_size=32, domain="drishti", seed=4))
    assert np.array_equal(quiet.masks, noisy.masks)
    rough = [np.abs(np.diff(d.images.astype(np.float32), axis=-1)).mean() for d in (quiet, noisy)]
    assert rough[0] < rough[1]


def test_generation_time_is_reported():
    rng = np.random.default_rng(0)
    fundus.render_fundus(64, rng, "refuge")
    start = time.perf_counter()
    for seed in range(10):
        fundus.render_fundus(64, np.random.default_rng(seed), "refuge")
    assert (time.perf_counter() - start) / 10 < 0.05  # about 2 to 3 ms; loose for slow machines
