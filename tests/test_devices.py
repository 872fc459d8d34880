"""Every chapter's smoke grid on each available device, twice: the second pass resumes every run from
its final checkpoint. On a CUDA machine this covers loading checkpoints onto the GPU (a resume there
once failed on the generators' states); without one, the CUDA cases are skipped."""

from __future__ import annotations

import importlib

import pytest
import torch

from medlab import experiment, notebooks

SLUGS = [notebooks.slug_of(source) for source in notebooks.chapters()]
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slug", SLUGS)
def test_smoke_grid_runs_and_resumes_on_the_device(slug, device, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MEDLAB_PROGRESS", "0")
    chapter = importlib.import_module(f"medlab.papers.{slug}")
    config = chapter.settings("smoke", workers=1)
    first = experiment.run_grid(chapter, config, profile="smoke", device=torch.device(device))
    again = experiment.run_grid(chapter, config, profile="smoke", device=torch.device(device))
    assert first and [r["run"] for r in again] == [r["run"] for r in first]
    assert all(r["metrics"] for r in again)
    trained = [r["timing"] for r in again if r["timing"].get("epochs")]
    assert trained and all(t["resumed_from_epoch"] == t["epochs"] for t in trained)  # nothing trained twice
