"""The dataset registry: ``load(name, split, data_dir=None, ...)`` returns a torch Dataset.

``data_dir=None`` gives the chapter's synthetic data (generated from a seed, offline); a path gives the
real dataset, read in its official layout by a reader in :mod:`medlab.data.formats`. Each dataset is an
:class:`Entry` naming its reader and its generator as ``"module:attribute"`` strings, imported only when
:func:`load` needs them (this module imports no reader or generator). The entries live in
:mod:`medlab.data.catalog`, one module per dataset, imported when a name is first asked for.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from medlab.data.splits import SPLITS

_REGISTRY: dict[str, "Entry"] = {}
CATALOG = "medlab.data.catalog"
_CATALOG_DIR = Path(__file__).resolve().parent / "catalog"


def catalog_names() -> list[str]:
    """The dataset names :mod:`medlab.data.catalog` holds a module for."""
    return sorted(p.stem for p in _CATALOG_DIR.glob("*.py") if p.stem != "__init__")


def catalog_module(name: str) -> str:
    """The dotted name of the catalog module that registers dataset ``name``."""
    return f"{CATALOG}.{name}"


def _load_catalog(name: str | None = None) -> None:
    """Import the catalog module of ``name`` (all of them when None) unless already registered."""
    for stem in catalog_names() if name is None else [name] if name in catalog_names() else []:
        if stem not in _REGISTRY:
            importlib.import_module(catalog_module(stem))
            if stem not in _REGISTRY:
                raise ImportError(f"{_CATALOG_DIR / (stem + '.py')} does not register a dataset named {stem!r}")


def _module(reference: str) -> str:
    module, _, attribute = reference.partition(":")
    if not module or not attribute:
        raise ValueError(f"{reference!r} is not a 'module:attribute' reference")
    return module


def resolve(reference: str) -> Callable:
    """The object a ``"module:attribute"`` reference names (its module is imported now)."""
    module, _, attribute = reference.partition(":")
    try:
        return getattr(importlib.import_module(_module(reference)), attribute)
    except AttributeError:
        raise ImportError(f"module {module} has no {attribute!r} (reference {reference!r})") from None


@dataclass(frozen=True)
class Entry:
    """A registered dataset. ``real`` is its reader, called as ``reader(data_dir, split, **options)``, and
    ``synthetic`` its generator, called as ``generator(split, n=..., **options)``; both are lazy
    ``"module:attribute"`` references. ``real=None`` means there is no reader; ``real_unavailable`` then
    says why (the error a ``data_dir`` gets)."""

    name: str
    description: str
    splits: tuple[str, ...]
    real: str | None
    synthetic: str
    real_unavailable: str | None = None

    def __post_init__(self):
        unknown = set(self.splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"dataset {self.name!r} declares unknown split(s) {sorted(unknown)}")
        for reference in (self.real, self.synthetic):
            if reference is not None:
                _module(reference)
        if self.real is None and not self.real_unavailable:
            raise ValueError(f"dataset {self.name!r} has no reader: say why in real_unavailable")

    @property
    def modules(self) -> tuple[str, ...]:
        """The dotted names of the modules of its reader and its generator."""
        return tuple(_module(r) for r in (self.real, self.synthetic) if r is not None)


def register(
    name: str,
    description: str,
    splits: tuple[str, ...] = ("train", "val", "test"),
    *,
    real: str | None,
    synthetic: str,
    real_unavailable: str | None = None,
) -> Entry:
    """Register dataset ``name`` (see :class:`Entry` for the fields) and return its entry."""
    if name in _REGISTRY:
        raise ValueError(f"dataset {name!r} is registered twice")
    _REGISTRY[name] = Entry(name, description, tuple(splits), real, synthetic, real_unavailable)
    return _REGISTRY[name]


def entry(name: str) -> Entry:
    """The registry's entry for dataset ``name``."""
    if name not in _REGISTRY:
        _load_catalog(name)
    if name not in _REGISTRY:
        _load_catalog()
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return _REGISTRY[name]


def available() -> dict[str, str]:
    """Registered dataset names and what each is."""
    _load_catalog()
    return {name: e.description for name, e in _REGISTRY.items()}


def splits_of(name: str) -> tuple[str, ...]:
    """The splits dataset ``name`` offers."""
    return entry(name).splits


def _call(e: Entry, reference: str, kind: str, args: tuple, options: dict[str, Any]):
    """``resolve(reference)(*args, **options)``, after checking that it accepts ``options``."""
    factory = resolve(reference)
    parameters = list(inspect.signature(factory).parameters.values())
    accepted = [p.name for p in parameters[len(args) :] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters)
    unknown = [key for key in options if key not in accepted and not takes_any]
    if unknown:
        raise ValueError(
            f"dataset {e.name!r}: the {kind} ({reference}) does not accept option(s) "
            f"{', '.join(map(repr, unknown))}; it accepts {', '.join(accepted)}"
        )
    return factory(*args, **options)


def load(name: str, split: str, data_dir: str | Path | None = None, **options: Any):
    """The ``split`` of dataset ``name``; synthetic when ``data_dir`` is None.

    Splits are "train", "val", "test" and, for datasets used for self-supervised pretraining,
    "unlabeled" (a pool whose labels the pretraining does not read). Synthetic data needs ``n``, the
    number of items of the split; real data refuses it. ``options`` go to the reader or generator; one
    it does not accept is a ValueError naming the dataset.
    """
    e = entry(name)
    if split not in e.splits:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; expected one of {', '.join(e.splits)}")
    if data_dir is None:
        return _call(e, e.synthetic, "synthetic generator", (split,), options)
    data_dir = Path(data_dir)
    if e.real is None:
        raise ValueError(f"data_dir={str(data_dir)!r}: {e.real_unavailable}")
    if options.pop("n", None) is not None:
        title = getattr(resolve(e.real), "title", name)
        raise ValueError(f"n (the number of synthetic items) cannot be set for the real {title} data")
    return _call(e, e.real, "reader", (data_dir, split), options)
