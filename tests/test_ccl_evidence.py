"""Chapter 1 under the evidence standard: the declared comparisons and their verdicts, the class-balanced
evaluation splits, the check that the settings fit the data before training, and the paper profile end
to end on a real-format fixture, verdicts included."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from medlab import experiment, notebooks, report, results
from medlab.papers import ccl


def _frame(diffs_by_backbone: dict[str, float], hard: float = 0.70, ablation_backbone: str = "b", seeds: int = 5):
    """Records as ``results_frame`` makes them: hard labels at ``hard``, CCL-Net ``diff`` above it on each
    backbone (plus a little seed noise), and the ablation rows on ``ablation_backbone``."""
    rng = np.random.default_rng(0)
    rows = []
    for backbone_name, diff in diffs_by_backbone.items():
        for seed in range(seeds):
            noise = rng.normal(0, 0.002)
            values = {"hard": hard, "label_smoothing": hard + 0.005, "ccl": hard + diff + noise}
            if backbone_name == ablation_backbone:
                values.update(ccl_no_cc=hard + diff - 0.01, ccl_no_soft=hard + 0.001, oracle_soft=hard + 0.02)
            for method, value in values.items():
                rows.append({
                    "experiment": "comparison" if method in ("hard", "label_smoothing", "ccl") else "ablation",
                    "seed": seed, "params.backbone": backbone_name, "params.method": method,
                    "metrics.balanced_accuracy": value, "metrics.n_eval": 2800.0,
                    ccl.report.ON_ABLATION_BACKBONE: backbone_name == ablation_backbone,
                })
    return pd.DataFrame(rows)


def _verdict(verdicts, name):
    return next(v for v in verdicts if v["name"] == name)


def test_the_main_comparison_is_ccl_net_against_hard_labels_on_balanced_accuracy():
    main = [spec for spec in ccl.COMPARISONS if spec.main]
    assert len(main) == 1
    spec = main[0]
    assert (spec.method, spec.baseline, spec.metric, spec.column) == ("ccl", "hard", "balanced_accuracy", "params.method")
    assert spec.floor == pytest.approx(1 / 7) and spec.ceiling == 1.0 and spec.percent and spec.higher_is_better
    assert len({spec.name for spec in ccl.COMPARISONS}) == len(ccl.COMPARISONS)
    for spec in ccl.COMPARISONS:
        assert {spec.method, spec.baseline} <= set(ccl.METHODS)
    secondary = {(s.method, s.baseline) for s in ccl.COMPARISONS if not s.main}
    assert {("ccl", "label_smoothing"), ("ccl", "ccl_no_cc"), ("ccl", "ccl_no_soft"), ("oracle_soft", "label_smoothing")} <= secondary


def test_verdicts_pair_by_seed_and_the_ablation_reads_its_backbone_only():
    verdicts = report.evaluate_all(ccl.COMPARISONS, _frame({"a": -0.05, "b": 0.03}))
    main = _verdict(verdicts, "CCL-Net vs hard labels")
    assert main["n_seeds"] == 5 and main["diff_mean"] == pytest.approx(-0.01, abs=0.002)  # mean over backbones
    no_soft = _verdict(verdicts, "CCL-Net vs CCL block + hard labels")
    assert no_soft["method_mean"] == pytest.approx(0.73, abs=0.002)  # CCL-Net on backbone b only
    assert no_soft["verdict"] == "better" and "precise_enough" not in no_soft["gates"]
    assert _verdict(verdicts, "true-similarity smoothing vs label smoothing")["verdict"] == "better"


def test_a_baseline_below_halfway_voids_the_comparison_with_the_reason():
    frame = _frame({"b": 0.03}, hard=0.50)  # (0.50 - 1/7) / (6/7) = 42% of the way
    main = report.evaluate(ccl.COMPARISONS[0], frame)
    assert main["verdict"] == "void" and main["gates"]["baseline_learned"] is False
    assert "42% of the way from floor to ceiling" in main["reason"]


def test_results_frame_marks_the_ablation_backbone():
    records = [
        {"chapter": "ccl", "profile": "demo", "experiment": e, "variant": f"{b}/{m}", "seed": 0,
         "metrics": {"balanced_accuracy": 0.7}, "params": {"backbone": b, "method": m}}
        for e, b, m in (("comparison", "a", "hard"), ("comparison", "b", "hard"), ("ablation", "b", "ccl_no_cc"))
    ]
    frame = ccl.results_frame(records, "b")
    assert frame[ccl.report.ON_ABLATION_BACKBONE].tolist() == [False, True, True]
    assert frame["method"].tolist() == ["hard labels", "hard labels", "CCL-Net w/o L_cc"]


def test_evaluation_splits_are_class_balanced_and_training_keeps_isics_imbalance():
    config = ccl.settings("smoke", n_train=280, n_val=70, n_test=140, image_size=16, data_seed=7)
    data = ccl.load_data(config)
    assert data.info["val"]["class_counts"] == [10] * 7 and data.info["test"]["class_counts"] == [20] * 7
    assert data.info["test"]["class_balanced"] and not data.info["train"]["class_balanced"]
    train_counts = data.info["train"]["class_counts"]
    assert train_counts[1] == max(train_counts) and sum(train_counts) == 280  # nevi dominate, as in ISIC 2018
    assert not np.allclose(data.val.images[:10].numpy(), data.test.images[:10].numpy())
    again = ccl.balanced_split("test", 140, config)
    assert np.array_equal(again.images.numpy(), data.test.images.numpy())  # seeded: the same test set
    unbalanced = ccl.load_data(ccl.settings("smoke", n_train=280, n_val=70, n_test=140, image_size=16, balanced_eval=False))
    assert unbalanced.info["test"]["class_counts"] != [20] * 7


def test_check_data_fails_fast_when_the_settings_do_not_fit(tmp_path, monkeypatch, write_isic):
    with pytest.raises(ValueError, match=r"fewer than one batch \(batch_size 512\)"):
        ccl.check_data(ccl.settings("smoke", batch_size=512, n_train=96, image_size=16))
    data_dir = tmp_path / "isic2018"
    write_isic(data_dir, "Training", labels=[k for k in range(7) for _ in range(3)])
    write_isic(data_dir, "Validation", labels=list(range(7)))
    write_isic(data_dir, "Test", labels=[0, 1, 2, 3, 4, 6])  # no DF
    config = ccl.settings("paper", image_size=32, pretrained=False, batch_size=8)
    with pytest.raises(ValueError, match=r"do not fit the ISIC 2018 data under .*the test split holds no image of DF"):
        ccl.check_data(config, data_dir)
    # run_grid checks before it trains: no run folder is made
    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    with pytest.raises(ValueError, match="no image of DF"):
        experiment.run_grid(ccl, config, profile="paper", device="cpu", data_dir=data_dir)
    assert not (tmp_path / "runs").exists()


def test_check_data_refuses_the_oracle_on_real_data_and_unloadable_weights(tmp_path, monkeypatch, write_isic):
    data_dir = tmp_path / "isic2018"
    for part, labels in (("Training", [k for k in range(7) for _ in range(2)]), ("Validation", range(7)), ("Test", range(7))):
        write_isic(data_dir, part, labels=list(labels))
    oracle = ccl.settings("paper", image_size=32, pretrained=False, batch_size=4, ablation_methods="ccl_no_cc,oracle_soft")
    with pytest.raises(ValueError, match="oracle_soft needs the true class similarity"):
        ccl.check_data(oracle, data_dir)

    def offline(name, pretrained=False):
        raise RuntimeError(f"could not load the ImageNet weights of {name}")

    monkeypatch.setattr("medlab.papers.ccl.method.backbone", offline)
    with pytest.raises(RuntimeError, match="ImageNet weights of resnet18"):
        ccl.check_data(ccl.settings("paper", image_size=32, batch_size=4), data_dir)


def test_paper_profile_writes_its_verdicts_on_the_official_layout(tmp_path, monkeypatch, write_isic):
    """The paper profile end to end on a tiny ISIC 2018 fixture at two seeds: records, and the verdicts of
    every declared comparison in comparisons.json (void here: a one-epoch model learns nothing)."""
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    data_dir = tmp_path / "isic2018"
    write_isic(data_dir, "Training", labels=[k for k in range(7) for _ in range(2)])
    write_isic(data_dir, "Validation", labels=list(range(7)))
    write_isic(data_dir, "Test", labels=list(range(7)))
    # the smallest torchvision backbone keeps the test near 40 CPU-seconds (with ResNet-18: 90, mostly its
    # checkpoints); tests/test_notebooks.py runs the paper profile with ResNet-18 at one seed
    parameters = {
        "data_dir": str(data_dir), "seeds": "0,1", "epochs": 1, "backbones": "mobilenet_v3_small",
        "overrides": {"image_size": 32, "pretrained": False, "batch_size": 7, "ablation_backbone": "mobilenet_v3_small", "workers": 1},
    }
    notebooks.execute(notebooks.find_chapter("ccl"), tmp_path / "paper.ipynb", profile="paper", parameters=parameters)
    frame = results.load(chapter="ccl", profile="paper", root=tmp_path / "results")
    assert len(frame) == 10 and set(frame["dataset"]) == {"real"}  # (3 methods + 2 ablation rows) x 2 seeds
    stored = json.loads((tmp_path / "results" / "paper" / "ccl" / "comparisons.json").read_text())
    assert [v["name"] for v in stored] == [spec.name for spec in ccl.COMPARISONS]
    main = stored[0]
    assert main["main"] and main["n_seeds"] == 2 and main["n_eval"] == 7 and main["verdict"] in report.VERDICTS
    oracle = _verdict(stored, "true-similarity smoothing vs label smoothing")
    assert oracle["verdict"] == "void" and "no records of oracle_soft" in oracle["reason"]


def test_settings_that_cannot_run_fail_when_they_are_made():
    with pytest.raises(ValueError, match=r"unknown backbone\(s\) \['resnet9'\]"):
        ccl.settings("smoke", backbones="resnet9", ablation_backbone="resnet9")
    with pytest.raises(ValueError, match="narrow_resnet18 has no ImageNet weights"):
        ccl.settings("demo", pretrained=True)
    with pytest.raises(ValueError, match="ablation_backbone 'resnet50' is not among backbones"):
        ccl.settings("paper", backbones="resnet18")
    assert ccl.settings("paper", backbones="resnet18", ablation_backbone="resnet18").backbones == ("resnet18",)


def test_the_demo_backbone_is_a_narrow_resnet18_with_the_ccl_block():
    import torch

    model = ccl.Classifier("narrow_resnet18", 7, with_ccl=True, embedding_dim=8, width=8)
    out = model(torch.rand(2, 3, 32, 32))
    assert out["logits"].shape == (2, 7) and out["embedding"].shape == (2, 8)
    assert model.backbone.out_features == 64  # 8 x width
    with pytest.raises(ValueError, match="no ImageNet weights"):
        ccl.method.make_backbone("narrow_resnet18", pretrained=True)
