"""Robust cross-denoising network (Zhang, Liu, Ma, Zhuo, Zheng, IJCAI 2020, arXiv:2006.10990).

Optic disc and cup segmentation trained on a *source* domain whose masks are partly corrupted, and used
on a *target* domain (another camera) whose images come without labels. The paper's code is not public
and its full text could not be read for this book: the pieces below follow its abstract, and every
detail it leaves open is a choice recorded in chapter 4's deviation ledger. With the equation numbers
used in chapter 4:

* Eq. (1) the standard segmentation loss ``L_seg = CE + (1 - Dice)``, Dice over the nested regions
  (disc = rim + cup, cup), per sample: :func:`segmentation_loss`.
* Eq. (2) peer review: each network ranks the batch by its own ``L_seg`` and hands the ``R(t)``
  fraction with the smallest loss to its peer, ``R(t) = 1 - tau * min(t / T_k, 1)`` (Co-teaching's
  schedule): :func:`keep_ratio`, :func:`small_loss_selection`.
* Eq. (3) key-location weights ``w_p = prod_r (1 - exp(-d_r(p)^2 / (2 (s * rho_r)^2)))``: ``d_r`` is the
  distance of pixel ``p`` to the boundary of region ``r`` in the *noisy* mask and ``rho_r`` the
  region's equivalent radius. The annotation errors clinicians make (a dilated, eroded, shifted, wobbly
  or coarse outline) all move the boundary; the core of the structure stays right: :func:`key_location_weights`.
* Eq. (4) disagreement filter ``m_p = 1[q_peer(y~_p) >= 1 - gamma]``: a pixel whose label the peer
  network rejects with confidence ``gamma`` is left out: :func:`disagreement_filter`.
* Eq. (5) the noise-tolerant loss: Eq. (1) with every pixel weighted by ``w_p m_p``: :func:`noise_tolerant_loss`.
* Eq. (6) class-imbalanced cross learning on target images: each network's most confident pixels *per
  class* (the top ``q`` of the pixels it assigns to that class) become pseudo-labels for its peer; the
  cross-entropy is averaged within each class and then over classes, so the small cup counts as much
  as the background: :func:`class_level_pseudo_labels`, :func:`cross_learning_loss`.
* Eq. (7) each peer's objective: Eq. (5) on the samples its peer selected plus ``lambda(t)`` Eq. (6).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medlab import data as datasets
from medlab import engine, metrics, runtime
from medlab.experiment import RunOutput, fingerprint, run_dir_for, run_once

CHAPTER = "cross_denoise"
CLASSES = ("background", "disc rim", "cup")
REGIONS = {"optic disc": (1, 2), "optic cup": (2,)}  # nested: the disc holds the cup
NOISE_KINDS = ("dilation", "erosion", "shift", "elastic", "polygon")
MIXED = "mixed"  # every kind, one drawn per corrupted mask
SELECTION_FILE = "selection.npz"


@dataclass(frozen=True)
class Method:
    """Which components a training run uses."""

    peers: bool  # two networks (else one)
    selection: bool  # small-loss sample exchange, Eq. (2)
    noise_tolerant: bool  # key-location weights and disagreement filter, Eqs. (3)-(5)
    cross_learning: bool  # pseudo-labels on target images, Eq. (6)
    class_level: bool = True  # per-class confidence thresholds in Eq. (6) (else one global threshold)


METHODS: dict[str, Method] = {
    "single": Method(peers=False, selection=False, noise_tolerant=False, cross_learning=False),
    "coteaching": Method(peers=True, selection=True, noise_tolerant=False, cross_learning=False),
    "cross_denoise": Method(peers=True, selection=True, noise_tolerant=True, cross_learning=True),
    # the ablation: the full method with one component removed
    "no_selection": Method(peers=True, selection=False, noise_tolerant=True, cross_learning=True),
    "no_noise_tolerant": Method(peers=True, selection=True, noise_tolerant=False, cross_learning=True),
    "no_cross_learning": Method(peers=True, selection=True, noise_tolerant=True, cross_learning=False),
    "global_confidence": Method(peers=True, selection=True, noise_tolerant=True, cross_learning=True, class_level=False),
}
METHOD_LABELS = {
    "single": "single network (CE + Dice)",
    "coteaching": "Co-teaching",
    "cross_denoise": "cross-denoising (full)",
    "no_selection": "- peer sample selection",
    "no_noise_tolerant": "- noise-tolerant loss",
    "no_cross_learning": "- cross learning",
    "global_confidence": "cross learning with one global threshold",
}


@dataclass(frozen=True)
class Settings:
    """Everything a chapter-4 run depends on; one instance per profile in :data:`PROFILES`."""

    image_size: int
    widths: tuple[int, ...]
    n_source_train: int
    n_source_test: int
    n_target_train: int  # unlabelled target images for cross learning
    n_target_test: int
    seeds: tuple[int, ...]
    methods: tuple[str, ...]  # compared at every noise rate
    noise_rates: tuple[float, ...]
    kind_methods: tuple[str, ...]  # compared on each kind of noise alone
    kind_rate: float
    ablation: tuple[str, ...]
    ablation_rate: float
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
    cross_weight: float = 1.0  # lambda of Eq. (7) after the ramp
    cross_ramp_epochs: int = 5  # lambda rises linearly after T_k over this many epochs
    noise_strength: float = 1.0
    workers: int = 0  # parallel training processes for the grid; 0 = automatic
    num_workers: int = 0  # data-loading processes per training process
    data_seed: int = 2020


_DEMO = Settings(
    image_size=64,
    widths=(8, 16, 32, 64),
    n_source_train=128,
    n_source_test=64,
    n_target_train=128,
    n_target_test=96,
    seeds=(0, 1, 2),
    methods=("single", "coteaching", "cross_denoise"),
    noise_rates=(0.0, 0.25, 0.5, 0.75),
    kind_methods=("single", "cross_denoise"),
    kind_rate=0.5,
    ablation=("no_selection", "no_noise_tolerant", "no_cross_learning"),
    ablation_rate=0.5,
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
        seeds=(0,),
        noise_rates=(0.0, 0.5),
        ablation=("no_selection", "no_noise_tolerant", "no_cross_learning", "global_confidence"),
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
        seeds=(0, 1, 2),
        methods=("single", "coteaching", "cross_denoise"),
        noise_rates=(0.0, 0.25, 0.5, 0.75),
        kind_methods=("single", "coteaching", "cross_denoise"),
        kind_rate=0.5,
        ablation=("no_selection", "no_noise_tolerant", "no_cross_learning", "global_confidence"),
        ablation_rate=0.5,
        epochs=100,
        batch_size=8,
        lr=1e-3,
        selection_epochs=10,
        cross_ramp_epochs=10,
        num_workers=4,
    ),
}


def settings(profile: str | None = None, **overrides: Any) -> Settings:
    """The settings of ``profile`` (default: ``$MEDLAB_PROFILE`` or demo) with overrides applied."""
    config = runtime.settings_for(PROFILES, runtime.resolve_profile(profile), **overrides)
    unknown = [m for m in (*config.methods, *config.kind_methods, *config.ablation) if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {', '.join(METHODS)}")
    rates = [r for r in (*config.noise_rates, config.kind_rate, config.ablation_rate) if not 0 <= r <= 1]
    if rates:
        raise ValueError(f"noise rates must be in [0, 1], got {rates}")
    if config.forget_rate is not None and not 0 <= config.forget_rate < 1:
        raise ValueError(f"forget_rate must be in [0, 1) or None, got {config.forget_rate}")
    for name in ("disagreement_confidence", "confident_fraction"):
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
    return config


# ---------------------------------------------------------------------------------------------
# The losses


def region_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) probabilities of the nested regions from (N, 3, H, W) logits over
    (background, rim, cup): disc = rim + cup, cup."""
    p = torch.softmax(logits.float(), 1)
    return torch.stack([p[:, 1] + p[:, 2], p[:, 2]], 1)


