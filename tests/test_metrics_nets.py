"""Metrics (hand-computed values), device augmentation and backbones, on tiny tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medlab import metrics
from medlab.augment import random_dihedral
from medlab.nets.backbones import BACKBONES, backbone


def test_classification_metrics_hand_computed():
    y = np.array([0, 0, 1, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.4, 0.5, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    m = metrics.classification_metrics(y, p)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)  # mean class recall
    # F1: class 0 P=1 R=.5 -> 2/3; class 1 P=.5 R=1 -> 2/3; class 2 -> 1
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.8, 0.4, 0.7, 0.7])))
    assert 0 <= m["macro_auroc"] <= 1


def test_ece_hand_computed():
    # two samples at confidence 0.9 (one right), two at 0.6 (both right); bins of width 1/15
    y = np.array([0, 1, 0, 0])
    p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    expected = 0.5 * abs(0.9 - 0.5) + 0.5 * abs(0.6 - 1.0)
    assert metrics.expected_calibration_error(y, p) == pytest.approx(expected, abs=1e-6)


def test_probabilities_are_checked():
    with pytest.raises(ValueError, match="must sum to 1"):
        metrics.classification_metrics([0, 1], np.array([[2.0, 1.0], [0.1, 0.2]]))
    with pytest.raises(ValueError, match="expected 3 classes"):
        metrics.classification_metrics([0, 1], np.array([[0.5, 0.5], [0.5, 0.5]]), num_classes=3)
    with pytest.raises(ValueError, match="3 labels but 2 rows"):
        metrics.classification_metrics([0, 1, 1], np.array([[0.5, 0.5], [0.5, 0.5]]))


def test_confusion_and_recall():
    y = np.array([0, 0, 1])
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    assert np.allclose(metrics.confusion(y, p, 2), [[0.5, 0.5], [0.0, 1.0]])
    assert np.allclose(metrics.per_class_recall(y, p, 2), [0.5, 1.0])


def test_reliability_curve_and_pooling():
    y = np.array([0, 1, 0, 0])
    p = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    conf, acc, count = metrics.reliability_curve(y, p, n_bins=10)
    assert count.tolist() == [0, 0, 0, 0, 0, 2, 0, 0, 0, 2]
    assert conf[9] == pytest.approx(0.95) and acc[9] == pytest.approx(0.5) and acc[5] == pytest.approx(1.0)
    pooled = metrics.pool_reliability(
        [
            {"confidence": conf, "accuracy": acc, "count": count},
            {
                "confidence": np.where(count > 0, 0.5, np.nan),
                "accuracy": np.where(count > 0, 0.0, np.nan),
                "count": count * 3,
            },
        ]
    )
    assert pooled["accuracy"][9] == pytest.approx((0.5 * 2 + 0 * 6) / 8) and np.isnan(pooled["accuracy"][0])


def test_matrix_agreement_is_rank_based():
    reference = np.array([[1, 0.9, 0.1], [0.9, 1, 0.5], [0.1, 0.5, 1]])
    monotone = np.array([[1, 0.2, -0.8], [0.2, 1, 0.0], [-0.8, 0.0, 1]])  # same ordering of pairs
    assert metrics.matrix_agreement(monotone, reference)["spearman"] == pytest.approx(1.0)
    assert metrics.matrix_agreement(-monotone, reference)["spearman"] == pytest.approx(-1.0)
    assert np.isnan(metrics.matrix_agreement(np.eye(3), reference)["spearman"])
    with pytest.raises(ValueError, match="square"):
        metrics.off_diagonal(np.ones((2, 3)))


def test_cosine_similarity_matrix():
    m = metrics.cosine_similarity_matrix(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]]))
    assert m[0, 1] == pytest.approx(2**-0.5) and m[0, 2] == pytest.approx(0.0) and np.allclose(np.diag(m), 1)


def test_random_dihedral_applies_one_of_eight_symmetries_per_image():
    torch.manual_seed(0)
    images = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3)
    out = random_dihedral(images)
    assert out.shape == images.shape
    for original, transformed in zip(images, out):
        candidates = [
            torch.rot90(t, k, dims=(-2, -1)) for t in (original, original.flip(-1)) for k in range(4)
        ]
        assert any(torch.equal(transformed, c) for c in candidates)
    with pytest.raises(ValueError, match="square images"):
        random_dihedral(torch.zeros(1, 1, 3, 4))


def test_random_dihedral_keeps_channels_last():
    images = torch.rand(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    assert random_dihedral(images).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "shufflenet_v2_x1_0"])
def test_backbone_features(name):
    net = backbone(name)
    features = net(torch.rand(2, 3, 32, 32))
    assert features.shape == (2, net.out_features)
    momenta = {m.momentum for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert momenta == {0.1}


def test_unknown_backbone():
    with pytest.raises(ValueError, match=r"unknown backbone 'vgg'; available: .*resnet18"):
        backbone("vgg")
    assert "densenet121" in BACKBONES
