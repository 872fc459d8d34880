"""Chapter 6 settings: the methods, the ``Settings`` dataclass and its smoke, demo and paper profiles."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from medlab import runtime
from medlab.experiment import ChapterSettings, grid_field, training_field

SLUG = "ltnet"
DATASETS = ("oneshot_brains",)


@dataclass(frozen=True)
class Method:
    """A method: a registration network trained with some of LT-Net's terms (``kind="registration"``,
    each cycle term on or off), a segmentation network (``"segmentation"``, trained on the atlas alone or
    on every labelled training volume), or the identity (the atlas label as it is)."""

    kind: str
    image_cycle: bool = False
    label_cycle: bool = False
    field_cycle: bool = False
    labels: str = ""  # segmentation networks: "atlas" or "all"


METHODS: dict[str, Method] = {
    "ltnet": Method("registration", True, True, True),
    "oneway": Method("registration"),
    # baselines and references
    "atlas_seg": Method("segmentation", labels="atlas"),
    "supervised": Method("segmentation", labels="all"),
    "identity": Method("identity"),
    # ablation: each cycle term removed in turn
    "no_image_cycle": Method("registration", False, True, True),
    "no_label_cycle": Method("registration", True, False, True),
    "no_field_cycle": Method("registration", True, True, False),
}
MAIN = ("ltnet", "oneway")
BASELINES = ("identity", "atlas_seg", "supervised")
ABLATION = ("no_image_cycle", "no_label_cycle", "no_field_cycle")
REG, SEG = ("registration",), ("segmentation",)  # the stages of the runs' identities


@dataclass(frozen=True, kw_only=True)
class Settings(ChapterSettings):
    """Everything a chapter-6 run depends on; one instance per profile in :data:`PROFILES`."""

    shape: tuple[int, ...] = (24, 32, 24)  # volumes are resampled to this (voxels)
    n_unlabeled: int = 48  # unlabelled training targets (real data: 0 = every subject of the split)
    n_val: int = 8  # development targets, scored after every epoch (the curves only)
    n_test: int = 40
    labels: str = "seg4"  # real data: the label map (OASIS "seg4" or "seg35")
    atlas: str = ""  # real data: the atlas subject ("" = the first subject)
    methods: tuple[str, ...] = grid_field(MAIN)  # run at every seed
    side_methods: tuple[str, ...] = grid_field(BASELINES + ABLATION)  # baselines at side_seeds, ablation at ablation_seeds
    side_seeds: tuple[int, ...] = grid_field((0, 1, 2))  # those among the seeds
    ablation_seeds: tuple[int, ...] = grid_field((0, 1))  # those among the seeds
    # registration networks
    channels: tuple[int, ...] = training_field((8, 16, 16, 16, 16, 8), stages=REG)  # VoxelMorph U-Net
    epochs: int = training_field(6, stages=REG)
    batch_size: int = training_field(1, stages=REG)
    lr: float = training_field(3e-3, stages=REG)
    similarity_weight: float = training_field(1.0, stages=REG)
    smoothness_weight: float = training_field(1.0, stages=REG)
    image_cycle_weight: float = training_field(1.0, stages=REG)
    label_cycle_weight: float = training_field(1.0, stages=REG)
    field_cycle_weight: float = training_field(0.1, stages=REG)
    lncc_kernel: int = training_field(5, stages=REG)
    # segmentation networks (atlas-only with augmentation, and fully supervised)
    seg_widths: tuple[int, ...] = training_field((8, 16, 32, 64), stages=SEG)
    seg_steps: int = training_field(200, stages=SEG)
    seg_batch_size: int = training_field(2, stages=SEG)
    seg_lr: float = training_field(3e-3, stages=SEG)
    data_seed: int = 2020
    deformation: float = 1.0  # synthetic targets: smooth displacement, voxels (see medlab.data.synth.oneshot_brains)


# the ablation runs in the paper profile: at 230 s per LT-Net run here, it would double the demo's cost
_DEMO = Settings(seeds=(0, 1, 2, 3, 4), side_methods=BASELINES)

PROFILES: dict[str, Settings] = {
    # every method and code path at a few steps, in one process
    "smoke": dataclasses.replace(
        _DEMO, side_methods=BASELINES + ABLATION, shape=(16, 24, 16), n_unlabeled=4, n_val=2, n_test=3, seeds=(0,), side_seeds=(0,), ablation_seeds=(0,), epochs=1,
        channels=(4, 8, 8, 8, 8, 4), seg_widths=(4, 8), seg_steps=2, workers=1,
    ),
    "demo": _DEMO,
    # the real data under data_dir: OASIS at 80 x 96 x 112, 35 structures, a wider network, longer
    "paper": Settings(
        shape=(80, 96, 112), n_unlabeled=0, n_val=8, n_test=0, labels="seg35", seeds=(0, 1, 2, 3, 4), side_methods=BASELINES + ABLATION,
        side_seeds=(0, 1, 2), ablation_seeds=(0, 1, 2), channels=(16, 32, 32, 32, 32, 32, 32, 16), epochs=30, batch_size=1, lr=1e-4,
        seg_widths=(16, 32, 64, 128), seg_steps=6000, num_workers=2,
    ),
}


def settings(profile: str | None = None, **overrides: Any) -> Settings:
    """The settings of ``profile`` (default: ``$MEDLAB_PROFILE`` or demo) with overrides applied."""
    config = runtime.settings_for(PROFILES, runtime.resolve_profile(profile), **overrides)
    unknown = [m for m in (*config.methods, *config.side_methods) if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {', '.join(METHODS)}")
    if len(config.shape) != 3 or min(config.shape) < 8:
        raise ValueError(f"shape must be three sides of at least 8 voxels, got {config.shape}")
    if len(config.channels) % 2 or len(config.channels) < 2:
        raise ValueError(f"channels must list an encoder and a decoder of the same depth, got {config.channels}")
    for name, levels in (("channels", len(config.channels) // 2), ("seg_widths", len(config.seg_widths) - 1)):
        odd = [s for s in config.shape if s % 2**levels]
        if odd:
            raise ValueError(f"shape {tuple(config.shape)}: every side must be divisible by {2**levels} for {name} {tuple(getattr(config, name))}")
    for name in ("epochs", "batch_size", "seg_steps", "seg_batch_size", "n_test", "n_val") if config.n_test else ("epochs", "batch_size", "seg_steps", "seg_batch_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if config.labels not in ("seg4", "seg35"):
        raise ValueError(f"labels must be 'seg4' or 'seg35', got {config.labels!r}")
    if config.lncc_kernel < 3 or config.lncc_kernel % 2 == 0:
        raise ValueError(f"lncc_kernel must be odd and >= 3, got {config.lncc_kernel}")
    return config
