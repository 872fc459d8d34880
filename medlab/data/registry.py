"""The dataset registry: ``load(name, split, data_dir=None, ...)`` returns a torch Dataset.

``data_dir=None`` gives the chapter's synthetic data (generated from a seed, offline); a path gives the
real dataset, read in its official layout by a reader in :mod:`medlab.data.formats`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torch.utils.data import Dataset

SPLITS = ("train", "val", "test", "unlabeled")  # "unlabeled": images for self-supervised pretraining
_REGISTRY: dict[str, Callable[..., Dataset]] = {}
_DESCRIPTIONS: dict[str, str] = {}
_SPLITS_OF: dict[str, tuple[str, ...]] = {}


def register(name: str, description: str, splits: tuple[str, ...] = ("train", "val", "test")) -> Callable:
    """Register a dataset factory ``factory(split, data_dir, **options) -> Dataset`` under ``name``,
    offering ``splits``."""

    def decorate(factory: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        unknown = set(splits) - set(SPLITS)
        if unknown:
            raise ValueError(f"dataset {name!r} declares unknown split(s) {sorted(unknown)}")
        _REGISTRY[name] = factory
        _DESCRIPTIONS[name] = description
        _SPLITS_OF[name] = tuple(splits)
        return factory

    return decorate


def available() -> dict[str, str]:
    """Registered dataset names and what each is."""
    return dict(_DESCRIPTIONS)


def splits_of(name: str) -> tuple[str, ...]:
    """The splits dataset ``name`` offers."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(_REGISTRY)) or 'none'}")
    return _SPLITS_OF[name]


