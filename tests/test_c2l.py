"""Chapter 2 (C2L): each equation on hand-computed values, the queue, shuffled batch norm, the
downstream pieces and the device augmentations."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medlab import augment, metrics
from medlab.nets.backbones import narrow_resnet18
from medlab.papers import c2l

TINY = dataclasses.replace(
    c2l.PROFILES["smoke"], image_size=16, width=4, feature_dim=8, queue_size=12, bn_splits=2, pretrain_batch_size=4
)


def test_info_nce_matches_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0]])
    loss, accuracy = c2l.info_nce(q, k, queue, temperature=0.5)
    # row 0: logits [1, 0] / 0.5 -> -log(e^2 / (e^2 + 1)); row 1: [0, 1] / 0.5 -> -log(1 / (1 + e^2))
    expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(2))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert accuracy.item() == pytest.approx(0.5)


def test_mixup_lambda_is_folded_to_the_upper_half():
    torch.manual_seed(0)
    values = torch.stack([c2l.mixup_lambda(1.0, torch.device("cpu")) for _ in range(2000)])
    assert values.min() >= 0.5 and values.max() <= 1.0
    # Beta(1, 1) folded: uniform on [0.5, 1], mean 0.75
    assert values.mean().item() == pytest.approx(0.75, abs=0.02)


def test_mix_uses_one_permutation_and_lambda():
    x = torch.tensor([[1.0], [2.0], [4.0]])
    out = c2l.mix(x, torch.tensor(0.75), torch.tensor([2, 0, 1]))
    assert torch.allclose(out, torch.tensor([[0.75 + 1.0], [1.5 + 0.25], [3.0 + 0.5]]))


def test_momentum_update_is_an_exponential_average_of_the_parameters():
    model = c2l.MomentumContrast(TINY)
    with torch.no_grad():
        for p in model.query.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.key.parameters()]
    model.momentum_update(0.75)
    for k, k0, q in zip(model.key.parameters(), before, model.query.parameters()):
        assert torch.allclose(k, 0.75 * k0 + 0.25 * q)
    model.momentum_update(0.0)
    for k, q in zip(model.key.parameters(), model.query.parameters()):
        assert torch.equal(k, q)
    assert not any(p.requires_grad for p in model.key.parameters())


def test_queue_is_fifo_and_wraps():
    model = c2l.MomentumContrast(dataclasses.replace(TINY, queue_size=5, feature_dim=2))
    first = torch.arange(6.0).view(3, 2)
    model.enqueue(first)
    assert torch.equal(model.queue[:3], first) and int(model.queue_ptr) == 3
    second = -torch.arange(1.0, 7.0).view(3, 2)
    model.enqueue(second)
    assert torch.equal(model.queue[3:], second[:2]) and torch.equal(model.queue[0], second[2])
    assert torch.equal(model.queue[1:3], first[1:]) and int(model.queue_ptr) == 1


def test_split_batch_norm_normalises_each_sub_batch_separately():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4) * 3 + 1
    split = c2l.SplitBatchNorm2d(3, splits=2).train()
    out = split(x)
    for group in range(2):
        plain = nn.BatchNorm2d(3).train()
        assert torch.allclose(out[group::2], plain(x[group::2]), atol=1e-5)
    # running statistics: the average of the groups' updates
    expected = torch.stack([0.1 * x[g::2].mean(dim=(0, 2, 3)) for g in range(2)]).mean(0)
    assert torch.allclose(split.running_mean, expected, atol=1e-6)
    split.eval()
    reference = nn.BatchNorm2d(3)
    reference.load_state_dict(split.state_dict())
    assert torch.allclose(split(x), reference.eval()(x))


def test_split_and_plain_batch_norms_round_trip():
    net = narrow_resnet18(4)
    c2l.split_batch_norms(net, 2)
    assert all(isinstance(m, c2l.SplitBatchNorm2d) for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    c2l.plain_batch_norms(net)
    assert not any(isinstance(m, c2l.SplitBatchNorm2d) for m in net.modules())


def test_batch_shuffle_is_undone():
    x = torch.arange(10.0).view(10, 1)
    shuffled, restore = c2l.batch_shuffle(x)
    assert sorted(shuffled.flatten().tolist()) == x.flatten().tolist()
    assert torch.equal(c2l.batch_unshuffle(shuffled, restore), x)


def test_key_features_without_splits_equal_a_plain_forward():
    model = c2l.MomentumContrast(dataclasses.replace(TINY, bn_splits=1)).train()
    x = torch.rand(4, 1, 16, 16)
    assert torch.allclose(model.key_features(x), model.key(x), atol=1e-5)


@pytest.mark.parametrize("method", list(c2l.PRETRAINING))
def test_pretrain_loss_averages_its_comparisons_and_trains_only_the_query(method):
    torch.manual_seed(0)
    config = c2l.variant_settings(TINY, method)
    model = c2l.MomentumContrast(config).train()
    terms = c2l.PRETRAINING[method].terms
    out = c2l.make_pretrain_loss(method, config)(model, (torch.rand(4, 1, 16, 16), None))
    assert set(terms) <= set(out) and torch.isfinite(out["loss"])
    assert out["loss"].item() == pytest.approx(sum(out[t].item() for t in terms) / len(terms), rel=1e-6)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.query.parameters())
    assert all(p.grad is None for p in model.key.parameters())
    # each comparison pushed its batch of keys into the queue (Eq. 5)
    assert int(model.queue_ptr) == (4 * len(terms)) % config.queue_size


def test_variant_settings_apply_the_ablation_values():
    assert c2l.variant_settings(TINY, "c2l_queue").queue_size == TINY.ablation_queue_size
    assert c2l.variant_settings(TINY, "c2l_momentum").momentum == TINY.ablation_momentum
    assert c2l.variant_settings(TINY, "c2l") == TINY


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="unknown pretraining method"):
        c2l.settings("smoke", pretrain_methods="moco,simclr")
    with pytest.raises(ValueError, match="label fractions"):
        c2l.settings("smoke", label_fractions="0,0.5")
    with pytest.raises(ValueError, match="bn_splits"):
        c2l.settings("smoke", bn_splits=5)


def test_label_subset_is_deterministic_and_never_empty():
    a, b = c2l.label_subset(200, 0.1, seed=3), c2l.label_subset(200, 0.1, seed=3)
    assert np.array_equal(a, b) and len(a) == 20 and len(set(a.tolist())) == 20
    assert len(c2l.label_subset(30, 0.01, seed=0)) == 1
    assert not np.array_equal(c2l.label_subset(200, 0.1, seed=4), a)
    with pytest.raises(ValueError, match="fraction"):
        c2l.label_subset(10, 0.0, seed=0)


def test_repeated_subset_repeats_every_sample_equally():
    data = torch.utils.data.TensorDataset(torch.arange(10.0), torch.zeros(10))
    subset = c2l.RepeatedSubset(data, [2, 5, 7], min_length=8)
    assert len(subset) == 9
    values = [float(subset[i][0]) for i in range(len(subset))]
    assert sorted(values) == [2.0] * 3 + [5.0] * 3 + [7.0] * 3


def test_finding_classifier_starts_from_the_pretrained_encoder(tmp_path):
    encoder = c2l.Encoder(TINY)
    path = tmp_path / "encoder.pt"
    torch.save(encoder.state_dict(), path)
    loaded = c2l.initial_encoder(TINY, "c2l", path)
    model = c2l.FindingClassifier(loaded, 14)
    x = torch.rand(3, 1, 16, 16)
    encoder.eval(), model.eval()
    assert torch.allclose(model.encoder.features(x), encoder.features(x))
    assert model(x).shape == (3, 14)
    with pytest.raises(FileNotFoundError, match="pretraining first"):
        c2l.initial_encoder(TINY, "moco", tmp_path / "missing.pt")


def test_encoder_feeds_grey_images_to_a_three_channel_backbone():
    config = dataclasses.replace(TINY, backbone="resnet18")
    encoder = c2l.Encoder(config).eval()
    assert encoder(torch.rand(2, 1, 32, 32)).shape == (2, config.feature_dim)


def test_grid_pretrains_before_it_fine_tunes():
    config = c2l.PROFILES["demo"]
    pretraining, downstream = c2l.grid(config)
    assert len(pretraining) == 7 * 3 and {j.experiment for j in pretraining} == {"pretrain"}
    assert len(downstream) == 3 * 3 * 2 * 3 + 5 * 3
    assert {j.init for j in downstream if j.experiment == "label_efficiency"} == {"scratch", "moco", "c2l"}
    assert c2l.imagenet_status(config).startswith("not run")


# --- shared building blocks used by the chapter -----------------------------------------------------


def test_narrow_resnet18_shapes_and_gradients():
    net = narrow_resnet18(width=8, in_channels=1)
    out = net(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 64) and net.out_features == 64
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="width"):
        narrow_resnet18(width=0)


def test_random_affine_crop_identity_and_flip():
    x = torch.rand(3, 1, 8, 8)
    same = augment.random_affine_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0.0, flip_p=0.0)
    assert torch.allclose(same, x, atol=1e-5)
    flipped = augment.random_affine_crop(x, scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0.0, flip_p=1.0)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-5)
    crops = augment.random_affine_crop(x, scale=(0.2, 0.5))
    assert crops.shape == x.shape and not torch.allclose(crops, x)


def test_intensity_jitter_identity_and_range():
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(augment.intensity_jitter(x, 0.0, 0.0), x)
    out = augment.intensity_jitter(x, 0.9, 0.9)
    assert out.min() >= 0 and out.max() <= 1


def test_cutout_holes_have_the_given_side_and_fill():
    torch.manual_seed(0)
    x = torch.ones(64, 1, 20, 20)
    out = augment.cutout(x, holes=1, length=4, fill=0.5)
    cut = (out == 0.5).sum(dim=(1, 2, 3))
    assert cut.max() == 16 and cut.min() >= 4  # clipped at the border, never more than one square
    assert torch.equal(augment.cutout(x, holes=0, length=4), x)


def test_multilabel_auroc_matches_scikit_learn_and_skips_undefined_labels():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(50, 3))
    y[:, 2] = 0
    s = rng.random((50, 3)) + 0.5 * y
    out = metrics.multilabel_auroc(y, s, ["a", "b", "c"])
    assert out["per_label"][0] == pytest.approx(roc_auc_score(y[:, 0], s[:, 0]))
    assert np.isnan(out["per_label"][2]) and out["undefined"] == 1
    assert out["mean"] == pytest.approx(np.mean(out["per_label"][:2]))
    with pytest.raises(ValueError, match="samples, labels"):
        metrics.multilabel_auroc(y, s[:, :2])


def test_engine_calls_after_step_once_per_step(tmp_path):
    from medlab import engine

    data = torch.utils.data.TensorDataset(torch.randn(12, 2), torch.randn(12, 1))
    model = nn.Linear(2, 1)
    calls = []
    engine.fit(
        model,
        data,
        loss_fn=lambda m, b: {"loss": F.mse_loss(m(b[0]), b[1])},
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=2,
        batch_size=4,
        run_dir=tmp_path,
        device=torch.device("cpu"),
        progress=False,
        after_step=lambda m: calls.append(torch.is_grad_enabled()),
    )
    assert calls == [False] * 6


def test_registry_offers_an_unlabeled_split_only_where_it_exists(tmp_path):
    from medlab import data

    assert "unlabeled" in data.splits_of("chestxray14") and "unlabeled" not in data.splits_of("isic2018")
    with pytest.raises(ValueError, match=r"unknown split 'unlabeled' for dataset 'isic2018'; expected one of train, val, test"):
        data.load("isic2018", "unlabeled", n=7)
    pool = data.load("chestxray14", "unlabeled", n=6, image_size=16)
    train = data.load("chestxray14", "train", n=6, image_size=16)
    assert len(pool) == 6 and not torch.equal(pool.images, train.images)
    with pytest.raises(ValueError, match="cannot be set for the real ChestX-ray14"):
        data.load("chestxray14", "train", data_dir=tmp_path, n=6)
    with pytest.raises(ValueError, match="need n"):
        data.load("chestxray14", "train")


def test_findings_are_written_from_the_records():
    import pandas as pd

    rows = []
    for seed in range(3):
        for init, auroc in (("scratch", 0.60), ("moco", 0.62), ("c2l", 0.65)):
            for fraction in (0.1, 1.0):
                rows.append({"experiment": "label_efficiency", "seed": seed, "params.init": init,
                             "params.protocol": "finetune", "params.fraction": fraction,
                             "metrics.mean_auroc": auroc + 0.01 * seed})
        rows.append({"experiment": "label_efficiency", "seed": seed, "params.init": "c2l", "params.protocol": "probe",
                     "params.fraction": 1.0, "metrics.mean_auroc": 0.7})
        rows.append({"experiment": "ablation", "seed": seed, "params.init": "c2l_no_mixed", "params.protocol": "probe",
                     "params.fraction": 1.0, "metrics.mean_auroc": 0.68 - 0.01 * seed})
    text = c2l.findings(pd.DataFrame(rows))
    assert text.startswith("**Overall.** After fine-tuning, C2L's mean AUROC is above training from scratch at every share")
    assert "at 2 of 2 shares" in text
    assert "+5.0 points ± 0.0 vs from scratch (ahead on 3/3 seeds)" in text
    assert "C2L w/o l(q~, k~) -3.0 points ± 1.0" in text
