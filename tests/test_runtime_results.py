"""Profiles, devices, settings overrides and results records."""

from __future__ import annotations

import json
import multiprocessing as mp
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch

from medlab import results, runtime


def test_profile_comes_from_parameter_then_environment_then_demo(monkeypatch):
    monkeypatch.delenv("MEDLAB_PROFILE", raising=False)
    assert runtime.resolve_profile() == "demo"
    monkeypatch.setenv("MEDLAB_PROFILE", "smoke")
    assert runtime.resolve_profile() == "smoke"
    assert runtime.resolve_profile("paper") == "paper"


def test_unknown_profile_is_named(monkeypatch):
    with pytest.raises(
        ValueError, match=r"unknown profile 'fast' \(from the profile parameter\).*smoke, demo, paper"
    ):
        runtime.resolve_profile("fast")
    monkeypatch.setenv("MEDLAB_PROFILE", "huge")
    with pytest.raises(ValueError, match=r"'huge' \(from \$MEDLAB_PROFILE\)"):
        runtime.resolve_profile()


def test_device_choice(monkeypatch):
    monkeypatch.delenv("MEDLAB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else None
    assert runtime.choose_device("cpu") == torch.device("cpu")
    if expected is None and not torch.backends.mps.is_available():
        assert runtime.choose_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        runtime.choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda.*not available|is_available\\(\\) is False"):
            runtime.choose_device("cuda")
    monkeypatch.setenv("MEDLAB_DEVICE", "cpu")
    assert runtime.choose_device() == torch.device("cpu")


@dataclass(frozen=True)
class _Settings:
    epochs: int
    lr: float
    seeds: tuple[int, ...]
    backbones: tuple[str, ...]
    pretrained: bool


_PROFILES = {
    p: _Settings(epochs=i + 1, lr=0.1, seeds=(0,), backbones=("a",), pretrained=False)
    for i, p in enumerate(runtime.PROFILES)
}


def test_settings_overrides_are_typed():
    s = runtime.settings_for(
        _PROFILES, "demo", epochs="7", lr=None, seeds="0, 1,2", backbones="x,y", pretrained="true"
    )
    assert s == _Settings(epochs=7, lr=0.1, seeds=[0, 1, 2], backbones=("x", "y"), pretrained=True)
    assert runtime.settings_for(_PROFILES, "smoke").epochs == 1


def test_unknown_setting_is_named():
    with pytest.raises(ValueError, match=r"unknown setting 'epoch'.*epochs"):
        runtime.settings_for(_PROFILES, "demo", epoch=3)
    with pytest.raises(ValueError, match="seeds 'a,b'"):
        runtime.parse_seeds("a,b")


def test_environment_record_has_provenance():
    env = runtime.environment_record(torch.device("cpu"))
    assert torch.__version__.startswith(env["packages"]["torch"])
    assert env["device"]["type"] == "cpu" and len(env["code_fingerprint"]) == 16


def _record(tmp_path, seed, value, variant="ccl", experiment="main", params=None):
    return results.write_record(
        chapter="demo_chapter",
        profile="smoke",
        experiment=experiment,
        variant=variant,
        seed=seed,
        metrics={"accuracy": value, "ece": np.float32(0.1)},
        params=params or {"lr": 0.1, "backbone": "r18"},
        dataset={"kind": "synthetic"},
        environment={"git": {"commit": "abc"}, "device": {"name": "cpu"}},
        timing={"wall_s": 1.5},
        history=[{"epoch": 1, "train/loss": 1.0}],
        artifacts={"matrix": np.eye(2)},
        root=tmp_path,
    )


def test_record_roundtrip_and_table(tmp_path):
    for seed, value in enumerate([0.7, 0.8, 0.9]):
        _record(tmp_path, seed, value)
    _record(tmp_path, 0, 0.5, variant="hard")
    frame = results.load(chapter="demo_chapter", root=tmp_path)
    assert len(frame) == 4 and {"metrics.accuracy", "params.lr", "timing.wall_s", "commit"} <= set(
        frame.columns
    )
    table = results.summarize(frame, ["accuracy"], by=("variant",))
    assert table.loc["ccl", "accuracy"] == "0.800 ± 0.100"
    assert table.loc["ccl", "n"] == 3 and table.loc["hard", "accuracy"] == "0.500"
    assert (
        results.summarize(frame, ["accuracy"], by=("variant",), percent=["accuracy"]).loc["ccl", "accuracy"]
        == "80.0 ± 10.0"
    )
    record = json.loads(
        next((tmp_path / "smoke" / "demo_chapter").glob("main__ccl__seed0__*.json")).read_text()
    )
    assert record["artifacts"]["matrix"] == [[1.0, 0.0], [0.0, 1.0]] and record["history"][0]["epoch"] == 1


def test_rerun_replaces_its_own_record_and_other_params_do_not(tmp_path):
    _record(tmp_path, 0, 0.1)
    _record(tmp_path, 0, 0.2)
    _record(tmp_path, 0, 0.3, params={"lr": 0.5, "backbone": "r18"})
    frame = results.load(root=tmp_path)
    assert sorted(frame["metrics.accuracy"]) == [0.2, 0.3]


def _write_many(args):
    root, worker = args
    for seed in range(10):
        _record(root, seed, worker / 10, variant=f"w{worker}")


def test_parallel_writers_never_collide(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_write_many, [(tmp_path, w) for w in range(4)])
    frame = results.load(root=tmp_path)
    assert len(frame) == 40 and frame.groupby("variant").size().tolist() == [10] * 4
    assert not list(tmp_path.rglob("*.tmp"))


def test_bad_record_inputs(tmp_path):
    with pytest.raises(TypeError, match="metrics must be numbers.*confusion"):
        results.write_record(
            chapter="c",
            profile="smoke",
            experiment="e",
            variant="v",
            seed=0,
            metrics={"confusion": [[1]]},
            params={},
            dataset={},
            environment={},
            root=tmp_path,
        )
    with pytest.raises(ValueError, match="unknown profile 'quick'"):
        results.write_record(
            chapter="c",
            profile="quick",
            experiment="e",
            variant="v",
            seed=0,
            metrics={},
            params={},
            dataset={},
            environment={},
            root=tmp_path,
        )
    broken = tmp_path / "smoke" / "c" / "x.json"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    with pytest.raises(ValueError, match=r"x.json is not valid JSON"):
        results.load(root=tmp_path)
    with pytest.raises(ValueError, match="no results records"):
        results.summarize(pd.DataFrame(), ["accuracy"])


def test_mean_std_format():
    assert results.format_mean_std([1.0, 2.0, 3.0], digits=2) == "2.00 ± 1.00"
    assert results.format_mean_std([float("nan")]) == "n/a"


def test_markdown_table():
    frame = pd.DataFrame({"a": [1, 2], "b": ["x|y", "z"]}, index=["r1", "r2"])
    text = results.markdown_table(frame)
    assert text.splitlines()[0] == "| index | a | b |" and "x\\|y" in text


def test_bench_records(tmp_path):
    env = {"device": {"type": "cpu", "name": "x86_64", "threads": 2}, "git": {"commit": "0123456789abc"}}
    results.write_bench(
        "ccl",
        "smoke",
        {"wall_s": 12.0, "budget_s": 60, "within_budget": True, "environment": env},
        root=tmp_path,
    )
    results.write_bench(
        "ccl",
        "smoke",
        {"wall_s": 11.0, "budget_s": 60, "within_budget": True, "environment": env},
        root=tmp_path,
    )
    frame = results.load_bench(root=tmp_path)
    assert len(frame) == 1 and frame.loc[0, "wall_s"] == 11.0 and frame.loc[0, "commit"] == "0123456789"


def test_resource_card_lists_every_profile(tmp_path):
    env = {"device": {"type": "cpu", "name": "x86_64", "threads": 2}, "git": {"commit": "0123456789abc"}}
    record = {"wall_s": 587.0, "budget_s": 900, "train_samples_per_s": 318.4, "peak_memory_mb": 993.0}
    results.write_bench("ccl", "demo", {**record, "runs": 27, "environment": env}, root=tmp_path)
    card = results.resource_card("ccl", root=tmp_path)
    assert list(card.index) == ["smoke", "demo", "paper"]
    assert card.loc["smoke", "device"] == "not measured yet"
    demo = card.loc["demo"]
    assert demo["wall time"] == "9.8 min" and demo["training samples/s"] == "318"
    assert demo["peak memory"] == "1.0 GiB" and demo["runs"] == "27"  # a count, never "27.0"


def test_git_provenance_ignores_outputs(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "medlab").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "medlab" / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "r.json").write_text("{}\n")
    (tmp_path / "chapter.ipynb").write_text("{}\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert runtime.git_commit(tmp_path)["dirty"] is False
    (tmp_path / "results" / "r.json").write_text('{"a": 1}\n')
    (tmp_path / "chapter.ipynb").write_text('{"cells": []}\n')
    assert runtime.git_commit(tmp_path)["dirty"] is False  # outputs do not count
    (tmp_path / "medlab" / "code.py").write_text("x = 2\n")
    assert runtime.git_commit(tmp_path)["dirty"] is True
    assert runtime.git_commit(tmp_path / "medlab") is not None