def region_targets(masks: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W) float disc and cup masks from (N, H, W) labels 0/1/2."""
    return torch.stack([masks >= 1, masks == 2], 1).float()


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (1) per sample: pixel cross-entropy plus one minus the soft Dice of the disc and the cup.

    With ``weights`` (N, H, W), every pixel counts in proportion to its weight in both terms (Eq. 5).
    Returns a (N,) tensor.
    """
    logits = logits.float()
    if weights is None:
        weights = torch.ones_like(masks, dtype=logits.dtype)
    pixel_ce = F.cross_entropy(logits, masks, reduction="none")
    total = weights.flatten(1).sum(1).clamp_min(1e-6)
    ce = (weights * pixel_ce).flatten(1).sum(1) / total
    w = weights[:, None]
    p, t = region_probabilities(logits), region_targets(masks)
    intersection = (w * p * t).flatten(2).sum(2)
    sizes = (w * p).flatten(2).sum(2) + (w * t).flatten(2).sum(2)
    dice = (2 * intersection + 1.0) / (sizes + 1.0)
    return ce + 1.0 - dice.mean(1)


def keep_ratio(epoch: int, forget_rate: float, selection_epochs: int) -> float:
    """Eq. (2): the fraction of each batch a network hands to its peer after ``epoch`` epochs
    (0-based), falling linearly from 1 to ``1 - forget_rate`` over ``selection_epochs``."""
    ramp = min(epoch / selection_epochs, 1.0) if selection_epochs > 0 else 1.0
    return 1.0 - forget_rate * ramp


def small_loss_selection(losses: torch.Tensor, ratio: float) -> torch.Tensor:
    """Eq. (2): the indices of the ``ceil(ratio * N)`` samples with the smallest loss (at least one)."""
    count = max(1, min(len(losses), math.ceil(ratio * len(losses) - 1e-9)))
    return torch.argsort(losses.detach())[:count]


def key_location_weights(noisy_mask: np.ndarray, band: float, floor: float = 0.0) -> np.ndarray:
    """Eq. (3): per-pixel weights in [floor, 1] that fade to ``floor`` at the boundaries of the (noisy)
    disc and cup: ``floor + (1 - floor) prod_r (1 - exp(-d_r^2 / (2 (band rho_r)^2)))``.

    ``d_r`` is the Euclidean distance to the boundary of region ``r`` (inside or out) and the fade has
    the width ``band * rho_r``, ``rho_r = sqrt(area_r / pi)``. An empty region adds no boundary. The
    floor keeps thin structures (a rim a few pixels wide lies wholly near a boundary) in the loss.
    """
    from scipy.ndimage import distance_transform_edt

    mask = np.asarray(noisy_mask)
    if mask.ndim != 2:
        raise ValueError(f"noisy_mask must be (H, W), got shape {mask.shape}")
    weights = np.ones(mask.shape, dtype=np.float32)
    for level in (1, 2):
        region = mask >= level
        area = int(region.sum())
        if area == 0 or area == region.size:
            continue
        distance = np.where(region, distance_transform_edt(region), distance_transform_edt(~region))
        distance = distance - 0.5  # to the boundary between the pixels, not the pixel centres
        width = band * math.sqrt(area / math.pi)
        weights *= 1.0 - np.exp(-(distance**2) / (2 * width**2))
    return (floor + (1.0 - floor) * weights).astype(np.float32)


def disagreement_filter(peer_logits: torch.Tensor, noisy_masks: torch.Tensor, confidence: float) -> torch.Tensor:
    """Eq. (4): 1 where the peer gives the noisy label a probability of at least ``1 - confidence``,
    0 where it rejects the label with that confidence. (N, H, W) float, no gradient."""
    with torch.no_grad():
        p = torch.softmax(peer_logits.float(), 1).gather(1, noisy_masks[:, None])[:, 0]
        return (p >= 1.0 - confidence).float()


def noise_tolerant_loss(
    logits: torch.Tensor, noisy_masks: torch.Tensor, key_weights: torch.Tensor, peer_logits: torch.Tensor, confidence: float
) -> torch.Tensor:
    """Eq. (5) per sample: Eq. (1) with pixel weights ``w_p m_p`` (key location times the peer's
    disagreement filter)."""
    weights = key_weights * disagreement_filter(peer_logits, noisy_masks, confidence)
    return segmentation_loss(logits, noisy_masks, weights)


