"""Chapter 4 runs: the data and its corrupted masks, the training step, one run, and the grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from medlab import data as datasets
from medlab import engine, experiment, metrics, results, runtime
from medlab.engine import RunContext
from medlab.experiment import Job, RunOutput, run_identity, run_once, unique

from .config import CLASSES, METHODS, MIXED, NOISE_KINDS, REGIONS, SLUG, Method, Settings
from .method import (
    Peers,
    cross_weight,
    key_location_weights,
    keep_ratio,
    peer_objective,
    segmentation_loss,
    small_loss_selection,
)

SELECTION_FILE = "selection.npz"


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


def check_data(config: Settings, data_dir: str | Path | None = None, target_data_dir: str | Path | None = None) -> None:
    """Load both domains once, so that a bad folder fails before any training starts."""
    load_data(config, data_dir, target_data_dir)


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


class TensorPairs(Dataset):
    """``(image, mask)`` pairs from two stacked tensors."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor):
        self.images, self.masks = images, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.masks[index]


class NoisyTrainingSet(Dataset):
    """Source images with their noisy masks and key-location weights, each paired with a target image
    (unlabelled: its mask is kept only to report how good the pseudo-labels are, never to train).
    A sample is a dict: ``index``, ``image``, ``noisy_mask``, ``key_weights``, ``target_image``,
    ``target_mask``."""

    def __init__(self, images: torch.Tensor, noisy_masks: torch.Tensor, key_weights: torch.Tensor, target: Dataset, seed: int):
        self.images, self.noisy_masks, self.key_weights, self.target = images, noisy_masks, key_weights, target
        self.pairing = np.random.default_rng(seed).permutation(max(len(images), len(target))) % len(target)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        target_image, target_mask = self.target[int(self.pairing[index])]
        return {
            "index": index,
            "image": self.images[index],
            "noisy_mask": self.noisy_masks[index],
            "key_weights": self.key_weights[index],
            "target_image": target_image,
            "target_mask": target_mask,
        }


def training_set(config: Settings, data: ChapterData, rate: float, kind: str, seed: int):
    """The noisy training set of one run and what was done to it: ``(dataset, noisy, corrupted, kinds)``."""
    images, clean = data.source_train
    noisy, corrupted, kinds = corrupted_masks(clean, rate, kind, seed, config.noise_strength)
    weights = torch.from_numpy(
        np.stack([key_location_weights(m, config.boundary_band, config.boundary_floor) for m in noisy.numpy()])
    )
    dataset = NoisyTrainingSet(images, noisy, weights, TensorPairs(*data.target_train), seed)
    return dataset, noisy, corrupted, kinds


# ---------------------------------------------------------------------------------------------
# The networks and the training step


def segmentation_net(widths: tuple[int, ...]) -> nn.Module:
    """A 2D U-Net (MONAI) from RGB to (background, rim, cup) logits, halving the size ``len(widths) - 1`` times."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2, in_channels=3, out_channels=len(CLASSES), channels=widths,
        strides=(2,) * (len(widths) - 1), num_res_units=1,
    )


def make_peers(config: Settings, method: str, n_samples: int) -> Peers:
    """The network(s) of ``method``: two peers, or one network for the single baseline."""
    count = 2 if METHODS[method].peers else 1
    return Peers([segmentation_net(config.widths) for _ in range(count)], config.epochs, n_samples)


def flip_half(*maps: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Mirror a random half of the batch left to right (a right eye becomes a left eye), on the device."""
    flip = torch.rand(maps[0].shape[0], device=maps[0].device) < 0.5
    out = []
    for m in maps:
        f = flip.reshape((-1,) + (1,) * (m.ndim - 1))
        out.append(torch.where(f, m.flip(-1), m))
    return tuple(out)


