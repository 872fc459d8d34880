"""Results records: one JSON file per run, and the tables made from them.

A record holds the run's identity (chapter, profile, experiment, variant, seed, parameters), its
metrics, per-epoch history, dataset, timing and provenance (commit, package versions, device). It is
written atomically under ``results/<profile>/<chapter>/`` with a name derived from the run's identity,
so parallel runs never write the same file and rerunning a configuration replaces its own record.

Tables in the chapters and on the benchmarks page are built from these files with :func:`load` and
:func:`summarize`; no number in the book is typed by hand.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from medlab.runtime import PROFILES, project_root, stable_hash

SCHEMA = 1


def results_root() -> Path:
    """``$MEDLAB_RESULTS_DIR`` if set, else ``results/`` at the top of the checkout."""
    env = os.environ.get("MEDLAB_RESULTS_DIR")
    return Path(env) if env else project_root() / "results"


def runs_root() -> Path:
    """Where checkpoints go: ``$MEDLAB_RUNS_DIR`` if set, else ``runs/`` at the top of the checkout."""
    env = os.environ.get("MEDLAB_RUNS_DIR")
    return Path(env) if env else project_root() / "runs"


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-")
    if not slug:
        raise ValueError(f"{text!r} gives an empty file name")
    return slug


def run_name(experiment: str, variant: str, seed: int, params: Mapping[str, Any]) -> str:
    """A file-system name that identifies one run: its experiment, variant, seed and parameters."""
    return f"{_slug(experiment)}__{_slug(variant)}__seed{int(seed)}__{stable_hash(dict(params), 8)}"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return _jsonable(value.item())
    return value


def _atomic_write_json(data: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=False)
            handle.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def make_record(
    *,
    chapter: str,
    profile: str,
    experiment: str,
    variant: str,
    seed: int,
    metrics: Mapping[str, Any],
    params: Mapping[str, Any],
    dataset: Mapping[str, Any],
    environment: Mapping[str, Any],
    timing: Mapping[str, Any] | None = None,
    history: Sequence[Mapping[str, Any]] | None = None,
    artifacts: Mapping[str, Any] | None = None,
    run_dir: str | None = None,
) -> dict[str, Any]:
    """One run's record as a JSON-ready dict (see :func:`save_record`).

    ``artifacts`` holds small structured outputs beside the scalar metrics (a confusion matrix, a
    learned correlation matrix); ``history`` is the per-epoch log of :func:`medlab.engine.fit`;
    ``run_dir`` is the run's folder relative to the runs root (checkpoints, saved encoders).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    bad = [
        k
        for k, v in metrics.items()
        if not isinstance(v, (int, float, np.floating, np.integer)) and v is not None
    ]
    if bad:
        raise TypeError(f"metrics must be numbers; these are not: {bad} (put structured outputs in artifacts)")
    if run_dir is not None and Path(run_dir).is_absolute():
        raise ValueError(f"run_dir {run_dir!r} must be relative to the runs root, not absolute")
    return {
        "schema": SCHEMA,
        "chapter": chapter,
        "profile": profile,
        "experiment": experiment,
        "variant": variant,
        "seed": int(seed),
        "run": run_name(experiment, variant, seed, params),
        "run_dir": run_dir,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metrics": _jsonable(metrics),
        "params": _jsonable(params),
        "dataset": _jsonable(dataset),
        "timing": _jsonable(timing or {}),
        "environment": _jsonable(environment),
        "history": _jsonable(list(history or [])),
        "artifacts": _jsonable(artifacts or {}),
    }


def save_record(record: Mapping[str, Any], root: str | Path | None = None) -> Path:
    """Write a record atomically under ``<root>/<profile>/<chapter>/<run>.json`` and return its path."""
    base = Path(root) if root is not None else results_root()
    path = base / record["profile"] / _slug(record["chapter"]) / f"{record['run']}.json"
    _atomic_write_json({k: v for k, v in record.items() if k != "path"}, path)
    return path


def write_record(*, root: str | Path | None = None, **fields: Any) -> Path:
    """:func:`make_record` then :func:`save_record`; returns the record's path."""
    return save_record(make_record(**fields), root=root)


def run_folder(record: Mapping[str, Any], root: str | Path | None = None) -> Path:
    """The run folder of a record (its checkpoints, saved encoders, selection files)."""
    if not record.get("run_dir"):
        raise ValueError(f"the record {record.get('run', '?')} stores no run folder (written by an older medlab)")
    return (Path(root) if root is not None else runs_root()) / record["run_dir"]