def class_level_pseudo_labels(
    peer_logits: torch.Tensor, fraction: float, class_level: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (6), the selection: the peer's argmax labels and a boolean mask of the pixels kept.

    Per class (``class_level``): of the pixels the peer assigns to class ``k`` in the batch, the
    ``fraction`` with the highest confidence. Globally (else): the ``fraction`` most confident pixels
    of the batch, whatever their class, which the background dominates.
    """
    with torch.no_grad():
        probabilities = torch.softmax(peer_logits.float(), 1)
        confidence, labels = probabilities.max(1)
        keep = torch.zeros_like(labels, dtype=torch.bool)
        groups = [labels == k for k in range(probabilities.shape[1])] if class_level else [torch.ones_like(keep)]
        for group in groups:
            values = confidence[group]
            if values.numel() == 0:
                continue
            threshold = torch.quantile(values, 1.0 - fraction) if fraction < 1 else values.min()
            keep |= group & (confidence >= threshold)
    return labels, keep


def cross_learning_loss(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor, class_level: bool = True) -> torch.Tensor:
    """Eq. (6), the loss: cross-entropy on the kept pseudo-labelled pixels, averaged within each class
    and then over the classes present (``class_level``), or over all kept pixels (else)."""
    pixel_ce = F.cross_entropy(logits.float(), labels, reduction="none")
    if not class_level:
        return pixel_ce[keep].mean() if keep.any() else pixel_ce.sum() * 0.0
    per_class = [pixel_ce[keep & (labels == k)].mean() for k in range(logits.shape[1]) if (keep & (labels == k)).any()]
    return torch.stack(per_class).mean() if per_class else pixel_ce.sum() * 0.0


def cross_weight(epoch: int, config: Settings) -> float:
    """lambda(t) of Eq. (7): 0 while the peers warm up (``selection_epochs``), then rising linearly to
    ``cross_weight`` over ``cross_ramp_epochs``."""
    ramp = (epoch - config.selection_epochs + 1) / max(config.cross_ramp_epochs, 1)
    return config.cross_weight * float(min(max(ramp, 0.0), 1.0))


# ---------------------------------------------------------------------------------------------
# The networks and the training step


def segmentation_net(config: Settings) -> nn.Module:
    """A 2D U-Net (MONAI) from RGB to (background, rim, cup) logits."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2, in_channels=3, out_channels=len(CLASSES), channels=config.widths,
        strides=(2,) * (len(config.widths) - 1), num_res_units=1,
    )


class Peers(nn.Module):
    """One or two segmentation networks, and the record of which training samples each peer picked
    for the other (buffers, so a resumed run keeps them): ``picked[peer, epoch, sample]`` counts the
    times network ``peer`` selected ``sample`` for its peer in ``epoch``, ``offered[epoch, sample]``
    the times the sample was in a batch."""

    def __init__(self, config: Settings, count: int, n_samples: int):
        super().__init__()
        self.nets = nn.ModuleList([segmentation_net(config) for _ in range(count)])
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.register_buffer("picked", torch.zeros(count, config.epochs, n_samples, dtype=torch.int16))
        self.register_buffer("offered", torch.zeros(config.epochs, n_samples, dtype=torch.int16))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The mean of the networks' softmax probabilities (N, 3, H, W)."""
        return torch.stack([torch.softmax(net(images).float(), 1) for net in self.nets]).mean(0)


class NoisyTrainingSet(Dataset):
    """Source images with their noisy masks and key-location weights, each paired with a target image
    (unlabelled: its mask is kept only to report how good the pseudo-labels are, never to train):
    ``(index, image, noisy_mask, key_weights, target_image, target_mask)``."""

    def __init__(self, images: torch.Tensor, noisy_masks: torch.Tensor, key_weights: torch.Tensor, target: Dataset, seed: int):
        self.images, self.noisy_masks, self.key_weights, self.target = images, noisy_masks, key_weights, target
        self.pairing = np.random.default_rng(seed).permutation(max(len(images), len(target))) % len(target)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        target_image, target_mask = self.target[int(self.pairing[index])]
        return index, self.images[index], self.noisy_masks[index], self.key_weights[index], target_image, target_mask


def flip_half(*maps: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mirror a random half of the batch left to right (a right eye becomes a left eye), on the device."""
    flip = torch.rand(maps[0].shape[0], device=maps[0].device) < 0.5
    out = []
    for m in maps:
        f = flip.reshape((-1,) + (1,) * (m.ndim - 1))
        out.append(torch.where(f, m.flip(-1), m))
    return tuple(out)


def training_step(model: Peers, batch, config: Settings, method: Method, forget_rate: float, steps_per_epoch: int) -> dict[str, torch.Tensor]:
    """Eq. (7) for both peers on one batch (or Eq. (1) for a single network); returns the losses and
    diagnostics the engine logs."""
    index, images, noisy, key_weights, target_images, target_masks = batch
    images, noisy, key_weights = flip_half(images, noisy, key_weights)
    epoch = min(int(model.step) // steps_per_epoch, config.epochs - 1)
    logits = [net(images) for net in model.nets]
    out: dict[str, torch.Tensor] = {}
    if len(logits) == 1:
        out["loss"] = segmentation_loss(logits[0], noisy).mean()
        return out

    plain = [segmentation_loss(z, noisy) for z in logits]
    ratio = keep_ratio(epoch, forget_rate, config.selection_epochs) if method.selection else 1.0
    chosen = [small_loss_selection(loss, ratio) for loss in plain]
    with torch.no_grad():
        model.offered[epoch, index] += 1
        for peer, picked in enumerate(chosen):
            model.picked[peer, epoch, index[picked]] += 1

    lam = cross_weight(epoch, config) if method.cross_learning else 0.0
    if lam > 0:
        target_images = flip_half(target_images)[0]
        target_logits = [net(target_images) for net in model.nets]
    total = images.new_zeros(())
    for learner in (0, 1):
        mentor = 1 - learner
        rows = chosen[mentor]  # the learner learns from the samples its peer selected
        if method.noise_tolerant:
            # the peer's verdicts count only after the warm-up: before, it rejects what it has not learned yet
            confidence = config.disagreement_confidence if epoch >= config.selection_epochs else 1.0
            loss = noise_tolerant_loss(
                logits[learner][rows], noisy[rows], key_weights[rows], logits[mentor][rows].detach(), confidence
            ).mean()
        else:
            loss = segmentation_loss(logits[learner][rows], noisy[rows]).mean()
        out[f"supervised_{'ab'[learner]}"] = loss.detach()
        if lam > 0:
            labels, keep = class_level_pseudo_labels(target_logits[mentor].detach(), config.confident_fraction, method.class_level)
            cross = cross_learning_loss(target_logits[learner], labels, keep, method.class_level)
            loss = loss + lam * cross
            out[f"cross_{'ab'[learner]}"] = cross.detach()
            with torch.no_grad():
                correct = (labels == target_masks) & keep
                out[f"pseudo_label_accuracy_{'ab'[learner]}"] = correct.sum() / keep.sum().clamp_min(1)
                cup = keep & (labels == 2)
                out[f"pseudo_cup_accuracy_{'ab'[learner]}"] = (correct & cup).sum() / cup.sum().clamp_min(1)
        total = total + loss
    out["keep_ratio"] = torch.tensor(ratio)
    out["cross_weight"] = torch.tensor(lam)
    out["loss"] = total
    return out


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class ChapterData:
    """The chapter's four splits, stacked once: source images with clean masks (training masks are
    corrupted per run), source test, unlabelled target training images, target test."""

    source_train: tuple[torch.Tensor, torch.Tensor]
    source_test: tuple[torch.Tensor, torch.Tensor]
    target_train: tuple[torch.Tensor, torch.Tensor]
    target_test: tuple[torch.Tensor, torch.Tensor]
    info: dict[str, Any]


_DATA_CACHE: dict[tuple, ChapterData] = {}


def stack(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``(image, mask)`` of ``dataset`` as two tensors, (N, 3, S, S) float and (N, S, S) int64."""
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items]).long()


