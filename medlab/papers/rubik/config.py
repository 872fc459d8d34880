"""Chapter 3 settings: the tasks, the proxy-task variants, the ``Settings`` dataclass and its smoke,
demo and paper profiles.

The chapter trains in two stages: pretraining on the proxy task (``stage="pretrain"``), then
fine-tuning on a downstream task (``stage="finetune"``). A setting used by one stage only is declared
for it, so changing a fine-tuning setting never repeats a pretraining.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from medlab import runtime
from medlab.experiment import ChapterSettings, grid_field, training_field

from .method import CUBES

SLUG = "rubik"
# BraTS 2018's training release (210 HGG and 75 LGG cases) less the 15% validation and 15% test cases
# the reader holds out in each grade: the labelled volumes, and the pretraining pool, of the paper profile
BRATS_2018_TRAIN_CASES = 199
DATASETS = ("head_ct", "brats")

TASKS = {
    "classification": "head_ct",  # haemorrhage type on (synthetic) head CT
    "segmentation": "brats",  # tumour sub-regions on BraTS (or its synthetic look-alike)
}
PRETRAIN, FINETUNE, PROBE = ("pretrain",), ("finetune",), ("probe",)  # the stages of a training setting
DOWNSTREAM = (*FINETUNE, *PROBE)  # a linear probe trains like a fine-tuning run, on a frozen encoder


@dataclass(frozen=True)
class ProxyTask:
    """A pretraining variant: which transformations are applied to the cubes (and learned)."""

    permute: bool
    rotate: bool
    description: str


PRETRAINING = {
    "rubik": ProxyTask(True, True, "rearrangement and rotation (Eq. 4)"),
    "rearrangement": ProxyTask(True, False, "rearrangement only (Eq. 2)"),
    "rotation": ProxyTask(False, True, "rotation only (Eq. 3)"),
}
INITS = ("scratch", *PRETRAINING)  # how a downstream network starts


@dataclass(frozen=True, kw_only=True)
class Settings(ChapterSettings):
    """Everything a chapter-3 run depends on; one instance per profile in :data:`PROFILES`."""

    volume_size: int
    widths: tuple[int, ...]  # channels of the encoder's stages
    data_seed: int = 2019
    # the grid
    tasks: tuple[str, ...] = grid_field()
    ablation_tasks: tuple[str, ...] = grid_field()
    label_counts: tuple[int, ...] = grid_field()  # labeled volumes of the label-efficiency runs
    ablation_labels: int = grid_field()  # labeled volumes of the ablation runs
    probe_labels: int = grid_field()  # labeled volumes of the linear probes (segmentation)
    probe_seeds: tuple[int, ...] = grid_field((0, 1, 2))  # the seeds (among seeds) of the linear probes
    # pretraining (the proxy task)
    cube_size: int = training_field(stages=PRETRAIN)
    n_unlabeled: int = training_field(stages=PRETRAIN)
    num_permutations: int = training_field(stages=PRETRAIN)  # K of Eq. (1)
    pretrain_epochs: int = training_field(stages=PRETRAIN)
    pretrain_batch_size: int = training_field(stages=PRETRAIN)
    pretrain_lr: float = training_field(stages=PRETRAIN)
    pretrain_weight_decay: float = training_field(1e-4, stages=PRETRAIN)
    permutation_weight: float = training_field(1.0, stages=PRETRAIN)  # alpha of Eq. (4)
    rotation_weight: float = training_field(1.0, stages=PRETRAIN)  # beta of Eq. (4)
    hidden: int = training_field(256, stages=PRETRAIN)  # width of the proxy task's fully connected layers
    proxy_val_volumes: int = training_field(32, stages=PRETRAIN)  # validation volumes of the held-out puzzles
    # a development probe of the puzzle, 0 in every profile: the pretraining volumes scaled by a fixed
    # ramp, 1 +- intensity_ramp across the second and third axes, which makes every turn of a cube readable
    intensity_ramp: float = training_field(0.0, stages=PRETRAIN)
    # the paper's preprocessing: every cube mapped to [-1, 1] by its own range (off in the demo: see the ledger)
    normalise_cubes: bool = training_field(False, stages=PRETRAIN)
    # a development control, False in every profile: the encoder stays random, only the puzzle's heads train
    freeze_encoder: bool = training_field(False, stages=PRETRAIN)
    # fine-tuning (the downstream tasks)
    n_labeled: int = training_field(stages=DOWNSTREAM)
    n_val: int = training_field(stages=DOWNSTREAM)
    n_test: int = training_field(stages=DOWNSTREAM)
    finetune_epochs: int = training_field(stages=DOWNSTREAM)
    finetune_batch_size: int = training_field(stages=DOWNSTREAM)
    finetune_lr: float = training_field(stages=DOWNSTREAM)
    finetune_weight_decay: float = training_field(1e-4, stages=DOWNSTREAM)
    probe_lr: float = training_field(0.1, stages=PROBE)  # peak rate of the linear probes (one linear layer; see the ledger)
    # a small labeled subset is repeated up to this many samples per epoch
    finetune_epoch_samples: int = training_field(stages=DOWNSTREAM)

    @property
    def max_gap(self) -> int:
        """The largest random gap between neighbouring cubes that still fits in the volume."""
        return self.volume_size - 2 * self.cube_size


_DEMO = Settings(
    volume_size=32,
    cube_size=12,
    widths=(16, 32, 64),  # at 8-16-32, 3 of 8 development runs from scratch found no tumour (see the ledger)
    n_unlabeled=192,
    n_labeled=64,
    n_val=32,
    n_test=200,
    tasks=("segmentation",),  # the head-CT classification runs in the paper profile (see the ledger)
    ablation_tasks=(),
    seeds=(0, 1, 2, 3, 4),
    num_permutations=24,
    pretrain_epochs=12,
    pretrain_batch_size=16,
    pretrain_lr=3e-3,
    label_counts=(40,),
    ablation_labels=40,
    probe_labels=40,
    finetune_epochs=12,
    finetune_batch_size=4,
    finetune_lr=2e-3,
    finetune_epoch_samples=64,
)

PROFILES: dict[str, Settings] = {
    # the demo's grid at a few batches, in one process: every code path in seconds
    "smoke": dataclasses.replace(
        _DEMO,
        volume_size=24,
        cube_size=8,
        widths=(4, 8, 16),
        n_unlabeled=16,
        n_labeled=16,
        n_val=8,
        n_test=8,
        seeds=(0,),
        probe_seeds=(0,),
        num_permutations=8,
        pretrain_epochs=1,
        pretrain_batch_size=8,
        hidden=32,
        proxy_val_volumes=8,
        tasks=("classification", "segmentation"),
        ablation_tasks=("segmentation",),
        label_counts=(8, 16),
        ablation_labels=8,
        probe_labels=8,
        finetune_epochs=1,
        finetune_batch_size=4,
        finetune_epoch_samples=8,
        workers=1,
    ),
    "demo": _DEMO,
    # BraTS from data_dir (segmentation); synthetic head CTs at 64 voxels (the paper's CT set is private)
    "paper": Settings(
        volume_size=64,
        cube_size=24,
        widths=(16, 32, 64, 128),
        n_unlabeled=2000,
        n_labeled=400,
        n_val=100,
        n_test=400,
        tasks=("classification", "segmentation"),
        ablation_tasks=("classification", "segmentation"),
        seeds=(0, 1, 2),
        num_permutations=100,
        pretrain_epochs=100,
        pretrain_batch_size=16,
        pretrain_lr=1e-3,
        label_counts=(40, 100, BRATS_2018_TRAIN_CASES),  # the largest: every training case of BraTS 2018
        ablation_labels=100,
        probe_labels=40,
        finetune_epochs=60,
        finetune_batch_size=4,
        finetune_lr=1e-3,
        # a small labelled set is repeated to about 200 volumes per epoch; 199, so that all 199 cases
        # of BraTS 2018 make one pass per epoch (at 200 they would be repeated twice)
        finetune_epoch_samples=BRATS_2018_TRAIN_CASES,
        hidden=1024,
        proxy_val_volumes=64,
        normalise_cubes=True,  # as the paper's preprocessing (the demo keeps the volume's range; see the ledger)
        num_workers=4,
    ),
}


def settings(profile: str | None = None, **overrides: Any) -> Settings:
    """The settings of ``profile`` (default: ``$MEDLAB_PROFILE`` or demo) with overrides applied."""
    config = runtime.settings_for(PROFILES, runtime.resolve_profile(profile), **overrides)
    unknown = [t for t in (*config.tasks, *config.ablation_tasks) if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; expected some of {', '.join(TASKS)}")
    reduction = 2 ** (len(config.widths) - 1)
    if config.cube_size % reduction or config.volume_size % reduction:
        raise ValueError(
            f"volume_size {config.volume_size} and cube_size {config.cube_size} must be divisible by "
            f"{reduction} (the encoder halves them {len(config.widths) - 1} times)"
        )
    if config.max_gap < 0:
        raise ValueError(f"2 x cube_size ({2 * config.cube_size}) exceeds volume_size {config.volume_size}")
    if not 2 <= config.num_permutations <= math.factorial(CUBES):
        raise ValueError(f"num_permutations must be in [2, {math.factorial(CUBES)}], got {config.num_permutations}")
    too_many = [n for n in (*config.label_counts, config.ablation_labels) if not 1 <= n <= config.n_labeled]
    if too_many:
        raise ValueError(f"label counts {too_many} must be in [1, n_labeled = {config.n_labeled}]")
    stray = [s for s in config.probe_seeds if s not in config.seeds]
    if stray:
        raise ValueError(f"probe_seeds {stray} are not among seeds {tuple(config.seeds)}")
    if not 0 <= config.intensity_ramp < 1:
        raise ValueError(f"intensity_ramp must be in [0, 1) (a ramp of 1 would zero a corner), got {config.intensity_ramp}")
    short = {k: getattr(config, k) for k in ("pretrain_epochs", "finetune_epochs") if getattr(config, k) < 1}
    if short:
        raise ValueError(f"epochs must be >= 1, got {short}")
    return config
