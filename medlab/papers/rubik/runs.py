"""Chapter 3 runs: the data, the pretraining on the proxy task, the fine-tuning on each downstream
task, one run, and the grid (pretraining first, then the fine-tuning runs that start from it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from medlab import data as datasets
from medlab import engine, metrics, runtime
from medlab.data.subsets import RepeatedSubset, random_subset
from medlab.engine import RunContext
from medlab.experiment import Job, RunOutput, fingerprint, job, run_dir_for, run_identity, run_once
from medlab.nets.volumes import UNet3d, VolumeClassifier, VolumeEncoder
from medlab.runtime import distributed_world

from .config import PRETRAINING, SLUG, TASKS, ProxyTask, Settings
from .method import SiameseOctad, make_proxy_batch, permutation_set, proxy_losses

ENCODER_FILE = "encoder.pt"  # the pretrained branch, which initialises the downstream networks
# The linear probe's positive control: the encoder of the U-Net fine-tuned from scratch on the probe's
# labelled volumes and seed. Its features certainly hold the tumour, so its probe shows what the probe
# can read; only probes start from it.
SUPERVISED = "supervised"
PROXY_MODEL_FILE = "proxy_model.pt"  # the whole Siamese-Octad, for the recovery figure
REGIONS = {"whole tumour": (1, 2, 3), "tumour core": (1, 3), "enhancing tumour": (3,)}  # BraTS labels 1,2,4 -> 1,2,3


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class TaskData:
    """The datasets of one downstream task; ``unlabeled`` is the pretraining pool."""

    task: str
    unlabeled: Dataset
    train: Dataset
    val: Dataset
    test: Dataset
    classes: tuple[str, ...]
    in_channels: int
    info: dict[str, Any]


_DATA_CACHE: dict[tuple, TaskData] = {}


def _real(task: str, data_dir: str | Path | None) -> bool:
    """Whether ``task`` reads ``data_dir``: only segmentation has a real dataset (BraTS)."""
    return task == "segmentation" and data_dir is not None


def load_data(config: Settings, task: str, data_dir: str | Path | None = None) -> TaskData:
    """The datasets of ``task``: synthetic head CTs for classification (the paper's CT set is private);
    BraTS from ``data_dir`` for segmentation, or its synthetic look-alike when ``data_dir`` is None.
    Loaded once per process and configuration."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    real = _real(task, data_dir)
    key = (
        task, config.volume_size, config.n_unlabeled, config.n_labeled, config.n_val, config.n_test, config.data_seed,
        str(Path(data_dir).expanduser().resolve()) if real else None,
    )
    if key not in _DATA_CACHE:
        name = TASKS[task]
        if real:
            splits = {
                s: datasets.load(name, s, data_dir=data_dir, size=config.volume_size)
                for s in ("unlabeled", "train", "val", "test")
            }
        else:
            sizes = {"unlabeled": config.n_unlabeled, "train": config.n_labeled, "val": config.n_val, "test": config.n_test}
            splits = {
                s: datasets.load(name, s, n=n, size=config.volume_size, seed=config.data_seed) for s, n in sizes.items()
            }
        first = splits["train"][0][0]
        info = {s: describe_split(ds, real) for s, ds in splits.items()}
        info["kind"] = "real" if real else "synthetic"
        _DATA_CACHE[key] = TaskData(
            task, splits["unlabeled"], splits["train"], splits["val"], splits["test"],
            tuple(splits["train"].classes), int(first.shape[0]), info,
        )
    return _DATA_CACHE[key]


def check_data(config: Settings, data_dir: str | Path | None = None) -> None:
    """Fail before any training when ``data_dir`` does not hold BraTS in its official layout (the
    reader checks the layout and the files' headers; the voxels are read later), or when the settings
    ask for more labelled volumes than its training split holds."""
    if data_dir is None or "segmentation" not in config.tasks:
        return
    data = load_data(config, "segmentation", data_dir)
    asked = {"label_counts": max(config.label_counts), "probe_labels": config.probe_labels}
    if "segmentation" in config.ablation_tasks:
        asked["ablation_labels"] = config.ablation_labels
    too_many = {name: n for name, n in asked.items() if n > len(data.train)}
    if too_many:
        raise ValueError(
            f"{data_dir}: the training split holds {len(data.train)} labelled volumes (of {len(data.unlabeled)} "
            f"training cases, after the validation and test cases are held out), but the settings ask for "
            + ", ".join(f"{name} up to {n}" for name, n in too_many.items())
            + f"; set them to at most {len(data.train)} (e.g. -p label_counts 40,100,{len(data.train)})"
        )


def describe_split(dataset: Dataset, real: bool) -> dict[str, Any]:
    return {"kind": "real" if real else "synthetic", "volumes": len(dataset), "source": type(dataset).__name__}


def volumes_of(dataset: Dataset) -> torch.Tensor:
    """Every volume of ``dataset`` stacked (N, C, S, S, S)."""
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def targets_of(dataset: Dataset) -> torch.Tensor:
    """Every target of ``dataset`` stacked: class indices (N,) or label maps (N, S, S, S)."""
    return torch.stack([torch.as_tensor(dataset[i][1]) for i in range(len(dataset))])


# ---------------------------------------------------------------------------------------------
# Pretraining: the proxy task


def puzzle(volumes: torch.Tensor, permutations: torch.Tensor, task: ProxyTask, config: Settings, generator=None):
    """:func:`~.method.make_proxy_batch` with the chapter's cube size, for the proxy-task variant ``task``."""
    return make_proxy_batch(
        volumes, permutations, config.cube_size, generator, permute=task.permute, rotate=task.rotate,
        normalise=config.normalise_cubes,
    )


def puzzle_losses(model: SiameseOctad, proxy: Mapping[str, torch.Tensor], task: ProxyTask, config: Settings):
    """:func:`~.method.proxy_losses` (Eq. 4) with the chapter's loss weights, for ``task``."""
    return proxy_losses(
        model, proxy["cubes"], proxy["classes"], proxy["rotations"],
        permutation_weight=config.permutation_weight, rotation_weight=config.rotation_weight,
        permute=task.permute, rotate=task.rotate,
    )


def intensity_ramp(volumes: torch.Tensor, strength: float) -> torch.Tensor:
    """``volumes`` (N, C, S, S, S) scaled by ``1 + strength (h + w) / 2``, with ``h`` and ``w`` running
    from -1 to 1 along the second and third spatial axes. A 180-degree turn about either rotation axis
    reverses this ramp inside a cube in its own way, so the turns can be read from the cube's content
    whatever the anatomy (a development probe of the puzzle: 0, the identity, in every profile)."""
    if strength == 0:
        return volumes
    t = torch.linspace(-1, 1, volumes.shape[-1], device=volumes.device, dtype=volumes.dtype)
    return volumes * (1 + strength * (t.reshape(-1, 1) + t.reshape(1, -1)) / 2)


def fixed_proxy_batch(volumes: torch.Tensor, permutations: torch.Tensor, task: ProxyTask, config: Settings, seed: int = 0):
    """A proxy batch drawn once with a fixed generator: the same held-out puzzles every epoch."""
    generator = torch.Generator(device=volumes.device).manual_seed(seed)
    return puzzle(volumes, permutations, task, config, generator)


@torch.no_grad()
def proxy_accuracy(
    model: SiameseOctad, puzzles: Mapping[str, torch.Tensor], task: ProxyTask, config: Settings
) -> dict[str, float]:
    """The permutation and rotation accuracy of ``model`` on held-out ``puzzles`` (eval mode)."""
    was_training = model.training
    model.eval()
    out = puzzle_losses(model, puzzles, task, config)
    model.train(was_training)
    return {k: float(v) for k, v in out.items() if k.endswith("accuracy")}


def pretrain(config: Settings, data: TaskData, job: Job, run: RunContext) -> RunOutput:
    """Train the Siamese-Octad on the proxy task ``job.method`` over the unlabeled pool (puzzles made
    on the device every step), score it on fixed held-out puzzles from the validation volumes, and save
    its branch, the encoder (``encoder.pt``), and the whole model (``proxy_model.pt``)."""
    task = PRETRAINING[job.method]
    runtime.seed_everything(job.seed)
    model = SiameseOctad(VolumeEncoder(data.in_channels, config.widths), permutation_set(config.num_permutations), config.hidden)
    if config.freeze_encoder:  # the control: only the heads learn, on a random encoder's features
        model.encoder.requires_grad_(False)
    trained = [q for q in model.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=config.pretrain_lr, weight_decay=config.pretrain_weight_decay)
    steps = config.pretrain_epochs * (len(data.unlabeled) // config.pretrain_batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.pretrain_lr, total_steps=steps, pct_start=0.1)
    held_out = volumes_of(Subset(data.val, range(min(config.proxy_val_volumes, len(data.val)))))
    held_out_volumes = intensity_ramp(held_out.to(run.device), config.intensity_ramp)
    puzzles = fixed_proxy_batch(held_out_volumes, model.permutations.to(run.device), task, config)

    def loss_fn(m: SiameseOctad, batch) -> dict[str, torch.Tensor]:
        volumes = intensity_ramp(batch[0], config.intensity_ramp)
        return puzzle_losses(m, puzzle(volumes, m.permutations, task, config), task, config)

    fit = engine.fit(
        model, data.unlabeled, run=run, loss_fn=loss_fn, optimizer=optimizer, epochs=config.pretrain_epochs,
        batch_size=config.pretrain_batch_size, evaluate=lambda m: proxy_accuracy(m, puzzles, task, config),
        restore_best=False, scheduler=scheduler, scheduler_interval="step",
    )
    model.cpu()
    if distributed_world()[0] == 0:
        torch.save(model.encoder.state_dict(), run.path(ENCODER_FILE))
        torch.save(model.state_dict(), run.path(PROXY_MODEL_FILE))
    last = fit.history[-1]
    out = {f"train_{k}": last[f"train/{k}"] for k in ("loss", "permutation_accuracy", "rotation_accuracy") if f"train/{k}" in last}
    out.update({f"val_{k}": last[f"val/{k}"] for k in ("permutation_accuracy", "rotation_accuracy") if f"val/{k}" in last})
    out["volumes_per_s"] = fit.samples_per_s or float("nan")
    out["n_eval"] = float(len(held_out))
    return RunOutput(metrics=out, fit=fit, artifacts={"encoder": ENCODER_FILE, "proxy_model": PROXY_MODEL_FILE})


# ---------------------------------------------------------------------------------------------
# Fine-tuning: classification and segmentation from scratch or from a pretrained encoder


def initial_encoder(config: Settings, in_channels: int, encoder_path: Path | None = None) -> VolumeEncoder:
    """A fresh encoder, or the one saved at ``encoder_path``: a pretrained branch (``encoder.pt``), or
    the encoder inside a fine-tuned network's best weights (``best.pt``, the probe's positive control)."""
    encoder = VolumeEncoder(in_channels, config.widths)
    if encoder_path is not None:
        if not Path(encoder_path).exists():
            raise FileNotFoundError(
                f"no trained encoder at {encoder_path}: run its pretraining (for the probe's positive control, "
                "its fine-tuning from scratch) first"
            )
        state = engine.load_checkpoint(encoder_path)
        if "model" in state:  # a whole network's checkpoint: keep its encoder
            state = {k.removeprefix("encoder."): v for k, v in state["model"].items() if k.startswith("encoder.")}
            if not state:
                raise ValueError(f"{encoder_path} holds a network without an encoder (no 'encoder.*' weights)")
        encoder.load_state_dict(state)
    return encoder


class LinearProbe3d(nn.Module):
    """The linear probe of a segmentation encoder: the frozen encoder's feature maps of every stage,
    upsampled (trilinear) to the volume's size and concatenated, standardised per channel (a batch norm
    without affine parameters, as linear probes usually have: a random encoder's features have no
    common scale), and a voxel-wise linear classifier (a 1x1x1 convolution), the only part that
    trains. The standardisation is a fixed affine map at test time, so the probe stays linear.
    Measures what the encoder's features hold."""

    def __init__(self, encoder: VolumeEncoder, num_classes: int):
        super().__init__()
        self.encoder = encoder.requires_grad_(False).eval()
        self.standardise = nn.BatchNorm3d(sum(encoder.widths), affine=False)
        self.head = nn.Conv3d(sum(encoder.widths), num_classes, kernel_size=1)

    def train(self, mode: bool = True) -> "LinearProbe3d":
        super().train(mode)
        self.encoder.eval()  # frozen: its batch-norm statistics stay as trained
        return self

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            size = volumes.shape[-3:]
            features = torch.cat([F.interpolate(f, size=size, mode="trilinear") for f in self.encoder(volumes)], 1)
        return self.head(self.standardise(features))


def flip_left_right(volumes: torch.Tensor, masks: torch.Tensor | None = None):
    """Mirror a random half of the batch along the first spatial axis (left-right), on the device."""
    flip = torch.rand(volumes.shape[0], device=volumes.device) < 0.5
    volumes = torch.where(flip.reshape(-1, 1, 1, 1, 1), volumes.flip(2), volumes)
    if masks is None:
        return volumes
    return volumes, torch.where(flip.reshape(-1, 1, 1, 1), masks.flip(1), masks)


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy plus soft Dice over the classes (MONAI's DiceCELoss), the usual BraTS objective."""
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True)(logits.float(), masks[:, None])


def predict_volumes(
    model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 8, num_workers: int = 0
) -> torch.Tensor:
    """Softmax probabilities of ``model`` over ``dataset``: (N, K) for a classifier, (N, K, S, S, S) for
    a segmentation network."""
    return engine.predict(
        model, dataset, forward=lambda m, b: torch.softmax(m(b[0]).float(), 1), device=device,
        batch_size=batch_size, num_workers=num_workers,
    )


def segmentation_scores(probabilities: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """Mean per-case Dice and HD95 (voxels) of the three BraTS regions, and their means."""
    per_case = metrics.region_dice_hd95(probabilities.argmax(1), masks, REGIONS)
    scores = {name: float(np.mean(values)) for name, values in per_case.items()}
    scores["mean_dice"] = float(np.mean([scores[f"dice/{r}"] for r in REGIONS]))
    scores["mean_hd95"] = float(np.mean([scores[f"hd95/{r}"] for r in REGIONS]))
    return scores


def finetune(config: Settings, data: TaskData, job: Job, run: RunContext, encoder_path: Path | None = None) -> RunOutput:
    """Train the task's network (a classifier, or a U-Net) on ``job.labels`` labeled volumes from
    scratch or from the pretrained encoder at ``encoder_path``, keep the epoch with the best validation
    score, and score the test split. A ``probe`` job trains only a :class:`LinearProbe3d` on the frozen
    encoder (segmentation), with the same data, loss, schedule and selection."""
    runtime.seed_everything(job.seed)
    encoder = initial_encoder(config, data.in_channels, encoder_path)
    indices = random_subset(len(data.train), job.labels, job.seed)
    train = RepeatedSubset(data.train, indices, config.finetune_epoch_samples)
    batch_size = min(config.finetune_batch_size, len(train))
    classify = data.task == "classification"
    if job.stage == "probe":
        if classify:
            raise ValueError("the linear probe is defined for the segmentation task only")
        model: nn.Module = LinearProbe3d(encoder, len(data.classes))
    else:
        model = VolumeClassifier(encoder, len(data.classes)) if classify else UNet3d(encoder, len(data.classes))
    trained = [q for q in model.parameters() if q.requires_grad]
    lr = config.probe_lr if job.stage == "probe" else config.finetune_lr
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=config.finetune_weight_decay)
    steps = config.finetune_epochs * (len(train) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.2)
    val_targets = targets_of(data.val)

    def predict(m: nn.Module, dataset: Dataset) -> torch.Tensor:
        return predict_volumes(m, dataset, run.device, num_workers=run.num_workers)

    if classify:
        def loss_fn(m: nn.Module, batch) -> dict[str, torch.Tensor]:
            volumes, targets = batch
            return {"loss": F.cross_entropy(m(flip_left_right(volumes)).float(), targets)}

        def evaluate(m: nn.Module) -> dict[str, float]:
            scores = metrics.classification_metrics(val_targets, predict(m, data.val), len(data.classes))
            return {"macro_f1": scores["macro_f1"], "accuracy": scores["accuracy"]}

        monitor = "macro_f1"
    else:
        def loss_fn(m: nn.Module, batch) -> dict[str, torch.Tensor]:
            volumes, masks = flip_left_right(*batch)
            return {"loss": segmentation_loss(m(volumes), masks)}

        def evaluate(m: nn.Module) -> dict[str, float]:
            dice = metrics.region_dice_hd95(predict(m, data.val).argmax(1), val_targets, REGIONS, hd95=False)
            return {
                "whole_tumour_dice": float(dice["dice/whole tumour"].mean()),
                "mean_dice": float(np.mean([dice[f"dice/{r}"].mean() for r in REGIONS])),
            }

        monitor = "whole_tumour_dice"  # the primary metric: the small regions' Dice is too noisy to select on

    fit = engine.fit(
        model, train, run=run, loss_fn=loss_fn, optimizer=optimizer, epochs=config.finetune_epochs,
        batch_size=batch_size, evaluate=evaluate, monitor=monitor, scheduler=scheduler, scheduler_interval="step",
    )
    probabilities = predict(model, data.test)
    test_targets = targets_of(data.test)
    if classify:
        scores = metrics.classification_metrics(test_targets, probabilities, len(data.classes))
    else:
        scores = segmentation_scores(probabilities, test_targets)
    scores[f"val_{monitor}"] = fit.best_value
    scores["labeled_volumes"] = float(len(indices))
    scores["n_eval"] = float(len(test_targets))
    return RunOutput(metrics=scores, fit=fit)


# ---------------------------------------------------------------------------------------------
# The grid and one run


def grid(config: Settings) -> list[Job]:
    """The pretraining runs (phase 0), then the fine-tuning runs (phase 1): every task from scratch and
    from Rubik's cube on every label count, and the ablation's proxy-task variants on its tasks."""
    methods = {task: ["rubik", *(["rearrangement", "rotation"] if task in config.ablation_tasks else [])] for task in config.tasks}
    pretraining = [
        job("pretrain", s, stage="pretrain", task=task, method=m)
        for task in config.tasks for m in methods[task] for s in config.seeds
    ]
    downstream = [
        job("label_efficiency", s, phase=1, stage="finetune", task=task, init=init, labels=int(n))
        for task in config.tasks for n in config.label_counts for init in ("scratch", "rubik") for s in config.seeds
    ]
    downstream += [
        job("ablation", s, phase=1, stage="finetune", task=task, init=m, labels=int(config.ablation_labels))
        for task in config.ablation_tasks if task in config.tasks for m in ("rearrangement", "rotation") for s in config.seeds
    ]
    # the linear probes of the evidence standard's gate: pretrained features against a random encoder's
    downstream += [
        job("probe", s, phase=1, stage="probe", task="segmentation", init=init, labels=int(config.probe_labels))
        for init in ("scratch", "rubik") for s in config.probe_seeds if "segmentation" in config.tasks
    ]
    # segmentation first (the longest runs), so that the parallel workers finish together
    pretraining.sort(key=lambda j: j.task != "segmentation")
    downstream.sort(key=lambda j: j.task != "segmentation")
    return pretraining + downstream


def pretraining_job(item: Job) -> Job:
    """The pretraining run a fine-tuning run ``item`` starts from (same task, proxy task and seed)."""
    if item.init not in PRETRAINING:
        raise ValueError(f"{item} starts from {item.init!r}, not from a pretrained encoder")
    return job("pretrain", item.seed, stage="pretrain", task=item.task, method=item.init)


def supervised_job(item: Job) -> Job:
    """The from-scratch fine-tuning whose encoder a ``supervised`` probe ``item`` reads (same task,
    labelled volumes and seed)."""
    if item.init != SUPERVISED or item.stage != "probe":
        raise ValueError(f"{item} is not a probe of the {SUPERVISED!r} encoder (the probe's positive control)")
    return job("label_efficiency", item.seed, phase=1, stage="finetune", task=item.task, init="scratch", labels=item.labels)


def upstream_job(item: Job) -> Job | None:
    """The run whose encoder ``item`` starts from: its pretraining, the fine-tuning of a ``supervised``
    probe, or none (from scratch)."""
    if item.init in PRETRAINING:
        return pretraining_job(item)
    return supervised_job(item) if item.init == SUPERVISED else None


def identity(config: Settings, item: Job, data_dir: str | Path | None = None) -> dict[str, Any]:
    """The parameters that identify ``item``: the settings of its stage and its choices; a run that
    starts from another run's encoder (a pretraining, or the probe's positive control) also holds that
    run's fingerprint."""
    source = str(data_dir) if _real(item.task, data_dir) else None
    if item.stage == "pretrain":
        return run_identity(config, stage="pretrain", task=item.task, method=item.method, data_dir=source)
    params = run_identity(config, stage=item.stage, task=item.task, init=item.init, labels=item.labels, data_dir=source)
    upstream = upstream_job(item)
    if upstream is not None:
        from medlab import dependencies

        key = "pretraining" if item.init in PRETRAINING else SUPERVISED
        params[key] = fingerprint(identity(config, upstream, data_dir), dependencies.code_fingerprint(SLUG))  # as run_once makes it
    return params


def encoder_file(config: Settings, item: Job, profile: str, data_dir: str | Path | None = None) -> Path:
    """The encoder a downstream run ``item`` starts from: in its pretraining run's folder, or (the
    probe's positive control) the best weights of the fine-tuning it reads."""
    source = upstream_job(item)
    if source is None:
        raise ValueError(f"{item} starts from {item.init!r}, not from a trained encoder")
    folder = run_dir_for(profile, SLUG, source, identity(config, source, data_dir))
    return folder / (ENCODER_FILE if item.init in PRETRAINING else engine.BEST)


def run_job(
    job: Job, *, config: Settings, profile: str, device: str, data_dir: str | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """One grid cell (in this process or a worker): pretrain, or fine-tune from scratch or from the
    encoder of the pretraining run it names; writes and returns its record. Called again it resumes
    from the run's checkpoints."""
    data = load_data(config, job.task, data_dir)
    if job.stage == "pretrain":
        train = lambda run: pretrain(config, data, job, run)  # noqa: E731
    else:
        encoder = encoder_file(config, job, profile, data_dir) if upstream_job(job) is not None else None
        train = lambda run: finetune(config, data, job, run, encoder)  # noqa: E731
    return run_once(
        chapter=SLUG, profile=profile, job=job, params=identity(config, job, data_dir), dataset=data.info,
        device=torch.device(device), train=train, progress=progress, num_workers=config.num_workers,
    )


def label(item: Job) -> str:
    """A grid cell in words."""
    if item.experiment == "pretrain":
        return f"pretrain {item.task}/{item.method} seed {item.seed}"
    if item.experiment == "probe":
        return f"linear probe: {item.task} {item.init} encoder on {item.labels} labeled volumes, seed {item.seed}"
    return f"{item.experiment}: {item.task} {item.init} on {item.labels} labeled volumes, seed {item.seed}"


def describe(job: Job, record: Mapping[str, Any]) -> str:
    m = record["metrics"]
    if job.experiment == "pretrain":
        parts = [f"{k.replace('val_', 'held-out ').replace('_', ' ')} {v:.2f}" for k, v in m.items() if k.startswith("val_")]
        return f"{label(job)}: " + ", ".join(parts)
    if job.task == "classification":
        return f"{label(job)}: accuracy {m['accuracy']:.3f}, macro F1 {m['macro_f1']:.3f}"
    return f"{label(job)}: mean Dice {m['mean_dice']:.3f}, mean HD95 {m['mean_hd95']:.1f}"
