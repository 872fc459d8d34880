"""The synthetic 3D brains on the MNI152 template: anatomy, determinism, shapes and ranges, head CT classes
and lesions, tumour masks and MR contrasts, spec validation, and generation speed."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch
from scipy import ndimage

from medlab.data.synth import brains3d
from medlab.data.synth.brains3d import (
    HEAD_CT_CLASSES,
    MODALITIES,
    TUMOUR_CLASSES,
    SyntheticBrainTumours,
    SyntheticBrainTumourSpec,
    SyntheticHeadCTs,
    SyntheticHeadCTSpec,
)

T1, T1CE, T2, FLAIR = range(4)


@pytest.fixture(scope="module")
def cts():
    return SyntheticHeadCTs(SyntheticHeadCTSpec(n=32, size=32, seed=3, class_weights=(0.25, 0.25, 0.25, 0.25)))


@pytest.fixture(scope="module")
def tumours():
    return SyntheticBrainTumours(SyntheticBrainTumourSpec(n=24, size=32, seed=4))


def _floats(uint8_volumes: np.ndarray) -> np.ndarray:
    return uint8_volumes.astype(np.float32) / 127.5 - 1


def test_anatomy_is_cached_and_its_maps_are_fractions():
    anat = brains3d.anatomy(24)
    assert brains3d.anatomy(24) is anat
    maps = {k: getattr(anat, k) for k in ("brain", "gm", "wm", "csf", "ventricles", "skull", "scalp")}
    for name, a in maps.items():
        assert a.shape == (24, 24, 24) and a.dtype == np.float32, name
        assert 0 <= a.min() and a.max() <= 1, name
        assert not a.flags.writeable, name  # the cached maps are shared
    assert np.allclose(anat.gm + anat.wm + anat.csf, anat.brain, atol=1e-5)
    assert np.all(anat.ventricles <= anat.csf + 1e-6)
    assert anat.wm.sum() > anat.csf.sum() > anat.ventricles.sum() > 5  # some ventricles even at 24
    # the skull is outside the brain (10 mm voxels: they share partial volumes at the surface only)
    assert anat.skull[anat.brain > 0.9].max() < 0.1 and (anat.skull * anat.brain).sum() < 0.2 * anat.skull.sum()
    assert np.all(anat.distance[anat.brain > 0.9] < 0) and 7 < anat.voxel_mm < 12
    # the left-right axis is axis 0: the brain is nearly symmetric under its flip, not under the others'
    flips = [np.abs(anat.brain - np.flip(anat.brain, a)).mean() for a in range(3)]
    assert flips[0] < 0.5 * min(flips[1:])


@pytest.mark.parametrize("size", [24, 32])
def test_head_ct_generation_is_deterministic_with_the_documented_shapes(size):
    spec = SyntheticHeadCTSpec(n=8, size=size, seed=5)
    a, b = SyntheticHeadCTs(spec), SyntheticHeadCTs(spec)
    c = SyntheticHeadCTs(SyntheticHeadCTSpec(n=8, size=size, seed=6))
    assert np.array_equal(a.volumes, b.volumes) and np.array_equal(a.targets, b.targets)
    assert np.array_equal(a.lesion_masks, b.lesion_masks) and a.cases == b.cases
    assert not np.array_equal(a.volumes, c.volumes)
    assert a.volumes.shape == (8, 1, size, size, size) and a.volumes.dtype == np.uint8
    assert a.targets.shape == (8,) and a.targets.dtype == np.int64 and isinstance(a.targets, np.ndarray)
    assert a.lesion_masks.shape == (8, size, size, size) and a.lesion_masks.dtype == bool
    volume, target = a[0]
    assert volume.shape == (1, size, size, size) and volume.dtype == torch.float32
    assert target.shape == () and target.dtype == torch.int64 and int(target) == a.targets[0]
    assert -1 <= float(volume.min()) and float(volume.max()) <= 1
    for v in _floats(a.volumes[:, 0]):
        assert v[0, 0, 0] == -1 and v[-1, -1, -1] == -1  # air outside the head
        assert v.max() == 1  # the skull saturates the brain window
    assert a.classes == HEAD_CT_CLASSES and len(a) == 8 and len(a.cases) == 8
    assert a.info["kind"] == "synthetic" and a.info["class_counts"] == np.bincount(a.targets, minlength=4).tolist()
    flipped = SyntheticHeadCTs(spec, transform=lambda v: v.flip(-1))
    assert torch.equal(flipped[0][0], volume.flip(-1))


def test_class_frequencies_follow_the_weights():
    assert brains3d.class_counts(10, (0.4, 0.2, 0.2, 0.2)).tolist() == [4, 2, 2, 2]
    assert brains3d.class_counts(7, (0.4, 0.2, 0.2, 0.2)).sum() == 7
    data = SyntheticHeadCTs(SyntheticHeadCTSpec(n=20, size=16, seed=1, class_weights=(0.5, 0.1, 0.1, 0.3)))
    assert np.bincount(data.targets, minlength=4).tolist() == [10, 2, 2, 6]
    assert len(set(data.targets[:10].tolist())) > 1  # shuffled, not sorted
    assert brains3d.class_counts(1000, (0.4, 0.2, 0.2, 0.2)).tolist() == [400, 200, 200, 200]


def test_haemorrhage_lesions_lie_in_the_head_and_are_hyperdense(cts):
    volumes = _floats(cts.volumes[:, 0])
    for volume, mask, label, case in zip(volumes, cts.lesion_masks, cts.targets, cts.cases):
        assert case["label"] == label and case["class"] == HEAD_CT_CLASSES[label]
        if label == 0:
            assert not mask.any() and case["centre"] is None and case["voxels"] == 0
            continue
        assert mask.any() and case["voxels"] == mask.sum() and mask[case["centre"]]
        head = ndimage.binary_fill_holes(volume > -0.99)
        assert head[mask].all()  # inside the head
        brain = ndimage.binary_erosion(head, iterations=3) & (volume < 0.9)  # skull-free interior
        normal = brain & ~ndimage.binary_dilation(mask, iterations=1)
        assert volume[mask].mean() > volume[normal].mean() + 0.15, (case, volume[mask].mean(), volume[normal].mean())
        if label in (1, 2):  # one hemisphere (axis 0 runs from the patient's left to right)
            offset = np.argwhere(mask)[:, 0].mean() - np.argwhere(head)[:, 0].mean()
            assert offset * (1 if case["hemisphere"] == "right" else -1) > 1, (case, offset)
    assert {c["class"] for c in cts.cases} == set(HEAD_CT_CLASSES)
    # the distractors: bright calcifications in some volumes of every class, including the normal ones
    calcified = [bool(c["calcifications"]) for c in cts.cases]
    assert any(calcified[i] for i in np.flatnonzero(cts.targets == 0))


def test_the_same_patient_with_each_class():
    volumes = [brains3d.render_head_ct(label, 24, 7, severity=0.8) for label in range(4)]
    normal = volumes[0][0]
    for label, (volume, mask, case) in enumerate(volumes[1:], 1):
        changed = np.abs(volume - normal) > 0.1
        assert changed.any() and changed.mean() < 0.1, (label, changed.mean())  # local change
        assert (changed & ndimage.binary_dilation(mask, iterations=3)).sum() > 0.5 * changed.sum()


@pytest.mark.parametrize("size", [24, 32])
def test_tumour_generation_is_deterministic_with_the_documented_shapes(size):
    spec = SyntheticBrainTumourSpec(n=6, size=size, seed=8)
    a, b = SyntheticBrainTumours(spec), SyntheticBrainTumours(spec)
    c = SyntheticBrainTumours(SyntheticBrainTumourSpec(n=6, size=size, seed=9))
    assert np.array_equal(a.volumes, b.volumes) and np.array_equal(a.masks, b.masks) and a.cases == b.cases
    assert not np.array_equal(a.volumes, c.volumes)
    assert a.volumes.shape == (6, 4, size, size, size) and a.volumes.dtype == np.uint8
    assert a.masks.shape == (6, size, size, size) and a.masks.dtype == np.uint8 and a.masks.max() <= 3
    volume, mask = a[0]
    assert volume.shape == (4, size, size, size) and volume.dtype == torch.float32
    assert mask.shape == (size, size, size) and mask.dtype == torch.int64
    assert -1 <= float(volume.min()) and float(volume.max()) <= 1
    brain = (volume > -1).any(0)
    assert torch.all(volume[:, ~brain] == -1) and brain.float().mean() > 0.1  # skull-stripped
    assert a.modalities == MODALITIES and a.classes == TUMOUR_CLASSES and brains3d.BRATS_LABELS == (0, 1, 2, 4)
    assert a.info["kind"] == "synthetic" and sum(a.info["grade_counts"].values()) == 6
    pair = SyntheticBrainTumours(spec, transform=lambda v, m: (v.flip(-1), m.flip(-1)))[0]
    assert torch.equal(pair[0], volume.flip(-1)) and torch.equal(pair[1], mask.flip(-1))


def test_tumour_masks_nest_and_lie_inside_the_brain(tumours):
    volumes = _floats(tumours.volumes)
    touching, cores = 0, 0
    for volume, mask, case in zip(volumes, tumours.masks, tumours.cases):
        brain = (volume > -1).any(0)
        whole, core = mask > 0, np.isin(mask, (1, 3))
        assert whole.any() and core.any()
        assert brain[whole].mean() > 0.99  # the whole tumour lies in the brain
        assert case["voxels"] == {name: int((mask == k).sum()) for k, name in enumerate(TUMOUR_CLASSES)}
        if case["grade"] == "HGG":
            touching += (ndimage.binary_dilation(~whole) & core).sum()
            cores += core.sum()
        if case["grade"] == "HGG" and (mask == 3).sum() >= 4 and (mask == 1).sum() >= 2:
            # necrosis sits inside the enhancing rim: nearer the core's centre than the enhancing voxels
            centre = np.argwhere(core).mean(0)
            dist = {k: np.linalg.norm(np.argwhere(mask == k) - centre, axis=1).mean() for k in (1, 3)}
            assert dist[1] < dist[3] + 0.5, (case, dist)
        if case["grade"] == "LGG":
            assert not (mask == 3).any()
    assert touching < 0.3 * cores  # oedema wraps the core of high-grade tumours (not where it meets CSF)


def test_each_tumour_class_is_present_in_most_high_grade_subjects(tumours):
    hgg = [c for c in tumours.cases if c["grade"] == "HGG"]
    assert 0.5 * len(tumours) < len(hgg) < len(tumours)  # a quarter LGG on average
    for name in TUMOUR_CLASSES[1:]:
        assert sum(c["voxels"][name] > 0 for c in hgg) >= 0.8 * len(hgg), name


def test_mr_contrasts_show_the_tumour_compartments(tumours):
    volumes = _floats(tumours.volumes)
    for volume, mask, case in zip(volumes, tumours.masks, tumours.cases):
        brain = (volume > -1).any(0) & (mask == 0)
        t1 = volume[T1]
        white = brain & (t1 > np.percentile(t1[brain], 80))  # bright on T1: white matter
        if (mask == 2).sum() >= 3:
            assert volume[FLAIR][mask == 2].mean() > volume[FLAIR][white].mean() + 0.2, case
            assert volume[T2][mask == 2].mean() > volume[T2][white].mean() + 0.2, case
        if (mask == 3).sum() >= 3:
            rim = mask == 3
            assert volume[T1CE][rim].mean() > volume[T1][rim].mean() + 0.2, case
            assert volume[T1CE][rim].mean() > volume[T1CE][white].mean(), case


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n=0), "n=0"),
        (dict(n=-3), "n=-3"),
        (dict(n=4, size=8), "size=8"),
        (dict(n=4, size=15), "size=15"),
        (dict(n=4, seed=-1), "seed=-1"),
        (dict(n=4, noise=-1.0), "noise=-1.0"),
        (dict(n=4, class_weights=(0.5, 0.5, 0.5, 0.5)), "class_weights=(0.5, 0.5, 0.5, 0.5)"),
        (dict(n=4, class_weights=(1.2, -0.2, 0.0, 0.0)), "class_weights=(1.2, -0.2, 0.0, 0.0)"),
        (dict(n=4, class_weights=(0.5, 0.5)), "class_weights=(0.5, 0.5)"),
    ],
)
def test_head_ct_spec_errors_name_the_field_and_value(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SyntheticHeadCTSpec(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(n=0), "n=0"), (dict(n=2, size=12), "size=12"), (dict(n=2, lgg_fraction=1.5), "lgg_fraction=1.5")],
)
def test_tumour_spec_errors_name_the_field_and_value(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SyntheticBrainTumourSpec(**kwargs)
    with pytest.raises(ValueError, match="size=10"):
        brains3d.anatomy(10)


def test_slices_are_display_ready():
    volume = np.zeros((24, 24, 24), dtype=np.float32)
    volume[20, 12, 3] = 1  # patient's right (high axis 0), inferior (low axis 2)
    axial, coronal, sagittal = brains3d.slices(volume, (20, 12, 3))
    assert axial.shape == coronal.shape == sagittal.shape == (24, 24)
    assert np.argwhere(coronal)[0].tolist() == [20, 3]  # low in the image (inferior), left (patient's right)
    assert np.argwhere(axial)[0].tolist() == [11, 3]
    assert sagittal.max() == 1
    channels = brains3d.slices(torch.zeros(4, 24, 24, 24))
    assert all(s.shape == (4, 24, 24) for s in channels)
    with pytest.raises(ValueError, match="index"):
        brains3d.slices(volume, (30, 0, 0))


def test_generation_is_fast_enough():
    brains3d.anatomy(32)
    for render in (lambda s: brains3d.render_head_ct(s % 4, 32, s), lambda s: brains3d.render_brain_tumour(32, s)):
        render(0)
        start = time.perf_counter()
        for seed in range(5):
            render(seed)
        assert (time.perf_counter() - start) / 5 < 0.2
