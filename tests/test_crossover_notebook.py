"""Chapter 5 end to end on real-format fixtures: the notebook at the paper profile on a tiny KiTS19
release, and the settings checked against each real dataset before any training starts."""

from __future__ import annotations

import pytest

from medlab import notebooks, results
from medlab.data.formats import acdc, inbreast, kits19
from medlab.papers import crossover as cx
from medlab.runtime import project_root

SOURCE = project_root() / "notebooks" / "05_crossover.py"
TINY = {
    "image_size": 32, "trunk": "small", "n_val": 2, "max_centres": 256, "batch_size": 64, "unet_widths": [4, 8],
    "unet_epochs": 1, "unet_batch_size": 4, "workers": 1, "num_workers": 0, "closing_radius": 1,
}


def test_paper_profile_runs_on_the_official_kits19_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    data_dir = tmp_path / "kits19" / "data"
    kits19.write_fixture(data_dir, cases=6, unlabelled=1, slices=6, size=48)
    parameters = {"data_dir": str(data_dir), "seeds": "0", "epochs": 1, "overrides": {**TINY, "side_methods": ["vertical"]}}
    notebooks.execute(SOURCE, tmp_path / "paper.ipynb", profile="paper", parameters=parameters)
    frame = results.load(chapter="crossover", profile="paper", root=tmp_path / "results")
    runs = frame[frame["experiment"] != "throughput"]
    assert sorted(runs["params.method"]) == ["ce_only", "crossover", "unet", "vertical"]
    assert set(runs["dataset"]) == {"real"} and runs["metrics.dice"].notna().all()
    assert (tmp_path / "results" / "paper" / "crossover" / "comparisons.json").exists()


@pytest.mark.parametrize("task, writer, options", [("myocardium", acdc.write_fixture, {}), ("mass", inbreast.write_fixture, {})])
def test_the_other_tasks_load_and_fit_their_settings(tmp_path, task, writer, options):
    root = tmp_path / task
    writer(root, 7, **options)
    config = cx.settings("paper", task=task, **TINY)
    cx.check_data(config, root)
    data = cx.load_data(config, root)
    assert data.info["kind"] == "real" and data.task.fill_holes == (task != "myocardium")


def test_settings_that_do_not_fit_the_real_data_fail_before_training(tmp_path):
    data_dir = tmp_path / "kits19"
    kits19.write_fixture(data_dir, cases=6, unlabelled=0, slices=6, size=48)
    with pytest.raises(ValueError, match="fewer than one batch"):
        cx.check_data(cx.settings("paper", **{**TINY, "batch_size": 100000}), data_dir)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cx.check_data(cx.settings("paper", **TINY), tmp_path / "nowhere")
