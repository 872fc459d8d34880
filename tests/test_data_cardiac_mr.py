"""The synthetic cine-MR of chapter 5: deterministic crops, ACDC's labels, a myocardium ring around a bright
cavity holding papillary muscles as dark as the myocardium."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medlab import data as datasets
from medlab.data.synth.cardiac_mr import LABEL_NAMES, cardiac_mr_slices


def test_crops_are_deterministic_with_acdc_labels():
    a = datasets.load("acdc", "train", n=3, seed=1, image_size=32)
    b = datasets.load("acdc", "train", n=3, seed=1, image_size=32)
    assert np.array_equal(a.images, b.images) and a.info["target"] == "myocardium"
    assert set(np.unique(a.labels)) <= set(range(len(LABEL_NAMES))) and np.array_equal(a.masks, a.labels == 2)


def test_the_myocardium_is_a_ring_around_a_bright_cavity_with_dark_muscles():
    data = cardiac_mr_slices(20, 64, seed=2)
    holes = [ndimage.binary_fill_holes(m).sum() > m.sum() + 20 for m in data.masks]
    assert np.mean(holes) > 0.9  # a ring: filling it adds the cavity
    cavity = [img[l == 3] for img, l in zip(data.images, data.labels)]
    myo = np.array([img[l == 2].mean() for img, l in zip(data.images, data.labels)])
    assert all(c.mean() > m + 0.2 for c, m in zip(cavity, myo))
    dark = np.mean([(c < m + 0.1).mean() for c, m in zip(cavity, myo)])
    assert dark > 0.01  # papillary muscles and trabeculations: cavity pixels as dark as the myocardium
    assert {c["phase"] for c in data.cases} == {"ED", "ES"}
