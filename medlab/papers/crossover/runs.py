"""Chapter 5 runs: the crops, the training centres, the training steps of the patch networks and of the
U-Net, dense prediction with the clean-up, one run, and the grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from medlab import data as datasets
from medlab import engine, results, runtime
from medlab.engine import RunContext
from medlab.experiment import Job, RunOutput, job, run_identity, run_once

from .config import BASELINES, METHODS, SLUG, TASKS, Method, Settings, Task
from .method import TRUNKS, CrossoverNet, balance_classes, clean_up, crossover_loss, extract_patches, pad_for_patches, sample_centres
from .scores import dice_per_crop, segmentation_scores

# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class ChapterData:
    """The task's crops, stacked once: images (N, 1, S, S) in [0, 1] and target masks (N, S, S) int64."""

    task: Task
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    info: dict[str, Any]


_DATA: dict[tuple, ChapterData] = {}


def stack(dataset: Dataset, n: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` (0: all) ``(image, mask)`` items of ``dataset`` as two tensors."""
    count = len(dataset) if n <= 0 else min(n, len(dataset))
    items = [dataset[i] for i in range(count)]
    return torch.stack([x for x, _ in items]).float(), torch.stack([torch.as_tensor(y) for _, y in items]).long()


def load_data(config: Settings, data_dir: str | Path | None = None) -> ChapterData:
    """The task's train, val and test crops: the real dataset under ``data_dir`` (its splits, the first
    ``n_<split>`` crops of each, all with 0), or its synthetic look-alike. Loaded once per process."""
    task = TASKS[config.task]
    folder = None if data_dir is None else str(Path(data_dir).expanduser().resolve())
    key = (config.task, config.image_size, config.n_train, config.n_val, config.n_test, config.data_seed, folder)
    if key not in _DATA:
        parts, info = {}, {}
        for split, n in (("train", config.n_train), ("val", config.n_val), ("test", config.n_test)):
            options: dict[str, Any] = {"image_size": config.image_size}
            if data_dir is None:
                options.update(n=n, seed=config.data_seed)
            dataset = datasets.load(task.dataset, split, data_dir=data_dir, **options)
            parts[split] = stack(dataset, n if data_dir is not None else 0)
            info[split] = {**{k: v for k, v in dataset.info.items() if k not in ("cases", "slices")}, "crops": len(parts[split][0])}
        info["kind"] = "synthetic" if data_dir is None else "real"
        info["dataset"] = task.dataset
        _DATA[key] = ChapterData(task=task, info=info, **parts)
    return _DATA[key]


def equivalent_diameters(masks: torch.Tensor) -> np.ndarray:
    """The diameter of the disk of the same area as each crop's target, pixels."""
    return 2 * np.sqrt(masks.flatten(1).sum(1).double().numpy() / np.pi)


def check_data(config: Settings, data_dir: str | Path | None = None) -> None:
    """Load the data and check that the settings fit it before any training starts: every split holds
    crops of ``image_size`` with a target in each, the arms can reach across the targets, and there are
    enough training centres for one batch. Raises ValueError saying which setting to change."""
    data = load_data(config, data_dir)
    where = f"the {data.task.dataset} data under {data_dir}" if data_dir is not None else "the synthetic data"
    spec = TRUNKS[config.trunk]
    for split in ("train", "val", "test"):
        images, masks = getattr(data, split)
        if len(images) == 0:
            raise ValueError(f"the {split} split of {where} is empty")
        if images.shape[-2:] != (config.image_size, config.image_size):
            raise ValueError(f"{where}: {split} crops are {tuple(images.shape[-2:])}, not image_size {config.image_size}")
        empty = int((masks.flatten(1).sum(1) == 0).sum())
        if empty:
            raise ValueError(f"{where}: {empty} {split} crop(s) hold no {data.task.target}")
    diameter = float(np.median(equivalent_diameters(data.train[1])))
    if diameter > spec.length:
        raise ValueError(
            f"{where}: the median {data.task.target} is {diameter:.0f} pixels across at image_size {config.image_size}, "
            f"more than the {spec.length}-pixel arms of trunk {config.trunk!r} can span; lower image_size"
        )
    if spec.length > 4 * config.image_size:
        raise ValueError(f"the {spec.length}-pixel arms of trunk {config.trunk!r} are more than 4 times image_size {config.image_size}: they would see mostly padding")
    centres = training_centres(data.train[1], config, seed=0)
    if len(centres) < config.batch_size:
        raise ValueError(f"{where}: {len(centres)} balanced training centres are fewer than one batch of {config.batch_size}")


def training_centres(masks: torch.Tensor, config: Settings, seed: int) -> torch.Tensor:
    """Eq. (4) over the training crops: (M, 4) int64 rows ``(crop, row, column, label)``, class-balanced,
    at most ``max_centres``, drawn from ``seed`` (every method at one seed trains on the same centres)."""
    rng = np.random.default_rng([config.data_seed, seed, 4])
    parts = []
    for i, mask in enumerate(masks.numpy()):
        rows, cols, labels = sample_centres(
            mask, rng, grid_step=config.grid_step, boundary_fraction=config.boundary_fraction,
            ring_offsets=tuple(config.ring_offsets), ring_rates=tuple(config.ring_rates),
        )
        parts.append(np.stack([np.full_like(rows, i), rows, cols, labels], axis=1))
    centres = np.concatenate(parts).astype(np.int64)
    keep = balance_classes(centres[:, 3], rng)
    if len(keep) > config.max_centres:  # as many of each class again
        half = config.max_centres // 2
        keep = np.sort(np.concatenate([rng.choice(keep[centres[keep, 3] == k], half, replace=False) for k in (0, 1)]))
    return torch.from_numpy(centres[keep])


class Rows(Dataset):
    """The rows of a tensor as samples (training centres)."""

    def __init__(self, rows: torch.Tensor):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.rows[index]


# ---------------------------------------------------------------------------------------------
# The networks and their training steps


def make_model(method: str, trunk: str, unet_widths: tuple[int, ...]) -> nn.Module:
    """The network of ``method``: a patch network on ``trunk`` (the square baseline on ``<trunk>_square``)
    or a MONAI 2D U-Net of ``unet_widths`` (one input channel, background and target logits)."""
    spec = METHODS[method]
    if spec.kind == "unet":
        from monai.networks.nets import UNet

        return UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=tuple(unet_widths),
                    strides=(2,) * (len(unet_widths) - 1), num_res_units=1)
    return CrossoverNet(TRUNKS[f"{trunk}_square" if spec.arms == ("square",) else trunk], spec.arms)


def patch_step(model: CrossoverNet, centres: torch.Tensor, padded: torch.Tensor, method: Method, config: Settings) -> dict[str, torch.Tensor]:
    """Eq. (3) on one batch of centres (B, 4): the patches are gathered from the training crops, padded
    by :func:`~.method.pad_for_patches` for the trunk's length and kept on the device, so the step never
    waits for the host."""
    index, rows, cols, labels = centres.unbind(1)
    spec = model.spec
    patches = {arm: extract_patches(padded, index, rows, cols, spec.length, spec.width, arm, spec.length) for arm in model.arms}
    logits, lines = model(patches)
    return crossover_loss(
        logits.float(), labels, lines.get("vertical"), lines.get("horizontal"), ratio=spec.length / spec.width,
        consistency_weight=method.consistency * config.consistency_weight,
        diversity_weight=method.diversity * config.diversity_weight, normalise=method.normalise,
    )


def unet_step(model: nn.Module, batch, loss: nn.Module) -> dict[str, torch.Tensor]:
    images, masks = batch
    return {"loss": loss(model(images).float(), masks[:, None])}


def one_cycle(optimizer: torch.optim.Optimizer, lr: float, steps: int):
    """The learning-rate schedule of every method: a one-cycle rise to ``lr`` over the first 20 % of the
    ``steps`` and a cosine decay to zero, so that the last epoch's weights (no epoch is chosen) are settled."""
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.2)


@torch.no_grad()
def probabilities(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 16) -> torch.Tensor:
    """The target probability (N, H, W) of every pixel: Eq. (5) for a patch network (fully
    convolutional), the softmax of the U-Net."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size].to(device)
        with engine.autocast_for(device):
            logits = model.dense_logits(chunk) if isinstance(model, CrossoverNet) else model(chunk)
        out.append(torch.softmax(logits.float(), 1)[:, 1].cpu())
    model.train(was_training)
    return torch.cat(out)


def segment(probs: torch.Tensor, radius: int, fill_holes: bool) -> tuple[np.ndarray, np.ndarray]:
    """Eq. (5): the masks above 0.5 before and after the clean-up, (N, H, W) bool each."""
    raw = (probs > 0.5).numpy()
    return raw, np.stack([clean_up(m, radius, fill_holes) for m in raw])


# ---------------------------------------------------------------------------------------------
# One run


def train(config: Settings, data: ChapterData, job: Job, run: RunContext) -> RunOutput:
    """Train ``job.method`` on the training crops (patch networks on the centres of Eq. 4, the U-Net on
    whole crops) for the profile's epochs, each scored on the validation crops for the curves only (no
    epoch is chosen), then segment every test crop with the clean-up and score it."""
    method = METHODS[job.method]
    runtime.seed_everything(job.seed)
    model = make_model(job.method, config.trunk, tuple(config.unet_widths))
    val_images, val_masks = data.val

    def evaluate(m: nn.Module) -> dict[str, float]:
        raw = (probabilities(m, val_images, run.device) > 0.5).numpy()
        return {"dice": float(np.mean(dice_per_crop(raw, val_masks.numpy())))}

    if method.kind == "unet":
        from monai.losses import DiceCELoss

        loss = DiceCELoss(to_onehot_y=True, softmax=True)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.unet_lr)
        steps = config.unet_epochs * (len(data.train[0]) // config.unet_batch_size)
        fit = engine.fit(
            model, TensorDataset(*data.train), run=run, loss_fn=lambda m, b: unet_step(m, b, loss), optimizer=optimizer,
            epochs=config.unet_epochs, batch_size=config.unet_batch_size, evaluate=evaluate,
            scheduler=one_cycle(optimizer, config.unet_lr, steps), scheduler_interval="step",
        )
    else:
        centres = training_centres(data.train[1], config, job.seed)
        padded = pad_for_patches(data.train[0].to(run.device), model.spec.length)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        steps = config.epochs * (len(centres) // config.batch_size)
        fit = engine.fit(
            model, Rows(centres), run=run, loss_fn=lambda m, b: patch_step(m, b, padded, method, config),
            optimizer=optimizer, epochs=config.epochs, batch_size=config.batch_size, evaluate=evaluate,
            scheduler=one_cycle(optimizer, config.lr, steps), scheduler_interval="step",
        )
    images, masks = data.test
    raw, cleaned = segment(probabilities(model, images, run.device), config.closing_radius, data.task.fill_holes)
    scores = segmentation_scores(cleaned, masks.numpy(), raw)
    if method.kind == "patch":
        scores["training_centres"] = float(len(centres))
    return RunOutput(metrics=scores, fit=fit)


def load_model(record: Mapping[str, Any]) -> nn.Module:
    """The trained network of a run, from the checkpoint in its run folder."""
    path = results.run_folder(record) / engine.CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}: run the grid first")
    params = record["params"]
    model = make_model(params["method"], params.get("trunk", "small"), tuple(params.get("unet_widths", (16, 32, 64, 128))))
    model.load_state_dict(engine.load_checkpoint(path)["model"])
    return model.eval()


# ---------------------------------------------------------------------------------------------
# The grid


def grid(config: Settings) -> list[Job]:
    """The main methods at every seed (experiment ``comparison``), the baselines and the ablation at the
    side seeds that are among the seeds; the U-Net and the two-arm runs first (the longest)."""
    stage = lambda m: "unet" if METHODS[m].kind == "unet" else "patch"  # noqa: E731
    jobs = [job("comparison", s, stage=stage(m), method=m) for m in config.methods for s in config.seeds]
    side = [s for s in config.side_seeds if s in config.seeds]
    jobs += [
        job("baselines" if m in BASELINES else "ablation", s, stage=stage(m), method=m)
        for m in config.side_methods if m not in config.methods for s in side
    ]
    return sorted(jobs, key=lambda j: (METHODS[j.method].kind != "unet", len(METHODS[j.method].arms) < 2))


def run_job(job: Job, *, config: Settings, profile: str, device: str, data_dir: str | None = None, progress: bool | None = None) -> dict[str, Any]:
    """One grid cell: train, evaluate, write the results record and return it (resumes from the run's
    checkpoints when called again)."""
    data = load_data(config, data_dir)
    params = run_identity(config, stage=job.stage, method=job.method, data_dir=data_dir)
    return run_once(
        chapter=SLUG, profile=profile, job=job, params=params, dataset=data.info, device=torch.device(device),
        train=lambda run: train(config, data, job, run), progress=progress, num_workers=config.num_workers,
    )


def describe(job: Job, record: Mapping[str, Any]) -> str:
    m = record["metrics"]
    return f"{job.experiment}: {job.method}, seed {job.seed}: Dice {m['dice']:.3f}, HD95 {m['hd95']:.1f} px, TPF {m['tpf']:.3f}"
