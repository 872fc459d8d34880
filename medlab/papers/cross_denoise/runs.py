"""Chapter 4 runs: the networks, the training step, the evaluation, one run, and the grid (the data
and its corrupted masks are in :mod:`.data`)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from medlab import engine, experiment, metrics, results, runtime
from medlab.engine import RunContext
from medlab.experiment import Job, RunOutput, run_identity, run_once, unique

from .config import CLASSES, METHODS, NOISE_KINDS, REGIONS, SLUG, Method, Settings
from .data import ChapterData, load_data, training_set
from .method import (
    Peers,
    agreed_pseudo_labels,
    class_level_pseudo_labels,
    cross_weight,
    keep_ratio,
    peer_objective,
    segmentation_loss,
    selection_count,
    small_loss_selection,
)

SELECTION_FILE = "selection.npz"
CURVE_IMAGES = 64  # the target test images scored after every epoch, for the curves only


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
    if method.random_selection:  # the control: as many samples as Eq. (2) keeps, drawn at random
        count = selection_count(len(images), ratio)
        chosen = [torch.randperm(len(images), device=images.device)[:count] for _ in plain]
    else:
        chosen = [small_loss_selection(loss, ratio) for loss in plain]
    model.record_selection(epoch, batch["index"], chosen)

    lam = cross_weight(epoch, config.cross_weight, config.selection_epochs, config.cross_ramp_epochs) if method.cross_learning else 0.0
    target_logits = [None, None]
    if lam > 0:
        # the target masks are flipped with their images: they only measure the pseudo-labels, never train
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
            agreement=config.agreement_confidence if method.agreement else None,
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


@torch.no_grad()
def pseudo_label_quality(
    model: Peers, images: torch.Tensor, masks: torch.Tensor, config: Settings, method: Method, device: torch.device
) -> dict[str, float]:
    """The pseudo-labels of Eq. (6) the trained peers would hand each other on ``images`` (the target
    training images; their masks are read here only, to measure), by the run's rule (the class-level
    top share, the global one, or the agreement variant; the class-level rule for a method without
    cross learning): the share of pixels kept, their accuracy and, for the cup, the precision of the
    kept cup pixels, the share of the true cup they cover and the peer's mean confidence on them."""
    model.eval()
    logits = [torch.cat([net(images[i : i + 64].to(device)).float().cpu() for i in range(0, len(images), 64)]) for net in model.nets]
    model.train()
    totals = dict.fromkeys(("pixels", "kept", "correct", "cup_kept", "cup_right", "cup_true", "cup_confidence"), 0.0)
    for learner in (0, 1):
        mentor = logits[1 - learner]
        if method.agreement:
            labels, keep = agreed_pseudo_labels(mentor, logits[learner], config.agreement_confidence)
        else:
            labels, keep = class_level_pseudo_labels(mentor, config.confident_fraction, method.class_level)
        confidence = torch.softmax(mentor, 1).amax(1)
        cup = keep & (labels == 2)
        totals["pixels"] += masks.numel()
        totals["kept"] += float(keep.sum())
        totals["correct"] += float((keep & (labels == masks)).sum())
        totals["cup_kept"] += float(cup.sum())
        totals["cup_right"] += float((cup & (masks == 2)).sum())
        totals["cup_true"] += float((masks == 2).sum())
        totals["cup_confidence"] += float(confidence[cup].sum())
    share = lambda a, b: totals[a] / totals[b] if totals[b] else float("nan")  # noqa: E731
    return {
        "pseudo/kept": share("kept", "pixels"), "pseudo/accuracy": share("correct", "kept"),
        "pseudo/cup_precision": share("cup_right", "cup_kept"), "pseudo/cup_coverage": share("cup_right", "cup_true"),
        "pseudo/cup_confidence": share("cup_confidence", "cup_kept"),
    }


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
        images, masks = target_images[:CURVE_IMAGES], target_masks[:CURVE_IMAGES]
        scores = segmentation_scores(predict(m, images, run.device), masks, hd95=False)
        return {"target_dice_disc": scores["dice/optic disc"], "target_dice_cup": scores["dice/optic cup"]}

    fit = engine.fit(
        model, dataset, run=run, loss_fn=loss_fn, optimizer=optimizer, epochs=config.epochs,
        batch_size=config.batch_size, evaluate=evaluate, scheduler=scheduler, scheduler_interval="step",
        after_step=after_step,
    )
    scores = segmentation_scores(predict(model, target_images, run.device), target_masks)
    source = segmentation_scores(predict(model, data.source_test[0], run.device), data.source_test[1], hd95=False)
    scores.update({f"source/{k}": v for k, v in source.items()})
    clean = data.source_train[1]
    noisy_dice = metrics.region_dice_hd95(noisy, clean, REGIONS, hd95=False)
    scores["label_dice/optic disc"] = float(np.mean(noisy_dice["dice/optic disc"]))
    scores["label_dice/optic cup"] = float(np.mean(noisy_dice["dice/optic cup"]))
    scores["corrupted_fraction"] = float(corrupted.float().mean())
    artifacts: dict[str, Any] = {}
    if spec.peers:
        scores.update(pseudo_label_quality(model, *data.target_train, config, spec, run.device))
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
    """The experiments of :class:`Settings`: ``main`` (every method at the main corruption), ``clean``,
    ``noise_rate`` and ``noise_kind``. A cell shared by two experiments runs once, under the first (so
    every run at the main corruption is a ``main`` run); the longest runs (two peers with cross
    learning) come first, so the workers finish together."""
    axis_seeds = config.axis_seeds or config.seeds
    jobs = [
        experiment.job("main", s, method=m, kind=config.main_kind, rate=config.main_rate)
        for m in config.methods for s in config.seeds
    ]
    jobs += [experiment.job("clean", s, method=m, kind=config.main_kind, rate=0.0) for m in config.clean_methods for s in config.seeds]
    jobs += [
        experiment.job("noise_rate", s, method=m, kind=config.main_kind, rate=r)
        for r in config.noise_rates for m in config.rate_methods for s in axis_seeds
    ]
    jobs += [
        experiment.job("noise_kind", s, method=m, kind=k, rate=config.kind_rate)
        for k in NOISE_KINDS for m in config.kind_methods for s in axis_seeds
    ]
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
