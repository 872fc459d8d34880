"""Chapter 4 settings: the methods, the ``Settings`` dataclass and its smoke, demo and paper profiles."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from medlab import runtime
from medlab.experiment import ChapterSettings, grid_field

SLUG = "cross_denoise"
DATASETS = ("refuge", "drishti_gs")  # the source and the target domain
CLASSES = ("background", "disc rim", "cup")
REGIONS = {"optic disc": (1, 2), "optic cup": (2,)}  # nested: the disc holds the cup
NOISE_KINDS = ("dilation", "erosion", "shift", "elastic", "polygon")
MIXED = "mixed"  # every kind, one drawn per corrupted mask


@dataclass(frozen=True)
class Method:
    """Which components a training run uses."""

    peers: bool  # two networks (else one)
    selection: bool  # small-loss sample exchange, Eq. (2)
    noise_tolerant: bool  # key-location weights and disagreement filter, Eqs. (3)-(5)
    cross_learning: bool  # pseudo-labels on target images, Eq. (6)
    class_level: bool = True  # per-class confidence thresholds in Eq. (6) (else one global threshold)
    random_selection: bool = False  # the control of Eq. (2): hand the peer a random subset of the same size
    agreement: bool = False  # the variant of Eq. (6): pseudo-labels only where both peers agree, confidently


METHODS: dict[str, Method] = {
    "single": Method(peers=False, selection=False, noise_tolerant=False, cross_learning=False),
    "coteaching": Method(peers=True, selection=True, noise_tolerant=False, cross_learning=False),
    # the control of peer selection: two networks that drop the same share of each batch at random
    "random_drop": Method(peers=True, selection=True, noise_tolerant=False, cross_learning=False, random_selection=True),
    "cross_denoise": Method(peers=True, selection=True, noise_tolerant=True, cross_learning=True),
    # the ablation: the full method with one component removed
    "no_selection": Method(peers=True, selection=False, noise_tolerant=True, cross_learning=True),
    "no_noise_tolerant": Method(peers=True, selection=True, noise_tolerant=False, cross_learning=True),
    "no_cross_learning": Method(peers=True, selection=True, noise_tolerant=True, cross_learning=False),
    "global_confidence": Method(peers=True, selection=True, noise_tolerant=True, cross_learning=True, class_level=False),
    # a variant of Eq. (6) that is not the paper's reading (chosen on the development data)
    "agreement": Method(peers=True, selection=True, noise_tolerant=True, cross_learning=True, agreement=True),
}


@dataclass(frozen=True, kw_only=True)
class Settings(ChapterSettings):
    """Everything a chapter-4 run depends on; one instance per profile in :data:`PROFILES`.

    The grid (:func:`medlab.papers.cross_denoise.runs.grid`) has four experiments: ``main``, every
    method of ``methods`` on training masks of which ``main_rate`` are corrupted by ``main_kind`` (the
    chapter's comparisons); ``clean``, ``clean_methods`` on clean masks; ``noise_rate``,
    ``rate_methods`` at each of ``noise_rates`` (``main_kind``); ``noise_kind``,
    ``kind_methods`` on each kind of corruption alone at ``kind_rate``; the last two over ``axis_seeds``."""

    image_size: int
    widths: tuple[int, ...]
    n_source_train: int
    n_source_test: int
    n_target_train: int  # unlabelled target images for cross learning
    n_target_test: int
    main_kind: str = grid_field()  # the corruption of the main comparisons: a NOISE_KINDS entry or MIXED
    main_rate: float = grid_field()  # the share of the training masks it corrupts
    methods: tuple[str, ...] = grid_field()  # compared at (main_kind, main_rate)
    clean_methods: tuple[str, ...] = grid_field()  # trained on clean masks
    rate_methods: tuple[str, ...] = grid_field()  # along the noise-rate axis (main_kind)
    noise_rates: tuple[float, ...] = grid_field()
    axis_seeds: tuple[int, ...] = grid_field(())  # the seeds of the noise-rate and noise-kind axes; () = seeds
    kind_methods: tuple[str, ...] = grid_field()  # compared on each kind of corruption alone
    kind_rate: float = grid_field()
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 1e-4
    forget_rate: float | None = None  # tau of Eq. (2); None = the true fraction of corrupted masks
    selection_epochs: int = 5  # T_k of Eq. (2)
    boundary_band: float = 0.15  # s of Eq. (3), relative to each region's equivalent radius
    boundary_floor: float = 0.5  # w_0 of Eq. (3): the weight left on an outline
    disagreement_confidence: float = 0.9  # gamma of Eq. (4)
    confident_fraction: float = 0.5  # q of Eq. (6)
    agreement_confidence: float = 0.9  # the variant of Eq. (6): both peers at least this confident
    cross_weight: float = 1.0  # lambda of Eq. (7) after the ramp
    cross_ramp_epochs: int = 5  # lambda rises linearly after T_k over this many epochs
    noise_strength: float = 1.0
    data_seed: int = 2020


# The demo's design was chosen on the development data (data_seed 3020): see the deviation ledger.
_DEMO = Settings(
    image_size=64,
    widths=(8, 16, 32, 64),
    n_source_train=128,
    n_source_test=256,
    n_target_train=128,
    n_target_test=256,
    seeds=tuple(range(8)),
    main_kind="erosion",
    main_rate=0.75,
    methods=("single", "coteaching", "random_drop", "no_cross_learning", "cross_denoise", "agreement"),
    clean_methods=("single", "cross_denoise"),
    rate_methods=("single", "coteaching"),
    noise_rates=(0.25, 0.5),
    axis_seeds=(0, 1, 2, 3),
    kind_methods=(),
    kind_rate=0.5,
    epochs=20,
    batch_size=16,
    lr=3e-3,
    noise_strength=1.5,
)

PROFILES: dict[str, Settings] = {
    # the demo's grid at a few batches, in one process: every code path in seconds
    "smoke": dataclasses.replace(
        _DEMO,
        image_size=32,
        widths=(4, 8, 16),
        n_source_train=16,
        n_source_test=8,
        n_target_train=16,
        n_target_test=8,
        seeds=(0, 1),
        methods=("single", "coteaching", "random_drop", "no_cross_learning", "cross_denoise", "agreement"),
        clean_methods=("single", "cross_denoise"),
        noise_rates=(0.25,),
        axis_seeds=(0,),
        kind_methods=("single",),
        epochs=2,
        batch_size=8,
        selection_epochs=1,
        cross_ramp_epochs=1,
        workers=1,
    ),
    "demo": _DEMO,
    # REFUGE training images (data_dir) as the source, Drishti-GS (target_data_dir) as the target
    "paper": Settings(
        image_size=256,
        widths=(16, 32, 64, 128, 256),
        n_source_train=400,
        n_source_test=400,
        n_target_train=50,
        n_target_test=51,
        seeds=tuple(range(5)),
        main_kind="erosion",
        main_rate=0.75,
        methods=(
            "single", "coteaching", "random_drop", "no_cross_learning", "cross_denoise", "agreement",
            "no_selection", "no_noise_tolerant", "global_confidence",
        ),
        clean_methods=("single", "coteaching", "cross_denoise"),
        rate_methods=("single", "coteaching", "cross_denoise"),
        noise_rates=(0.25, 0.5),
        kind_methods=("single", "coteaching", "cross_denoise"),
        kind_rate=0.5,
        epochs=100,
        batch_size=8,
        lr=1e-3,
        selection_epochs=10,
        cross_ramp_epochs=10,
        noise_strength=1.5,
        num_workers=4,
    ),
}


def settings(profile: str | None = None, **overrides: Any) -> Settings:
    """The settings of ``profile`` (default: ``$MEDLAB_PROFILE`` or demo) with overrides applied."""
    config = runtime.settings_for(PROFILES, runtime.resolve_profile(profile), **overrides)
    unknown = [m for m in (*config.methods, *config.clean_methods, *config.rate_methods, *config.kind_methods) if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {', '.join(METHODS)}")
    if config.main_kind != MIXED and config.main_kind not in NOISE_KINDS:
        raise ValueError(f"unknown main_kind {config.main_kind!r}; expected {MIXED!r} or one of {', '.join(NOISE_KINDS)}")
    rates = [r for r in (*config.noise_rates, config.main_rate, config.kind_rate) if not 0 <= r <= 1]
    if rates:
        raise ValueError(f"noise rates must be in [0, 1], got {rates}")
    config = dataclasses.replace(config, axis_seeds=tuple(int(s) for s in config.axis_seeds))  # "0,1" from a command line
    stray = sorted(set(config.axis_seeds) - set(config.seeds))
    if stray:
        raise ValueError(f"axis_seeds {stray} are not among the seeds {list(config.seeds)}")
    if config.forget_rate is not None and not 0 <= config.forget_rate < 1:
        raise ValueError(f"forget_rate must be in [0, 1) or None, got {config.forget_rate}")
    for name in ("disagreement_confidence", "confident_fraction", "agreement_confidence"):
        value = getattr(config, name)
        if not 0 < value <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {value}")
    if config.boundary_band <= 0:
        raise ValueError(f"boundary_band must be > 0, got {config.boundary_band}")
    if not 0 <= config.boundary_floor <= 1:
        raise ValueError(f"boundary_floor must be in [0, 1], got {config.boundary_floor}")
    reduction = 2 ** (len(config.widths) - 1)
    if config.image_size % reduction:
        raise ValueError(
            f"image_size {config.image_size} must be divisible by {reduction} (the U-Net halves it "
            f"{len(config.widths) - 1} times)"
        )
    if config.batch_size > config.n_source_train:
        raise ValueError(f"batch_size {config.batch_size} exceeds n_source_train {config.n_source_train}")
    if config.epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {config.epochs}")
    return config
