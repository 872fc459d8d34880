"""Past one process: DistributedDataParallel training under torchrun (gloo on the CPU), and sweeps
submitted through submitit. These tests start real processes, so they take a minute or two."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from medlab import engine, notebooks, results, sweep
from medlab.runtime import project_root

ROOT = project_root()
TEMPLATE = ROOT / "notebooks" / "templates" / "00_template.py"


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    return TensorDataset(x, (x[:, 0] - x[:, 2] > 0).long())


def _model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))  # no batch norm


def _train(run_dir: Path, batch_size: int) -> nn.Module:
    model = _model()
    engine.fit(
        model, _data(), run=engine.RunContext(run_dir=run_dir, device=torch.device("cpu"), seed=11, progress=False),
        loss_fn=lambda m, b: {"loss": F.cross_entropy(m(b[0]), b[1])},
        optimizer=torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9), epochs=3, batch_size=batch_size,
    )
    return model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        model = _train(Path(folder) / "ddp", batch_size=16)  # 8 per process
        if rank == 0:
            torch.save(model.state_dict(), Path(folder) / "ddp.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_at_half_batch_end_where_one_process_at_full_batch_ends(tmp_path):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    one = _train(tmp_path / "one", batch_size=16).state_dict()
    two = torch.load(tmp_path / "ddp.pt", weights_only=True)
    for name in one:
        assert torch.allclose(one[name], two[name], atol=1e-5), name
    assert torch.load(tmp_path / "ddp" / engine.CHECKPOINT, weights_only=True)["world_size"] == 2


def _medlab(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "medlab.cli", *args], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "MEDLAB_PROGRESS": "0", **(env or {})}, timeout=600,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"medlab {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _folders(tmp_path: Path, name: str) -> dict[str, str]:
    return {"MEDLAB_RESULTS_DIR": str(tmp_path / name / "results"), "MEDLAB_RUNS_DIR": str(tmp_path / name / "runs")}


def test_medlab_run_with_two_processes_records_world_size_and_the_whole_test_set(tmp_path):
    env = _folders(tmp_path, "ccl")
    _medlab("run", "ccl", "--profile", "smoke", "--nproc", "2", "--train-only", "-p", "seeds", "0", env=env)
    frame = results.load(chapter="ccl", profile="smoke", root=env["MEDLAB_RESULTS_DIR"])
    from medlab.papers import ccl

    assert len(frame) == len(ccl.grid(ccl.settings("smoke")))
    assert (frame["timing.world_size"] == 2).all()
    assert (frame["metrics.n_eval"] == ccl.settings("smoke").n_test).all()  # every test image, once


def _template_metrics(env: dict) -> dict[str, float]:
    frame = results.load(chapter="template", profile="smoke", root=env["MEDLAB_RESULTS_DIR"])
    return dict(zip(frame["variant"], frame["metrics.accuracy"]))


def test_an_interrupted_two_process_run_resumes_to_the_same_metrics(tmp_path):
    args = ("run", str(TEMPLATE), "--profile", "smoke", "--nproc", "2", "--train-only", "-p", "epochs", "3")
    whole = _folders(tmp_path, "whole")
    _medlab(*args, env=whole)
    broken = _folders(tmp_path, "broken")
    failed = _medlab(*args, env={**broken, engine.INTERRUPT_AFTER_EPOCH: "2"}, check=False)
    assert failed.returncode != 0 and not _template_metrics(broken) if Path(broken["MEDLAB_RESULTS_DIR"]).exists() else True
    _medlab(*args, env=broken)
    assert _template_metrics(broken) == _template_metrics(whole) and len(_template_metrics(whole)) == 2
    frame = results.load(chapter="template", profile="smoke", root=broken["MEDLAB_RESULTS_DIR"])
    assert sorted(frame["timing.resumed_from_epoch"]) == [0, 2]  # the first run resumed after epoch 2


def test_a_local_sweep_keeps_going_past_a_failed_point_and_skips_done_points(tmp_path, monkeypatch):
    for key, value in _folders(tmp_path, "sweep").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MEDLAB_PROGRESS", "0")
    points = [{"epochs": e} for e in (1, 2, 0, 3)]  # epochs 0 is refused by the settings: that point fails
    outcome = sweep.run(TEMPLATE, "smoke", points, executor="local", parallel=2, time_min=10)
    assert [p.status for p in outcome] == ["done", "done", "failed", "done"]
    assert "epochs must be >= 1" in outcome[2].detail
    assert all(p.record.exists() for p in outcome if p.status == "done")
    assert json.loads(outcome[0].record.read_text())["parameters"] == {"epochs": 1}
    frame = results.load(chapter="template", profile="smoke")
    assert len(frame) == 3 * 2  # three points of two runs each: nothing lost
    again = sweep.run(TEMPLATE, "smoke", points, executor="local", parallel=2, time_min=10)
    assert [p.status for p in again] == ["skipped", "skipped", "failed", "skipped"]
    table = sweep.table(again)
    assert table.count("skipped") == 3 and "failed" in table
