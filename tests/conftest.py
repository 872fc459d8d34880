"""Shared test fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from medlab.data.formats.isic2018 import write_fixture


def write_isic(
    root: Path, part: str = "Training", labels=(0, 1, 1, 2, 6), csv_inside_folder: bool = True
) -> list[str]:
    """Write a tiny ISIC 2018 Task 3 part (60 x 45 JPEGs) in the official layout and return its image ids."""
    return write_fixture(root, part, tuple(labels), csv_inside_folder=csv_inside_folder)


@pytest.fixture(name="write_isic")
def _write_isic_fixture():
    """Writes a tiny ISIC 2018 Task 3 part in the official layout: ``write_isic(root, part, labels)``."""
    return write_isic


@pytest.fixture(autouse=True)
def _item_cache_in_tmp(tmp_path_factory, monkeypatch):
    """Readers cache their items under a fresh temporary folder, never in ``~/.cache/medlab``."""
    monkeypatch.setenv("MEDLAB_CACHE_DIR", str(tmp_path_factory.mktemp("medlab-cache")))


@pytest.fixture(scope="session", name="written")
def _written(tmp_path_factory):
    """``written(write, *args)``: a folder filled by ``write(folder, *args)``, written once per session."""
    made: dict = {}

    def get(write, *args) -> Path:
        if (write, args) not in made:
            root = tmp_path_factory.mktemp(write.__name__.strip("<>"))
            write(root, *args)
            made[write, args] = root
        return made[write, args]

    return get


@pytest.fixture(name="fresh_copy")
def _fresh_copy(written, tmp_path):
    """``fresh_copy(write, *args, name="data")``: this test's own copy of ``written(write, *args)`` under
    ``tmp_path / name`` (tests may damage it)."""

    def copy(write, *args, name: str = "data") -> Path:
        root = tmp_path / name
        shutil.copytree(written(write, *args), root)
        return root

    return copy


@pytest.fixture(name="isolated")
def _isolated(tmp_path, monkeypatch):
    """Runs and results records of a test written under its ``tmp_path``, never in the checkout."""
    monkeypatch.setenv("MEDLAB_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("MEDLAB_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path
