"""The synthetic kidney-tumour CT of chapter 5 (and the shapes it is drawn with): deterministic crops in
HU with exact masks, a tumour that is not elongated, grows from the kidney and enhances almost like it."""

from __future__ import annotations

import numpy as np
import pytest

from medlab import data as datasets
from medlab.data.synth import kidney_ct
from medlab.data.synth.shapes2d import Blob, grid, smooth_noise


def elongation(mask: np.ndarray) -> float:
    """The ratio of the principal axes of a mask's pixels (1 for a disk)."""
    rows, cols = np.nonzero(mask)
    eig = np.linalg.eigvalsh(np.cov(np.stack([rows, cols]).astype(float)))
    return float(np.sqrt(eig[1] / eig[0]))


def test_blobs_and_noise():
    yy, xx = grid(32)
    assert yy.shape == (32, 32) and yy[0, 0] == pytest.approx(-1 + 1 / 32)
    disk = Blob(0.0, 0.0, 0.5, 0.5)
    assert disk.inside(yy, xx).sum() == pytest.approx(np.pi * 8**2, rel=0.1)
    soft = disk.soft(yy, xx, 0.05)
    assert soft[16, 16] > 0.99 and soft[0, 0] < 0.01 and 0.05 < soft[16, 8] < 0.95  # row 16, column 8: on the edge
    noise = smooth_noise(np.random.default_rng(0), 32, 2.0)
    assert abs(noise.mean()) < 1e-5 and noise.std() == pytest.approx(1, abs=1e-3)


def test_crops_are_deterministic_and_the_splits_differ():
    a = datasets.load("kits19", "train", n=4, seed=3, image_size=32)
    b = datasets.load("kits19", "train", n=4, seed=3, image_size=32)
    c = datasets.load("kits19", "test", n=4, seed=3, image_size=32)
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)
    image, mask = a[0]
    assert image.shape == (1, 32, 32) and mask.shape == (32, 32) and 0 <= image.min() and image.max() <= 1
    assert a.info["kind"] == "synthetic" and a.info["target"] == "tumour"
    with pytest.raises(ValueError, match="needs n"):
        datasets.load("kits19", "train")


def test_the_tumour_is_round_attached_to_the_kidney_and_enhances_like_it():
    data = kidney_ct.kidney_ct_slices(40, 64, seed=1)
    assert (data.masks.reshape(40, -1).sum(1) > 10).all()
    assert max(elongation(m) for m in data.masks) < 1.6
    from scipy import ndimage

    touching = [(ndimage.binary_dilation(l == 2, iterations=2) & (l == 1)).any() for l in data.labels]
    assert np.mean(touching) > 0.9
    tumour = np.array([h[l == 2].mean() for h, l in zip(data.hu, data.labels)])
    kidney = np.array([h[l == 1].mean() for h, l in zip(data.hu, data.labels)])
    fat = np.array([h[l == 0].mean() for h, l in zip(data.hu, data.labels)])
    assert np.median(np.abs(tumour - kidney)) < 0.5 * np.median(tumour - fat)  # the weak boundary is with the kidney
    assert set(np.unique(data.labels)) <= set(range(len(kidney_ct.LABEL_NAMES)))
    assert np.allclose(kidney_ct.window(np.array([-1000.0, -79.0, 304.0, 2000.0])), [0, 0, 1, 1])
