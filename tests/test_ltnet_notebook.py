"""Chapter 6 end to end on a real-format fixture: the notebook at the paper profile on a tiny OASIS
release, and the settings checked against the real data before any training starts."""

from __future__ import annotations

import pytest

from medlab import notebooks, results
from medlab.data.formats import oasis
from medlab.papers import ltnet as lt
from medlab.runtime import project_root

SOURCE = project_root() / "notebooks" / "06_ltnet.py"
TINY = {
    "shape": [16, 16, 16], "channels": [4, 8, 8, 8, 8, 4], "seg_widths": [4, 8], "seg_steps": 2, "n_val": 1,
    "workers": 1, "num_workers": 0,
}


def test_paper_profile_runs_on_the_oasis_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    data_dir = tmp_path / "neurite-oasis"
    oasis.write_fixture(data_dir, subjects=8, shape=(20, 24, 28))
    parameters = {"data_dir": str(data_dir), "seeds": "0,1", "epochs": 1, "overrides": {**TINY, "side_methods": ["identity"], "side_seeds": [0]}}
    notebooks.execute(SOURCE, tmp_path / "paper.ipynb", profile="paper", parameters=parameters)
    frame = results.load(chapter="ltnet", profile="paper", root=tmp_path / "results")
    runs = frame[frame["experiment"] != "throughput"]
    assert sorted(runs["params.method"]) == ["identity", "ltnet", "ltnet", "oneway", "oneway"]
    assert set(runs["dataset"]) == {"real"} and runs["metrics.dice"].notna().all()
    assert runs["metrics.dice_label_35"].notna().all()  # the paper profile reads the 35 structures
    assert (tmp_path / "results" / "paper" / "ltnet" / "comparisons.json").exists()


def test_settings_that_do_not_fit_the_real_data_fail_before_training(tmp_path):
    data_dir = tmp_path / "oasis"
    oasis.write_fixture(data_dir, subjects=6, shape=(12, 12, 12))
    with pytest.raises(ValueError, match="fewer than one batch"):
        lt.check_data(lt.settings("paper", **{**TINY, "batch_size": 100}), data_dir)
    with pytest.raises(ValueError, match="is not among"):
        lt.check_data(lt.settings("paper", **{**TINY, "atlas": "0099"}), data_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lt.check_data(lt.settings("paper", **TINY), tmp_path / "nowhere")
