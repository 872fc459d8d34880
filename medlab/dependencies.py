"""Which source files a chapter depends on: the medlab modules its notebook imports, directly or
through other medlab modules, and the readers and generators of the datasets it declares.

A chapter is re-executed only when one of these files, its notebook or the requirements change
(:func:`chapter_inputs`), and a checkpoint is resumed only by the code it was made with
(:func:`code_fingerprint`). Imports are read from the source with :mod:`ast` (nothing is imported),
including imports inside functions; importing ``a.b.c`` also runs ``a/__init__.py`` and
``a/b/__init__.py``, so those count too.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from medlab.runtime import PACKAGE_ROOT

PACKAGE = "medlab"


def module_path(name: str) -> Path | None:
    """The source file of medlab module ``name`` (``medlab.a.b`` -> ``a/b.py`` or ``a/b/__init__.py``)."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    parts = name.split(".")[1:]
    base = PACKAGE_ROOT.joinpath(*parts)
    if base.with_suffix(".py").is_file() and parts:
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def module_name(path: Path) -> str:
    relative = Path(path).resolve().relative_to(PACKAGE_ROOT).with_suffix("")
    parts = [PACKAGE, *relative.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@lru_cache(maxsize=None)
def _parsed(path: Path, mtime_ns: int) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _tree(path: Path) -> ast.Module:
    return _parsed(path, path.stat().st_mtime_ns)


def imported_modules(path: Path, package: str | None = None) -> set[str]:
    """The medlab modules a source file imports (absolute names; relative imports resolved against
    ``package``, by default the file's own package when it lies inside medlab)."""
    path = Path(path)
    if package is None:
        try:
            name = module_name(path)
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        except ValueError:  # a notebook, outside the package
            package = ""
    found: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)
    return {name for name in found if module_path(name) is not None}


def declared_datasets(package_name: str) -> tuple[str, ...]:
    """The ``DATASETS = (...)`` a chapter package declares (read from its sources, not imported)."""
    folder = PACKAGE_ROOT.joinpath(*package_name.split(".")[1:])
    for path in sorted(folder.glob("*.py")) if folder.is_dir() else ():
        for node in _tree(path).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == "DATASETS" for t in targets) and node.value is not None:
                return tuple(ast.literal_eval(node.value))
    return ()


def _dataset_modules(names: Iterable[str]) -> set[str]:
    from medlab.data import registry

    modules: set[str] = set()
    for name in names:
        modules.update(registry.entry(name).modules)
        if name in registry.catalog_names():
            modules.add(registry.catalog_module(name))
    return modules


def closure(modules: Iterable[str]) -> set[str]:
    """``modules``, their parent packages, everything they import (transitively), and the modules of
    the datasets that chapter packages among them declare."""
    pending = list(modules)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen or module_path(name) is None:
            continue
        seen.add(name)
        pending.extend(_parents(name))
        pending.extend(imported_modules(module_path(name)))
        if name.startswith(f"{PACKAGE}.papers.") and name.count(".") == 2:
            pending.extend(_dataset_modules(declared_datasets(name)))
    return seen


def chapter_modules(slug: str) -> list[Path]:
    """The source files the chapter package ``medlab.papers.<slug>`` runs, sorted."""
    return sorted(module_path(name) for name in closure([f"{PACKAGE}.papers.{slug}"]))


def source_bytes(path: Path) -> bytes:
    """The contents of a source file as the fingerprints read it."""
    return Path(path).read_bytes()


def _digest(paths: Iterable[Path], extra: bytes = b"") -> str:
    digest = hashlib.sha256(extra)
    for path in sorted(set(paths)):
        digest.update(path.resolve().relative_to(PACKAGE_ROOT.parent).as_posix().encode())
        digest.update(source_bytes(path))
    return digest.hexdigest()[:16]


@lru_cache(maxsize=None)
def _code_fingerprint(slug: str, stamp: tuple) -> str:
    return _digest(chapter_modules(slug))


def code_fingerprint(slug: str) -> str:
    """A hash of the sources chapter ``slug`` runs: a checkpoint made by other code is not resumed,
    and an edit elsewhere in the package does not invalidate it."""
    stamp = tuple(sorted((str(p), p.stat().st_mtime_ns) for p in PACKAGE_ROOT.rglob("*.py")))
    return _code_fingerprint(slug, stamp)


def requirements_text(root: Path) -> bytes:
    """The declared requirements: ``requirements.txt`` and the core dependencies of ``pyproject.toml``."""
    parts = []
    requirements = root / "requirements.txt"
    if requirements.is_file():
        parts.append(requirements.read_bytes())
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        text = pyproject.read_text()
        start = text.find("\ndependencies = [")
        if start >= 0:
            parts.append(text[start : text.find("]", start) + 1].encode())
    return b"\n".join(parts)


def chapter_inputs(source: Path) -> list[Path]:
    """The medlab source files a chapter's notebook ``source`` depends on, sorted."""
    modules = imported_modules(Path(source), package="")
    return sorted(module_path(name) for name in closure(modules))


def inputs_fingerprint(source: Path, profile: str, root: Path) -> str:
    """Changes when anything that shapes a chapter's outputs changes: its notebook, the medlab modules
    it runs (:func:`chapter_inputs`), the requirements, or the profile."""
    source = Path(source)
    extra = profile.encode() + source.read_bytes() + requirements_text(root)
    return _digest(chapter_inputs(source), extra)
