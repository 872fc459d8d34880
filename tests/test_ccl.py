"""Chapter 1 (CCL-Net): each equation on tiny tensors with hand-computed values, the model, the losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medlab.papers import ccl


def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)


def test_dml_loss_hand_computed():
    z = _unit([1.0, 0.0])
    e = _unit([1.0, 0.0], [0.0, 1.0])
    # logits s*<z,e> = [2, 0]; -log softmax_0 = log(1 + e^-2)
    loss = ccl.dml_loss(z, e, torch.tensor([0]), scale=2.0)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)


def test_correlation_is_cosine_with_unit_diagonal():
    e = _unit([1.0, 0.0], [1.0, 1.0], [0.0, -1.0])
    r = ccl.class_correlation(e)
    assert torch.allclose(torch.diag(r), torch.ones(3))
    assert r[0, 1].item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert r[0, 2].item() == pytest.approx(0.0, abs=1e-6) and r[1, 2].item() == pytest.approx(
        -1 / math.sqrt(2), abs=1e-6
    )
    assert torch.allclose(r, r.t())


def test_soft_labels_hand_computed():
    r = torch.tensor([[1.0, 0.5], [0.5, 1.0]])
    q = ccl.soft_labels(r, temperature=0.5)
    # row 0: softmax([2, 1])
    expected = math.exp(2) / (math.exp(2) + math.exp(1))
    assert q[0, 0].item() == pytest.approx(expected, abs=1e-6)
    assert torch.allclose(q.sum(1), torch.ones(2))
    with pytest.raises(ValueError, match="temperature must be positive"):
        ccl.soft_labels(r, 0.0)


def test_soft_labels_peak_at_the_true_class_and_rank_by_correlation():
    e = F.normalize(torch.randn(7, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    q = ccl.soft_labels(ccl.class_correlation(e), 0.25)
    assert torch.equal(q.argmax(1), torch.arange(7))
    r = ccl.class_correlation(e)
    for i in range(7):
        others = [j for j in range(7) if j != i]
        assert torch.equal(torch.argsort(q[i, others]), torch.argsort(r[i, others]))


def test_correlation_loss_hand_computed_and_gradient_only_reaches_class_embeddings():
    e = _unit([1.0, 0.0], [0.0, 1.0]).requires_grad_(True)
    z = _unit([0.6, 0.8]).requires_grad_(True)
    # class 0 sample: R_01 = 0, <z, e_1> = 0.8 -> (0 - 0.8)^2
    loss = ccl.correlation_loss(z, e, torch.tensor([0]))
    assert loss.item() == pytest.approx(0.64, abs=1e-6)
    loss.backward()
    assert z.grad is None or torch.count_nonzero(z.grad) == 0
    assert torch.count_nonzero(e.grad) > 0


def test_correlation_loss_is_zero_when_samples_sit_on_their_class_embedding():
    e = F.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    labels = torch.tensor([0, 1, 2, 3, 1])
    assert ccl.correlation_loss(e[labels], e, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_correlation_loss_pulls_confusable_classes_together():
    """Samples of class 0 lying towards class 1 raise R_01 under gradient descent on L_cc."""
    e = _unit([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]).requires_grad_(True)
    z = _unit([0.8, 0.6, 0.0], [0.8, 0.6, 0.0])
    labels = torch.tensor([0, 0])
    before = ccl.class_correlation(e.detach())[0, 1].item()
    for _ in range(20):
        loss = ccl.correlation_loss(z, F.normalize(e, dim=1), labels)
        (grad,) = torch.autograd.grad(loss, e)
        e = (e - 0.5 * grad).detach().requires_grad_(True)
    after = ccl.class_correlation(F.normalize(e.detach(), dim=1))
    assert after[0, 1].item() > before + 0.2 and abs(after[0, 2].item()) < 0.05


def test_soft_cross_entropy_equals_cross_entropy_for_one_hot_targets_and_detaches():
    logits = torch.randn(5, 4, requires_grad=True)
    labels = torch.tensor([0, 3, 1, 1, 2])
    one_hot = F.one_hot(labels, 4).float().requires_grad_(True)
    ours = ccl.soft_cross_entropy(logits, one_hot)
    assert ours.item() == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-6)
    ours.backward()
    assert one_hot.grad is None


def test_classifier_outputs_and_shapes():
    model = ccl.Classifier("shufflenet_v2_x1_0", num_classes=7, with_ccl=True, embedding_dim=8)
    out = model(torch.rand(2, 3, 32, 32))
    assert out["logits"].shape == (2, 7) and out["embedding"].shape == (2, 8)
    assert torch.allclose(out["embedding"].norm(dim=1), torch.ones(2), atol=1e-5)
    plain = ccl.Classifier("resnet18", num_classes=7)
    assert "embedding" not in plain(torch.rand(2, 3, 32, 32)) and plain.ccl is None


@pytest.mark.parametrize("method", list(ccl.METHODS))
def test_every_method_loss_is_finite_and_trains_the_right_parts(method):
    config = ccl.settings("smoke")
    torch.manual_seed(0)
    model = ccl.Classifier("shufflenet_v2_x1_0", 7, with_ccl=method.startswith("ccl"), embedding_dim=8)
    oracle = ccl.oracle_soft_labels(np.eye(7) * 0.5 + 0.5, 0.1) if method == "oracle_soft" else None
    loss_fn = ccl.make_loss(method, config, oracle)
    batch = (torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 6]))
    parts = loss_fn(model, batch)
    assert torch.isfinite(parts["loss"])
    parts["loss"].backward()
    assert model.head.weight.grad is not None
    if method.startswith("ccl"):
        assert model.ccl.class_embeddings.grad is not None and "dml" in parts
        assert ("cc" in parts) == (method != "ccl_no_cc")


def test_ccl_total_loss_combines_terms_with_their_weights():
    config = ccl.settings("smoke", lambda_dml=0.5, lambda_cc=2.0)
    torch.manual_seed(0)
    model = ccl.Classifier("shufflenet_v2_x1_0", 7, with_ccl=True, embedding_dim=8).eval()
    torch.manual_seed(1)
    parts = ccl.make_loss("ccl", config)(model, (torch.rand(3, 3, 32, 32), torch.tensor([0, 1, 2])))
    expected = parts["cls"] + 0.5 * parts["dml"] + 2.0 * parts["cc"]
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_oracle_soft_labels_hand_computed():
    similarity = np.array([[1.0, 0.6, 0.2], [0.6, 1.0, 0.4], [0.2, 0.4, 1.0]])
    q = ccl.oracle_soft_labels(similarity, 0.1)
    assert q[0].tolist() == pytest.approx([0.9, 0.1 * 0.6 / 0.8, 0.1 * 0.2 / 0.8])
    assert torch.allclose(q.sum(1), torch.ones(3))
    with pytest.raises(ValueError, match="epsilon"):
        ccl.oracle_soft_labels(similarity, 1.0)


def test_findings_are_written_from_the_records():
    import pandas as pd

    rows = []
    hard_ccl = [(0.70, 0.73), (0.72, 0.74), (0.69, 0.72), (0.71, 0.74), (0.70, 0.72)]
    for seed, (hard, soft) in enumerate(hard_ccl):
        for method, value in (("hard", hard), ("ccl", soft), ("ccl_no_cc", soft - 0.01)):
            rows.append(
                {
                    "experiment": "ablation" if method == "ccl_no_cc" else "comparison",
                    "seed": seed,
                    "params.backbone": "net",
                    "params.method": method,
                    "metrics.balanced_accuracy": value,
                    "metrics.n_eval": 2800.0,
                    "metrics.ccl_correlation_spearman": 0.5 if method == "ccl" else (0.1 if method == "ccl_no_cc" else np.nan),
                    "metrics.classifier_cosine_spearman": 0.3,
                }
            )
    text = ccl.findings(pd.DataFrame(rows))
    assert text.startswith(
        "- (main) **CCL-Net vs hard labels**: CCL-Net minus hard labels, balanced accuracy +2.6 points (95% interval"
    )
    assert "5 seeds, 2800 test items): CCL-Net is better." in text
    assert "**CCL-Net vs label smoothing**: void — no records of label_smoothing." in text
    assert "**CCL-Net vs CCL-Net w/o L_cc**: CCL-Net minus CCL-Net w/o L_cc" in text
    assert "Spearman 0.50 (95% interval 0.50 to 0.50, 5 runs); without the correlation loss (Eq. 5) at 0.10" in text


def test_unknown_method_and_missing_oracle():
    config = ccl.settings("smoke")
    with pytest.raises(ValueError, match="unknown method 'focal'"):
        ccl.make_loss("focal", config)
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['focal'\]"):
        ccl.settings("smoke", methods="hard,focal")
    with pytest.raises(ValueError, match="only the synthetic data has"):
        ccl.make_loss("oracle_soft", config)


def test_settings_per_profile_and_overrides():
    assert ccl.settings("smoke").epochs < ccl.settings("demo").epochs
    demo = ccl.settings("demo")
    assert len(demo.seeds) >= 5 and demo.backbones == (demo.ablation_backbone,)  # one backbone, powered
    assert demo.balanced_eval and demo.n_test // 7 >= 200 and demo.n_val // 7 >= 100
    assert len(ccl.settings("paper").backbones) == 3
    s = ccl.settings("smoke", seeds="3,4", epochs="1")
    assert s.seeds == [3, 4] and s.epochs == 1
    with pytest.raises(ValueError, match="unknown setting 'epoch'"):
        ccl.settings("smoke", epoch=1)


def test_run_identity_holds_the_training_settings_and_the_runs_choices_only():
    from medlab.experiment import run_identity

    config = ccl.settings("smoke")
    params = run_identity(config, backbone="resnet18", method="ccl", data_dir=None)
    assert params["backbone"] == "resnet18" and params["method"] == "ccl" and params["lr"] == config.lr
    assert not {"seeds", "methods", "backbones", "workers", "num_workers"} & set(params)
    other = run_identity(ccl.settings("smoke", num_workers=2, workers=3), backbone="resnet18", method="ccl", data_dir=None)
    assert other == params  # execution settings never change a run's identity


def test_ccl_loss_is_equation_7_of_its_parts():
    torch.manual_seed(0)
    logits, z = torch.randn(4, 3), F.normalize(torch.randn(4, 5), dim=1)
    e, labels = F.normalize(torch.randn(3, 5), dim=1), torch.tensor([0, 1, 2, 1])
    out = ccl.ccl_loss(logits, z, e, labels, scale=4.0, temperature=0.5, lambda_dml=0.5, lambda_cc=2.0)
    q = ccl.soft_labels(ccl.class_correlation(e), 0.5)
    assert out["cls"].item() == pytest.approx(ccl.soft_cross_entropy(logits, q[labels]).item())
    assert out["loss"].item() == pytest.approx((out["cls"] + 0.5 * out["dml"] + 2.0 * out["cc"]).item())
    hard = ccl.ccl_loss(logits, z, e, labels, scale=4.0, temperature=0.5, lambda_dml=1, lambda_cc=1, soft=False, with_cc=False)
    assert "cc" not in hard and hard["cls"].item() == pytest.approx(F.cross_entropy(logits, labels).item())
