"""The synthetic chest radiographs: determinism, labels with ChestX-ray14's prevalences, findings drawn
locally, and a task that is learnable but not trivial."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlab.data.formats.chestxray14 import FINDINGS, PREVALENCE
from medlab.data.synth import chest_xrays
from medlab.data.synth.chest_xrays import ChestXraySpec, SyntheticChestXrays


def test_generation_is_deterministic_and_in_range():
    a = SyntheticChestXrays(ChestXraySpec(n=12, image_size=24, seed=5))
    b = SyntheticChestXrays(ChestXraySpec(n=12, image_size=24, seed=5))
    c = SyntheticChestXrays(ChestXraySpec(n=12, image_size=24, seed=6))
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.images, c.images)
    image, labels = a[0]
    assert image.shape == (1, 24, 24) and image.dtype == torch.float32
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    assert labels.shape == (14,) and set(labels.unique().tolist()) <= {0.0, 1.0}
    assert a.info["kind"] == "synthetic" and a.classes == FINDINGS


def test_labels_follow_the_prevalences_with_a_floor():
    labels = chest_xrays.sample_findings(40_000, np.random.default_rng(0), prevalence_floor=0.02)
    observed = labels.mean(0)
    target = np.maximum(PREVALENCE, 0.02)
    assert np.allclose(observed, target, atol=0.006)
    assert observed[FINDINGS.index("Hernia")] == pytest.approx(0.02, abs=0.004)  # 0.2% raised to the floor
    assert (labels.sum(1) == 0).mean() == pytest.approx(chest_xrays.NO_FINDING_FRACTION, abs=0.01)


def test_each_finding_changes_the_patient_locally():
    images, titles = chest_xrays.finding_gallery(size=64, seed=1)
    assert images.shape == (15, 64, 64) and titles[0] == "No finding" and titles[1:] == list(FINDINGS)
    changed = {t: float((np.abs(img - images[0]) > 0.03).mean()) for t, img in zip(titles[1:], images[1:])}
    assert all(v > 0.002 for v in changed.values()), changed  # every finding is visible
    assert changed["Nodule"] < 0.05  # a small lesion changes a small area
    assert changed["Nodule"] < changed["Emphysema"]  # a diffuse finding changes more


def test_findings_are_learnable_but_not_trivial():
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    train = SyntheticChestXrays(ChestXraySpec(n=900, image_size=24, seed=11))
    test = SyntheticChestXrays(ChestXraySpec(n=400, image_size=24, seed=12))
    x_train, x_test = train.images.flatten(1).float().numpy() / 255, test.images.flatten(1).float().numpy() / 255
    frequent = [FINDINGS.index(f) for f in ("Cardiomegaly", "Effusion", "Emphysema", "Mass")]
    scores = []
    for k in frequent:
        model = LogisticRegression(C=0.05, max_iter=300).fit(x_train, train.targets[:, k].numpy())
        scores.append(roc_auc_score(test.targets[:, k].numpy(), model.predict_proba(x_test)[:, 1]))
    assert 0.6 < np.mean(scores) < 0.99, scores
