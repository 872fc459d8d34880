"""The synthetic mammogram crops of chapter 5: deterministic, every margin drawn, the mass brighter than the
fat but about as bright as the dense islands beside it, spicules outside the mass outline."""

from __future__ import annotations

import numpy as np

from medlab import data as datasets
from medlab.data.synth.mammograms import MARGINS, mammogram_slices


def test_crops_are_deterministic_and_centred_on_a_mass():
    a = datasets.load("inbreast", "val", n=3, seed=1, image_size=32)
    b = datasets.load("inbreast", "val", n=3, seed=1, image_size=32)
    assert np.array_equal(a.images, b.images) and a.info["target"] == "mass"
    assert all(m[12:20, 12:20].any() for m in a.masks)


def test_margins_brightness_and_spicules():
    data = mammogram_slices(40, 64, seed=3)
    assert {c["margin"] for c in data.cases} == set(MARGINS)
    mass = np.array([img[l == 1].mean() for img, l in zip(data.images, data.labels)])
    rest = np.array([img[l == 0].mean() for img, l in zip(data.images, data.labels)])
    assert (mass > rest).mean() > 0.9
    spiculated = [i for i, c in enumerate(data.cases) if c["margin"] == "spiculated"]
    assert all((data.labels[i] == 3).any() and not data.masks[i][data.labels[i] == 3].any() for i in spiculated)