def load_data(config: Settings, data_dir: str | Path | None = None, target_data_dir: str | Path | None = None) -> ChapterData:
    """Source REFUGE (``data_dir``: training images as source training set, validation images as
    source test) and target Drishti-GS (``target_data_dir``: training images unlabelled, test images);
    the synthetic look-alikes of each where the folder is None. Loaded once per process."""
    key = (
        config.image_size, config.n_source_train, config.n_source_test, config.n_target_train, config.n_target_test,
        config.data_seed, *(None if d is None else str(Path(d).expanduser().resolve()) for d in (data_dir, target_data_dir)),
    )
    if key not in _DATA_CACHE:
        parts = {
            "source_train": ("refuge", "train", data_dir, config.n_source_train),
            "source_test": ("refuge", "val", data_dir, config.n_source_test),
            "target_train": ("drishti_gs", "train", target_data_dir, config.n_target_train),
            "target_test": ("drishti_gs", "test", target_data_dir, config.n_target_test),
        }
        stacked, info = {}, {}
        for part, (name, split, folder, n) in parts.items():
            options = {"image_size": config.image_size}
            if folder is None:
                options.update(n=n, seed=config.data_seed)
            dataset = datasets.load(name, split, data_dir=folder, **options)
            stacked[part] = stack(dataset)
            info[part] = {"kind": "synthetic" if folder is None else "real", "dataset": name, "split": split, "images": len(dataset)}
        info["kind"] = "real" if data_dir is not None or target_data_dir is not None else "synthetic"
        _DATA_CACHE[key] = ChapterData(info=info, **stacked)
    return _DATA_CACHE[key]


def noise_seed(seed: int, rate: float, kind: str) -> int:
    """The seed of a run's corrupted masks: the same for every method at one seed, rate and kind."""
    return int(runtime.stable_hash({"seed": seed, "rate": rate, "kind": kind}, 8), 16)


def corrupted_masks(clean: torch.Tensor, rate: float, kind: str, seed: int, strength: float = 1.0):
    """The training masks of a run: ``rate`` of them corrupted with ``kind`` (or :data:`MIXED`).
    Returns ``(noisy, corrupted, kinds)`` as :func:`medlab.data.mask_noise.corrupt_masks`."""
    from medlab.data.mask_noise import corrupt_masks

    if kind != MIXED and kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; expected {MIXED!r} or one of {', '.join(NOISE_KINDS)}")
    kinds = NOISE_KINDS if kind == MIXED else (kind,)
    noisy, corrupted, drawn = corrupt_masks(
        clean.numpy().astype(np.uint8), rate, kinds, seed=noise_seed(seed, rate, kind), strength=strength
    )
    return torch.from_numpy(noisy.astype(np.int64)), torch.from_numpy(np.asarray(corrupted, dtype=bool)), list(drawn)


def training_set(config: Settings, data: ChapterData, rate: float, kind: str, seed: int):
    """The noisy training set of one run and what was done to it."""
    images, clean = data.source_train
    noisy, corrupted, kinds = corrupted_masks(clean, rate, kind, seed, config.noise_strength)
    weights = torch.from_numpy(
        np.stack([key_location_weights(m, config.boundary_band, config.boundary_floor) for m in noisy.numpy()])
    )
    dataset = NoisyTrainingSet(images, noisy, weights, TensorPairs(*data.target_train), seed)
    return dataset, noisy, corrupted, kinds