def load(name: str, split: str, data_dir: str | Path | None = None, **options: Any) -> Dataset:
    """The ``split`` of dataset ``name``; synthetic when ``data_dir`` is None.

    Splits are "train", "val", "test" and, for datasets used for self-supervised pretraining,
    "unlabeled" (a pool whose labels the pretraining does not read).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(_REGISTRY)) or 'none'}")
    if split not in _SPLITS_OF[name]:
        raise ValueError(
            f"unknown split {split!r} for dataset {name!r}; expected one of {', '.join(_SPLITS_OF[name])}"
        )
    return _REGISTRY[name](split=split, data_dir=None if data_dir is None else Path(data_dir), **options)


_SPLIT_OFFSET = {"train": 0, "val": 1, "test": 2, "unlabeled": 3}


@register(
    "isic2018", "ISIC 2018 Task 3 skin-lesion diagnosis (7 classes); synthetic look-alike without data_dir"
)
def _isic2018(
    split: str,
    data_dir: Path | None,
    image_size: int = 64,
    n: int | None = None,
    attribute_noise: float = 0.16,
    seed: int = 2018,
    transform: Callable | None = None,
) -> Dataset:
    if data_dir is not None:
        from medlab.data.formats.isic2018 import ISIC2018Task3

        if n is not None:
            raise ValueError("n (the number of synthetic images) cannot be set for the real ISIC 2018 data")
        return ISIC2018Task3(data_dir, split, image_size=image_size, transform=transform)
    from medlab.data.synth.skin_lesions import SkinLesionSpec, SyntheticSkinLesions

    if n is None:
        raise ValueError("the synthetic ISIC 2018 look-alike needs n, the number of images of the split")
    spec = SkinLesionSpec(
        n=n, image_size=image_size, attribute_noise=attribute_noise, seed=seed * 10 + _SPLIT_OFFSET[split]
    )
    return SyntheticSkinLesions(spec, transform=transform)


@register(
    "chestxray14",
    "ChestX-ray14 frontal radiographs, 14 findings (multi-label); synthetic radiographs without data_dir",
    splits=SPLITS,
)
def _chestxray14(
    split: str,
    data_dir: Path | None,
    image_size: int = 64,
    n: int | None = None,
    prevalence_floor: float = 0.02,
    seed: int = 2020,
    val_fraction: float = 0.1,
    transform: Callable | None = None,
) -> Dataset:
    if data_dir is not None:
        from medlab.data.formats.chestxray14 import ChestXray14

        if n is not None:
            raise ValueError("n (the number of synthetic images) cannot be set for the real ChestX-ray14 data")
        return ChestXray14(data_dir, split, image_size=image_size, val_fraction=val_fraction, transform=transform)
    from medlab.data.synth.chest_xrays import ChestXraySpec, SyntheticChestXrays

    if n is None:
        raise ValueError("the synthetic radiographs need n, the number of images of the split")
    spec = ChestXraySpec(
        n=n, image_size=image_size, prevalence_floor=prevalence_floor, seed=seed * 10 + _SPLIT_OFFSET[split]
    )
    return SyntheticChestXrays(spec, transform=transform)


@register(
    "head_ct",
    "Head CT volumes, haemorrhage type (none, intraparenchymal, subdural, intraventricular); synthetic only",
    splits=SPLITS,
)
def _head_ct(
    split: str,
    data_dir: Path | None,
    size: int = 32,
    n: int | None = None,
    seed: int = 2019,
    transform: Callable | None = None,
) -> Dataset:
    if data_dir is not None:
        raise ValueError(
            f"data_dir={str(data_dir)!r}: the head CT set of the Rubik's cube paper (1,486 scans from the "
            "authors' hospital) is private, so medlab has no reader for it; leave data_dir unset for the "
            "synthetic head CTs (data/README.md, BraTS section)"
        )
    from medlab.data.synth.brains3d import SyntheticHeadCTs, SyntheticHeadCTSpec

    if n is None:
        raise ValueError("the synthetic head CTs need n, the number of volumes of the split")
    return SyntheticHeadCTs(
        SyntheticHeadCTSpec(n=n, size=size, seed=seed * 10 + _SPLIT_OFFSET[split]), transform=transform
    )


@register(
    "brats",
    "BraTS 2018-2020 brain MR (t1, t1ce, t2, flair) with tumour sub-region masks; synthetic look-alike without data_dir",
    splits=SPLITS,
)
def _brats(
    split: str,
    data_dir: Path | None,
    size: int = 32,
    n: int | None = None,
    seed: int = 2019,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    transform: Callable | None = None,
) -> Dataset:
    if data_dir is not None:
        from medlab.data.formats.brats import BraTS

        if n is not None:
            raise ValueError("n (the number of synthetic volumes) cannot be set for the real BraTS data")
        return BraTS(
            data_dir, split, size=size, val_fraction=val_fraction, test_fraction=test_fraction, transform=transform
        )
    from medlab.data.synth.brains3d import SyntheticBrainTumours, SyntheticBrainTumourSpec

    if n is None:
        raise ValueError("the synthetic brain tumour volumes need n, the number of volumes of the split")
    return SyntheticBrainTumours(
        SyntheticBrainTumourSpec(n=n, size=size, seed=seed * 10 + _SPLIT_OFFSET[split]), transform=transform
    )


def _synthetic_fundus(name: str, domain: str, split: str, n: int | None, image_size: int, seed: int, transform):
    from medlab.data.synth.fundus import SyntheticFundus, SyntheticFundusSpec

    if n is None:
        raise ValueError(f"the synthetic {name} look-alike needs n, the number of images of the split")
    spec = SyntheticFundusSpec(n=n, image_size=image_size, domain=domain, seed=seed * 10 + _SPLIT_OFFSET[split])
    return SyntheticFundus(spec, transform=transform)


@register(
    "refuge",
    "REFUGE 2018 colour fundus photographs, optic disc and cup masks (disc-centred crops); synthetic look-alike without data_dir",
)
def _refuge(
    split: str,
    data_dir: Path | None,
    image_size: int = 64,
    n: int | None = None,
    seed: int = 2020,
    roi: str = "disc",
    transform: Callable | None = None,
) -> Dataset:
    if data_dir is not None:
        from medlab.data.formats.refuge import REFUGE

        if n is not None:
            raise ValueError("n (the number of synthetic images) cannot be set for the real REFUGE data")
        return REFUGE(data_dir, split, image_size=image_size, roi=roi, transform=transform)
    return _synthetic_fundus("REFUGE", "refuge", split, n, image_size, seed, transform)


@register(
    "drishti_gs",
    "Drishti-GS1 colour fundus photographs, optic disc and cup from the annotators' soft maps; synthetic look-alike (another camera) without data_dir",
)
def _drishti_gs(
    split: str,
    data_dir: Path | None,
    image_size: int = 64,
    n: int | None = None,
    seed: int = 2020,
    roi: str = "disc",
    soft_threshold: float = 0.5,
    transform: Callable | None = None,
) -> Dataset:
    if data_dir is not None:
        from medlab.data.formats.drishti_gs import DrishtiGS

        if n is not None:
            raise ValueError("n (the number of synthetic images) cannot be set for the real Drishti-GS data")
        return DrishtiGS(data_dir, split, image_size=image_size, roi=roi, soft_threshold=soft_threshold, transform=transform)
    return _synthetic_fundus("Drishti-GS", "drishti", split, n, image_size, seed, transform)
