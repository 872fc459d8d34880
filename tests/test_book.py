"""The book: the generated benchmarks page, and an offline build from the committed chapters."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from medlab import book, results
from medlab.runtime import project_root

ROOT = project_root()


def _copy_book(target: Path) -> Path:
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, target / name)
    for name in ("book", "notebooks", "_static"):
        shutil.copytree(ROOT / name, target / name)
    (target / "medlab").mkdir()  # marks the folder as a checkout for project_root()
    (target / "results").mkdir()
    return target


def test_benchmarks_page_is_generated_from_records(tmp_path, monkeypatch):
    root = _copy_book(tmp_path)
    monkeypatch.setenv("MEDLAB_BENCH_DIR", str(root / "results" / "bench"))
    env = {"git": {"commit": "abcdef1234567"}, "device": {"type": "cpu", "name": "x86_64", "threads": 2}}
    for seed, value in enumerate([0.5, 0.7, 0.6]):
        results.write_record(
            chapter="ccl",
            profile="demo",
            experiment="comparison",
            variant="net/ccl",
            seed=seed,
            metrics={"balanced_accuracy": value, "accuracy": 0.8, "macro_f1": 0.5, "ece": 0.05},
            params={"backbone": "net", "method": "ccl"},
            dataset={"kind": "synthetic"},
            environment=env,
            root=root / "results",
        )
    results.write_bench(
        "ccl",
        "demo",
        {"wall_s": 700.0, "budget_s": 900.0, "within_budget": True, "runs": 3, "environment": env},
        root=root / "results",
    )
    page = book.benchmarks_page(root)
    assert "| net | CCL-Net | 3 | 60.0 ± 10.0 |" in page
    assert "| ccl | demo | x86_64 (2 threads) | 700 | 900 | yes |" in page
    assert "**paper profile**: no records yet." in page and "abcdef1234" in page


@pytest.fixture(scope="module")
def built_book(tmp_path_factory) -> Path:
    """The book built once, offline, from the committed chapters and results records."""
    root = _copy_book(tmp_path_factory.mktemp("book"))
    if (ROOT / "results").is_dir():
        shutil.rmtree(root / "results")
        shutil.copytree(ROOT / "results", root / "results")
    return book.build(profile="demo", execute=False, root=root)


def test_offline_book_build_from_the_committed_chapters(built_book):
    html = built_book
    chapter = (html / "notebooks" / "01_ccl.html").read_text()
    intro = (html / "book" / "intro.html").read_text()
    assert "CCL-Net" in chapter and "<img" in chapter and "deviation ledger" in chapter.lower()
    # Colab launch button for the chapter's .ipynb
    assert "colab.research.google.com/github/medlab-book/medlab/blob/main/notebooks/01_ccl.ipynb" in chapter
    # math is rendered by a local MathJax, and no page loads a script from the network
    for page in (chapter, intro):
        sources = re.findall(r'<script[^>]+src="([^"]+)"', page)
        assert not [s for s in sources if s.startswith(("http:", "https:", "//"))], sources
    assert any("mathjax/tex-chtml.js" in s for s in re.findall(r'<script[^>]+src="([^"]+)"', chapter))
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    benchmarks = (html / "book" / "benchmarks.html").read_text()
    assert "Generated" in benchmarks and "<table" in benchmarks
    assert (html / "index.html").exists()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_rendered_chapter_has_typeset_math(built_book):
    html = built_book
    with tempfile.TemporaryDirectory() as profile_dir:
        dom = subprocess.run(
            [
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile_dir}",
                "--virtual-time-budget=15000",
                "--dump-dom",
                (html / "notebooks" / "01_ccl.html").as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    assert dom.count("<mjx-container") > 10, "MathJax did not typeset the chapter's equations"
