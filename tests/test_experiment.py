"""Run scaffolding: settings roles, run identity, jobs and grids, one run and its record."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch

from medlab import experiment, results
from medlab.engine import RunContext
from medlab.experiment import ChapterSettings, execution_field, grid_field, training_field


@dataclass(frozen=True, kw_only=True)
class Toy(ChapterSettings):
    lr: float = 0.1
    methods: tuple[str, ...] = grid_field(("a", "b"))
    pretrain_epochs: int = training_field(3, stages=("pretrain",))
    finetune_epochs: int = training_field(5, stages=("finetune",))
    device_name: str = execution_field("cpu")


def test_roles_decide_what_enters_a_runs_identity():
    config = Toy()
    assert config.fields_of_role("grid") == ["seeds", "methods"]
    assert set(config.fields_of_role("execution")) == {"workers", "num_workers", "device_name"}
    params = experiment.run_identity(config, method="a")
    assert params == {"lr": 0.1, "pretrain_epochs": 3, "finetune_epochs": 5, "method": "a"}
    changed = dataclasses.replace(config, workers=4, num_workers=2, device_name="cuda", seeds=(7,), methods=("z",))
    assert experiment.run_identity(changed, method="a") == params  # execution and grid never count
    assert experiment.run_identity(dataclasses.replace(config, lr=0.2), method="a") != params


def test_a_stage_keeps_only_its_own_training_settings():
    config = Toy()
    pretrain = experiment.run_identity(config, stage="pretrain", method="a")
    assert "pretrain_epochs" in pretrain and "finetune_epochs" not in pretrain and pretrain["lr"] == 0.1
    longer = dataclasses.replace(config, finetune_epochs=50)
    assert experiment.run_identity(longer, stage="pretrain", method="a") == pretrain
    assert experiment.run_identity(longer, stage="finetune", method="a") != experiment.run_identity(
        config, stage="finetune", method="a"
    )


def test_a_choice_may_not_shadow_a_training_setting():
    with pytest.raises(ValueError, match=r"\['lr'\] are also training settings"):
        experiment.run_identity(Toy(), lr=0.5)


def test_jobs_name_their_variant_and_read_their_choices():
    item = experiment.job("main", 2, method="ccl", fraction=0.1)
    assert item.method == "ccl" and item.fraction == 0.1 and item.variant == "ccl/0.1"
    assert str(item) == "main: method ccl, fraction 0.1, seed 2"
    with pytest.raises(AttributeError, match="no choice 'backbone'"):
        item.backbone
    jobs = experiment.product("main", [0, 1], backbone=["r18", "r50"], method=["a", "b"])
    assert [(j.backbone, j.method, j.seed) for j in jobs[:3]] == [("r18", "a", 0), ("r18", "a", 1), ("r18", "b", 0)]
    assert len(jobs) == 8 and len({hash(j) for j in jobs}) == 8
    again = experiment.product("ablation", [0], backbone=["r18"], method=["a", "c"])
    kept = experiment.unique(jobs + again)
    assert len(kept) == 9 and kept[-1].experiment == "ablation" and kept[-1].method == "c"


def test_run_once_writes_a_record_with_its_run_folder(tmp_path):
    seen: list[RunContext] = []

    def train(run: RunContext) -> experiment.RunOutput:
        seen.append(run)
        return experiment.RunOutput(metrics={"accuracy": 0.5}, artifacts={"m": [[1]]})

    kwargs = dict(
        chapter="demo_chapter", profile="smoke", job=experiment.job("main", 1, method="a", size=3),
        params={"lr": 0.1, "method": "a"}, dataset={"kind": "synthetic"}, device=torch.device("cpu"), train=train,
        runs_root=tmp_path / "runs", results_root=tmp_path / "results",
    )
    first = experiment.run_once(**kwargs)
    second = experiment.run_once(**kwargs)
    assert seen[0].run_dir == seen[1].run_dir and seen[0].run_dir.parent == tmp_path / "runs" / "smoke" / "demo_chapter"
    assert seen[0].seed == 1 and seen[0].fingerprint == seen[1].fingerprint
    assert first["metrics"] == {"accuracy": 0.5} and first["timing"]["wall_s"] >= 0
    assert first["variant"] == "a/3" and not first["run_dir"].startswith("/")
    assert results.run_folder(first, root=tmp_path / "runs") == seen[0].run_dir
    assert len(results.load(root=tmp_path / "results")) == 1 and second["run"] == first["run"]
    other = experiment.run_once(**{**kwargs, "params": {"lr": 0.2, "method": "a"}})
    assert other["run_dir"] != first["run_dir"]


def test_a_record_refuses_an_absolute_run_folder():
    with pytest.raises(ValueError, match="relative to the runs root"):
        results.make_record(
            chapter="c", profile="smoke", experiment="e", variant="v", seed=0, metrics={}, params={},
            dataset={}, environment={}, run_dir="/abs/path",
        )