def training_step(
    model: Peers, batch: Mapping[str, torch.Tensor], config: Settings, method: Method, forget_rate: float, steps_per_epoch: int
) -> dict[str, torch.Tensor]:
    """Eq. (7) for both peers on one batch (or Eq. (1) for a single network); returns the losses and
    diagnostics the engine logs. The epoch and the selection's size are known on the host, so the
    step never waits for the device."""
    images, noisy, key_weights = flip_half(batch["image"], batch["noisy_mask"], batch["key_weights"])
    epoch = min(model.steps_done // steps_per_epoch, config.epochs - 1)
    logits = [net(images) for net in model.nets]
    out: dict[str, torch.Tensor] = {}
    if len(logits) == 1:
        out["loss"] = segmentation_loss(logits[0], noisy).mean()
        return out

    plain = [segmentation_loss(z, noisy) for z in logits]
    ratio = keep_ratio(epoch, forget_rate, config.selection_epochs) if method.selection else 1.0
    chosen = [small_loss_selection(loss, ratio) for loss in plain]
    model.record_selection(epoch, batch["index"], chosen)

    lam = cross_weight(epoch, config.cross_weight, config.selection_epochs, config.cross_ramp_epochs) if method.cross_learning else 0.0
    target_logits, target_masks = [None, None], None
    if lam > 0:  # the masks follow their images' flips (they only score the pseudo-labels)
        target_images, target_masks = flip_half(batch["target_image"], batch["target_mask"])
        target_logits = [net(target_images) for net in model.nets]
    # the peer's verdicts count only after the warm-up: before, it rejects what it has not learned yet
    confidence = config.disagreement_confidence if epoch >= config.selection_epochs else 1.0
    total = images.new_zeros(())
    for learner in (0, 1):
        mentor, name = 1 - learner, "ab"[learner]
        parts = peer_objective(
            logits[learner], logits[mentor], noisy, key_weights, chosen[mentor],  # the samples its peer selected
            noise_tolerant=method.noise_tolerant, confidence=confidence, cross_weight=lam,
            target_logits=target_logits[learner], peer_target_logits=target_logits[mentor],
            fraction=config.confident_fraction, class_level=method.class_level,
        )
        out[f"supervised_{name}"] = parts["supervised"].detach()
        if lam > 0:
            labels, keep = parts["pseudo_labels"], parts["kept"]
            out[f"cross_{name}"] = parts["cross"].detach()
            with torch.no_grad():
                correct = (labels == target_masks) & keep
                out[f"pseudo_label_accuracy_{name}"] = correct.sum() / keep.sum().clamp_min(1)
                cup = keep & (labels == 2)
                out[f"pseudo_cup_accuracy_{name}"] = (correct & cup).sum() / cup.sum().clamp_min(1)
        total = total + parts["loss"]
    out["keep_ratio"] = torch.tensor(ratio)
    out["cross_weight"] = torch.tensor(lam)
    out["loss"] = total
    return out


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
    """Mean per-image Dice and HD95 (pixels, MONAI) of the disc and the cup, their mean Dice, the
    mean absolute error of the vertical cup-to-disc ratio, and ``n_eval`` (the images scored)."""
    labels = probabilities.argmax(1)
    per_case = metrics.region_dice_hd95(labels, masks, REGIONS, hd95=hd95)
    scores = {name: float(np.mean(values)) for name, values in per_case.items()}
    scores["mean_dice"] = float(np.mean([scores[f"dice/{r}"] for r in REGIONS]))
    error = np.abs(metrics.vertical_cup_to_disc_ratio(labels) - metrics.vertical_cup_to_disc_ratio(masks))
    error = np.where(np.isnan(error), 1.0, error)  # no disc predicted: the worst error
    scores["vcdr_error"] = float(np.mean(error))
    scores["n_eval"] = float(len(masks))
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


def train(config: Settings, data: ChapterData, job: Job, run: RunContext) -> RunOutput:
    """Train ``job.method`` on the source images with ``job.rate`` of the masks corrupted by
    ``job.kind`` for the profile's epochs (no epoch is chosen: the target has no labels to choose
    with), then score the target test images (and the source test images) against their clean masks."""
    spec = METHODS[job.method]
    runtime.seed_everything(job.seed)
    dataset, noisy, corrupted, kinds = training_set(config, data, job.rate, job.kind, job.seed)
    model = make_peers(config, job.method, len(dataset))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = len(dataset) // config.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.2
    )
    forget = job.rate if config.forget_rate is None else config.forget_rate
    target_images, target_masks = data.target_test

    def loss_fn(m: Peers, batch) -> dict[str, torch.Tensor]:
        return training_step(m, batch, config, spec, forget, steps_per_epoch)

    def after_step(m: Peers) -> None:
        m.steps_done += 1

    def evaluate(m: Peers) -> dict[str, float]:  # tracked for the curves; never used to pick an epoch
        scores = segmentation_scores(predict(m, target_images, run.device), target_masks, hd95=False)
        return {"target_dice_disc": scores["dice/optic disc"], "target_dice_cup": scores["dice/optic cup"]}

    fit = engine.fit(
        model, dataset, run=run, loss_fn=loss_fn, optimizer=optimizer, epochs=config.epochs,
        batch_size=config.batch_size, evaluate=evaluate, scheduler=scheduler, scheduler_interval="step",
        after_step=after_step,
    )
    scores = segmentation_scores(predict(model, target_images, run.device), target_masks)
    source = segmentation_scores(predict(model, data.source_test[0], run.device), data.source_test[1])
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
            run.path(SELECTION_FILE), picked=picked, offered=offered, corrupted=corrupted.numpy(),
            kinds=np.array([k or "" for k in kinds]),
        )
        summary = selection_summary(picked, offered, corrupted.numpy())
        artifacts["selection"] = summary
        last = max(config.epochs - config.selection_epochs, 1)  # epochs after the ramp
        if job.rate > 0:
            scores["picked_corrupted"] = float(np.mean([np.mean(summary[f"picked_corrupted_{p}"][-last:]) for p in "ab"]))
    return RunOutput(metrics=scores, fit=fit, artifacts=artifacts)


