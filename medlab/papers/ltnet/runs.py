"""Chapter 6 runs: the atlas and the targets, the training steps of the registration networks (LT-Net,
the one-way baseline, the ablation) and of the segmentation networks, scoring, one run, and the grid."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medlab import data as datasets
from medlab import engine, metrics, results, runtime
from medlab.engine import RunContext
from medlab.experiment import Job, RunOutput, job, run_identity, run_once
from medlab.nets.volumes import UNet3d, VolumeEncoder

from .config import BASELINES, METHODS, SLUG, Settings
from .method import RegistrationNet, Weights, folding_share, ltnet_loss, onehot, segment, transfer

# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class ChapterData:
    """The atlas (image (1, 1, *S), labels (*S)), the unlabelled training targets, the development
    targets (``val``) and the test targets as (images (N, 1, *S), labels (N, *S)), and the structure names
    (label k is ``structures[k - 1]``)."""

    atlas: tuple[torch.Tensor, torch.Tensor]
    unlabeled: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    structures: tuple[str, ...]
    info: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.structures) + 1


_DATA: dict[tuple, ChapterData] = {}


def _stack(dataset: Dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    count = len(dataset) if n <= 0 else min(n, len(dataset))
    if hasattr(dataset, "images") and hasattr(dataset, "labels"):
        return dataset.images[:count].float(), dataset.labels[:count].long()
    items = [dataset[i] for i in range(count)]
    return torch.stack([x for x, _ in items]).float(), torch.stack([torch.as_tensor(y) for _, y in items]).long()


def load_data(config: Settings, data_dir: str | Path | None = None) -> ChapterData:
    """The atlas and the targets: the OASIS subjects under ``data_dir`` (the first ``n_<split>`` of each
    split, all with 0) or the synthetic one-shot brains. Loaded once per process."""
    folder = None if data_dir is None else str(Path(data_dir).expanduser().resolve())
    key = (tuple(config.shape), config.n_unlabeled, config.n_val, config.n_test, config.data_seed, config.deformation, config.labels, config.atlas, folder)
    if key not in _DATA:
        parts, info, atlas, structures = {}, {}, None, ()
        for split, n in (("unlabeled", config.n_unlabeled), ("val", config.n_val), ("test", config.n_test)):
            options: dict[str, Any] = {"shape": tuple(config.shape)}
            if data_dir is None:
                options.update(n=n, seed=config.data_seed, deformation=config.deformation)
            else:
                options.update(labels=config.labels, atlas=config.atlas or None)
            dataset = datasets.load("oneshot_brains", split, data_dir=data_dir, **options)
            parts[split] = _stack(dataset, n if data_dir is not None else 0)
            atlas, structures = dataset.atlas, tuple(dataset.structures)
            info[split] = {**{k: v for k, v in dataset.info.items() if k not in ("subjects",)}, "volumes": len(parts[split][0])}
        info["kind"] = "synthetic" if data_dir is None else "real"
        image, labels = atlas
        _DATA[key] = ChapterData(atlas=(image[None].float(), labels.long()), structures=structures, info=info, **parts)
    return _DATA[key]


def check_data(config: Settings, data_dir: str | Path | None = None) -> None:
    """Load the data and check that the settings fit it before any training starts: every split holds
    volumes of ``shape`` with labels in range, and enough unlabelled targets for one batch. Raises
    ValueError saying which setting to change."""
    data = load_data(config, data_dir)
    where = f"the OASIS data under {data_dir}" if data_dir is not None else "the synthetic data"
    for split in ("unlabeled", "val", "test"):
        images, labels = getattr(data, split)
        if len(images) == 0:
            raise ValueError(f"the {split} split of {where} is empty")
        if tuple(images.shape[2:]) != tuple(config.shape) or tuple(labels.shape[1:]) != tuple(config.shape):
            raise ValueError(f"{where}: {split} volumes are {tuple(images.shape[2:])}, not shape {tuple(config.shape)}")
        if int(labels.max()) >= data.num_classes:
            raise ValueError(f"{where}: {split} labels reach {int(labels.max())}, beyond the {len(data.structures)} structures")
    if len(data.unlabeled[0]) < max(config.batch_size, config.seg_batch_size):
        raise ValueError(
            f"{where}: {len(data.unlabeled[0])} unlabelled training volumes are fewer than one batch of "
            f"{max(config.batch_size, config.seg_batch_size)}; lower batch_size or seg_batch_size"
        )


class Volumes(Dataset):
    """Items of stacked tensors (images alone, or images with labels)."""

    def __init__(self, *tensors: torch.Tensor, length: int | None = None):
        self.tensors, self.length = tensors, length or len(tensors[0])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        index = index % len(self.tensors[0])
        items = tuple(t[index] for t in self.tensors)
        return items if len(items) > 1 else items[0]


# ---------------------------------------------------------------------------------------------
# Networks and training steps


def weights_of(method: str, config: Settings) -> Weights:
    """The loss weights of a registration method: the settings' weights, cycle terms off where the
    method removes them (all three for the one-way baseline)."""
    spec = METHODS[method]
    return Weights(
        similarity=config.similarity_weight, smoothness=config.smoothness_weight,
        image_cycle=config.image_cycle_weight * spec.image_cycle, label_cycle=config.label_cycle_weight * spec.label_cycle,
        field_cycle=config.field_cycle_weight * spec.field_cycle,
    )


def make_model(method: str, config: Settings | Mapping[str, Any], num_classes: int) -> nn.Module:
    get = (lambda k: config[k]) if isinstance(config, Mapping) else (lambda k: getattr(config, k))
    if METHODS[method].kind == "registration":
        return RegistrationNet(tuple(get("channels")))
    return UNet3d(VolumeEncoder(1, tuple(get("seg_widths"))), num_classes)


def registration_step(model: nn.Module, targets: torch.Tensor, atlas: tuple[torch.Tensor, torch.Tensor], weights: Weights, kernel: int) -> dict[str, torch.Tensor]:
    """One step of LT-Net (or of the one-way baseline, whose weights switch the backward pass off)."""
    image, label_maps = atlas
    out = transfer(model, image, label_maps, targets, cycle=weights.cycle)
    return ltnet_loss(out, image, label_maps, targets, weights, kernel)


def augment(images: torch.Tensor, labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard 3D augmentation of a batch, on the fly: a random affine (rotation within 10 degrees, scale
    within 10 %, shift within 2 voxels), a smooth random elastic displacement (1.5 voxels), gamma within
    [0.7, 1.4], a low-frequency bias field and Gaussian noise. Labels follow as one-hot maps, then argmax."""
    n, shape = images.shape[0], images.shape[2:]
    rnd = lambda *s: torch.rand(*s, generator=generator)  # noqa: E731
    angles = (rnd(n, 3) * 2 - 1) * math.radians(10)
    c, s = angles.cos(), angles.sin()
    o, z = torch.ones(n), torch.zeros(n)
    rx = torch.stack([o, z, z, z, c[:, 0], -s[:, 0], z, s[:, 0], c[:, 0]], 1).view(n, 3, 3)
    ry = torch.stack([c[:, 1], z, s[:, 1], z, o, z, -s[:, 1], z, c[:, 1]], 1).view(n, 3, 3)
    rz = torch.stack([c[:, 2], -s[:, 2], z, s[:, 2], c[:, 2], z, z, z, o], 1).view(n, 3, 3)
    matrix = rx @ ry @ rz @ torch.diag_embed(1 + (rnd(n, 3) * 2 - 1) * 0.1)
    shift = (rnd(n, 3) * 2 - 1) * 2 * 2 / torch.tensor([float(d) for d in shape]).flip(0)
    grid = F.affine_grid(torch.cat([matrix, shift[:, :, None]], 2), (n, 1, *shape), align_corners=True)
    coarse = torch.randn(n, 3, *(max(2, d // 6) for d in shape), generator=generator)
    elastic = F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True) * 1.5
    elastic = elastic * (2 / torch.tensor([float(d - 1) for d in shape]).flip(0))[None, :, None, None, None]
    grid = grid + elastic.permute(0, 2, 3, 4, 1)
    both = torch.cat([images, onehot(labels, num_classes)], 1)
    warped = F.grid_sample(both, grid.to(images.device), mode="bilinear", padding_mode="zeros", align_corners=True)
    out, labels = warped[:, :1], warped[:, 1:].argmax(1)
    gamma = torch.exp((rnd(n, 1, 1, 1, 1) * 2 - 1) * 0.35).to(images.device)
    bias = F.interpolate(torch.randn(n, 1, 3, 3, 3, generator=generator) * 0.1, size=tuple(shape), mode="trilinear", align_corners=True).exp()
    out = out.clamp_min(0) ** gamma * bias.to(images.device) + 0.03 * torch.randn(out.shape, generator=generator).to(images.device)
    return out.clamp(0, 1), labels


def one_cycle(optimizer: torch.optim.Optimizer, lr: float, steps: int):
    """Every network's schedule: a rise to ``lr`` over the first 20 % of the steps, then a cosine decay to
    zero, so the last step's weights (the ones scored) are settled (at least 10 steps long, so that
    the rise has a step in tiny runs)."""
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 10), pct_start=0.2)


