"""Every chapter of the table of contents satisfies the chapter contract, and a chapter is re-executed
only when something it runs changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from medlab import chapter, dependencies, notebooks
from medlab.runtime import PACKAGE_ROOT, project_root

ROOT = project_root()
CHAPTERS = notebooks.chapters(ROOT)
SLUGS = [notebooks.slug_of(source) for source in CHAPTERS]


@pytest.mark.parametrize("slug", [*SLUGS, "template"])
def test_chapter_satisfies_the_contract(slug):
    module = chapter.load(slug)  # raises with every problem listed
    assert isinstance(module, chapter.Chapter)


def test_the_contract_names_what_is_missing(tmp_path, monkeypatch):
    import types

    fake = types.ModuleType("medlab.papers.fake")
    fake.__file__ = str(tmp_path / "fake.py")
    fake.SLUG = "fake"
    problems = chapter.check(fake)
    assert "it has no DATASETS" in problems and "it has no run_job" in problems


def test_method_files_import_no_run_machinery():
    for slug in SLUGS:
        imported = dependencies.imported_modules(PACKAGE_ROOT / "papers" / slug / "method.py")
        assert not {m for m in imported if not m.startswith(chapter.METHOD_MAY_IMPORT) and m != "medlab"}, slug


def _fingerprints(monkeypatch, edited: Path | None = None) -> dict[str, str]:
    if edited is not None:
        original = dependencies.source_bytes
        monkeypatch.setattr(
            dependencies, "source_bytes", lambda path: original(path) + (b"\n# edited" if Path(path) == edited else b"")
        )
    return {source.stem: notebooks.inputs_fingerprint(source, "demo") for source in CHAPTERS}


def test_editing_a_reader_only_one_chapter_uses_marks_only_that_chapter_stale(monkeypatch):
    before = _fingerprints(monkeypatch)
    after = _fingerprints(monkeypatch, PACKAGE_ROOT / "data" / "formats" / "refuge.py")
    changed = sorted(name for name in before if before[name] != after[name])
    assert changed == ["04_cross_denoise"]


def test_editing_the_engine_marks_every_chapter_stale(monkeypatch):
    before = _fingerprints(monkeypatch)
    after = _fingerprints(monkeypatch, PACKAGE_ROOT / "engine.py")
    assert all(before[name] != after[name] for name in before)


def test_editing_tooling_marks_no_chapter_stale(monkeypatch):
    before = _fingerprints(monkeypatch)
    for tool in ("cli.py", "book.py", "notebooks.py", "bench.py"):
        assert _fingerprints(monkeypatch, PACKAGE_ROOT / tool) == before, tool


def test_imports_are_read_with_relative_imports_and_parent_packages():
    found = dependencies.closure(["medlab.papers.ccl"])
    assert {"medlab.papers.ccl.method", "medlab.papers", "medlab", "medlab.engine", "medlab.data.formats.isic2018"} <= found
    assert "medlab.data.formats.refuge" not in found


def test_dry_run_prints_the_stale_chapters_one_per_line(capsys, monkeypatch):
    from medlab import book, cli

    monkeypatch.setattr(book, "stale", lambda profile, root=None: CHAPTERS[1:2])
    assert cli.main(["book", "--dry-run"]) == 0
    assert capsys.readouterr().out == f"{CHAPTERS[1].stem}\n"
