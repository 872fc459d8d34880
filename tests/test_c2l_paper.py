"""Chapter 2's paper profile end to end: the whole grid of ``medlab.papers.c2l`` at ``profile="paper"``
on a ChestX-ray14 fixture written in the official NIH layout, at tiny sizes (every pretraining with its
held-out checks, every fine-tuning and probe from the saved encoders, the comparisons of the evidence
standard); and the data check that stops the grid before any training when the folder is missing."""

from __future__ import annotations

import pytest

from medlab import results
from medlab.experiment import run_grid
from medlab.papers import c2l
from medlab.report import evaluate_all

from test_data_chestxray14 import write_cxr

TINY = dict(
    image_size=16, backbone="narrow_resnet18", width=4, feature_dim=8, imagenet=False,
    pretrain_methods=("moco", "c2l"), ablation_methods=("c2l_no_instance",),
    pretrain_epochs=1, pretrain_batch_size=4, bn_splits=2, queue_size=8, ablation_queue_size=4,
    label_fractions=(0.5, 1.0), finetune_fractions=(0.5, 1.0), ablation_fraction=1.0,
    finetune_epochs=1, finetune_batch_size=4, finetune_epoch_samples=8, probe_epochs=1,
    seeds=(0,), num_workers=0, workers=1,
)
VERDICTS = {"better", "worse", "no_difference", "void"}


def test_chapter_2_paper_grid_runs_on_the_official_layout(written, isolated):
    root = written(write_cxr)
    config = c2l.settings("paper", **TINY)
    jobs = c2l.grid(config)
    records = run_grid(c2l, config, profile="paper", device="cpu", data_dir=root, progress=False)

    assert len(records) == len(jobs)
    assert {r["dataset"]["kind"] for r in records} == {"real"}
    assert all(r["profile"] == "paper" and r["chapter"] == c2l.SLUG for r in records)
    assert [r["experiment"] for r in records] == [j.experiment for j in jobs]
    # every pretraining: moco, c2l and the ablation's method, each with its held-out checks
    pretraining = [r for r in records if r["experiment"] == "pretrain"]
    assert sorted(r["params"]["method"] for r in pretraining) == ["c2l", "c2l_no_instance", "moco"]
    for record in pretraining:
        m = record["metrics"]
        for key in ("heldout_pretext_accuracy", "pretext_chance", "knn_auroc", "init_knn_auroc"):
            assert key in m, key
        assert 0 <= m["heldout_pretext_accuracy"] <= 1 and 0 < m["pretext_chance"] <= 1
        assert record["params"]["data_dir"] == str(root)
    # the downstream runs: fine-tuning and probes from scratch and the two pretrainings, and the ablation
    downstream = [r for r in records if r["experiment"] != "pretrain"]
    assert {r["experiment"] for r in downstream} == {"label_efficiency", "ablation"}
    assert {(r["params"]["init"], r["params"]["protocol"]) for r in downstream} == {
        (init, protocol) for init in ("scratch", "moco", "c2l") for protocol in ("finetune", "probe")
    } | {("c2l_no_instance", "probe")}
    for record in downstream:
        assert "mean_auroc" in record["metrics"]
        assert record["metrics"]["n_eval"] == len(c2l.load_data(config, root).test)

    verdicts = evaluate_all(c2l.COMPARISONS, results.to_frame(records))
    assert [v["name"] for v in verdicts] == [spec.name for spec in c2l.COMPARISONS]
    assert {v["verdict"] for v in verdicts} <= VERDICTS
    assert all(str(r["path"]).startswith(str(isolated)) for r in records)  # nothing written in the repo


def test_check_data_names_the_missing_folder(isolated):
    config = c2l.settings("paper", **TINY)
    missing = isolated / "missing"
    with pytest.raises((FileNotFoundError, ValueError), match=str(missing)):
        c2l.check_data(config, missing)