class TensorPairs(Dataset):
    """``(image, mask)`` pairs from two stacked tensors."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor):
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.masks[index]


# ---------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """Softmax probabilities (N, 3, H, W) of ``model`` (a :class:`Peers`: the peers' mean)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        with engine.autocast_for(device):
            out.append(model(images[start : start + batch_size].to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def segmentation_scores(probabilities: torch.Tensor, masks: torch.Tensor, hd95: bool = True) -> dict[str, float]:
    """Mean per-image Dice and HD95 (pixels, MONAI) of the disc and the cup, their mean Dice, and the
    mean absolute error of the vertical cup-to-disc ratio."""
    labels = probabilities.argmax(1)
    per_case = metrics.region_dice_hd95(labels, masks, REGIONS, hd95=hd95)
    scores = {name: float(np.mean(values)) for name, values in per_case.items()}
    scores["mean_dice"] = float(np.mean([scores[f"dice/{r}"] for r in REGIONS]))
    error = np.abs(metrics.vertical_cup_to_disc_ratio(labels) - metrics.vertical_cup_to_disc_ratio(masks))
    error = np.where(np.isnan(error), 1.0, error)  # no disc predicted: the worst error
    scores["vcdr_error"] = float(np.mean(error))
    return scores


def selection_summary(picked: np.ndarray, offered: np.ndarray, corrupted: np.ndarray) -> dict[str, list[float]]:
    """Per peer and epoch: the share of the samples a peer selected that were corrupted, against the
    share of corrupted samples among those offered (what random selection would give)."""
    corrupted = corrupted.astype(bool)
    out: dict[str, list[float]] = {}
    offered_total = offered.sum(1)
    out["offered_corrupted"] = (offered[:, corrupted].sum(1) / np.maximum(offered_total, 1)).tolist()
    for peer in range(picked.shape[0]):
        total = picked[peer].sum(1)
        out[f"picked_corrupted_{'ab'[peer]}"] = (picked[peer][:, corrupted].sum(1) / np.maximum(total, 1)).tolist()
    return out


# ---------------------------------------------------------------------------------------------
# One run


def train(
    config: Settings,
    data: ChapterData,
    *,
    method: str,
    rate: float,
    kind: str,
    seed: int,
    device: torch.device,
    run_dir: Path,
    run_fingerprint: str,
    progress: bool | None = None,
) -> RunOutput:
    """Train ``method`` on the source images with ``rate`` of the masks corrupted by ``kind`` for the
    profile's epochs (no epoch is chosen: the target has no labels to choose with), then score the
    target test images (and the source test images) against their clean masks."""
    spec = METHODS[method]
    runtime.seed_everything(seed)
    dataset, noisy, corrupted, kinds = training_set(config, data, rate, kind, seed)
    model = Peers(config, 2 if spec.peers else 1, len(dataset))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = len(dataset) // config.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.2
    )
    forget = rate if config.forget_rate is None else config.forget_rate
    target_images, target_masks = data.target_test

    def loss_fn(m: Peers, batch) -> dict[str, torch.Tensor]:
        return training_step(m, batch, config, spec, forget, steps_per_epoch)

    def after_step(m: Peers) -> None:
        m.step += 1

    def evaluate(m: Peers) -> dict[str, float]:  # tracked for the curves; never used to pick an epoch
        scores = segmentation_scores(predict(m, target_images, device), target_masks, hd95=False)
        return {"target_dice_disc": scores["dice/optic disc"], "target_dice_cup": scores["dice/optic cup"]}

    fit = engine.fit(
        model, dataset, loss_fn=loss_fn, optimizer=optimizer, epochs=config.epochs, batch_size=config.batch_size,
        run_dir=run_dir, device=device, seed=seed, evaluate=evaluate, scheduler=scheduler, scheduler_interval="step",
        channels_last=device.type == "cuda", num_workers=config.num_workers, fingerprint=run_fingerprint,
        progress=progress, after_step=after_step, desc=f"{method} rate {rate:g} {kind} seed {seed}",
    )
    scores = segmentation_scores(predict(model, target_images, device), target_masks)
    source = segmentation_scores(predict(model, data.source_test[0], device), data.source_test[1])
    scores.update({f"source/{k}": v for k, v in source.items()})
    clean = data.source_train[1]
    noisy_dice = metrics.region_dice_hd95(noisy, clean, REGIONS, hd95=False)
    scores["label_dice/optic disc"] = float(np.mean(noisy_dice["dice/optic disc"]))
    scores["label_dice/optic cup"] = float(np.mean(noisy_dice["dice/optic cup"]))
    scores["corrupted_fraction"] = float(corrupted.float().mean())
    artifacts: dict[str, Any] = {}
    if spec.peers:
        picked, offered = model.picked.cpu().numpy(), model.offered.cpu().numpy()
        np.savez_compressed(
            run_dir / SELECTION_FILE, picked=picked, offered=offered, corrupted=corrupted.numpy(),
            kinds=np.array([k or "" for k in kinds]),
        )
        summary = selection_summary(picked, offered, corrupted.numpy())
        artifacts["selection"] = summary
        last = max(config.epochs - config.selection_epochs, 1)  # epochs after the ramp
        if rate > 0:
            scores["picked_corrupted"] = float(np.mean([np.mean(summary[f"picked_corrupted_{p}"][-last:]) for p in "ab"]))
    return RunOutput(metrics=scores, fit=fit, artifacts=artifacts)


def run_params(config: Settings, method: str, rate: float, kind: str, data_dir, target_data_dir) -> dict[str, Any]:
    """The parameters that identify a run."""
    skip = {"seeds", "methods", "noise_rates", "kind_methods", "kind_rate", "ablation", "ablation_rate", "workers", "num_workers"}
    params = {k: v for k, v in dataclasses.asdict(config).items() if k not in skip}
    params.update(
        method=method, rate=rate, kind=kind, data_dir=None if data_dir is None else str(data_dir),
        target_data_dir=None if target_data_dir is None else str(target_data_dir),
    )
    return params


@dataclass(frozen=True)
class Job:
    """One cell of the chapter's grid."""

    experiment: str  # "noise_rate", "noise_kind" or "ablation"
    method: str
    rate: float
    kind: str
    seed: int

    def __str__(self) -> str:
        return f"{self.experiment}: {self.method}, {self.rate:.0%} {self.kind}, seed {self.seed}"


def grid(config: Settings) -> list[Job]:
    """The noise-rate sweep (every method, mixed noise), the noise-kind sweep and the ablation. A cell
    shared by two experiments (e.g. the full method at the ablation's rate) runs once, under the
    first."""
    jobs = [Job("noise_rate", m, r, MIXED, s) for r in config.noise_rates for m in config.methods for s in config.seeds]
    jobs += [Job("noise_kind", m, config.kind_rate, k, s) for k in NOISE_KINDS for m in config.kind_methods for s in config.seeds]
    jobs += [Job("ablation", m, config.ablation_rate, MIXED, s) for m in config.ablation for s in config.seeds]
    seen, unique = set(), []
    for job in jobs:
        key = (job.method, job.rate, job.kind, job.seed)
        if key not in seen:
            seen.add(key)
            unique.append(job)
    # the longest runs (two peers with cross learning) first, so that the workers finish together
    unique.sort(key=lambda j: (not METHODS[j.method].cross_learning, not METHODS[j.method].peers))
    return unique


def run_job(
    job: Job, *, config: Settings, profile: str, device: str, data_dir: str | None = None,
    target_data_dir: str | None = None, progress: bool | None = None,
) -> dict[str, Any]:
    """Run one grid cell (in this process or a worker); writes and returns its record."""
    data = load_data(config, data_dir, target_data_dir)
    torch_device = torch.device(device)
    params = run_params(config, job.method, job.rate, job.kind, data_dir, target_data_dir)
    stamp = fingerprint(params)
    variant = f"{job.method}/{job.kind}/{job.rate:g}"
    return run_once(
        chapter=CHAPTER, profile=profile, experiment=job.experiment, variant=variant, seed=job.seed, params=params,
        dataset=data.info, device=torch_device,
        train=lambda run_dir: train(
            config, data, method=job.method, rate=job.rate, kind=job.kind, seed=job.seed, device=torch_device,
            run_dir=run_dir, run_fingerprint=stamp, progress=progress,
        ),
    )


def run_dir_of(config: Settings, method: str, rate: float, kind: str, seed: int, profile: str, data_dir=None, target_data_dir=None) -> Path:
    """Where the run of one grid cell keeps its checkpoint and its selection record."""
    params = run_params(config, method, rate, kind, data_dir, target_data_dir)
    experiment = next(j.experiment for j in grid(config) if (j.method, j.rate, j.kind, j.seed) == (method, rate, kind, seed))
    return run_dir_for(profile, CHAPTER, experiment, f"{method}/{kind}/{rate:g}", seed, params)


def run_grid(
    config: Settings, *, profile: str, device: torch.device, data_dir: str | Path | None = None,
    target_data_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Every run of :func:`grid` (parallel processes on a CPU); returns their records."""
    from medlab.experiment import auto_workers
    from medlab.experiment import run_grid as run_all

    def describe(job: Job, record: dict[str, Any]) -> str:
        m = record["metrics"]
        return (
            f"{job}: target Dice disc {m['dice/optic disc']:.3f}, cup {m['dice/optic cup']:.3f}, "
            f"vCDR error {m['vcdr_error']:.3f}"
        )

    jobs = grid(config)
    load_data(config, data_dir, target_data_dir)  # fail early on a bad folder, before the workers start
    workers, threads = auto_workers(device, len(jobs), workers=config.workers)
    print(f"{len(jobs)} runs on {device} with {workers} process(es) x {threads} thread(s)")
    return run_all(
        run_job, jobs, workers=workers, threads=threads, describe=describe, config=config, profile=profile,
        device=str(device), data_dir=None if data_dir is None else str(data_dir),
        target_data_dir=None if target_data_dir is None else str(target_data_dir),
    )


# ---------------------------------------------------------------------------------------------
# Throughput: the chapter's step against a plain loop of the same method, one run


class _HostWeights(Dataset):
    """The plain pipeline: the key-location weights of Eq. (3) computed per sample on the host, in the
    DataLoader, every time the sample is drawn."""

    def __init__(self, dataset: NoisyTrainingSet, band: float):
        self.dataset, self.band = dataset, band

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        item = list(self.dataset[index])
        item[3] = torch.from_numpy(key_location_weights(item[2].numpy(), *self.band))
        return tuple(item)


def measure_training_throughput(
    config: Settings, data: ChapterData, device: torch.device, steps: int = 8, warmup: int = 2, method: str = "cross_denoise"
) -> dict[str, float]:
    """Training images/s (source images, each step also sees as many target images) of the full method.

    * ``device``: what :func:`train` does: key-location weights computed once per run, channels-last
      and mixed precision on CUDA, no host synchronisation inside the loop.
    * ``plain``: fp32, weights computed per sample on the host in the DataLoader, the loss read back
      (``.item()``) after every step.
    """
    from torch.utils.data import DataLoader

    spec = METHODS[method]
    dataset = training_set(config, data, config.ablation_rate, MIXED, 0)[0]
    batch = config.batch_size
    results: dict[str, float] = {}
    for mode in ("device", "plain"):
        runtime.seed_everything(0)
        optimised = mode == "device"
        channels_last = optimised and device.type == "cuda"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        model = Peers(config, 2 if spec.peers else 1, len(dataset)).to(device)
        model.step.fill_(config.selection_epochs * (len(dataset) // batch))  # past the warm-up: every term on
        if channels_last:
            engine.to_channels_last(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
        source = dataset if optimised else _HostWeights(dataset, (config.boundary_band, config.boundary_floor))
        loader = DataLoader(source, batch_size=batch, shuffle=True, drop_last=True, num_workers=config.num_workers,
                            pin_memory=device.type == "cuda")

        def step(item, optimised=optimised, channels_last=channels_last, model=model, optimizer=optimizer):
            item = engine.to_device(item, device, channels_last)
            with engine.autocast_for(device, optimised):
                out = training_step(model, item, config, spec, config.ablation_rate, len(dataset) // batch)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            if not optimised:
                out["loss"].item()

        results[f"{mode}_images_per_s"] = batch * engine.timed_steps(loader, step, device=device, steps=steps, warmup=warmup)
        if device.type == "cuda":
            results[f"{mode}_peak_memory_mb"] = engine.peak_memory_mb(device)
    results["speedup"] = results["device_images_per_s"] / results["plain_images_per_s"]
    return results


def record_throughput(config: Settings, data: ChapterData, *, profile: str, device: torch.device, steps: int = 8) -> dict[str, Any]:
    """Measure :func:`measure_training_throughput` and write it as a results record (experiment
    ``throughput``), which ``medlab bench`` reports."""
    from medlab import results
    from medlab.runtime import environment_record

    measured = measure_training_throughput(config, data, device, steps=steps)
    params = {
        "method": "cross_denoise", "steps": steps, "batch_size": config.batch_size, "image_size": config.image_size,
        "widths": list(config.widths), "threads": torch.get_num_threads(),
    }
    path = results.write_record(
        chapter=CHAPTER, profile=profile, experiment="throughput", variant="cross-denoising training (two peers)",
        seed=0, metrics=measured, params=params, dataset=data.info["source_train"], environment=environment_record(device),
    )
    return results.read_record(path)


# ---------------------------------------------------------------------------------------------
# Reading the runs: figures and findings written from the records

METRIC_NAMES = {
    "dice/optic disc": "Dice disc %",
    "dice/optic cup": "Dice cup %",
    "hd95/optic disc": "HD95 disc (px)",
    "hd95/optic cup": "HD95 cup (px)",
    "vcdr_error": "vCDR abs. error",
}
PERCENT = ["dice/optic disc", "dice/optic cup"]
COLOURS = {"single": "tab:gray", "coteaching": "tab:blue", "cross_denoise": "tab:red"}


def load_peers(run_dir: Path, config: Settings, method: str, n_samples: int) -> Peers:
    """The trained network(s) of a run, from its checkpoint."""
    path = Path(run_dir) / engine.CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}: run the grid first")
    model = Peers(config, 2 if METHODS[method].peers else 1, n_samples)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=False)["model"])
    return model.eval()


def _overlay(ax, image: torch.Tensor, mask: torch.Tensor | np.ndarray | None, title: str = "") -> None:
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    if mask is not None:
        m = np.asarray(mask)
        for level, colour in ((1, "lime"), (2, "cyan")):
            if (m >= level).any() and not (m >= level).all():
                ax.contour(m >= level, levels=[0.5], colors=colour, linewidths=1.0)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def noise_examples_figure(data: ChapterData, seed: int = 0, strength: float = 1.0, samples: int = 3):
    """Source images with their clean mask and one corruption of each kind (disc green, cup cyan)."""
    import matplotlib.pyplot as plt

    images, clean = data.source_train
    chosen = range(min(samples, len(images)))
    fig, axes = plt.subplots(len(chosen), 2 + len(NOISE_KINDS), figsize=(1.6 * (2 + len(NOISE_KINDS)), 1.7 * len(chosen)), squeeze=False)
    for row, i in enumerate(chosen):
        _overlay(axes[row, 0], images[i], None, "image" if row == 0 else "")
        _overlay(axes[row, 1], images[i], clean[i], "clean mask" if row == 0 else "")
        for col, kind in enumerate(NOISE_KINDS, start=2):
            noisy = corrupted_masks(clean[i : i + 1], 1.0, kind, seed + i, strength)[0][0]
            _overlay(axes[row, col], images[i], noisy, kind if row == 0 else "")
    fig.tight_layout()
    return fig


def domains_figure(data: ChapterData, count: int = 6):
    """Source and target images side by side."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, count, figsize=(1.6 * count, 3.5), squeeze=False)
    for row, (name, (images, masks)) in enumerate((("source", data.source_train), ("target", data.target_test))):
        for col in range(min(count, len(images))):
            _overlay(axes[row, col], images[col], masks[col] if col >= count // 2 else None)
        axes[row, 0].set_title(f"{name} domain", fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def predictions_figure(
    config: Settings, data: ChapterData, *, profile: str, rate: float, seed: int, methods: Sequence[str],
    samples: int = 4, data_dir=None, target_data_dir=None,
):
    """Source training images (image, clean mask, the noisy mask the run trained on) and target test
    images (image, clean mask, each method's prediction), for the runs at ``rate`` (mixed noise)."""
    import matplotlib.pyplot as plt

    n_train = len(data.source_train[0])
    noisy = corrupted_masks(data.source_train[1], rate, MIXED, seed, config.noise_strength)
    corrupted = np.flatnonzero(noisy[1].numpy())[:samples]
    models = {
        m: load_peers(run_dir_of(config, m, rate, MIXED, seed, profile, data_dir, target_data_dir), config, m, n_train)
        for m in methods
    }
    columns = 2 + len(methods)
    fig, axes = plt.subplots(2 * samples, columns, figsize=(1.7 * columns, 1.75 * 2 * samples), squeeze=False)
    for row, i in enumerate(corrupted):
        image = data.source_train[0][i]
        _overlay(axes[row, 0], image, None, "source image" if row == 0 else "")
        _overlay(axes[row, 1], image, data.source_train[1][i], "clean mask" if row == 0 else "")
        _overlay(axes[row, 2], image, noisy[0][i], f"noisy mask ({noisy[2][i]})")
        for col in range(3, columns):
            axes[row, col].axis("off")
    images, masks = data.target_test
    with torch.no_grad():
        predictions = {m: model(images[:samples]).argmax(1) for m, model in models.items()}
    for k in range(samples):
        row = samples + k
        _overlay(axes[row, 0], images[k], None, "target image" if k == 0 else "")
        _overlay(axes[row, 1], images[k], masks[k], "clean mask" if k == 0 else "")
        for col, m in enumerate(methods, start=2):
            dice = metrics.region_dice_hd95(predictions[m][k : k + 1], masks[k : k + 1], REGIONS, hd95=False)
            name = METHOD_LABELS[m].split(" (")[0]
            _overlay(axes[row, col], images[k], predictions[m][k],
                     f"{name}\nDice {dice['dice/optic disc'][0]:.2f} / {dice['dice/optic cup'][0]:.2f}")
    fig.suptitle(f"{rate:.0%} of the training masks corrupted, seed {seed} (Dice disc / cup)", fontsize=9)
    fig.tight_layout()
    return fig


def selection_figure(run_dir: Path, title: str = ""):
    """What each peer selected for the other, against which training masks were actually corrupted:
    per epoch the share of its picks that were corrupted (random picking gives the dashed line), and the
    pick rate of every sample (rows: clean samples first, then corrupted, grouped by kind)."""
    import matplotlib.pyplot as plt

    path = Path(run_dir) / SELECTION_FILE
    if not path.exists():
        raise FileNotFoundError(f"no selection record {path}: a run of a two-network method writes it")
    saved = np.load(path)
    picked, offered, corrupted, kinds = saved["picked"], saved["offered"], saved["corrupted"].astype(bool), saved["kinds"]
    summary = selection_summary(picked, offered, corrupted)
    epochs = np.arange(1, picked.shape[1] + 1)
    order = np.lexsort((kinds, corrupted))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    ax = axes[0]
    ax.plot(epochs, summary["offered_corrupted"], "k--", label="share in the batches (random picking)")
    for peer, colour in zip("ab", ("tab:red", "tab:orange")):
        ax.plot(epochs, summary[f"picked_corrupted_{peer}"], color=colour, label=f"picked by peer {peer.upper()}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("corrupted share of the picks")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    rate = picked / np.maximum(offered[None], 1)
    clean = int((~corrupted).sum())
    for peer, ax in enumerate(axes[1:]):
        im = ax.imshow(rate[peer][:, order].T, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest",
                       extent=(0.5, picked.shape[1] + 0.5, len(order), 0))
        ax.axhline(clean, color="white", lw=1.5)
        ax.set_xlabel("epoch")
        ax.set_title(f"peer {'AB'[peer]}: pick rate per sample", fontsize=9)
        ax.set_yticks([clean / 2, (clean + len(order)) / 2], [f"clean\n({clean})", f"corrupted\n({len(order) - clean})"] if peer == 0 else ["", ""])
    fig.colorbar(im, ax=axes[2], fraction=0.05)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def noise_rate_figure(frame):
    """Target Dice of the disc and the cup, and the vCDR error, against the noise rate (mixed noise),
    mean ± std over seeds, one line per method."""
    import matplotlib.pyplot as plt

    rows = frame[(frame["params.kind"] == MIXED) & frame["params.method"].isin(list(COLOURS))]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, metric, scale, name in zip(
        axes, ("dice/optic disc", "dice/optic cup", "vcdr_error"), (100, 100, 1), ("Dice disc (%)", "Dice cup (%)", "vCDR absolute error")
    ):
        for method, group in rows.groupby("params.method"):
            stats = group.groupby("params.rate")[f"metrics.{metric}"].agg(["mean", "std"]).fillna(0)
            ax.errorbar(stats.index * 100, stats["mean"] * scale, yerr=stats["std"] * scale, marker="o", capsize=3,
                        color=COLOURS.get(method), label=METHOD_LABELS[method])
        ax.set_xlabel("training masks corrupted (%)")
        ax.set_ylabel(f"target {name}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def curves_figure(records: Sequence[Mapping[str, Any]], rate: float, kind: str = MIXED):
    """Target Dice (disc and cup) after every epoch at one noise rate, mean over seeds, per method: a
    network that memorises the corrupted masks rises and then falls."""
    import matplotlib.pyplot as plt

    from medlab.results import history, select

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for method in COLOURS:
        chosen = select(records, method=method, rate=rate, kind=kind)
        if not chosen:
            continue
        for ax, key in zip(axes, ("val/target_dice_disc", "val/target_dice_cup")):
            curves = history(chosen, key) * 100
            mean, std = curves.mean(0), curves.std(0)
            epochs = np.arange(1, len(mean) + 1)
            ax.plot(epochs, mean, color=COLOURS[method], label=METHOD_LABELS[method])
            ax.fill_between(epochs, mean - std, mean + std, color=COLOURS[method], alpha=0.15)
    for ax, name in zip(axes, ("disc", "cup")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"target Dice {name} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{rate:.0%} of the training masks corrupted ({kind})", fontsize=10)
    fig.tight_layout()
    return fig


def _spread(diff: Mapping[str, Any], scale: float = 100.0, unit: str = " points") -> str:
    text = f"{diff['mean'] * scale:+.1f}{unit}"
    if diff["n"] > 1:
        text += f" ± {diff['std'] * scale:.1f}"
    return text


def _paired(group, metric: str, a: str, b: str) -> str | None:
    from scipy import stats

    from medlab.results import paired_difference

    d = paired_difference(group, metric, "params.method", a, b)
    if d["n"] == 0:
        return None
    test = f", p = {stats.ttest_1samp(d['values'], 0.0).pvalue:.2f}" if d["n"] > 1 and d["std"] > 0 else ""
    return f"{_spread(d)} (ahead on {d['wins']}/{d['n']} seeds{test})"


def findings(frame) -> str:
    """A plain-language summary written from the records (Markdown): the full method against the single
    network and Co-teaching at every noise rate and kind (mean Dice of disc and cup on the target,
    paired by seed), how well the peers' selection avoided corrupted masks, and the ablation."""
    from medlab.results import paired_difference

    lines: list[str] = []
    mixed = frame[frame["params.kind"] == MIXED]
    wins = {"single": [], "coteaching": []}
    names = {"single": "the single network", "coteaching": "Co-teaching"}
    for rate, group in mixed.groupby("params.rate", sort=True):
        parts = []
        for baseline in ("single", "coteaching"):
            text = _paired(group, "mean_dice", "cross_denoise", baseline)
            if text is None:
                continue
            parts.append(f"minus {names[baseline]} {text}")
            wins[baseline].append(paired_difference(group, "mean_dice", "params.method", "cross_denoise", baseline)["mean"] > 0)
        if parts:
            lines.append(f"- **{rate:.0%} corrupted (mixed kinds)**, cross-denoising " + "; ".join(parts) + ".")
    verdicts = []
    for baseline, ahead in wins.items():
        if ahead:
            k, n = sum(ahead), len(ahead)
            where = "at every noise rate" if k == n else ("at no noise rate" if k == 0 else f"at {k} of {n} noise rates")
            verdicts.append(f"its mean target Dice is above that of {names[baseline]} {where}")
    if verdicts:
        lines.insert(0, "**Overall (mean of disc and cup Dice on the target domain).** Cross-denoising: " + "; ".join(verdicts) + ".\n")
    kinds = frame[(frame["experiment"] == "noise_kind")]
    parts = []
    for kind, group in kinds.groupby("params.kind"):
        text = _paired(group, "mean_dice", "cross_denoise", "single")
        if text is not None:
            parts.append(f"{kind} {text}")
    if parts:
        lines.append("- **Noise kinds** (each alone), cross-denoising minus the single network: " + "; ".join(parts) + ".")
    if "metrics.picked_corrupted" in frame:
        picks = frame[(frame["params.method"] == "cross_denoise") & (frame["params.kind"] == MIXED) & frame["metrics.picked_corrupted"].notna()]
        for rate, group in picks.groupby("params.rate", sort=True):
            share = group["metrics.picked_corrupted"]
            lines.append(
                f"- **Selection at {rate:.0%}**: after the warm-up, {share.mean():.0%} ± {share.std():.0%} of the masks "
                f"the peers picked for each other were corrupted, against {rate:.0%} among those offered."
            )
    ablation = frame[frame["experiment"] == "ablation"]
    if not ablation.empty:
        rate = float(ablation["params.rate"].iloc[0])
        import pandas as pd

        group = pd.concat([mixed[mixed["params.rate"] == rate], ablation]).drop_duplicates("path")
        parts = []
        for method in sorted(set(ablation["params.method"]), key=list(METHODS).index):
            text = _paired(group, "mean_dice", method, "cross_denoise")
            if text is not None:
                parts.append(f"{METHOD_LABELS[method]} {text}")
        if parts:
            lines.append(f"- **Ablation at {rate:.0%}**, each variant minus the full method: " + "; ".join(parts) + ".")
    return "\n".join(lines) if lines else "No runs to compare."


BENCHMARK_TABLE = [
    {
        "experiments": ["noise_rate"],
        "by": ["params.method", "params.rate"],
        "metrics": list(METRIC_NAMES),
        "percent": PERCENT,
        "labels": {"params.method": METHOD_LABELS},
        "order": {"params.method": list(METHOD_LABELS), "params.rate": None},
        "names": METRIC_NAMES,
        "caption": "Optic disc and cup segmentation on the target domain, trained on source masks of which a share (rate) is corrupted (all five kinds mixed).",
    },
    {
        "experiments": ["noise_kind", "noise_rate"],
        "filter": {"params.rate": 0.5},
        "by": ["params.kind", "params.method"],
        "metrics": list(METRIC_NAMES),
        "percent": PERCENT,
        "labels": {"params.method": METHOD_LABELS},
        "order": {"params.kind": [*NOISE_KINDS, MIXED], "params.method": list(METHOD_LABELS)},
        "names": METRIC_NAMES,
        "caption": "Target-domain segmentation by kind of label noise, half of the training masks corrupted.",
    },
    {
        "experiments": ["ablation", "noise_rate"],
        "filter": {"params.rate": 0.5, "params.kind": MIXED},
        "by": ["params.method"],
        "metrics": list(METRIC_NAMES),
        "percent": PERCENT,
        "labels": {"params.method": METHOD_LABELS},
        "order": {"params.method": list(METHOD_LABELS)},
        "names": METRIC_NAMES,
        "caption": "Ablation: the full method with one component removed, half of the training masks corrupted (mixed kinds).",
    },
]
