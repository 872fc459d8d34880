"""The command line, parameter handling, the grid runner and the packaging."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
import torch

from medlab import cli, experiment, notebooks, results
from medlab.runtime import project_root

ROOT = project_root()
CCL = ROOT / "notebooks" / "01_ccl.py"


def test_parse_value():
    assert notebooks.parse_value("3") == 3 and notebooks.parse_value("0.5") == 0.5
    assert notebooks.parse_value("true") is True and notebooks.parse_value("null") is None
    assert notebooks.parse_value("0,1,2") == "0,1,2" and notebooks.parse_value("/data/isic") == "/data/isic"


def test_unknown_parameters_go_into_overrides():
    split = notebooks.split_parameters(
        CCL, {"seeds": "0,1", "lambda_cc": 4.0, "overrides": {"soft_temperature": 0.5}}
    )
    assert split == {"seeds": "0,1", "overrides": {"soft_temperature": 0.5, "lambda_cc": 4.0}}


def test_find_chapter_by_number_slug_or_path():
    assert notebooks.find_chapter("1") == notebooks.find_chapter("ccl") == notebooks.find_chapter("01_ccl.py")
    assert notebooks.find_chapter(str(CCL)) == CCL
    assert notebooks.find_chapter("3") == notebooks.find_chapter("rubik")
    listed = ", ".join(source.stem for source in notebooks.chapters())
    with pytest.raises(ValueError, match=rf"unknown chapter 'no_such_paper'; chapters: {listed}$"):
        notebooks.find_chapter("no_such_paper")


def test_cli_reports_bad_input_with_exit_code_2(capsys):
    assert cli.main(["run", "nope", "--profile", "smoke"]) == 2
    assert "unknown chapter 'nope'" in capsys.readouterr().err
    assert cli.main(["run", "ccl", "--profile", "fast"]) == 2
    assert "unknown profile 'fast'" in capsys.readouterr().err


def test_cli_data_list_and_check(tmp_path, capsys, write_isic):
    assert cli.main(["data", "list"]) == 0
    assert "isic2018" in capsys.readouterr().out
    write_isic(tmp_path)
    assert cli.main(["data", "check", "isic2018", str(tmp_path), "--decode"]) == 0
    out = capsys.readouterr().out
    assert "train    : 5 samples" in out and "test     : not available" in out
    assert cli.main(["data", "check", "isic2018", str(tmp_path / "missing")]) == 0
    assert "does not exist" in capsys.readouterr().out


def test_sweep_grid_is_a_cartesian_product():
    points = cli._grid(["lambda_cc=1,4", "seeds=0,1,2"])
    assert len(points) == 6 and points[0] == {"lambda_cc": 1, "seeds": 0}
    with pytest.raises(SystemExit, match="expected name=value1,value2"):
        cli._grid(["lambda_cc"])


def test_auto_workers():
    assert experiment.auto_workers(torch.device("cuda"), 10)[0] == 1
    workers, threads = experiment.auto_workers(torch.device("cpu"), 10)
    assert 1 <= workers <= 4 and threads >= 1
    assert experiment.auto_workers(torch.device("cpu"), 1)[0] == 1
    workers, threads = experiment.auto_workers(torch.device("cpu"), 10, workers=1)  # fixed by a setting
    assert workers == 1 and threads == (os.cpu_count() or 1)


def square_job(job: int, *, offset: int) -> dict:
    """A module-level job for the grid runner (picklable for worker processes)."""
    return {"job": job, "value": job * job + offset, "threads": torch.get_num_threads()}


def failing_job(job: int) -> dict:
    if job == 1:
        raise ValueError("bad job")
    return {"job": job}


@pytest.mark.parametrize("workers", [1, 2])
def test_run_grid_returns_records_in_job_order(workers, capsys):
    records = experiment.run_jobs(square_job, [3, 1, 2], workers=workers, threads=1, offset=10)
    assert [r["value"] for r in records] == [19, 11, 14]
    if workers == 2:
        assert all(r["threads"] == 1 for r in records)
    assert "[3/3]" in capsys.readouterr().out


def test_run_grid_names_the_failing_job():
    with pytest.raises(RuntimeError, match="run 1 failed: ValueError: bad job"):
        experiment.run_jobs(failing_job, [0, 1, 2], workers=2, threads=1)


def _requirement_names(lines):
    return {
        re.split(r"[<>=!~ \[]", line.strip())[0].lower(): line.strip().replace(" ", "")
        for line in lines
        if line.strip() and not line.startswith("#")
    }


def test_requirements_are_ranges_and_agree_with_pyproject():
    requirements = _requirement_names((ROOT / "requirements.txt").read_text().splitlines())
    assert not [r for r in requirements.values() if "==" in r], "requirements must be ranges, not pins"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _requirement_names(
        project["dependencies"]
        + sum((deps for extra, deps in project["optional-dependencies"].items() if extra != "lab"), [])
    )
    for name, spec in declared.items():
        if name == "medlab":  # an extra that includes another extra
            continue
        assert requirements.get(name) == spec, (
            f"pyproject says {spec}, requirements.txt says {requirements.get(name)}"
        )
    assert project["scripts"]["medlab"] == "medlab.cli:main"
    core = _requirement_names(project["dependencies"])
    tooling = {"papermill", "jupytext", "nbclient", "nbformat", "ipykernel", "jupyter-book", "pytest", "nbmake", "submitit"}
    assert not tooling & set(core), "notebook, book and test tooling belong in extras, not core dependencies"


FAILING_CHAPTER = """# %% tags=["parameters"]
import os

profile = os.environ.get("MEDLAB_PROFILE", "demo")

# %%
print("profile is", profile)
raise RuntimeError("a cell fails")
"""


def test_a_failed_execution_keeps_the_previous_outputs(tmp_path):
    import papermill

    source = tmp_path / "99_broken.py"
    source.write_text(FAILING_CHAPTER)
    output = tmp_path / "99_broken.ipynb"
    output.write_text("previous outputs")
    with pytest.raises(papermill.PapermillExecutionError, match="a cell fails"):
        notebooks.execute(source, output, profile="smoke")
    assert output.read_text() == "previous outputs"
    failed = tmp_path / "99_broken.failed.ipynb"
    assert failed.exists() and "profile is smoke" in failed.read_text()
