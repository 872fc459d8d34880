"""Chapter 7 settings: the methods, the ``Settings`` dataclass and its smoke, demo and paper profiles."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from medlab import runtime
from medlab.experiment import ChapterSettings, grid_field, training_field

SLUG = "tc_mgan"
DATASETS = ("brats_slices",)


@dataclass(frozen=True)
class Method:
    """A synthesis method: one conditional generator for the three targets (``kind="gan"``) with or
    without the modality classifier, the gradient penalty (without it: weight clipping) and the
    tumour-consistency loss; or pix2pix, one generator per target (``kind="pix2pix"``)."""

    kind: str
    classifier: bool = True
    penalty: bool = True
    consistency: bool = False
    description: str = ""


METHODS: dict[str, Method] = {
    "tc_mgan": Method("gan", consistency=True, description="TC-MGAN: MGAN + the tumour-consistency loss"),
    "mgan": Method("gan", description="MGAN: one generator, WGAN-GP critic with modality classifier, L1"),
    "pix2pix": Method("pix2pix", description="pix2pix: one generator per target, PatchGAN, L1"),
    "no_cls": Method("gan", classifier=False, consistency=True, description="TC-MGAN without the modality classifier"),
    "no_gp": Method("gan", penalty=False, consistency=True, description="TC-MGAN with weight clipping instead of the gradient penalty"),
}
MAIN = ("tc_mgan", "mgan", "pix2pix")
ABLATION = ("no_cls", "no_gp")
GAN, SEGMENTOR, JUDGE, DOWNSTREAM = ("gan",), ("segmentor",), ("judge",), ("downstream",)  # the stages of the runs' identities


@dataclass(frozen=True, kw_only=True)
class Settings(ChapterSettings):
    """Everything a chapter-7 run depends on; one instance per profile in :data:`PROFILES`."""

    methods: tuple[str, ...] = grid_field(MAIN)  # run at every seed
    side_methods: tuple[str, ...] = grid_field(ABLATION)  # run at side_seeds
    side_seeds: tuple[int, ...] = grid_field((0, 1, 2))
    image_size: int = 32  # slices are resized to image_size x image_size (the code: 128)
    n_train: int = 1024  # slices of the GAN's cases (real data: 0 = all)
    n_val: int = 1024  # slices of the judge's cases
    n_test: int = 512
    healthy_fraction: float = 0.15  # synthetic slices without a tumour
    data_seed: int = 2020
    # the GANs (stage "gan")
    epochs: int = training_field(8, stages=GAN)
    batch_size: int = training_field(32, stages=GAN)
    lr: float = training_field(2e-4, stages=GAN)  # Adam, the code's default betas; steps as the code's 30/60/90 of 100
    width: int = training_field(16, stages=GAN)  # the generator's first width (the code: 64)
    critic_width: int = training_field(16, stages=GAN)  # the critic's (the code: 64)
    cls_weight: float = training_field(1.0, stages=GAN)  # lambda_cls
    gp_weight: float = training_field(10.0, stages=GAN)  # lambda_gp
    rec_weight: float = training_field(0.1, stages=GAN)  # lambda_rec, on the L1 summed over pixels
    seg_weight: float = training_field(10.0, stages=GAN)  # lambda_seg, the tumour-consistency loss
    clip: float = training_field(0.01, stages=GAN)  # the no_gp ablation's weight clipping
    pix2pix_l1: float = training_field(100.0, stages=GAN)  # pix2pix's lambda_L1 on the mean L1
    # S and the judge are trained once, at this seed, and shared by every seed's GANs (the code pretrains S once)
    segmentor_seed: int = training_field(0, stages=SEGMENTOR + JUDGE)
    # the tumour-consistency segmentor S, pretrained on the GAN's cases (stage "segmentor", and the GAN's)
    seg_widths: tuple[int, ...] = training_field((16, 32, 64, 128), stages=SEGMENTOR + GAN)
    seg_epochs: int = training_field(10, stages=SEGMENTOR)
    seg_lr: float = training_field(1e-3, stages=SEGMENTOR)  # the code: 1e-4 for 30 epochs
    # the judge: a fixed segmentor trained on real images of other cases (stage "judge")
    judge_widths: tuple[int, ...] = training_field((16, 32, 64, 128), stages=JUDGE)
    judge_epochs: int = training_field(20, stages=JUDGE)
    judge_lr: float = training_field(1e-3, stages=JUDGE)
    # the downstream claim (stage "downstream"): a segmentor on T2 + synthetic modalities vs T2 alone
    downstream_inputs: tuple[str, ...] = grid_field(())  # "t2", "real" or a synthesis method
    downstream_epochs: int = training_field(30, stages=DOWNSTREAM)  # the code's
    downstream_lr: float = training_field(1e-3, stages=DOWNSTREAM)  # the code's
    eval_batch_size: int = 64


# 24 GAN epochs, chosen on the development seed, at 4 seeds (see the ledger); the ablation runs in the paper profile
_DEMO = Settings(seeds=(0, 1, 2, 3), side_seeds=(0, 1, 2), side_methods=(), epochs=24)

PROFILES: dict[str, Settings] = {
    # every method and code path on a few batches, in one process
    "smoke": dataclasses.replace(
        _DEMO, image_size=16, n_train=16, n_val=16, n_test=8, seeds=(0,), side_seeds=(0,), side_methods=ABLATION, epochs=1, batch_size=8,
        width=4, critic_width=4, seg_widths=(4, 8), seg_epochs=1, judge_widths=(4, 8), judge_epochs=1, workers=1,
        downstream_inputs=("t2", "tc_mgan"), downstream_epochs=1,
    ),
    "demo": _DEMO,
    # the real slices under data_dir with the code's sizes: 128 x 128, widths 64, batch 64, 100 epochs
    "paper": Settings(
        image_size=128, n_train=0, n_val=0, n_test=0, seeds=(0, 1, 2), side_seeds=(0,), side_methods=ABLATION, epochs=100, batch_size=64,
        width=64, critic_width=64, rec_weight=0.1, seg_widths=(64, 128, 256, 512), seg_epochs=30, seg_lr=1e-4,
        judge_widths=(32, 64, 128, 256), judge_epochs=30, num_workers=2, downstream_inputs=("t2", "tc_mgan", "mgan", "real"),
    ),
}


def settings(profile: str | None = None, **overrides: Any) -> Settings:
    """The settings of ``profile`` (default: ``$MEDLAB_PROFILE`` or demo) with overrides applied."""
    config = runtime.settings_for(PROFILES, runtime.resolve_profile(profile), **overrides)
    unknown = [m for m in (*config.methods, *config.side_methods) if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {', '.join(METHODS)}")
    missing = [m for m in config.downstream_inputs if m not in ("t2", "real") and m not in (*config.methods, *config.side_methods)]
    if missing:
        raise ValueError(f"downstream_inputs {missing} name no method of the grid (methods or side_methods), nor 't2' or 'real'")
    for name in ("epochs", "batch_size", "width", "critic_width", "seg_epochs", "judge_epochs", "downstream_epochs", "eval_batch_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    side = config.image_size
    if side < 16 or side & (side - 1):
        raise ValueError(f"image_size must be a power of two >= 16 (the U-Net and the critic halve it), got {side}")
    for name in ("seg_widths", "judge_widths"):
        if side % 2 ** len(getattr(config, name)):
            raise ValueError(f"image_size {side} must be divisible by 2**len({name})")
    if not 0 <= config.healthy_fraction < 1:
        raise ValueError(f"healthy_fraction must be in [0, 1), got {config.healthy_fraction}")
    return config
