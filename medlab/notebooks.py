"""Executing chapters: jupytext source -> papermill run with parameters -> executed notebook.

The ``.py`` (jupytext percent format) is each chapter's source. :func:`execute` converts it, runs it
with papermill under a profile, strips papermill's per-cell bookkeeping, and stores in the notebook's
metadata what it ran with (profile, parameters, the fingerprint of its inputs, wall time), which is
how ``medlab book`` knows whether a chapter's committed outputs are current.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from medlab.runtime import PROFILES, project_root

KERNEL = "python3"


def chapters(root: Path | None = None) -> list[Path]:
    """The chapter sources (``notebooks/NN_slug.py``) listed in ``_toc.yml``, in book order."""
    root = root or project_root()
    toc_path = root / "_toc.yml"
    if not toc_path.is_file():
        raise FileNotFoundError(f"{toc_path} not found: run this from the book's checkout")
    toc = yaml.safe_load(toc_path.read_text())
    files: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(str(node["file"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(toc)
    sources = []
    for entry in files:
        if entry.startswith("notebooks/"):
            source = root / f"{Path(entry).with_suffix('')}.py"
            if not source.is_file():
                raise FileNotFoundError(f"_toc.yml lists {entry}, but its source {source} does not exist")
            sources.append(source)
    return sources


def find_chapter(name: str, root: Path | None = None) -> Path:
    """A chapter source by path, file name, number or slug (``01_ccl.py``, ``01``, ``ccl``)."""
    candidate = Path(name)
    if candidate.suffix == ".py" and candidate.is_file():
        return candidate.resolve()
    known = chapters(root)
    for source in known:
        number, _, slug = source.stem.partition("_")
        if name in (source.name, source.stem, number, slug, str(int(number))):
            return source
    raise ValueError(f"unknown chapter {name!r}; chapters: {', '.join(s.stem for s in known)}")


def slug_of(source: Path) -> str:
    return source.stem.partition("_")[2]


def title_of(source: Path) -> str:
    """The chapter's title: the first level-1 heading of its first markdown cell."""
    import jupytext

    for cell in jupytext.read(source).cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return source.stem


def inputs_fingerprint(source: Path, profile: str) -> str:
    """Changes when anything that shapes a chapter's outputs changes: its notebook, a medlab module it
    imports (directly or through other medlab modules, see :mod:`medlab.dependencies`), the
    requirements, or the profile."""
    from medlab.dependencies import inputs_fingerprint as fingerprint

    return fingerprint(Path(source), profile, project_root(Path(source).parent))


def executed_metadata(notebook_path: Path) -> dict[str, Any]:
    """What an executed notebook was run with (empty if it was never executed by medlab)."""
    import nbformat

    if not notebook_path.exists():
        return {}
    notebook = nbformat.read(notebook_path, as_version=4)
    return dict(notebook.metadata.get("medlab", {}))


def is_current(source: Path, notebook_path: Path, profile: str) -> bool:
    """Whether ``notebook_path`` holds outputs of the current inputs at ``profile``."""
    meta = executed_metadata(notebook_path)
    return meta.get("inputs") == inputs_fingerprint(source, profile) and meta.get("profile") == profile


def parse_value(text: str) -> Any:
    """A command-line parameter value: YAML scalars (``3``, ``0.5``, ``true``, ``null``) or the string."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (int, float, bool, list, dict)) or value is None else text


def notebook_parameters(source: Path) -> list[str]:
    """The names assigned in the chapter's ``parameters`` cell."""
    import ast

    import jupytext

    notebook = jupytext.read(source)
    for cell in notebook.cells:
        if "parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            return [
                t.id
                for node in tree.body
                if isinstance(node, ast.Assign)
                for t in node.targets
                if isinstance(t, ast.Name)
            ]
    raise ValueError(f"{source} has no cell tagged 'parameters'")


