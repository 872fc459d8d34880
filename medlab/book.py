"""Building the book: re-execute stale chapters, stage the sources, generate the benchmarks page,
and run Jupyter Book 1.x offline into ``_build/html``.

The book is built from a staging copy (``_build/src``) so that generated pages and preview outputs
never touch the committed sources: at the ``demo`` profile a chapter's outputs are its committed
``notebooks/NN_slug.ipynb`` (re-executed in place when its inputs changed); at ``smoke`` they are
executed into ``_build/smoke/`` as a quick preview.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from medlab import notebooks, report, results
from medlab.chapter import TableSpec
from medlab.chapter import load as load_chapter
from medlab.runtime import project_root

STAGED = ("_config.yml", "_toc.yml", "book", "_static")


def executed_path(source: Path, profile: str, root: Path) -> Path:
    """Where a chapter's executed notebook lives for ``profile``."""
    if profile == "demo":
        return notebooks.pair_path(source)
    return root / "_build" / profile / "notebooks" / f"{source.stem}.ipynb"


def stale(profile: str = "demo", root: Path | None = None) -> list[Path]:
    """The chapters whose outputs at ``profile`` are missing or older than their inputs (their
    notebook, the medlab modules they import, the requirements), in book order."""
    root = root or project_root()
    return [
        source
        for source in notebooks.chapters(root)
        if not notebooks.is_current(source, executed_path(source, profile, root), profile)
    ]


def refresh(profile: str = "demo", force: bool = False, root: Path | None = None) -> list[Path]:
    """Re-execute every stale chapter (every chapter with ``force``); return those run."""
    root = root or project_root()
    todo = notebooks.chapters(root) if force else stale(profile, root)
    for source in notebooks.chapters(root):
        if source not in todo:
            print(f"{source.name}: outputs are current ({profile})")
    for source in todo:
        target = executed_path(source, profile, root)
        print(f"{source.name}: executing at profile {profile} ...", flush=True)
        record = notebooks.execute(source, target, profile=profile)
        print(f"{source.name}: done in {record['wall_s']:.0f} s -> {target.relative_to(root)}", flush=True)
    return todo


def benchmarks_page(root: Path | None = None) -> str:
    """The benchmarks page (MyST Markdown), generated from the results and benchmark records."""
    root = root or project_root()
    results_dir = root / "results"
    lines = [
        "# Benchmarks",
        "",
        "Every number on this page is generated from the results records committed under `results/` "
        "(one JSON file per run, with its commit, package versions, device and timing) when the book is built. "
        "Mean ± sample standard deviation over seeds; *n* is the number of seeds.",
        "",
        f"*Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}.*",
        "",
        "## Time and memory per chapter",
        "",
        "Measured by `medlab bench`: the wall time of a whole chapter (all its runs, figures and tables) "
        "at each profile on one device, the median training throughput of its runs and their peak memory "
        "(resident memory on a CPU, allocated GPU memory on CUDA).",
        "",
    ]
    bench = results.load_bench()
    if bench.empty:
        lines += ["No benchmark records yet: run `medlab bench`.", ""]
    else:
        table = pd.DataFrame(
            {
                "chapter": bench["chapter"],
                "profile": bench["profile"],
                "device": bench["device"].astype(str)
                + bench["threads"].map(lambda t: f" ({int(t)} threads)" if pd.notna(t) else ""),
                "wall time (s)": bench["wall_s"].map(lambda v: f"{v:.0f}"),
                "budget (s)": bench["budget_s"].map(lambda v: "none" if pd.isna(v) else f"{v:.0f}"),
                "within budget": bench["within_budget"].map(
                    lambda v: "yes" if v is True else ("no" if v is False else "n/a")
                ),
                "training samples/s": bench["train_samples_per_s"].map(
                    lambda v: "" if pd.isna(v) else f"{v:.0f}"
                ),
                "peak memory (MiB)": bench["peak_memory_mb"].map(lambda v: "" if pd.isna(v) else f"{v:.0f}"),
                "runs": bench["runs"],
                "commit": bench["commit"],
            }
        )
        lines += [results.markdown_table(table, index=False), ""]

    for source in notebooks.chapters(root):
        slug = notebooks.slug_of(source)
        chapter = load_chapter(slug)
        if not chapter.TABLES:
            continue
        lines += [f"## {notebooks.title_of(source)}", ""]
        for profile in ("demo", "paper"):
            frame = results.load(chapter=slug, profile=profile, root=results_dir)
            if frame.empty:
                lines += [f"**{profile} profile**: no records yet.", ""]
                continue
            verdicts = report.load_comparisons(slug, profile, root=results_dir)
            if verdicts:
                lines += [
                    f"**{profile} profile: the chapter's comparisons** (paired by seed, 95% t-intervals; "
                    "`comparisons.json`).",
                    "",
                    results.markdown_table(report.verdicts_table(verdicts)),
                    "",
                ]
            for spec in chapter.TABLES:
                lines += table_section(frame, spec, profile)
    return "\n".join(lines)


