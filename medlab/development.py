"""Development studies: the runs behind a chapter's design choices, made on a development data seed
(never the book's), one folder of results records per study under
``medlab/resources/development/<slug>/<study>/``. They ship with the package, so a chapter can show on
Colab too what its choices rest on."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from medlab import results

DEVELOPMENT_ROOT = Path(__file__).resolve().parent / "resources" / "development"
DEVELOPMENT_DATA_SEED = 7  # the synthetic data's development seed: design choices are made here, never on the book's


def load_studies(slug: str, root: str | Path | None = None) -> pd.DataFrame:
    """Every study's records for chapter ``slug`` as one frame (:func:`medlab.results.to_frame`), with
    a ``study`` column. ``root`` is the folder holding the study folders (default: the package's
    ``resources/development/<slug>``)."""
    base = Path(root) if root is not None else DEVELOPMENT_ROOT / slug
    studies = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    if not studies:
        raise FileNotFoundError(f"no development studies (folders of results records) under {base}")
    frames = []
    for study in studies:
        records = [results.read_record(path) for path in sorted(study.glob("*.json"))]
        if not records:
            raise FileNotFoundError(f"development study {study} holds no results records (*.json)")
        frames.append(results.to_frame(records).assign(study=study.name))
    return pd.concat(frames, ignore_index=True)


def load_histories(slug: str, root: str | Path | None = None) -> pd.DataFrame:
    """The per-epoch history of every record of every study: one row per (study, record, epoch)."""
    base = Path(root) if root is not None else DEVELOPMENT_ROOT / slug
    rows = []
    for path in sorted(base.glob("*/*.json")):
        record = results.read_record(path)
        for entry in record.get("history") or []:
            rows.append({"study": path.parent.name, "experiment": record["experiment"], "seed": record["seed"], **entry})
    if not rows:
        raise FileNotFoundError(f"no development records with a history under {base}")
    return pd.DataFrame(rows)


def prepare_study(name: str, root: str | Path, device: str | None = None):
    """Point the results and run folders at ``<root>/<name>/`` (its records land in
    ``<root>/<name>/results/<profile>/<slug>/``) and return the device to run the study on."""
    import os

    import torch

    from medlab import runtime

    os.environ["MEDLAB_RESULTS_DIR"] = str(Path(root) / name / "results")
    os.environ["MEDLAB_RUNS_DIR"] = str(Path(root) / name / "runs")
    return torch.device(device) if device else runtime.choose_device()


def run_study(slug: str, config: Any, jobs: list[Any], name: str, root: str | Path, device: str | None = None) -> list[dict[str, Any]]:
    """Run study ``name`` of chapter ``slug`` (its ``jobs`` at ``config``, the demo's settings with the
    study's changes); its records go to ``<root>/<name>/results/demo/<slug>``, its runs beside them."""
    import importlib

    from medlab import experiment

    chosen = prepare_study(name, root, device)
    chapter = importlib.import_module(f"medlab.papers.{slug}")
    return experiment.run_grid(chapter, config, profile="demo", device=chosen, jobs=jobs)


def study_cli(description: str, studies: Iterable[str], run_study: Callable[..., Any], argv: list[str] | None = None) -> None:
    """The command line of a chapter's development module: ``python -m medlab.papers.<slug>.development
    STUDY [STUDY ...] --root DIR [--device cuda]`` runs each study with ``run_study(name, root, device)``."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("studies", nargs="+", choices=sorted(studies))
    parser.add_argument("--root", required=True, help="folder for the records and run folders")
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: automatic)")
    args = parser.parse_args(argv)
    for name in args.studies:
        run_study(name, args.root, args.device)