def read_record(path: str | Path) -> dict[str, Any]:
    """One record, with a clear error if the file is not a medlab record."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); delete it or rerun its experiment") from None
    missing = [
        k
        for k in ("schema", "chapter", "profile", "experiment", "variant", "seed", "metrics")
        if k not in record
    ]
    if missing:
        raise ValueError(f"{path} is not a medlab results record: it lacks {missing}")
    record["path"] = str(path)
    return record


def iter_records(
    chapter: str | None = None, profile: str | None = None, root: str | Path | None = None
) -> Iterable[dict[str, Any]]:
    base = Path(root) if root is not None else results_root()
    profiles = [profile] if profile else list(PROFILES)
    for prof in profiles:
        folder = base / prof
        if not folder.is_dir():
            continue
        chapters = [folder / _slug(chapter)] if chapter else sorted(p for p in folder.iterdir() if p.is_dir())
        for chapter_dir in chapters:
            for path in sorted(chapter_dir.glob("*.json")):
                if path.name != "comparisons.json":  # the chapter's verdicts (medlab.report), not a run
                    yield read_record(path)


def load(
    chapter: str | None = None,
    profile: str | None = None,
    experiment: str | None = None,
    root: str | Path | None = None,
) -> pd.DataFrame:
    """All records under the results folder as a DataFrame (see :func:`to_frame`)."""
    records = [
        r for r in iter_records(chapter, profile, root) if experiment is None or r["experiment"] == experiment
    ]
    return to_frame(records)


def to_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Records as a DataFrame: one row per run, with ``metrics.<name>``, ``params.<name>`` and
    ``timing.<name>`` columns beside the run's identity and provenance."""
    rows = []
    for record in records:
        timing = record.get("timing", {})
        env = record.get("environment", {})
        row = {
            "chapter": record["chapter"],
            "profile": record["profile"],
            "experiment": record["experiment"],
            "variant": record["variant"],
            "seed": record["seed"],
            "created": record.get("created"),
            "commit": ((env.get("git") or {}).get("commit") or "")[:10],
            "device": (env.get("device") or {}).get("name"),
            "dataset": (record.get("dataset") or {}).get("kind"),
            "path": record.get("path"),
        }
        row.update({f"timing.{k}": v for k, v in timing.items()})
        row.update({f"params.{k}": _cell(v) for k, v in record.get("params", {}).items()})
        row.update({f"metrics.{k}": (np.nan if v is None else v) for k, v in record["metrics"].items()})
        rows.append(row)
    return pd.DataFrame(rows)


def select(records: Iterable[Mapping[str, Any]], **conditions: Any) -> list[Mapping[str, Any]]:
    """The records whose fields, or else parameters, equal every given value.

    ``select(records, experiment="comparison", backbone="resnet18")`` matches ``record["experiment"]``
    and ``record["params"]["backbone"]``.
    """

    def value(record: Mapping[str, Any], key: str) -> Any:
        return record[key] if key in record else record.get("params", {}).get(key)

    return [r for r in records if all(value(r, k) == v for k, v in conditions.items())]


def history(records: Iterable[Mapping[str, Any]], key: str) -> np.ndarray:
    """One logged value per epoch for each record, as an array ``(runs, epochs)`` (NaN-padded)."""
    rows = [[epoch.get(key, np.nan) for epoch in r.get("history", [])] for r in records]
    if not rows:
        raise ValueError("no records given")
    length = max(len(r) for r in rows)
    return np.array(
        [[np.nan if v is None else v for v in r] + [np.nan] * (length - len(r)) for r in rows], dtype=float
    )


def _cell(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, list) else value