def load_peers(record: Mapping[str, Any]) -> Peers:
    """The trained network(s) of a run, from the checkpoint in its run folder."""
    path = results.run_folder(record) / engine.CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}: run the grid first")
    state = engine.load_checkpoint(path)["model"]
    count, epochs, n_samples = state["picked"].shape
    widths = tuple(record["params"]["widths"])
    model = Peers([segmentation_net(widths) for _ in range(count)], epochs, n_samples)
    model.load_state_dict(state)
    return model.eval()


# ---------------------------------------------------------------------------------------------
# The grid


def grid(config: Settings) -> list[Job]:
    """The noise-rate sweep (every method, mixed noise), the noise-kind sweep and the ablation. A cell
    shared by two experiments (e.g. the full method at the ablation's rate) runs once, under the
    first; the longest runs (two peers with cross learning) come first, so the workers finish together."""
    jobs = [
        experiment.job("noise_rate", s, method=m, kind=MIXED, rate=r)
        for r in config.noise_rates for m in config.methods for s in config.seeds
    ]
    jobs += [
        experiment.job("noise_kind", s, method=m, kind=k, rate=config.kind_rate)
        for k in NOISE_KINDS for m in config.kind_methods for s in config.seeds
    ]
    jobs += [experiment.job("ablation", s, method=m, kind=MIXED, rate=config.ablation_rate) for m in config.ablation for s in config.seeds]
    return sorted(unique(jobs), key=lambda j: (not METHODS[j.method].cross_learning, not METHODS[j.method].peers))


def run_job(
    job: Job, *, config: Settings, profile: str, device: str, data_dir: str | None = None,
    target_data_dir: str | None = None, progress: bool | None = None,
) -> dict[str, Any]:
    """One grid cell: train, evaluate, write the results record, return it (in this process or a
    worker). Called again it resumes from the run's checkpoints."""
    data = load_data(config, data_dir, target_data_dir)
    params = run_identity(
        config, method=job.method, rate=job.rate, kind=job.kind, data_dir=data_dir, target_data_dir=target_data_dir
    )
    return run_once(
        chapter=SLUG, profile=profile, job=job, params=params, dataset=data.info, device=torch.device(device),
        train=lambda run: train(config, data, job, run), progress=progress, num_workers=config.num_workers,
    )


def describe(job: Job, record: Mapping[str, Any]) -> str:
    m = record["metrics"]
    return (
        f"{job.experiment}: {job.method}, {job.rate:.0%} {job.kind}, seed {job.seed}: target Dice disc "
        f"{m['dice/optic disc']:.3f}, cup {m['dice/optic cup']:.3f}, vCDR error {m['vcdr_error']:.3f}"
    )
