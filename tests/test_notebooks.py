"""Every chapter: its .py/.ipynb pair in sync, its parameters, its committed demo outputs current, and a
full execution at the smoke profile (the CI contract: MEDLAB_PROFILE=smoke, no injected parameters)."""

from __future__ import annotations

import ast
import json
import re

import jupytext
import nbformat
import pytest
import yaml

from medlab import notebooks, results
from medlab.runtime import project_root

ROOT = project_root()
CHAPTERS = notebooks.chapters(ROOT)
IDS = [source.stem for source in CHAPTERS]


def test_there_are_chapters():
    assert CHAPTERS and CHAPTERS[0].name == "01_ccl.py"


@pytest.mark.parametrize("source", CHAPTERS, ids=IDS)
def test_pair_is_in_sync(source):
    pair = notebooks.pair_path(source)
    assert pair.exists(), f"{pair} is missing: run jupytext --sync {source}"
    a, b = jupytext.read(source), jupytext.read(pair)
    cells_a = [(c.cell_type, c.source.strip()) for c in a.cells]
    cells_b = [(c.cell_type, c.source.strip()) for c in b.cells]
    assert cells_a == cells_b, f"{source} and {pair} differ: run jupytext --sync {source}"


@pytest.mark.parametrize("source", CHAPTERS, ids=IDS)
def test_parameters_follow_the_profile_contract(source):
    names = notebooks.notebook_parameters(source)
    assert names[0] == "profile" and {"data_dir", "device", "seeds", "overrides"} <= set(names)
    cell = next(c for c in jupytext.read(source).cells if "parameters" in c.metadata.get("tags", []))
    assert 'os.environ.get("MEDLAB_PROFILE", "demo")' in cell.source


@pytest.mark.parametrize("source", CHAPTERS, ids=IDS)
def test_committed_demo_outputs_come_from_the_current_code(source):
    pair = notebooks.pair_path(source)
    meta = notebooks.executed_metadata(pair)
    assert meta.get("profile") == "demo", f"{pair} holds no demo execution: run make book"
    assert notebooks.is_current(source, pair, "demo"), (
        f"{pair} is older than its inputs: run make book and commit it"
    )
    executed = nbformat.read(pair, as_version=4)
    errors = [
        o
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert not errors


@pytest.mark.parametrize("source", CHAPTERS, ids=IDS)
def test_notebooks_use_only_the_public_package(source):
    tree = ast.parse(source.read_text())
    allowed = {
        "medlab",
        "medlab.data",
        "medlab.engine",
        "medlab.metrics",
        "medlab.results",
        "medlab.plots",
        "medlab.runtime",
        "medlab.experiment",
        "medlab.papers",
    }
    # the data package's generators and readers are public modules too (no private ones)
    public_data = ("medlab.data.synth.", "medlab.data.formats.")

    def is_public(module: str) -> bool:
        parts = module.split(".")
        return module in allowed or (module.startswith(public_data) and not any(p.startswith("_") for p in parts))

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medlab"):
            assert is_public(node.module), f"{source.name} imports from {node.module}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("medlab"):
                    assert alias.name in allowed or alias.name.startswith("medlab.papers."), (
                        f"{source.name} imports {alias.name}"
                    )


def _imports_medlab(code: str) -> bool:
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "medlab":
            return True
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "medlab" for a in node.names):
            return True
    return False


@pytest.mark.parametrize("source", CHAPTERS, ids=IDS)
def test_the_install_cell_comes_before_any_medlab_import(source):
    """Colab's "Run all" in a runtime without medlab: the first code cell installs it."""
    cells = [c for c in jupytext.read(source).cells if c.cell_type == "code"]
    first = cells[0].source
    assert "find_spec(\"medlab\")" in first and "pip" in first and not _imports_medlab(first), (
        f"{source.name}: the first code cell must install medlab when it is missing"
    )
    assert "MEDLAB_PACKAGE" in first  # where it installs from can be overridden (a local wheel)


ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:home|root|work|tmp|Users|mnt|private|var/folders)/[\w.-]+")


def test_no_committed_notebook_or_record_holds_a_path_of_the_machine_that_made_it():
    offenders = []
    files = [notebooks.pair_path(s) for s in CHAPTERS] + sorted((ROOT / "results").rglob("*.json"))
    files += sorted((ROOT / "medlab" / "resources").rglob("*.json"))
    for path in files:
        for match in ABSOLUTE_PATH.finditer(path.read_text()):
            offenders.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert not offenders, "absolute paths in committed outputs:\n" + "\n".join(offenders[:20])


def test_the_path_scan_finds_what_it_should():
    assert ABSOLUTE_PATH.search('"/work/main/runs/demo/ccl" was made') and ABSOLUTE_PATH.search("C /tmp/x")
    assert not ABSOLUTE_PATH.search("https://github.com/home/x") and not ABSOLUTE_PATH.search("runs/demo/tmp")


@pytest.mark.parametrize("source", CHAPTERS, ids=IDS)
def test_colab_install_points_at_the_books_repository(source):
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert f"git+{url}" in source.read_text(), f"{source.name} must install medlab from {url}"


@pytest.mark.parametrize("source", CHAPTERS, ids=IDS)
def test_chapter_runs_at_the_smoke_profile(source, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    output = tmp_path / f"{source.stem}.ipynb"
    record = notebooks.execute(source, output, profile="smoke")
    executed = nbformat.read(output, as_version=4)
    assert executed.metadata["medlab"]["profile"] == "smoke" and record["wall_s"] > 0
    assert not any(c.metadata.get("tags") == ["injected-parameters"] for c in executed.cells)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the chapter drew no figure"
    slug = notebooks.slug_of(source)
    frame = results.load(chapter=slug, profile="smoke", root=tmp_path / "results")
    metric_columns = [c for c in frame.columns if c.startswith("metrics.")]
    assert len(frame) > 0 and metric_columns
    assert frame[metric_columns].notna().any(axis=1).all(), "a run recorded no metric"
    record_file = next((tmp_path / "results" / "smoke" / slug).glob("*.json"))
    stored = json.loads(record_file.read_text())
    assert stored["environment"]["packages"]["torch"] and stored["dataset"]["kind"] == "synthetic"


def test_chapter_1_paper_profile_runs_on_the_official_layout(tmp_path, monkeypatch, write_isic):
    """The real-data path of chapter 1 end to end, on a tiny ISIC 2018 fixture (no download: no ImageNet weights)."""
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    data_dir = tmp_path / "isic2018"
    write_isic(data_dir, "Training", labels=[k for k in range(7) for _ in range(3)])
    write_isic(data_dir, "Validation", labels=list(range(7)))
    write_isic(data_dir, "Test", labels=list(range(7)))
    source = notebooks.find_chapter("ccl")
    parameters = {
        "data_dir": str(data_dir), "seeds": "0", "epochs": 1, "backbones": "resnet18",
        "overrides": {"image_size": 32, "pretrained": False, "batch_size": 8, "ablation_backbone": "resnet18", "workers": 1},
    }
    notebooks.execute(source, tmp_path / "paper.ipynb", profile="paper", parameters=parameters)
    frame = results.load(chapter="ccl", profile="paper", root=tmp_path / "results")
    assert len(frame) == 5 and set(frame["dataset"]) == {"real"}  # 3 methods + 2 ablation rows (no oracle on real data)
    assert "metrics.ccl_correlation_spearman" not in frame
