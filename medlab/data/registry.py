"""The dataset registry: ``load(name, split, data_dir=None, ...)`` returns a torch Dataset.

``data_dir=None`` gives the chapter's synthetic data (generated from a seed, offline); a path gives the
real dataset, read in its official layout by a reader in :mod:`medlab.data.formats`. Each dataset is an
:class:`Entry` naming its reader and its generator as ``"module:attribute"`` strings, imported only when
:func:`load` needs them (this module imports no reader or generator).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from medlab.data.splits import SPLITS

_REGISTRY: dict[str, "Entry"] = {}


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
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return _REGISTRY[name]


def available() -> dict[str, str]:
    """Registered dataset names and what each is."""
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


register(
    "isic2018",
    "ISIC 2018 Task 3 skin-lesion diagnosis (7 classes); synthetic look-alike without data_dir",
    real="medlab.data.formats.isic2018:ISIC2018Task3",
    synthetic="medlab.data.synth.skin_lesions:isic2018_lookalike",
)
register(
    "chestxray14",
    "ChestX-ray14 frontal radiographs, 14 findings (multi-label); synthetic radiographs without data_dir",
    SPLITS,
    real="medlab.data.formats.chestxray14:ChestXray14",
    synthetic="medlab.data.synth.chest_xrays:chestxray14_lookalike",
)
register(
    "head_ct",
    "Head CT volumes, haemorrhage type (none, intraparenchymal, subdural, intraventricular); synthetic only",
    SPLITS,
    real=None,
    synthetic="medlab.data.synth.brains3d:head_ct_lookalike",
    real_unavailable=(
        "the head CT set of the Rubik's cube paper (1,486 scans from the authors' hospital) is private, so "
        "medlab has no reader for it; leave data_dir unset for the synthetic head CTs (data/README.md, "
        "BraTS section)"
    ),
)
register(
    "brats",
    "BraTS 2018-2020 brain MR (t1, t1ce, t2, flair) with tumour sub-region masks; synthetic look-alike without data_dir",
    SPLITS,
    real="medlab.data.formats.brats:BraTS",
    synthetic="medlab.data.synth.brains3d:brats_lookalike",
)
register(
    "refuge",
    "REFUGE 2018 colour fundus photographs, optic disc and cup masks (disc-centred crops); synthetic look-alike without data_dir",
    real="medlab.data.formats.refuge:REFUGE",
    synthetic="medlab.data.synth.fundus:refuge_lookalike",
)
register(
    "drishti_gs",
    "Drishti-GS1 colour fundus photographs, optic disc and cup from the annotators' soft maps; synthetic look-alike (another camera) without data_dir",
    real="medlab.data.formats.drishti_gs:DrishtiGS",
    synthetic="medlab.data.synth.fundus:drishti_gs_lookalike",
)
register(
    "kits19",
    "KiTS19 contrast-enhanced CT, 2D crops around the kidney holding a tumour, tumour masks; synthetic kidney-tumour CT without data_dir",
    real="medlab.data.formats.kits19:KiTS19",
    synthetic="medlab.data.synth.kidney_ct:kits19_lookalike",
)
register(
    "acdc",
    "ACDC short-axis cine MR (ED and ES frames), 2D crops around the left ventricle, myocardium masks; synthetic cine-MR slices without data_dir",
    real="medlab.data.formats.acdc:ACDC",
    synthetic="medlab.data.synth.cardiac_mr:acdc_lookalike",
)
register(
    "inbreast",
    "INbreast full-field digital mammograms, 2D crops centred on each mass, masks from the outlines; synthetic mass crops without data_dir",
    real="medlab.data.formats.inbreast:INbreast",
    synthetic="medlab.data.synth.mammograms:inbreast_lookalike",
)