def split_parameters(source: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters the notebook declares pass as they are; any other name goes into its ``overrides`` dict."""
    declared = notebook_parameters(source)
    direct = {k: v for k, v in parameters.items() if k in declared}
    extra = {k: v for k, v in parameters.items() if k not in declared}
    if extra:
        if "overrides" not in declared:
            raise ValueError(
                f"{source.name} has no parameter(s) {sorted(extra)}; its parameters are: {', '.join(declared)}"
            )
        direct["overrides"] = {**dict(direct.get("overrides") or {}), **extra}
    return direct


@contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    """Set (or, for ``None``, unset) environment variables for the duration of the block."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        _set_environment(values)
        yield
    finally:
        _set_environment(saved)


def _set_environment(values: Mapping[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _strip_bookkeeping(notebook) -> None:
    notebook.metadata.pop("papermill", None)
    for cell in notebook.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)


def execute(
    source: Path,
    output: Path,
    *,
    profile: str,
    parameters: Mapping[str, Any] | None = None,
    progress: bool = False,
    timeout_per_cell: int | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Execute chapter ``source`` at ``profile`` into ``output``; return what was recorded.

    The profile reaches the kernel through ``$MEDLAB_PROFILE`` (the notebook's default), so no
    parameter cell is injected unless ``parameters`` are given. ``output`` is replaced only when the
    whole notebook ran; a failing cell raises ``papermill.PapermillExecutionError`` naming the cell,
    and the partly executed notebook is kept beside ``output`` as ``<name>.failed.ipynb``.
    """
    import jupytext
    import nbformat
    import papermill

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    source = Path(source).resolve()
    output = Path(output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    parameters = split_parameters(source, dict(parameters or {}))
    notebook = jupytext.read(source)
    inputs = inputs_fingerprint(source, profile)  # before running: edits made meanwhile make it stale
    with tempfile.TemporaryDirectory() as tmp:
        input_path = Path(tmp) / f"{source.stem}.ipynb"
        running = Path(tmp) / f"{source.stem}.executed.ipynb"  # moved into place only on success
        nbformat.write(notebook, input_path)
        env = {"MEDLAB_PROFILE": profile, "MEDLAB_PROGRESS": "1" if progress else "0", **(extra_env or {})}
        tic = time.perf_counter()
        try:
            with _environment(**env):
                papermill.execute_notebook(
                    str(input_path),
                    str(running),
                    parameters=parameters,
                    kernel_name=KERNEL,
                    language="python",
                    cwd=str(source.parent),
                    progress_bar=progress,
                    log_output=False,
                    execution_timeout=timeout_per_cell,
                )
        except BaseException:
            if running.exists():
                failed = output.with_name(f"{output.stem}.failed.ipynb")
                shutil.move(running, failed)
                print(f"{source.name} failed at profile {profile}; the partly executed notebook is {failed}")
            raise
        wall_s = time.perf_counter() - tic
        shutil.move(running, output)
    executed = nbformat.read(output, as_version=4)
    _strip_bookkeeping(executed)
    record = {
        "profile": profile,
        "parameters": parameters,
        "inputs": inputs,
        "executed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 1),
        "kernel_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }
    executed.metadata["medlab"] = record
    nbformat.write(executed, output)
    return record


def default_output(source: Path, profile: str, parameters: Mapping[str, Any] | None = None) -> Path:
    """Where ``medlab run`` keeps an executed notebook: ``runs/notebooks/<chapter>__<profile>[__<hash>].ipynb``."""
    from medlab.results import runs_root
    from medlab.runtime import stable_hash

    suffix = f"__{stable_hash(dict(parameters), 8)}" if parameters else ""
    return runs_root() / "notebooks" / f"{source.stem}__{profile}{suffix}.ipynb"


def pair_path(source: Path) -> Path:
    """The committed ``.ipynb`` pair of a chapter source (it carries the outputs of the last demo run)."""
    return Path(source).with_suffix(".ipynb")
