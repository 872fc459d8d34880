"""The shared reader of development studies (medlab.development) on hand-made records."""

import json

import pytest

from medlab import development, results


def _write(root, study, experiment, seed, history=None):
    """A record at ``<root>/<study>/<run>.json``, as the studies ship."""
    record = results.make_record( chapter="x", profile="demo", experiment=experiment, variant="v", seed=seed,
        metrics={"score": 0.5 + seed}, params={"lr": 0.1}, dataset={"kind": "synthetic"}, environment={},
        history=history or [],
    )
    (root / study).mkdir(exist_ok=True)
    (root / study / f"{record['run']}.json").write_text(json.dumps(record))


def test_load_studies_and_histories_name_each_study(tmp_path):
    _write(tmp_path, "a", "pretrain", 0, history=[{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0}])
    _write(tmp_path, "b", "finetune", 1)
    frame = development.load_studies("x", tmp_path)
    assert sorted(frame["study"]) == ["a", "b"] and frame["metrics.score"].tolist() == [0.5, 1.5]
    histories = development.load_histories("x", tmp_path)
    assert histories[["study", "epoch", "loss"]].values.tolist() == [["a", 1, 2.0], ["a", 2, 1.0]]


def test_load_studies_names_the_folder_at_fault(tmp_path):
    with pytest.raises(FileNotFoundError, match="no development studies"):
        development.load_studies("x", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty holds no results records"):
        development.load_studies("x", tmp_path)
    with pytest.raises(FileNotFoundError, match="no development records with a history"):
        development.load_histories("x", tmp_path)


def test_study_cli_runs_each_named_study_and_prepare_study_points_the_folders(tmp_path, monkeypatch):
    calls = []
    development.study_cli("d", ["a", "b"], lambda *args: calls.append(args), ["b", "a", "--root", str(tmp_path), "--device", "cpu"])
    assert calls == [("b", str(tmp_path), "cpu"), ("a", str(tmp_path), "cpu")]
    with pytest.raises(SystemExit):
        development.study_cli("d", ["a"], lambda *args: None, ["zzz", "--root", str(tmp_path)])
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", "unchanged")
    monkeypatch.setenv("MEDLAB_RUNS_DIR", "unchanged")
    assert development.prepare_study("a", tmp_path, "cpu").type == "cpu"
    assert results.results_root() == tmp_path / "a" / "results" and results.runs_root() == tmp_path / "a" / "runs"


def test_run_study_runs_the_jobs_of_the_named_chapter_in_the_study_folders(tmp_path, monkeypatch):
    from medlab import experiment
    from medlab.papers import c2l

    calls = []
    monkeypatch.setattr(experiment, "run_grid", lambda chapter, config, **kw: calls.append((chapter, config, kw)) or ["record"])
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", "unchanged")
    monkeypatch.setenv("MEDLAB_RUNS_DIR", "unchanged")
    assert development.run_study("c2l", "settings", ["job"], "s", tmp_path, "cpu") == ["record"]
    ((chapter, config, kw),) = calls
    assert chapter is c2l and config == "settings" and kw["jobs"] == ["job"] and kw["profile"] == "demo"
    assert results.results_root() == tmp_path / "s" / "results"
