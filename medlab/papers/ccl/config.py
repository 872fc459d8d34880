"""Chapter 1 settings: the ``Settings`` dataclass and its smoke, demo and paper profiles."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from medlab import runtime
from medlab.nets.backbones import BACKBONES
from medlab.experiment import ChapterSettings, grid_field

SLUG = "ccl"
DATASETS = ("isic2018",)

METHODS = {
    "hard": "cross-entropy on one-hot labels",
    "label_smoothing": "cross-entropy on uniformly smoothed labels",
    "ccl": "CCL-Net: soft labels from learned class correlations + DML + correlation loss",
    "ccl_no_cc": "CCL-Net without the correlation loss (Eq. 5)",
    "ccl_no_soft": "CCL block as an auxiliary head only: hard labels for the classifier",
    "oracle_soft": "label smoothing whose mass follows the true class similarity (synthetic data only)",
}


@dataclass(frozen=True, kw_only=True)
class Settings(ChapterSettings):
    """Everything a chapter-1 run depends on; one instance per profile in :data:`PROFILES`."""

    image_size: int
    n_train: int  # synthetic training images, in ISIC 2018's class proportions
    n_val: int  # synthetic validation images, class-balanced (n_val / 7 per class) when balanced_eval
    n_test: int  # synthetic test images, class-balanced (n_test / 7 per class) when balanced_eval
    attribute_noise: float
    balanced_eval: bool = True  # synthetic validation and test splits with equal classes
    backbones: tuple[str, ...] = grid_field()
    methods: tuple[str, ...] = grid_field()
    ablation_backbone: str = grid_field()
    ablation_methods: tuple[str, ...] = grid_field()
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    pretrained: bool
    width: int = 16  # channels of the first stage of narrow_resnet18 (unused by torchvision backbones)
    embedding_dim: int = 128
    dml_scale: float = 16.0  # s of Eq. (2)
    soft_temperature: float = 0.25  # tau of Eq. (4)
    lambda_dml: float = 1.0  # Eq. (7)
    lambda_cc: float = 16.0  # Eq. (7); = dml_scale: its gradient on the class embeddings matches DML's in size
    label_smoothing: float = 0.1
    balanced_sampling: bool = True
    data_seed: int = 2018


_DEMO = Settings(
    image_size=32,
    n_train=10015,  # ISIC 2018 Task 3's training set: its size and class proportions (115 DF, 142 VASC)
    n_val=1050,  # 150 per class: selects the epoch
    n_test=2800,  # 400 per class: one image moves a class recall by 0.25 points, balanced accuracy by 0.04
    attribute_noise=0.14,
    backbones=("narrow_resnet18",),
    methods=("hard", "label_smoothing", "ccl"),
    ablation_backbone="narrow_resnet18",
    ablation_methods=("ccl_no_cc", "ccl_no_soft", "oracle_soft"),
    seeds=(0, 1, 2, 3, 4),
    epochs=6,
    batch_size=32,
    lr=3e-3,
    weight_decay=5e-4,
    pretrained=False,
    width=16,
)

PROFILES: dict[str, Settings] = {
    # the demo's grid at a few batches, in one process: every code path in seconds
    "smoke": dataclasses.replace(_DEMO, n_train=96, n_val=70, n_test=70, seeds=(0,), epochs=2, workers=1),
    "demo": _DEMO,
    "paper": Settings(  # ISIC 2018 from data_dir; the synthetic-only fields are unused
        image_size=224,
        n_train=0,
        n_val=0,
        n_test=0,
        attribute_noise=0.0,
        backbones=("resnet18", "resnet50", "densenet121"),
        methods=("hard", "label_smoothing", "ccl"),
        ablation_backbone="resnet50",
        ablation_methods=("ccl_no_cc", "ccl_no_soft"),
        seeds=(0, 1, 2, 3, 4),  # the evidence standard: 5 or more seeds for a ±3-point interval
        epochs=30,
        batch_size=32,
        lr=1e-4,
        weight_decay=1e-4,
        pretrained=True,
        num_workers=2,
    ),
}


def settings(profile: str | None = None, **overrides: Any) -> Settings:
    """The settings of ``profile`` (default: ``$MEDLAB_PROFILE`` or demo) with overrides applied."""
    config = runtime.settings_for(PROFILES, runtime.resolve_profile(profile), **overrides)
    unknown = [m for m in (*config.methods, *config.ablation_methods) if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {', '.join(METHODS)}")
    if config.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {config.epochs}")
    known = (*BACKBONES, "narrow_resnet18")
    unknown = [b for b in dict.fromkeys((*config.backbones, config.ablation_backbone)) if b not in known]
    if unknown:
        raise ValueError(f"unknown backbone(s) {unknown}; expected some of {', '.join(known)}")
    if config.pretrained and "narrow_resnet18" in (*config.backbones, config.ablation_backbone):
        raise ValueError("narrow_resnet18 has no ImageNet weights: set pretrained=False or choose torchvision backbones")
    if config.ablation_methods and config.ablation_backbone not in config.backbones:
        raise ValueError(
            f"ablation_backbone {config.ablation_backbone!r} is not among backbones {list(config.backbones)}: the ablation "
            "rows are compared with the comparison runs of their backbone; set both (e.g. -p ablation_backbone ...)"
        )
    return config
