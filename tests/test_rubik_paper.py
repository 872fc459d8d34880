"""Chapter 3's paper profile end to end: the whole grid of ``medlab.papers.rubik`` at ``profile="paper"``
on a BraTS fixture written in the official layout (segmentation; the head-CT classification task is
synthetic in every profile), at tiny sizes: the pretraining on the proxy task, the fine-tuning runs, the
linear probes of the evidence standard's gate and the comparisons; and the settings-fit check, which
stops the grid before any training when the settings ask for more labelled volumes than the fixture's
training split holds."""

from __future__ import annotations

import re

import pytest

from medlab import results
from medlab.experiment import run_grid
from medlab.papers import rubik
from medlab.report import evaluate_all

from test_data_brats import write_brats

TRAIN_CASES = 6  # the fixture's 8 cases (5 HGG, 3 LGG) less one validation and one test case (HGG)
TINY = dict(
    volume_size=16, cube_size=4, widths=(2, 4), hidden=8, num_permutations=6,
    n_unlabeled=8, n_labeled=6, n_val=4, n_test=4,  # the synthetic head CTs of the classification task
    proxy_val_volumes=2, pretrain_epochs=1, pretrain_batch_size=2,
    tasks=("segmentation",), ablation_tasks=("segmentation",),
    label_counts=(3, TRAIN_CASES), ablation_labels=3, probe_labels=3,
    finetune_epochs=1, finetune_epoch_samples=4, finetune_batch_size=2,
    seeds=(0,), probe_seeds=(0,), num_workers=0, workers=1,
)
VERDICTS = {"better", "worse", "no_difference", "void"}


def test_chapter_3_paper_grid_runs_on_the_official_layout(written, isolated):
    # both tasks, as the paper profile has them (the segmentation-only grid is this grid's segmentation part)
    tasks = ("classification", "segmentation")
    root = written(write_brats)
    config = rubik.settings("paper", **{**TINY, "tasks": tasks})
    jobs = rubik.grid(config)
    records = run_grid(rubik, config, profile="paper", device="cpu", data_dir=root, progress=False)

    assert len(records) == len(jobs)
    assert [(r["experiment"], r["params"]["task"]) for r in records] == [(j.experiment, j.task) for j in jobs]
    assert all(r["profile"] == "paper" and r["chapter"] == rubik.SLUG for r in records)
    assert all(str(r["path"]).startswith(str(isolated)) for r in records)  # nothing written in the repo
    segmentation = [r for r in records if r["params"]["task"] == "segmentation"]
    assert {r["dataset"]["kind"] for r in segmentation} == {"real"}
    assert {r["params"]["data_dir"] for r in segmentation} == {str(root)}
    # the pretrainings: Rubik's cube and the ablation's two proxy-task variants, scored on held-out puzzles
    pretraining = [r for r in segmentation if r["experiment"] == "pretrain"]
    assert sorted(r["params"]["method"] for r in pretraining) == ["rearrangement", "rotation", "rubik"]
    assert all("val_rotation_accuracy" in r["metrics"] or "val_permutation_accuracy" in r["metrics"] for r in pretraining)
    downstream = [r for r in segmentation if r["experiment"] != "pretrain"]
    for record in downstream:
        assert "dice/whole tumour" in record["metrics"] and "mean_hd95" in record["metrics"]
        assert record["metrics"]["n_eval"] == 1.0  # the fixture's one test case
    assert sorted(
        (r["experiment"], r["params"]["init"], r["params"]["labels"]) for r in downstream
    ) == sorted(
        [("label_efficiency", init, n) for init in ("scratch", "rubik") for n in (3, TRAIN_CASES)]
        + [("ablation", init, 3) for init in ("rearrangement", "rotation")]
        + [("probe", init, 3) for init in ("scratch", "rubik")]
    )
    assert {j.stage for j in jobs if j.experiment == "probe"} == {"probe"}  # frozen encoders, linear heads
    classification = [r for r in records if r["params"]["task"] == "classification"]  # synthetic head CTs
    assert {r["dataset"]["kind"] for r in classification} == {"synthetic"}
    assert {r["params"]["data_dir"] for r in classification} == {None}
    assert sorted((r["experiment"], r["params"]["init"]) for r in classification if r["experiment"] != "pretrain") == [
        ("label_efficiency", "rubik"), ("label_efficiency", "rubik"), ("label_efficiency", "scratch"),
        ("label_efficiency", "scratch"),
    ]
    assert all("macro_f1" in r["metrics"] for r in classification if r["experiment"] != "pretrain")

    verdicts = evaluate_all(rubik.COMPARISONS, results.to_frame(records))
    assert [v["name"] for v in verdicts] == [spec.name for spec in rubik.COMPARISONS]
    assert {v["verdict"] for v in verdicts} <= VERDICTS


def test_check_data_stops_when_the_settings_ask_for_more_labelled_volumes_than_the_fixture_holds(written, isolated):
    root = written(write_brats)
    too_many = rubik.settings("paper", **{**TINY, "n_labeled": 8, "label_counts": (3, 8)})
    with pytest.raises(ValueError) as error:
        rubik.check_data(too_many, root)
    message = str(error.value)
    assert str(root) in message
    assert f"holds {TRAIN_CASES} labelled volumes" in message
    assert "label_counts up to 8" in message and "probe_labels" not in message and "ablation_labels" not in message
    assert re.search(rf"at most {TRAIN_CASES}\b", message)

    probe = rubik.settings("paper", **{**TINY, "probe_labels": 7})
    with pytest.raises(ValueError, match=r"probe_labels up to 7"):
        rubik.check_data(probe, root)
    assert rubik.check_data(rubik.settings("paper", **TINY), root) is None
    assert rubik.check_data(rubik.settings("paper", **TINY), None) is None  # synthetic data: nothing to check
    assert not list(isolated.glob("runs/paper/rubik/*"))  # no run started
