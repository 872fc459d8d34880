"""Chapter 5 settings: the tasks, the methods, the ``Settings`` dataclass and its smoke, demo and paper
profiles."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from medlab import runtime
from medlab.experiment import ChapterSettings, grid_field, training_field

from .method import TRUNKS

SLUG = "crossover"
DATASETS = ("kits19", "acdc", "inbreast")


@dataclass(frozen=True)
class Task:
    """A segmentation task: the registry dataset, the target structure and whether the clean-up fills
    holes (not for a ring: the myocardium surrounds the cavity)."""

    dataset: str
    target: str
    fill_holes: bool
    description: str


TASKS: dict[str, Task] = {
    "kidney_tumour": Task("kits19", "tumour", True, "renal tumour on contrast-enhanced CT (KiTS19)"),
    "myocardium": Task("acdc", "myocardium", False, "left-ventricle myocardium on cine MR (ACDC)"),
    "mass": Task("inbreast", "mass", True, "breast mass on mammograms (INbreast)"),
}


@dataclass(frozen=True)
class Method:
    """A network and its loss: the patch arms (``vertical``, ``horizontal``, ``square``) with the weights
    of the consistency and diversity terms of Eq. (3) and its normalisation, or the U-Net."""

    kind: str  # "patch" or "unet"
    arms: tuple[str, ...] = ()
    consistency: float = 0.0
    diversity: float = 0.0
    normalise: str = "minmax"


BOTH = ("vertical", "horizontal")
PATCH, UNET = ("patch",), ("unet",)  # the stages of the runs' identities
METHODS: dict[str, Method] = {
    "crossover": Method("patch", BOTH, 1.0, 1.0),
    "ce_only": Method("patch", BOTH),
    "unet": Method("unet"),
    # baselines: one arm, or a square patch of the same area, with the same trunk
    "vertical": Method("patch", ("vertical",)),
    "horizontal": Method("patch", ("horizontal",)),
    "square": Method("patch", ("square",)),
    # ablation of Eq. (3)
    "consistency_only": Method("patch", BOTH, 1.0, 0.0),
    "diversity_only": Method("patch", BOTH, 0.0, 1.0),
    "no_minmax": Method("patch", BOTH, 1.0, 1.0, "none"),
}
MAIN = ("crossover", "ce_only", "unet")
BASELINES = ("vertical", "horizontal", "square")
ABLATION = ("consistency_only", "diversity_only", "no_minmax")


@dataclass(frozen=True, kw_only=True)
class Settings(ChapterSettings):
    """Everything a chapter-5 run depends on; one instance per profile in :data:`PROFILES`."""

    task: str = "kidney_tumour"
    image_size: int = 64  # the side of the square region of interest, pixels
    n_train: int = 128  # crops (real data: 0 = every crop of the split)
    n_val: int = 16  # crops scored after every epoch (the curves only)
    n_test: int = 192
    methods: tuple[str, ...] = grid_field(MAIN)  # run at every seed
    side_methods: tuple[str, ...] = grid_field(BASELINES + ABLATION)  # run at side_seeds
    side_seeds: tuple[int, ...] = grid_field((0, 1, 2))  # those among the seeds
    # patch networks only (their runs' identity ignores the U-Net's settings, and vice versa)
    trunk: str = training_field("small", stages=PATCH)  # a key of method.TRUNKS; the square baseline: "<trunk>_square"
    epochs: int = training_field(8, stages=PATCH)
    batch_size: int = training_field(200, stages=PATCH)
    lr: float = training_field(1e-3, stages=PATCH)
    consistency_weight: float = training_field(1.0, stages=PATCH)  # lambda_c of Eq. (3), where the method uses it
    diversity_weight: float = training_field(1.0, stages=PATCH)  # lambda_d of Eq. (3)
    grid_step: int = training_field(6, stages=PATCH)  # Eq. (4): the regular grid of centres, pixels
    boundary_fraction: float = training_field(0.4, stages=PATCH)  # Eq. (4): the share of boundary pixels taken
    ring_offsets: tuple[float, ...] = training_field((2.0, 4.0, 6.0, 9.0), stages=PATCH)  # Eq. (4): rings, pixels
    ring_rates: tuple[float, ...] = training_field((0.3, 0.2, 0.15, 0.1), stages=PATCH)
    max_centres: int = training_field(12000, stages=PATCH)  # centres per run after balancing (a random subset beyond)
    unet_widths: tuple[int, ...] = training_field((16, 32, 64, 128), stages=UNET)
    unet_epochs: int = training_field(40, stages=UNET)
    unet_batch_size: int = training_field(16, stages=UNET)
    unet_lr: float = training_field(3e-3, stages=UNET)
    closing_radius: int = 1  # Eq. (5): the disk of the closing, pixels (every method's clean-up)
    data_seed: int = 2020


_DEMO = Settings(seeds=(0, 1, 2, 3, 4, 5), side_seeds=(0, 1, 2, 3, 4, 5))

PROFILES: dict[str, Settings] = {
    # every method and code path at a few batches, in one process
    "smoke": dataclasses.replace(
        _DEMO, image_size=32, n_train=8, n_val=4, n_test=8, seeds=(0,), side_seeds=(0,), epochs=1,
        batch_size=64, max_centres=256, unet_widths=(4, 8), unet_epochs=1, unet_batch_size=4, workers=1,
    ),
    "demo": _DEMO,
    # the real data under data_dir with the paper's network and optimiser: 100 x 20 arms, Adam at 1e-4,
    # 16 epochs of batches of 200
    "paper": Settings(
        image_size=128, n_train=0, n_val=32, n_test=0, seeds=(0, 1, 2, 3, 4), side_seeds=(0, 1, 2), trunk="paper",
        epochs=16, batch_size=200, lr=1e-4, grid_step=8, ring_offsets=(1.0, 3.0, 6.0, 10.0, 15.0, 21.0),
        ring_rates=(0.15, 0.135, 0.12, 0.105, 0.09, 0.075), max_centres=200000, closing_radius=3,
        unet_widths=(32, 64, 128, 256), unet_epochs=100, unet_lr=1e-3, num_workers=2,
    ),
}


def settings(profile: str | None = None, **overrides: Any) -> Settings:
    """The settings of ``profile`` (default: ``$MEDLAB_PROFILE`` or demo) with overrides applied."""
    config = runtime.settings_for(PROFILES, runtime.resolve_profile(profile), **overrides)
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; expected one of {', '.join(TASKS)}")
    unknown = [m for m in (*config.methods, *config.side_methods) if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {', '.join(METHODS)}")
    if config.trunk not in TRUNKS or f"{config.trunk}_square" not in TRUNKS:
        raise ValueError(f"unknown trunk {config.trunk!r}; expected one of {', '.join(k for k in TRUNKS if not k.endswith('_square'))}")
    if len(config.ring_offsets) != len(config.ring_rates):
        raise ValueError(f"{len(config.ring_offsets)} ring_offsets but {len(config.ring_rates)} ring_rates")
    rates = [r for r in (config.boundary_fraction, *config.ring_rates) if not 0 <= r <= 1]
    if rates:
        raise ValueError(f"sampling rates must be in [0, 1], got {rates}")
    for name in ("epochs", "batch_size", "grid_step", "unet_epochs", "unet_batch_size", "image_size", "max_centres"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    reduction = 2 ** (len(config.unet_widths) - 1)
    if config.image_size % reduction:
        raise ValueError(f"image_size {config.image_size} must be divisible by {reduction} (the U-Net halves it {len(config.unet_widths) - 1} times)")
    if config.closing_radius < 0:
        raise ValueError(f"closing_radius must be >= 0, got {config.closing_radius}")
    return config
