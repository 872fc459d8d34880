"""Chapter 7's paper profile end to end: the notebook executed at ``profile="paper"`` on a tiny BraTS 2018
release written in its official layout, at tiny sizes; and the settings-fit check."""

from __future__ import annotations

import json

import pytest

from medlab import notebooks, results
from medlab.papers import tc_mgan as tc

TINY = {
    "image_size": 16, "width": 4, "critic_width": 4, "batch_size": 4, "seg_widths": [4, 8], "seg_epochs": 1,
    "judge_widths": [4, 8], "judge_epochs": 1, "downstream_epochs": 1, "side_methods": ["no_cls"], "workers": 1, "num_workers": 0,
}


@pytest.fixture(name="isolated")
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path


def test_chapter_7_paper_profile_runs_on_the_brats_2018_layout(isolated):
    from test_data_brain_slices import write_release

    data_dir = isolated / "MICCAI_BraTS_2018_Data_Training"
    write_release(data_dir, cases=7)
    parameters = {"data_dir": str(data_dir), "seeds": "0", "epochs": 1, "overrides": TINY}
    notebooks.execute(notebooks.find_chapter("tc_mgan"), isolated / "paper.ipynb", profile="paper", parameters=parameters)
    frame = results.load(chapter="tc_mgan", profile="paper", root=isolated / "results")
    assert sorted(frame["experiment"].value_counts().items()) == [("ablation", 1), ("comparison", 3), ("downstream", 4), ("segmentors", 2)]
    assert set(frame["dataset"]) == {"real"} and set(frame["params.data_dir"]) == {str(data_dir)}
    runs = frame[frame["experiment"].isin(["comparison", "ablation"])]
    assert runs["metrics.dice"].notna().all() and (runs["metrics.n_eval"] > 0).all()
    verdicts = json.loads((isolated / "results" / "paper" / "tc_mgan" / "comparisons.json").read_text())
    main = next(v for v in verdicts if v["main"])
    assert main["metric"] == "dice_share" and main["verdict"] == "void"  # one seed: no interval


def test_settings_that_do_not_fit_the_real_data_fail_before_training(tmp_path):
    from test_data_brain_slices import write_release

    write_release(tmp_path, cases=7)
    with pytest.raises(ValueError, match="fewer than one batch"):
        tc.check_data(tc.settings("paper", **{**TINY, "batch_size": 100000}), tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        tc.check_data(tc.settings("paper", **TINY), tmp_path / "nowhere")
