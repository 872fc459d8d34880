"""Chapter 4's paper profile end to end: the notebook executed at ``profile="paper"`` on REFUGE and
Drishti-GS fixtures written in their official layouts, at tiny sizes; and its settings-fit check, which
stops the notebook at its data cell when the settings ask for more images than a split holds."""

from __future__ import annotations

import json

import papermill
import pytest

from medlab import notebooks, results

SIZES = {"n_source_train": 5, "n_source_test": 3, "n_target_train": 10, "n_target_test": 3}  # the fixtures' splits
TINY = {
    "image_size": 32, "widths": "4,8,16", "batch_size": 2, "selection_epochs": 1, "cross_ramp_epochs": 1,
    "methods": "single,coteaching,cross_denoise", "clean_methods": "single", "rate_methods": "single",
    "axis_seeds": "0", "kind_methods": "single", "workers": 1, "num_workers": 0,
}


@pytest.fixture(name="fundus_fixtures")
def _fundus_fixtures(tmp_path):
    from test_data_drishti_gs import write_drishti
    from test_data_refuge import write_refuge

    refuge = tmp_path / "REFUGE"
    write_refuge(refuge)
    return refuge, write_drishti(tmp_path)


def test_chapter_4_paper_profile_runs_on_the_official_layouts(fundus_fixtures, isolated):
    refuge, drishti = fundus_fixtures
    parameters = {
        "data_dir": str(refuge), "target_data_dir": str(drishti), "seeds": "0", "epochs": 2, "noise_rates": "0.25",
        "overrides": {**TINY, **SIZES},
    }
    source = notebooks.find_chapter("cross_denoise")
    notebooks.execute(source, isolated / "paper.ipynb", profile="paper", parameters=parameters)
    frame = results.load(chapter="cross_denoise", profile="paper", root=isolated / "results")
    runs = frame[frame["experiment"] != "throughput"]
    # main: 3 methods; clean and noise_rate (25%): the single network; noise_kind: the five kinds at 50%
    assert sorted(runs["experiment"].value_counts().items()) == [("clean", 1), ("main", 3), ("noise_kind", 5), ("noise_rate", 1)]
    assert set(runs["dataset"]) == {"real"} and set(runs["params.data_dir"]) == {str(refuge)}
    assert set(runs["metrics.n_eval"]) == {3.0} and set(runs["metrics.source/n_eval"]) == {3.0}
    verdicts = json.loads((isolated / "results" / "paper" / "cross_denoise" / "comparisons.json").read_text())
    main = next(v for v in verdicts if v["main"])
    assert main["name"] == "peer selection vs single network" and main["verdict"] == "void"  # one seed: no interval
    assert "no interval" in main["reason"]


def test_the_notebook_stops_at_its_data_cell_when_a_split_is_smaller_than_the_settings(fundus_fixtures, isolated):
    refuge, drishti = fundus_fixtures
    parameters = {
        "data_dir": str(refuge), "target_data_dir": str(drishti), "seeds": "0", "epochs": 1,
        "overrides": {**TINY, **SIZES, "n_target_test": 51},  # the paper's Drishti-GS test split, not the fixture's 3
    }
    source = notebooks.find_chapter("cross_denoise")
    with pytest.raises(papermill.PapermillExecutionError, match="n_target_test=51"):
        notebooks.execute(source, isolated / "paper.ipynb", profile="paper", parameters=parameters)
    assert not list((isolated).glob("runs/paper/cross_denoise/*"))  # no run started