def summarize(
    frame: pd.DataFrame,
    metrics: Sequence[str],
    by: Sequence[str] = ("experiment", "variant"),
    digits: int = 3,
    percent: Sequence[str] = (),
    names: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Mean ± sample standard deviation over seeds for each group, as display strings.

    ``metrics`` are names without the ``metrics.`` prefix; those listed in ``percent`` are shown in %.
    ``names`` renames metric columns for display. The ``n`` column counts the seeds behind each row.
    """
    if frame.empty:
        raise ValueError("no results records to summarise (did the experiments run and write records?)")
    columns = [f"metrics.{m}" for m in metrics]
    missing = [c for c in [*by, *columns] if c not in frame.columns]
    if missing:
        raise KeyError(f"the records have no column(s) {missing}; available: {sorted(frame.columns)}")
    table = {}
    for keys, group in frame.groupby(list(by), sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        row = {"n": len(group)}
        for metric, column in zip(metrics, columns):
            values = group[column].astype(float).to_numpy()
            scale = 100.0 if metric in percent else 1.0
            label = (names or {}).get(metric, metric)
            row[label] = format_mean_std(values * scale, digits=1 if metric in percent else digits)
        table[keys] = row
    out = pd.DataFrame.from_dict(table, orient="index")
    names = [b.split(".")[-1] for b in by]
    if len(by) == 1:
        out.index = pd.Index([k[0] for k in out.index], name=names[0])
    else:
        out.index = pd.MultiIndex.from_tuples(out.index, names=names)
    return out


def format_mean_std(values: Sequence[float], digits: int = 3) -> str:
    """``mean ± std`` (sample std, ddof=1); a single value has no spread and is shown alone."""
    values = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=float)
    if values.size == 0:
        return "n/a"
    if values.size == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def markdown_table(frame: pd.DataFrame, index: bool = True) -> str:
    """A GitHub/MyST markdown table of a (small) DataFrame, without extra dependencies."""
    data = frame.reset_index() if index else frame
    header = [str(c) for c in data.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for _, row in data.iterrows():
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row.tolist()) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Benchmark records (wall time of a whole chapter at a profile, on one device)


def bench_root(root: str | Path | None = None) -> Path:
    """Where benchmark records live: ``<root>/bench`` when a results root is given, else
    ``$MEDLAB_BENCH_DIR``, else ``medlab/resources/bench`` inside the package (shipped with it, so a
    chapter's resource card shows them on Colab too)."""
    if root is not None:
        return Path(root) / "bench"
    env = os.environ.get("MEDLAB_BENCH_DIR")
    return Path(env) if env else Path(__file__).resolve().parent / "resources" / "bench"


def bench_path(chapter: str, profile: str, device_name: str, root: str | Path | None = None) -> Path:
    return bench_root(root) / _slug(chapter) / f"{_slug(profile)}__{_slug(device_name)}.json"


def write_bench(chapter: str, profile: str, data: Mapping[str, Any], root: str | Path | None = None) -> Path:
    """Write a chapter's benchmark record (one per chapter, profile and device)."""
    device = data.get("environment", {}).get("device", {})
    device_name = f"{device.get('type', 'unknown')}-{device.get('name', '')}-{device.get('threads', '')}"
    path = bench_path(chapter, profile, device_name, root)
    payload = {
        "schema": SCHEMA,
        "chapter": chapter,
        "profile": profile,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **_jsonable(data),
    }
    _atomic_write_json(payload, path)
    return path


def resource_card(chapter: str, root: str | Path | None = None) -> Any:
    """Measured time and memory of a chapter per profile and device (from ``medlab bench`` records),
    indexed by profile; one line of Markdown when this installation ships no record of the chapter."""
    from medlab.runtime import PROFILE_BUDGET_S

    bench = load_bench(chapter, root)
    if bench.empty:
        from IPython.display import Markdown

        return Markdown(f"*No benchmark records of this chapter are shipped with this installation of medlab.*")
    rows = []
    for profile in PROFILE_BUDGET_S:
        measured = bench[bench["profile"] == profile] if not bench.empty else bench
        if measured.empty:
            rows.append(
                {
                    "profile": profile,
                    "device": "not measured yet",
                    "wall time": "",
                    "budget": _budget(profile),
                }
            )
            continue
        for _, row in measured.iterrows():
            rows.append(
                {
                    "profile": profile,
                    "device": str(row["device"])
                    + (f" ({int(row['threads'])} threads)" if pd.notna(row.get("threads")) else ""),
                    "wall time": f"{row['wall_s'] / 60:.1f} min"
                    if row["wall_s"] >= 120
                    else f"{row['wall_s']:.0f} s",
                    "budget": _budget(profile),
                    "training samples/s": f"{row['train_samples_per_s']:.0f}"
                    if pd.notna(row.get("train_samples_per_s"))
                    else "",
                    "peak memory": f"{row['peak_memory_mb'] / 1024:.1f} GiB"
                    if pd.notna(row.get("peak_memory_mb"))
                    else "",
                    "runs": str(int(row["runs"])) if pd.notna(row.get("runs")) else "",
                    "measured": str(row["created"])[:10],
                }
            )
    return pd.DataFrame(rows).fillna("").set_index("profile")


def _budget(profile: str) -> str:
    from medlab.runtime import PROFILE_BUDGET_S

    budget = PROFILE_BUDGET_S[profile]
    return (
        "one GPU"
        if budget is None
        else (f"{budget / 60:.0f} min on 2 CPU cores" if budget >= 120 else f"{budget:.0f} s on 2 CPU cores")
    )


def load_bench(chapter: str | None = None, root: str | Path | None = None) -> pd.DataFrame:
    """Benchmark records as a DataFrame, one row per chapter, profile and device."""
    base = bench_root(root)
    rows = []
    pattern = f"{_slug(chapter)}/*.json" if chapter else "*/*.json"
    for path in sorted(base.glob(pattern)):
        record = json.loads(path.read_text())
        device = record.get("environment", {}).get("device", {})
        rows.append(
            {
                "chapter": record["chapter"],
                "profile": record["profile"],
                "device": device.get("name") or device.get("type"),
                "device_type": device.get("type"),
                "threads": device.get("threads"),
                "wall_s": record.get("wall_s"),
                "budget_s": record.get("budget_s"),
                "within_budget": record.get("within_budget"),
                "train_samples_per_s": record.get("train_samples_per_s"),
                "peak_memory_mb": record.get("peak_memory_mb"),
                "runs": record.get("runs"),
                "created": record.get("created"),
                "commit": ((record.get("environment", {}).get("git") or {}).get("commit") or "")[:10],
            }
        )
    return pd.DataFrame(rows)
