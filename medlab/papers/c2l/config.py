"""Chapter 2 settings: the pretraining methods, the ``Settings`` dataclass and its smoke, demo and
paper profiles.

A pretraining run's identity holds the settings of stage ``pretrain`` only, so that changing a
fine-tuning setting never repeats a pretraining; a downstream run (stage ``finetune`` or ``probe``)
holds its own stage's settings and the identity of the pretraining it starts from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from medlab import runtime
from medlab.experiment import ChapterSettings, grid_field, training_field

SLUG = "c2l"
DATASETS = ("chestxray14",)

PRETRAIN = ("pretrain",)
FINETUNE = ("finetune",)
PROBE = ("probe",)
DOWNSTREAM = (*FINETUNE, *PROBE)

TERMS = {
    "instance": "l(q, k): the two views of an image (instance discrimination)",
    "mixed": "l(q~, k~): the mixed query against the mixed key",
    "mixed_target": "l(q~, k_mix): the mixed query against the mixed key features",
}


@dataclass(frozen=True)
class Variant:
    """A pretraining method: which comparisons of Eq. (5) it makes, and setting changes."""

    description: str
    terms: tuple[str, ...]
    changes: tuple[str, ...] = ()  # settings replaced by their ``ablation_*`` value


PRETRAINING = {
    "moco": Variant("instance discrimination with a momentum encoder (MoCo), no mixup", ("instance",)),
    "c2l": Variant("C2L", ("instance", "mixed", "mixed_target")),
    "c2l_no_instance": Variant("C2L without l(q, k)", ("mixed", "mixed_target")),
    "c2l_no_mixed": Variant("C2L without l(q~, k~)", ("instance", "mixed_target")),
    "c2l_no_mixed_target": Variant("C2L without l(q~, k_mix)", ("instance", "mixed")),
    "c2l_queue": Variant("C2L with the ablation's queue size", ("instance", "mixed", "mixed_target"), ("queue_size",)),
    "c2l_momentum": Variant("C2L with the ablation's momentum", ("instance", "mixed", "mixed_target"), ("momentum",)),
}
INITS = ("scratch", "imagenet", *PRETRAINING)
PROTOCOLS = {"finetune": "every layer trained", "probe": "linear probe on frozen features"}


@dataclass(frozen=True, kw_only=True)
class Settings(ChapterSettings):
    """Everything a chapter-2 run depends on; one instance per profile in :data:`PROFILES`."""

    # data and network (every stage)
    image_size: int
    n_unlabeled: int = training_field(stages=PRETRAIN)
    n_labeled: int = training_field(stages=DOWNSTREAM)
    n_val: int = training_field(stages=DOWNSTREAM)
    n_test: int = training_field(stages=DOWNSTREAM)
    backbone: str  # "narrow_resnet18" (1 channel, ``width``) or a torchvision name
    width: int
    feature_dim: int = 128
    prevalence_floor: float = 0.02
    data_seed: int = 2020
    # the grid
    imagenet: bool = grid_field()  # add the ImageNet-initialised row (where the weights can be loaded)
    pretrain_methods: tuple[str, ...] = grid_field()
    ablation_methods: tuple[str, ...] = grid_field()
    ablation_queue_size: int = grid_field()  # the queue size of method c2l_queue
    ablation_momentum: float = grid_field()  # the momentum of method c2l_momentum
    label_fractions: tuple[float, ...] = grid_field()  # shares of the labels of the linear probes
    finetune_fractions: tuple[float, ...] = grid_field()  # shares of the labels of the fine-tuning runs
    ablation_fraction: float = grid_field()
    # pretraining (Eq. 1 to 5)
    pretrain_epochs: int = training_field(stages=PRETRAIN)
    pretrain_batch_size: int = training_field(stages=PRETRAIN)
    pretrain_lr: float = training_field(stages=PRETRAIN)
    queue_size: int = training_field(stages=PRETRAIN)
    momentum: float = training_field(stages=PRETRAIN)
    bn_splits: int = training_field(stages=PRETRAIN)
    temperature: float = training_field(0.07, stages=PRETRAIN)
    mixup_alpha: float = training_field(1.0, stages=PRETRAIN)
    pretrain_weight_decay: float = training_field(1e-4, stages=PRETRAIN)
    lr_milestones: tuple[float, ...] = training_field((0.5, 2 / 3, 5 / 6), stages=PRETRAIN)  # x0.1 at each
    crop_scale: float = training_field(0.2, stages=PRETRAIN)
    rotation: float = training_field(10.0, stages=PRETRAIN)
    jitter: float = training_field(0.4, stages=PRETRAIN)
    cutout_holes: int = training_field(3, stages=PRETRAIN)
    cutout_fraction: float = training_field(32 / 224, stages=PRETRAIN)  # hole side / image side
    # fine-tuning and linear probe
    finetune_epochs: int = training_field(stages=FINETUNE)
    finetune_batch_size: int = training_field(stages=FINETUNE)
    finetune_lr: float = training_field(stages=FINETUNE)
    finetune_epoch_samples: int = training_field(stages=FINETUNE)  # a small subset is repeated up to this
    finetune_weight_decay: float = training_field(1e-5, stages=FINETUNE)
    probe_epochs: int = training_field(stages=PROBE)
    probe_lr: float = training_field(stages=PROBE)


_DEMO = Settings(
    image_size=64,
    n_unlabeled=1536,
    n_labeled=1024,
    n_val=384,
    n_test=1024,
    backbone="narrow_resnet18",
    width=16,
    imagenet=False,
    pretrain_methods=("moco", "c2l"),
    ablation_methods=(),  # five more pretrainings per seed: the paper profile runs them
    # development study flips30ft20 (these settings, seven seeds): paired differences with a spread of
    # 1.4 points, so six seeds give an interval of about +-1.5 within the demo's 15 minutes
    seeds=tuple(range(6)),
    # chosen on the development data seed (medlab.papers.c2l.development): flips only, since what tells
    # two synthetic patients apart is their framing and exposure, which crops and jitter take away;
    # the paper's rate scaled to batch 64, and long enough for the pretext task and the probe gates
    pretrain_epochs=30,
    pretrain_batch_size=64,
    pretrain_lr=0.015,
    crop_scale=1.0,
    rotation=0.0,
    jitter=0.0,
    cutout_holes=0,
    queue_size=1024,
    momentum=0.99,
    ablation_queue_size=256,
    ablation_momentum=0.999,
    bn_splits=4,
    label_fractions=(1.0,),
    finetune_fractions=(1.0,),
    finetune_epochs=20,  # development study flips30ft20: at 12 the validation AUROC was still rising
    finetune_batch_size=32,
    finetune_lr=3e-3,
    finetune_epoch_samples=320,
    probe_epochs=40,
    probe_lr=3e-3,
    ablation_fraction=1.0,
)

PROFILES: dict[str, Settings] = {
    # the demo's grid at a few batches, in one process: every code path in seconds
    "smoke": dataclasses.replace(
        _DEMO,
        image_size=32,
        n_unlabeled=128,
        n_labeled=96,
        n_val=64,
        n_test=96,
        width=8,
        ablation_methods=("c2l_no_instance",),
        seeds=(0,),
        pretrain_epochs=1,
        pretrain_batch_size=32,
        queue_size=128,
        ablation_queue_size=64,
        label_fractions=(0.1, 1.0),
        finetune_fractions=(0.1, 1.0),
        finetune_epochs=1,
        finetune_epoch_samples=64,
        probe_epochs=2,
        workers=1,
    ),
    "demo": _DEMO,
    "paper": Settings(  # ChestX-ray14 from data_dir; the official code's defaults
        image_size=224,
        n_unlabeled=0,
        n_labeled=0,
        n_val=0,
        n_test=0,
        backbone="resnet18",
        width=64,
        imagenet=True,
        pretrain_methods=("moco", "c2l"),
        ablation_methods=("c2l_no_instance", "c2l_no_mixed", "c2l_no_mixed_target", "c2l_queue", "c2l_momentum"),
        seeds=(0, 1, 2),
        pretrain_epochs=120,
        pretrain_batch_size=128,
        pretrain_lr=0.03,
        queue_size=16384,
        momentum=0.999,
        ablation_queue_size=4096,
        ablation_momentum=0.99,
        bn_splits=8,
        label_fractions=(0.01, 0.1, 1.0),
        finetune_fractions=(0.01, 0.1, 1.0),
        finetune_epochs=20,
        finetune_batch_size=64,
        finetune_lr=1e-4,
        finetune_epoch_samples=8192,
        probe_epochs=100,
        probe_lr=1e-3,
        ablation_fraction=0.1,
        num_workers=8,
    ),
}


def settings(profile: str | None = None, **overrides: Any) -> Settings:
    """The settings of ``profile`` (default: ``$MEDLAB_PROFILE`` or demo) with overrides applied."""
    config = runtime.settings_for(PROFILES, runtime.resolve_profile(profile), **overrides)
    unknown = [m for m in (*config.pretrain_methods, *config.ablation_methods) if m not in PRETRAINING]
    if unknown:
        raise ValueError(f"unknown pretraining method(s) {unknown}; expected some of {', '.join(PRETRAINING)}")
    bad = [f for f in (*config.label_fractions, *config.finetune_fractions) if not 0 < f <= 1]
    if bad or not 0 < config.ablation_fraction <= 1:
        raise ValueError(f"label fractions must be in (0, 1], got {bad or config.ablation_fraction}")
    if config.pretrain_batch_size % config.bn_splits:
        raise ValueError(
            f"pretrain_batch_size {config.pretrain_batch_size} is not divisible by bn_splits {config.bn_splits}"
        )
    for name in ("pretrain_epochs", "finetune_epochs", "probe_epochs"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    return config


def variant_settings(config: Settings, method: str) -> Settings:
    """``config`` with the changes of pretraining ``method`` applied (e.g. the ablation's queue size)."""
    if method not in PRETRAINING:
        raise ValueError(f"unknown pretraining method {method!r}; expected one of {', '.join(PRETRAINING)}")
    variant = PRETRAINING[method]
    return dataclasses.replace(config, **{name: getattr(config, f"ablation_{name}") for name in variant.changes})