def table_section(frame: pd.DataFrame, spec: TableSpec, profile: str) -> list[str]:
    """The lines of one results table of the benchmarks page (nothing when no record matches)."""
    frame = frame[frame["experiment"].isin(spec.experiments)]
    for column, value in spec.filter.items():
        frame = frame[frame[column] == value]
    if frame.empty:
        return []
    # stable sorts from the innermost key out: the first key of "order" ends up outermost
    for column, order in reversed(list(spec.order.items())):
        key = None if order is None else (lambda v, order=order: v.map(list(order).index))
        frame = frame.sort_values(column, key=key, kind="stable")
    for column, labels in spec.labels.items():
        frame[column] = frame[column].map(lambda v, labels=labels: labels.get(v, v))
    for column in spec.by:  # counts read back from JSON as floats: show 16, not 16.0
        values = frame[column]
        if pd.api.types.is_float_dtype(values) and values.notna().all() and (values % 1 == 0).all():
            frame[column] = values.astype(int)
    table = results.summarize(frame, list(spec.metrics), by=list(spec.by), percent=spec.percent, names=spec.names)
    kind = sorted(set(frame["dataset"].dropna()))
    commits = sorted(set(frame["commit"].dropna()) - {""})
    return [
        f"**{profile} profile** ({', '.join(kind) or 'unknown'} data; {len(frame)} runs; "
        f"commit{'s' if len(commits) != 1 else ''} {', '.join(commits) or 'unknown'}). {spec.caption}",
        "",
        results.markdown_table(table),
        "",
    ]


def stage(profile: str, root: Path | None = None) -> Path:
    """Copy the book's sources and executed chapters into ``_build/src`` and generate the benchmarks page."""
    root = root or project_root()
    staging = root / "_build" / "src"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name in STAGED:
        path = root / name
        if path.is_dir():
            shutil.copytree(path, staging / name)
        else:
            shutil.copy2(path, staging / name)
    (staging / "notebooks").mkdir()
    for source in notebooks.chapters(root):
        executed = executed_path(source, profile, root)
        if not executed.exists():
            raise FileNotFoundError(
                f"{executed} does not exist: execute the chapter first (medlab book without --no-execute)"
            )
        shutil.copy2(executed, staging / "notebooks" / executed.name)
    (staging / "book" / "benchmarks.md").write_text(benchmarks_page(root))
    return staging


def build(profile: str = "demo", force: bool = False, execute: bool = True, root: Path | None = None) -> Path:
    """Refresh the chapters (unless ``execute`` is False), stage, and build the HTML; return its folder."""
    root = root or project_root()
    if profile not in ("demo", "smoke"):
        raise ValueError(f"the book is built at the demo profile, or smoke for a preview; got {profile!r}")
    if execute:
        refresh(profile, force, root)
    staging = stage(profile, root)
    html = root / "_build" / "html"
    if html.exists():
        shutil.rmtree(html)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    if not jupyter_book.exists():
        found = shutil.which("jupyter-book")
        if found is None:
            raise FileNotFoundError(
                "jupyter-book is not installed: pip install 'jupyter-book<2' (make book does)"
            )
        jupyter_book = Path(found)
    command = [str(jupyter_book), "build", str(staging), "--path-output", str(root), "--all", "-q"]
    completed = subprocess.run(command, cwd=root)
    if completed.returncode != 0:
        raise RuntimeError(f"jupyter-book failed (exit {completed.returncode}): {' '.join(command)}")
    if not (html / "index.html").exists():
        raise RuntimeError(f"jupyter-book finished but {html / 'index.html'} is missing")
    return html
