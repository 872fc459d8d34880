"""The chapter contract: what every paper package ``medlab.papers.<slug>`` provides, and a check of it.

The book (:mod:`medlab.book`), the benchmark (:mod:`medlab.bench`), the grid runner
(:func:`medlab.experiment.run_grid`) and the tests use chapters only through this contract. A chapter
package holds four modules (see the book page "Adding a chapter"):

* ``method.py``: the paper's equations and modules, in the paper's order, hyper-parameters passed
  explicitly; it imports torch/torchvision and medlab's ``nets``, ``augment`` and ``metrics`` at most.
* ``config.py``: the ``Settings`` dataclass and its ``smoke`` / ``demo`` / ``paper`` profiles.
* ``runs.py``: data, jobs, the engine calls (``load_data``, ``grid``, ``run_job``, ``describe``).
* ``report.py``: figures, tables and findings, read from records only.

``__init__.py`` re-exports what the notebook and the contract use.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from medlab.runtime import PROFILES as PROFILE_NAMES

MAX_LINES = 500  # no file of a chapter package is longer
METHOD_MAY_IMPORT = ("medlab.nets", "medlab.augment", "medlab.metrics")


@dataclass(frozen=True)
class TableSpec:
    """A results table of the benchmarks page: records of ``experiments`` (filtered by ``filter``:
    column -> value), grouped ``by`` columns, mean ± std of ``metrics`` over seeds."""

    experiments: tuple[str, ...]
    by: tuple[str, ...]
    metrics: tuple[str, ...]
    percent: tuple[str, ...] = ()  # metrics in [0, 1] shown in %
    labels: Mapping[str, Mapping[Any, str]] = field(default_factory=dict)  # column -> value -> display
    order: Mapping[str, Sequence[Any] | None] = field(default_factory=dict)  # column -> value order (None: sorted)
    names: Mapping[str, str] = field(default_factory=dict)  # metric -> column title
    filter: Mapping[str, Any] = field(default_factory=dict)
    caption: str = ""


@dataclass(frozen=True)
class GateSpec:
    """A condition a comparison needs besides its baseline's gates, read from records: the mean of
    ``metric`` over the records matching ``where`` is at least ``at_least`` and/or above its mean over
    the records matching ``above`` (e.g. "the pretext task is learned on held-out data", "pretrained
    features beat a random encoder")."""

    name: str
    metric: str
    where: Mapping[str, Any] = field(default_factory=dict)
    at_least: float | None = None
    above: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ComparisonSpec:
    """One comparison a chapter declares: ``method`` against ``baseline`` (values of ``column``) on
    ``metric``, over the records that match ``where`` (column -> value), paired by seed.

    ``floor`` is what a model that learned nothing scores (chance, the majority class, AUROC 0.5, the
    Dice of an empty mask) and ``ceiling`` the best possible score; ``main`` marks the chapter's main
    comparisons, which the evidence standard holds to its precision target.
    """

    name: str
    metric: str
    column: str
    method: Any
    baseline: Any
    floor: float
    ceiling: float
    higher_is_better: bool = True
    main: bool = False
    where: Mapping[str, Any] = field(default_factory=dict)
    percent: bool = True  # the metric is a share in [0, 1], reported in points
    gates: tuple[GateSpec, ...] = ()


@runtime_checkable
class Chapter(Protocol):
    """What a chapter package provides (module attributes)."""

    SLUG: str  # the package name, e.g. "ccl"
    DATASETS: tuple[str, ...]  # registry names it loads (their readers and generators are its inputs)
    Settings: type  # a dataclass subclassing medlab.experiment.ChapterSettings
    PROFILES: Mapping[str, Any]  # smoke, demo and paper settings
    TABLES: Sequence[TableSpec]
    COMPARISONS: Sequence[ComparisonSpec]

    def settings(self, profile: str | None = None, **overrides: Any) -> Any: ...

    def load_data(self, config: Any, data_dir: Any = None, **options: Any) -> Any: ...

    def grid(self, config: Any) -> list: ...

    def run_job(self, job: Any, **options: Any) -> dict: ...

    def describe(self, job: Any, record: Mapping[str, Any]) -> str: ...

    def findings(self, frame: Any) -> str: ...


REQUIRED: dict[str, type | Callable] = {
    "SLUG": str,
    "DATASETS": tuple,
    "Settings": type,
    "PROFILES": Mapping,
    "TABLES": Sequence,
    "COMPARISONS": Sequence,
    "settings": callable,
    "load_data": callable,
    "grid": callable,
    "run_job": callable,
    "describe": callable,
    "findings": callable,
}
FILES = ("__init__.py", "method.py", "config.py", "runs.py", "report.py")


def load(slug: str) -> ModuleType:
    """The chapter package ``medlab.papers.<slug>``, checked against the contract."""
    module = importlib.import_module(f"medlab.papers.{slug}")
    problems = check(module)
    if problems:
        raise TypeError(f"medlab.papers.{slug} does not satisfy the chapter contract:\n- " + "\n- ".join(problems))
    return module


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def check(module: ModuleType) -> list[str]:
    """Every way ``module`` falls short of the contract (an empty list: it satisfies it)."""
    from medlab.data import registry
    from medlab.experiment import ChapterSettings, Job

    problems: list[str] = []
    for name, kind in REQUIRED.items():
        if not hasattr(module, name):
            problems.append(f"it has no {name}")
        elif kind is callable and not callable(getattr(module, name)):
            problems.append(f"{name} is not callable")
        elif kind is not callable and not isinstance(getattr(module, name), kind):
            problems.append(f"{name} is a {type(getattr(module, name)).__name__}, not a {kind.__name__}")
    if problems:
        return problems
    slug = module.__name__.rsplit(".", 1)[-1]
    if module.SLUG != slug:
        problems.append(f"SLUG is {module.SLUG!r}, not its package name {slug!r}")
    if not (dataclasses.is_dataclass(module.Settings) and issubclass(module.Settings, ChapterSettings)):
        problems.append("Settings is not a dataclass subclassing medlab.experiment.ChapterSettings")
    if set(module.PROFILES) != set(PROFILE_NAMES):
        problems.append(f"PROFILES has {sorted(module.PROFILES)}, expected {list(PROFILE_NAMES)}")
    for profile in PROFILE_NAMES:
        try:
            config = module.settings(profile)
        except Exception as error:  # noqa: BLE001 - reported, not raised
            problems.append(f"settings({profile!r}) fails: {type(error).__name__}: {error}")
            continue
        if not isinstance(config, module.Settings):
            problems.append(f"settings({profile!r}) is not a Settings")
    for setting in dataclasses.fields(module.Settings) if dataclasses.is_dataclass(module.Settings) else ():
        if setting.metadata.get("role") == "grid" and setting.default is not dataclasses.MISSING:
            if not isinstance(setting.default, tuple):
                problems.append(f"grid setting {setting.name} should default to a tuple of choices")
    for spec in module.TABLES:
        if not isinstance(spec, TableSpec):
            problems.append(f"TABLES holds a {type(spec).__name__}, not a TableSpec")
    for spec in module.COMPARISONS:
        if not isinstance(spec, ComparisonSpec):
            problems.append(f"COMPARISONS holds a {type(spec).__name__}, not a ComparisonSpec")
    known = registry.available()
    for name in module.DATASETS:
        if name not in known:
            problems.append(f"DATASETS names {name!r}, which the data registry does not know")
    try:
        jobs = module.grid(module.settings("smoke"))
        if not jobs or not all(isinstance(j, Job) for j in jobs):
            problems.append("grid(smoke settings) is not a non-empty list of medlab.experiment.Job")
    except Exception as error:  # noqa: BLE001
        problems.append(f"grid(smoke settings) fails: {type(error).__name__}: {error}")
    folder = Path(module.__file__).parent
    if Path(module.__file__).name != "__init__.py":
        problems.append("it is a module, not a package folder")
        return problems
    for name in FILES:
        if not (folder / name).is_file():
            problems.append(f"it has no {name}")
    for path in sorted(folder.glob("*.py")):
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            problems.append(f"{path.name} has {lines} lines (at most {MAX_LINES}: split it)")
    method = folder / "method.py"
    if method.is_file():
        for name in sorted(_imports(method)):
            if name.startswith("medlab") and name != "medlab" and not name.startswith(METHOD_MAY_IMPORT):
                problems.append(f"method.py imports {name}; it may import only {', '.join(METHOD_MAY_IMPORT)}")
    return problems