# ---------------------------------------------------------------------------------------------
# Prediction and scores


@torch.no_grad()
def predict(model: nn.Module | None, method: str, data: ChapterData, images: torch.Tensor, device: torch.device, batch_size: int = 4) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The labels (N, *S) of ``images`` by ``method``, and the forward fields (N, 3, *S) of a registration."""
    kind = METHODS[method].kind
    if kind == "identity":
        return data.atlas[1].expand(len(images), *data.atlas[1].shape).clone(), None
    was_training = model.training
    model.eval()
    atlas_image = data.atlas[0].to(device)
    atlas_maps = onehot(data.atlas[1][None], data.num_classes).to(device)
    labels, fields = [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size].to(device)
        if kind == "registration":
            y, u = segment(model, atlas_image, atlas_maps, chunk)
            fields.append(u.cpu())
        else:
            y = model(chunk).argmax(1)
        labels.append(y.cpu())
    model.train(was_training)
    return torch.cat(labels), (torch.cat(fields) if fields else None)


def scores(pred: torch.Tensor, truth: torch.Tensor, structures: tuple[str, ...], fields: torch.Tensor | None = None, hd95: bool = True) -> dict[str, float]:
    """Dice and HD95 (voxels; MONAI, through :func:`medlab.metrics.region_dice_hd95`) of each structure,
    averaged over the volumes, their means over structures (``dice``, ``hd95``), the mean share of voxels
    where the forward field folds (``folding``, registrations) and the number of volumes."""
    regions = {name: (k + 1,) for k, name in enumerate(structures)}
    found = metrics.region_dice_hd95(pred.numpy(), truth.numpy(), regions, hd95=hd95)
    out: dict[str, float] = {}
    for name in structures:
        key = name.replace(" ", "_")
        out[f"dice_{key}"] = float(np.mean(found[f"dice/{name}"]))
        if hd95:
            out[f"hd95_{key}"] = float(np.nanmean(found[f"hd95/{name}"]))
    out["dice"] = float(np.mean([out[f"dice_{n.replace(' ', '_')}"] for n in structures]))
    if hd95:
        out["hd95"] = float(np.mean([out[f"hd95_{n.replace(' ', '_')}"] for n in structures]))
    if fields is not None:
        out["folding"] = float(folding_share(fields).mean())
    out["n_eval"] = float(len(pred))
    return out


# ---------------------------------------------------------------------------------------------
# One run


def train(config: Settings, data: ChapterData, job: Job, run: RunContext) -> RunOutput:
    """Train ``job.method`` for the profile's schedule, each epoch scored on the development targets for
    the curves only (no epoch is chosen), then segment every test target and score it."""
    spec = METHODS[job.method]
    runtime.seed_everything(job.seed)
    if spec.kind == "identity":
        return RunOutput(metrics=scores(*predict(None, job.method, data, data.test[0], run.device)[:1], data.test[1], data.structures))
    model = make_model(job.method, config, data.num_classes)

    def evaluate(m: nn.Module) -> dict[str, float]:
        pred, _ = predict(m, job.method, data, data.val[0], run.device)
        return {"dice": scores(pred, data.val[1], data.structures, hd95=False)["dice"]}

    if spec.kind == "registration":
        atlas = (data.atlas[0].to(run.device), onehot(data.atlas[1][None], data.num_classes).to(run.device))
        weights = weights_of(job.method, config)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        steps = config.epochs * (len(data.unlabeled[0]) // config.batch_size)
        fit = engine.fit(
            model, Volumes(data.unlabeled[0]), run=run, optimizer=optimizer, epochs=config.epochs, batch_size=config.batch_size,
            loss_fn=lambda m, batch: registration_step(m, batch, atlas, weights, config.lncc_kernel), evaluate=evaluate,
            scheduler=one_cycle(optimizer, config.lr, steps), scheduler_interval="step",
        )
    else:
        from monai.losses import DiceCELoss

        images, labels = (data.atlas[0], data.atlas[1][None]) if spec.labels == "atlas" else data.unlabeled
        epochs = min(4, config.seg_steps)
        per_epoch = math.ceil(config.seg_steps / epochs) * config.seg_batch_size
        generator = torch.Generator().manual_seed(job.seed)
        loss = DiceCELoss(to_onehot_y=True, softmax=True)

        def seg_step(m: nn.Module, batch) -> dict[str, torch.Tensor]:
            x, y = batch
            if spec.labels == "atlas":
                x, y = augment(x, y, data.num_classes, generator)
            return {"loss": loss(m(x).float(), y[:, None])}

        optimizer = torch.optim.Adam(model.parameters(), lr=config.seg_lr)
        fit = engine.fit(
            model, Volumes(images, labels, length=per_epoch), run=run, optimizer=optimizer, epochs=epochs,
            batch_size=config.seg_batch_size, loss_fn=seg_step, evaluate=evaluate,
            scheduler=one_cycle(optimizer, config.seg_lr, epochs * (per_epoch // config.seg_batch_size)), scheduler_interval="step",
        )
    pred, fields = predict(model, job.method, data, data.test[0], run.device)
    return RunOutput(metrics=scores(pred, data.test[1], data.structures, fields), fit=fit)


def load_model(record: Mapping[str, Any], num_classes: int) -> nn.Module:
    """The trained network of a run, from the checkpoint in its run folder."""
    path = results.run_folder(record) / engine.CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {path}: run the grid first")
    params = record["params"]
    model = make_model(params["method"], params, num_classes)
    model.load_state_dict(engine.load_checkpoint(path)["model"])
    return model.eval()


# ---------------------------------------------------------------------------------------------
# The grid


def grid(config: Settings) -> list[Job]:
    """The main methods at every seed (experiment ``comparison``), the baselines at the side seeds and the
    ablation at the ablation seeds (those among the seeds); the longest runs (with a backward pass) first."""
    stage = lambda m: {"registration": "registration", "segmentation": "segmentation"}.get(METHODS[m].kind, "identity")  # noqa: E731
    jobs = [job("comparison", s, stage=stage(m), method=m) for m in config.methods for s in config.seeds]
    for m in config.side_methods:
        if m in config.methods:
            continue
        seeds = config.side_seeds if m in BASELINES else config.ablation_seeds
        jobs += [job("baselines" if m in BASELINES else "ablation", s, stage=stage(m), method=m) for s in seeds if s in config.seeds]
    cost = lambda j: (METHODS[j.method].kind == "registration") * (1 + any(vars(METHODS[j.method]).get(k) for k in ("image_cycle", "label_cycle", "field_cycle")))  # noqa: E731
    return sorted(jobs, key=lambda j: -cost(j))


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
    text = f"{job.experiment}: {job.method}, seed {job.seed}: mean Dice {m['dice']:.3f}, HD95 {m['hd95']:.2f} voxels"
    return text + (f", folding {100 * m['folding']:.2f}%" if "folding" in m else "")
