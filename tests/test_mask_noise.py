"""Corrupted segmentation labels: each kind changes the mask by a size-relative amount, keeps the nesting
and the empty regions, and corrupt_masks corrupts exactly the requested fraction, deterministically."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medlab.data.mask_noise import (
    NOISE_KINDS,
    corrupt_mask,
    corrupt_masks,
    equivalent_radius,
    mask_disagreement,
    region_dice,
)


def disc_and_cup(size=64, centre=(32, 31), disc=15, cup=7, dtype=np.uint8) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), dtype=dtype)
    mask[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= disc**2] = 1
    mask[(yy - centre[0] + 1) ** 2 + (xx - centre[1] + 2) ** 2 <= cup**2] = 2
    return mask


def centroid(region):
    return np.argwhere(region).mean(0)


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_each_kind_changes_the_mask_but_keeps_it_recognisable(kind):
    clean = disc_and_cup()
    for seed in range(8):
        noisy = corrupt_mask(clean, kind, np.random.default_rng(seed))
        assert noisy.shape == clean.shape and noisy.dtype == clean.dtype
        assert set(np.unique(noisy)) <= {0, 1, 2}
        dice = region_dice(clean, noisy, 1)
        assert 0.3 < dice < 1, (kind, seed, dice)
        assert 0.3 < region_dice(clean, noisy, 2) <= 1, (kind, seed)
        assert 0 < mask_disagreement(clean, noisy) < 0.3
        assert ((noisy == 2) <= (noisy >= 1)).all()  # the cup stays inside the disc
        assert (noisy == 2).any()  # and does not vanish


def test_dilation_grows_and_erosion_shrinks_every_region():
    clean = disc_and_cup()
    areas = [(clean >= k).sum() for k in (1, 2)]
    for seed in range(5):
        grown = corrupt_mask(clean, "dilation", np.random.default_rng(seed))
        shrunk = corrupt_mask(clean, "erosion", np.random.default_rng(seed))
        for k, area in zip((1, 2), areas):
            assert (grown >= k).sum() > area and ((clean >= k) <= (grown >= k)).all()
            assert 0 < (shrunk >= k).sum() < area and ((shrunk >= k) <= (clean >= k)).all()
        # by 10 to 30 % of the radius: the disc's radius grows by at most about a third
        assert equivalent_radius(grown >= 1) < 15 * 1.35 + 1 and equivalent_radius(shrunk >= 1) > 15 * 0.65 - 1


def test_erosion_never_deletes_a_region():
    tiny = np.zeros((20, 20), dtype=np.int64)
    tiny[8:12, 8:12] = 1
    tiny[9:11, 9:11] = 2
    for seed in range(5):
        out = corrupt_mask(tiny, "erosion", np.random.default_rng(seed), strength=5.0)
        assert (out >= 1).sum() >= 4 and (out == 2).any()


def test_shift_moves_the_annotation_by_the_expected_distance():
    clean = disc_and_cup()
    for seed in range(8):
        moved = corrupt_mask(clean, "shift", np.random.default_rng(seed))
        for k in (1, 2):
            step = centroid(moved >= k) - centroid(clean >= k)
            assert 0.15 * 15 - 1 <= np.hypot(*step) <= 0.35 * 15 + 1, (seed, k, step)
        assert (moved >= 1).sum() == (clean >= 1).sum()  # a translation (the disc stays in the image)
        assert np.allclose(centroid(moved >= 1) - centroid(clean >= 1), centroid(moved == 2) - centroid(clean == 2))


def test_strength_scales_the_corruption():
    clean = disc_and_cup()
    mild = [region_dice(clean, corrupt_mask(clean, "dilation", np.random.default_rng(s), 0.5)) for s in range(5)]
    harsh = [region_dice(clean, corrupt_mask(clean, "dilation", np.random.default_rng(s), 2.0)) for s in range(5)]
    assert np.mean(mild) > np.mean(harsh)
    assert np.array_equal(corrupt_mask(clean, "elastic", np.random.default_rng(0), 0.0), clean)


@pytest.mark.parametrize("kind", NOISE_KINDS)
def test_empty_regions_stay_empty(kind):
    rng = np.random.default_rng(0)
    empty = np.zeros((32, 32), dtype=np.uint8)
    assert np.array_equal(corrupt_mask(empty, kind, rng), empty)
    disc_only = np.where(disc_and_cup() == 2, 1, disc_and_cup()).astype(np.uint8)
    out = corrupt_mask(disc_only, kind, rng)
    assert out.max() == 1 and (out == 1).any()
    binary = disc_only.astype(bool)  # a plain binary mask works too
    out = corrupt_mask(binary, kind, rng)
    assert out.dtype == bool and out.any() and not np.array_equal(out, binary)


def test_corrupt_mask_errors_name_the_value():
    clean = disc_and_cup()
    with pytest.raises(ValueError, match=re.escape("'blur'")) as info:
        corrupt_mask(clean, "blur", np.random.default_rng(0))
    assert all(kind in str(info.value) for kind in NOISE_KINDS)
    with pytest.raises(ValueError, match=re.escape("strength=-1")):
        corrupt_mask(clean, "shift", np.random.default_rng(0), strength=-1)


def batch(n=10):
    return np.stack([disc_and_cup(centre=(30 + i % 5, 28 + i % 7), disc=12 + i % 5, cup=5 + i % 3) for i in range(n)])


@pytest.mark.parametrize("rate, expected", [(0.0, 0), (0.25, 2), (0.3, 3), (0.5, 5), (1.0, 10)])
def test_corrupt_masks_corrupts_exactly_the_requested_number(rate, expected):
    masks = batch()
    noisy, corrupted, kinds = corrupt_masks(masks, rate, seed=3)
    assert noisy.shape == masks.shape and noisy.dtype == masks.dtype and corrupted.dtype == bool
    assert corrupted.sum() == expected == round(rate * 10)
    assert np.array_equal(noisy[~corrupted], masks[~corrupted])  # the others are untouched
    changed = mask_disagreement(noisy, masks) > 0
    assert np.array_equal(changed, corrupted)
    assert [k is not None for k in kinds] == corrupted.tolist()
    assert all(k in NOISE_KINDS for k in kinds if k is not None)
    assert masks.max() == 2 and np.array_equal(masks, batch())  # the input is not modified


def test_corrupt_masks_is_deterministic_and_draws_the_kinds():
    masks = batch(20)
    a = corrupt_masks(masks, 0.5, seed=1)
    b = corrupt_masks(masks, 0.5, seed=1)
    c = corrupt_masks(masks, 0.5, seed=2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[1], c[1]) or not np.array_equal(a[0], c[0])
    only = corrupt_masks(masks, 1.0, kinds="erosion", seed=0)
    assert only[2] == ["erosion"] * 20
    assert all((only[0][i] >= 1).sum() < (masks[i] >= 1).sum() for i in range(20))
    assert len(set(corrupt_masks(batch(40), 1.0, seed=0)[2])) == len(NOISE_KINDS)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rate=1.5), "rate=1.5"),
        (dict(rate=-0.1), "rate=-0.1"),
        (dict(rate=True), "rate=True"),
        (dict(rate=0.5, kinds=("shift", "smudge")), "'smudge'"),
        (dict(rate=0.5, kinds="smudge"), "'smudge'"),
        (dict(rate=0.5, kinds=()), "kinds=()"),
        (dict(rate=0.5, strength=float("nan")), "strength=nan"),
    ],
)
def test_corrupt_masks_errors_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        corrupt_masks(batch(4), **kwargs)


def test_measures():
    a = np.zeros((2, 4, 4), dtype=np.int64)
    b = a.copy()
    b[1, :2, :2] = 1
    assert mask_disagreement(a, b).tolist() == [0.0, 0.25]
    assert region_dice(a[0], b[0]) == 1.0  # empty in both
    assert region_dice(a, b).tolist() == [1.0, 0.0]
    c = b.copy()
    c[1, 0, 0] = 2
    assert region_dice(b[1], c[1], 1) == 1.0 and region_dice(b[1], c[1], 2) == 0.0
