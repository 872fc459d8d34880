"""Rubik's cube recovery (Zhuang, Li, Ma, Zheng et al., MICCAI 2019, arXiv:1910.02241).

Self-supervised pretraining for 3D medical images: a volume is cut into a 2x2x2 arrangement of
cubes, the cubes are permuted and rotated, and a network with eight weight-sharing 3D branches
(Siamese-Octad) learns to tell which permutation and which rotations were applied. Its branch then
initialises a 3D classifier and the encoder of a 3D U-Net. Re-written from the paper's description
(see the chapter's deviation ledger for every choice its text leaves open). The pieces, with the
equation numbers used in chapter 3:

* Eq. (1) the permutation set ``P = {p_1..p_K}``: chosen greedily from the 8! orderings so that the
  smallest Hamming distance between two of them is as large as possible.
* Eq. (2) cube rearrangement loss ``L_P = -sum_k y_k log softmax(z)_k`` (cross-entropy over ``K``).
* Eq. (3) cube rotation loss ``L_R = -(1/2M) sum_{i,a} [r_ia log s_ia + (1 - r_ia) log(1 - s_ia)]``,
  ``M = 8`` cubes, ``a`` in {horizontal, vertical}, ``s = sigmoid(logit)`` (multi-label).
* Eq. (4) ``L = alpha L_P + beta L_R``.

Cubes are cut, shuffled and rotated on the device for the whole batch (:func:`cut_cubes`,
:func:`scramble`), so pretraining never waits for host-side data preparation.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from medlab import data as datasets
from medlab import engine, metrics, runtime
from medlab.data.subsets import RepeatedSubset, random_subset
from medlab.experiment import RunOutput, fingerprint, run_dir_for, run_once
from medlab.nets.volumes import UNet3d, VolumeClassifier, VolumeEncoder

CHAPTER = "rubik"
ENCODER_FILE = "encoder.pt"
PROXY_MODEL_FILE = "proxy_model.pt"  # the whole Siamese-Octad, for the recovery figure
CUBES = 8  # the 2x2x2 arrangement
ROTATION_AXES = ("horizontal", "vertical")
# A 180-degree rotation about one axis reverses the other two. Axes of a volume (D, H, W) = dims 2, 3, 4
# of a batch; "horizontal" is the first (left-right for nibabel-ordered brains), "vertical" the second.
_FLIPS = {"horizontal": (-2, -1), "vertical": (-3, -1)}

TASKS = {
    "classification": "head_ct",  # haemorrhage type on (synthetic) head CT
    "segmentation": "brats",  # tumour sub-regions on BraTS (or its synthetic look-alike)
}


@dataclass(frozen=True)
class ProxyTask:
    """A pretraining variant: which transformations are applied to the cubes and which losses learn them."""

    permute: bool
    rotate: bool
    description: str


PRETRAINING = {
    "rubik": ProxyTask(True, True, "rearrangement and rotation (Eq. 4)"),
    "rearrangement": ProxyTask(True, False, "rearrangement only (Eq. 2)"),
    "rotation": ProxyTask(False, True, "rotation only (Eq. 3)"),
}
INITS = ("scratch", *PRETRAINING)


@dataclass(frozen=True)
class Settings:
    """Everything a chapter-3 run depends on; one instance per profile in :data:`PROFILES`."""

    volume_size: int
    cube_size: int
    widths: tuple[int, ...]
    n_unlabeled: int
    n_labeled: int
    n_val: int
    n_test: int
    tasks: tuple[str, ...]
    ablation_tasks: tuple[str, ...]
    seeds: tuple[int, ...]
    num_permutations: int
    pretrain_epochs: int
    pretrain_batch_size: int
    pretrain_lr: float
    label_counts: tuple[int, ...]
    ablation_labels: int
    finetune_epochs: int
    finetune_batch_size: int
    finetune_lr: float
    finetune_epoch_samples: int  # a small labeled subset is repeated up to this many samples per epoch
    permutation_weight: float = 1.0  # alpha of Eq. (4)
    rotation_weight: float = 1.0  # beta of Eq. (4)
    hidden: int = 256  # width of the proxy task's fully connected layers
    proxy_val_volumes: int = 32
    pretrain_weight_decay: float = 1e-4
    finetune_weight_decay: float = 1e-4
    workers: int = 0  # parallel training processes for the grid; 0 = automatic
    num_workers: int = 0  # data-loading processes per training process
    data_seed: int = 2019

    @property
    def max_gap(self) -> int:
        """The largest random gap between neighbouring cubes that still fits in the volume."""
        return self.volume_size - 2 * self.cube_size


_DEMO = Settings(
    volume_size=32,
    cube_size=12,
    widths=(8, 16, 32),
    n_unlabeled=192,
    n_labeled=64,
    n_val=32,
    n_test=96,
    tasks=("classification", "segmentation"),
    ablation_tasks=("segmentation",),
    seeds=(0, 1, 2),
    num_permutations=24,
    pretrain_epochs=12,
    pretrain_batch_size=16,
    pretrain_lr=3e-3,
    label_counts=(16, 64),
    ablation_labels=16,
    finetune_epochs=8,
    finetune_batch_size=4,
    finetune_lr=2e-3,
    finetune_epoch_samples=64,
)

PROFILES: dict[str, Settings] = {
    # the demo's grid at a few batches, in one process: every code path in seconds
    "smoke": dataclasses.replace(
        _DEMO,
        volume_size=24,
        cube_size=8,
        widths=(4, 8, 16),
        n_unlabeled=16,
        n_labeled=16,
        n_val=8,
        n_test=8,
        seeds=(0,),
        num_permutations=8,
        pretrain_epochs=1,
        pretrain_batch_size=8,
        hidden=32,
        proxy_val_volumes=8,
        label_counts=(8, 16),
        ablation_labels=8,
        finetune_epochs=1,
        finetune_batch_size=4,
        finetune_epoch_samples=8,
        workers=1,
    ),
    "demo": _DEMO,
    # BraTS from data_dir (segmentation); synthetic head CTs at 64 voxels (the paper's CT set is private)
    "paper": Settings(
        volume_size=64,
        cube_size=24,
        widths=(16, 32, 64, 128),
        n_unlabeled=2000,
        n_labeled=400,
        n_val=100,
        n_test=400,
        tasks=("classification", "segmentation"),
        ablation_tasks=("classification", "segmentation"),
        seeds=(0, 1, 2),
        num_permutations=100,
        pretrain_epochs=100,
        pretrain_batch_size=16,
        pretrain_lr=1e-3,
        label_counts=(40, 100, 200),
        ablation_labels=100,
        finetune_epochs=60,
        finetune_batch_size=4,
        finetune_lr=1e-3,
        finetune_epoch_samples=200,
        hidden=1024,
        proxy_val_volumes=64,
        num_workers=4,
    ),
}


def settings(profile: str | None = None, **overrides: Any) -> Settings:
    """The settings of ``profile`` (default: ``$MEDLAB_PROFILE`` or demo) with overrides applied."""
    config = runtime.settings_for(PROFILES, runtime.resolve_profile(profile), **overrides)
    unknown = [t for t in (*config.tasks, *config.ablation_tasks) if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; expected some of {', '.join(TASKS)}")
    reduction = 2 ** (len(config.widths) - 1)
    if config.cube_size % reduction or config.volume_size % reduction:
        raise ValueError(
            f"volume_size {config.volume_size} and cube_size {config.cube_size} must be divisible by "
            f"{reduction} (the encoder halves them {len(config.widths) - 1} times)"
        )
    if config.max_gap < 0:
        raise ValueError(f"2 x cube_size ({2 * config.cube_size}) exceeds volume_size {config.volume_size}")
    if not 2 <= config.num_permutations <= math.factorial(CUBES):
        raise ValueError(f"num_permutations must be in [2, {math.factorial(CUBES)}], got {config.num_permutations}")
    too_many = [n for n in (*config.label_counts, config.ablation_labels) if not 1 <= n <= config.n_labeled]
    if too_many:
        raise ValueError(f"label counts {too_many} must be in [1, n_labeled = {config.n_labeled}]")
    return config


# ---------------------------------------------------------------------------------------------
# The proxy task: permutations, cutting, scrambling and the losses


@lru_cache(maxsize=16)
def _permutation_set(k: int) -> np.ndarray:
    candidates = np.array(list(itertools.permutations(range(CUBES))), dtype=np.int8)
    chosen = [0]  # the identity: the unshuffled volume is one of the classes
    nearest = (candidates != candidates[0]).sum(1)  # Hamming distance to the closest chosen permutation
    for _ in range(k - 1):
        best = int(np.argmax(nearest))  # the first of the farthest candidates: deterministic
        chosen.append(best)
        nearest = np.minimum(nearest, (candidates != candidates[best]).sum(1))
    return candidates[chosen].astype(np.int64)


def permutation_set(k: int) -> torch.Tensor:
    """Eq. (1): ``k`` orderings of the 8 cubes, (k, 8). Starting from the identity, each next one is
    the ordering farthest (in Hamming distance, the number of cubes out of place) from all chosen so
    far, which makes the classes as distinct as a greedy search can (Noroozi and Favaro's selection)."""
    if not 1 <= k <= math.factorial(CUBES):
        raise ValueError(f"k must be in [1, {math.factorial(CUBES)}], got {k}")
    return torch.from_numpy(_permutation_set(k).copy())


def min_hamming_distance(permutations: torch.Tensor) -> int:
    """The smallest number of positions in which two rows of ``permutations`` differ."""
    p = torch.as_tensor(permutations)
    distances = (p[:, None, :] != p[None, :, :]).sum(-1)
    distances.fill_diagonal_(CUBES + 1)
    return int(distances.min())


def random_layout(
    batch: int, volume_size: int, cube_size: int, device: torch.device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Where the 2x2x2 cubes start along each axis, (batch, 3 axes, 2): a random gap between the two
    cubes of every axis (0 to ``volume_size - 2 cube_size`` voxels, so edges cannot simply be matched)
    and a random offset of the pair within the volume."""
    max_gap = volume_size - 2 * cube_size
    if max_gap < 0:
        raise ValueError(f"two cubes of {cube_size} do not fit in a volume of {volume_size}")
    gap = torch.randint(0, max_gap + 1, (batch, 3), device=device, generator=generator)
    room = max_gap - gap  # free voxels left for the offset
    offset = (torch.rand((batch, 3), device=device, generator=generator) * (room + 1)).long().clamp(max=room)
    return torch.stack([offset, offset + cube_size + gap], dim=-1)


def cube_positions(starts: torch.Tensor, cube_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Voxel indices of every cube along D, H and W: three tensors broadcastable to (B, 8, c, c, c).
    Cube ``i`` sits at ``(i // 4, (i // 2) % 2, i % 2)`` in the 2x2x2 arrangement."""
    steps = torch.arange(cube_size, device=starts.device)
    cube = torch.arange(CUBES, device=starts.device)
    corner = torch.stack([cube // 4, (cube // 2) % 2, cube % 2], dim=-1)  # (8, 3)
    first = torch.gather(starts, 2, corner.T[None].expand(starts.shape[0], 3, CUBES))  # (B, 3, 8)
    d = (first[:, 0, :, None] + steps)[:, :, :, None, None]
    h = (first[:, 1, :, None] + steps)[:, :, None, :, None]
    w = (first[:, 2, :, None] + steps)[:, :, None, None, :]
    return d, h, w


def cut_cubes(volumes: torch.Tensor, starts: torch.Tensor, cube_size: int) -> torch.Tensor:
    """The 8 cubes of each volume (B, C, S, S, S) at the layout ``starts``: (B, 8, C, c, c, c)."""
    d, h, w = cube_positions(starts, cube_size)
    batch = torch.arange(volumes.shape[0], device=volumes.device)[:, None, None, None, None]
    cubes = volumes.permute(0, 2, 3, 4, 1)[batch, d, h, w]  # (B, 8, c, c, c, C)
    return cubes.permute(0, 1, 5, 2, 3, 4)


def assemble(cubes: torch.Tensor, starts: torch.Tensor, volume_size: int, fill: float = -1.0) -> torch.Tensor:
    """The inverse of :func:`cut_cubes`: the cubes put back at ``starts`` in volumes filled with ``fill``."""
    batch, _, channels, size = cubes.shape[:4]
    out = cubes.new_full((batch, volume_size, volume_size, volume_size, channels), fill)
    d, h, w = cube_positions(starts, size)
    index = torch.arange(batch, device=cubes.device)[:, None, None, None, None]
    out[index, d, h, w] = cubes.permute(0, 1, 3, 4, 5, 2)
    return out.permute(0, 4, 1, 2, 3)


def _rotate(cubes: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    for a, axis in enumerate(ROTATION_AXES):
        flip = rotations[..., a].reshape(*rotations.shape[:2], 1, 1, 1, 1)
        cubes = torch.where(flip, cubes.flip(_FLIPS[axis]), cubes)
    return cubes


def scramble(cubes: torch.Tensor, order: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rearrange and rotate cubes (B, 8, C, c, c, c): slot ``j`` receives cube ``order[:, j]``, which is
    then turned 180 degrees about the horizontal axis where ``rotations[:, j, 0]`` and about the vertical
    axis where ``rotations[:, j, 1]`` (both: 180 degrees about the third axis; the two commute)."""
    index = order.reshape(*order.shape, 1, 1, 1, 1).expand_as(cubes)
    return _rotate(torch.gather(cubes, 1, index), rotations.bool())


def unscramble(cubes: torch.Tensor, order: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`scramble` given its labels: turn every slot back, then return each cube
    to its place (a 180-degree turn is its own inverse)."""
    turned = _rotate(cubes, rotations.bool())
    index = torch.argsort(order, dim=1).reshape(*order.shape, 1, 1, 1, 1).expand_as(cubes)
    return torch.gather(turned, 1, index)


def draw_proxy_labels(
    batch: int, permutations: torch.Tensor, task: ProxyTask, device: torch.device, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A permutation class per volume (0 = identity when the task does not permute) and rotation bits
    (B, 8, 2) (all False when it does not rotate)."""
    if task.permute:
        classes = torch.randint(0, len(permutations), (batch,), device=device, generator=generator)
    else:
        classes = torch.zeros(batch, dtype=torch.long, device=device)
    if task.rotate:
        rotations = torch.rand((batch, CUBES, len(ROTATION_AXES)), device=device, generator=generator) < 0.5
    else:
        rotations = torch.zeros((batch, CUBES, len(ROTATION_AXES)), dtype=torch.bool, device=device)
    return classes, rotations


def rearrangement_loss(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Eq. (2): cross-entropy of the permutation class, averaged over the batch."""
    return F.cross_entropy(logits.float(), classes)


def rotation_loss(logits: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Eq. (3): binary cross-entropy of every cube's two rotation bits (B, 8, 2), averaged."""
    return F.binary_cross_entropy_with_logits(logits.float(), rotations.float())


class SiameseOctad(nn.Module):
    """Eight weight-sharing branches (one :class:`VolumeEncoder` applied to every cube), a shared
    fully connected layer per branch, the eight features concatenated, and two heads: the permutation
    class (``K`` logits) and each cube's horizontal and vertical rotation (8 x 2 logits)."""

    def __init__(self, encoder: VolumeEncoder, permutations: torch.Tensor, hidden: int = 256):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("permutations", torch.as_tensor(permutations, dtype=torch.long).clone())
        width = encoder.out_features
        self.branch = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True))
        joint = CUBES * width
        self.permutation_head = nn.Sequential(
            nn.Linear(joint, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, len(self.permutations))
        )
        self.rotation_head = nn.Sequential(
            nn.Linear(joint, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, CUBES * len(ROTATION_AXES))
        )

    def forward(self, cubes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = cubes.shape[0]
        features = self.branch(self.encoder.features(cubes.flatten(0, 1)))
        joint = features.reshape(batch, -1)
        rotation = self.rotation_head(joint).reshape(batch, CUBES, len(ROTATION_AXES))
        return self.permutation_head(joint), rotation


def proxy_losses(
    model: SiameseOctad, cubes: torch.Tensor, classes: torch.Tensor, rotations: torch.Tensor, task: ProxyTask, config: Settings
) -> dict[str, torch.Tensor]:
    """Eq. (4) for ``task`` on already-scrambled cubes, with the accuracy of each prediction."""
    permutation_logits, rotation_logits = model(cubes)
    out: dict[str, torch.Tensor] = {}
    loss = torch.zeros((), device=cubes.device)
    if task.permute:
        out["permutation_loss"] = rearrangement_loss(permutation_logits, classes)
        out["permutation_accuracy"] = (permutation_logits.argmax(1) == classes).float().mean()
        loss = loss + config.permutation_weight * out["permutation_loss"]
    if task.rotate:
        out["rotation_loss"] = rotation_loss(rotation_logits, rotations)
        out["rotation_accuracy"] = ((rotation_logits > 0) == rotations).float().mean()
        loss = loss + config.rotation_weight * out["rotation_loss"]
    out["loss"] = loss
    return out


def make_proxy_batch(
    volumes: torch.Tensor, permutations: torch.Tensor, task: ProxyTask, config: Settings,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Cut, rearrange and rotate a batch of volumes on their device: the network's input and labels."""
    batch = volumes.shape[0]
    starts = random_layout(batch, volumes.shape[-1], config.cube_size, volumes.device, generator)
    classes, rotations = draw_proxy_labels(batch, permutations, task, volumes.device, generator)
    cubes = scramble(cut_cubes(volumes, starts, config.cube_size), permutations[classes], rotations)
    return {"cubes": cubes, "classes": classes, "rotations": rotations, "starts": starts}


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


def load_data(config: Settings, task: str, data_dir: str | Path | None = None) -> TaskData:
    """The datasets of ``task``: synthetic head CTs for classification (the paper's CT set is private);
    BraTS from ``data_dir`` for segmentation, or its synthetic look-alike when ``data_dir`` is None.
    Loaded once per process and configuration."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    real = task == "segmentation" and data_dir is not None
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


def describe_split(dataset: Dataset, real: bool) -> dict[str, Any]:
    return {"kind": "real" if real else "synthetic", "volumes": len(dataset), "source": type(dataset).__name__}


def volumes_of(dataset: Dataset) -> torch.Tensor:
    """Every volume of ``dataset`` stacked (N, C, S, S, S)."""
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def targets_of(dataset: Dataset) -> torch.Tensor:
    """Every target of ``dataset`` stacked: class indices (N,) or label maps (N, S, S, S)."""
    return torch.stack([torch.as_tensor(dataset[i][1]) for i in range(len(dataset))])


# ---------------------------------------------------------------------------------------------
# Runs


def pretrain_params(config: Settings, task: str, method: str, data_dir: str | Path | None) -> dict[str, Any]:
    """The parameters that identify a pretraining run."""
    keep = (
        "volume_size cube_size widths n_unlabeled num_permutations pretrain_epochs pretrain_batch_size pretrain_lr "
        "permutation_weight rotation_weight hidden proxy_val_volumes pretrain_weight_decay data_seed"
    ).split()
    params = {name: getattr(config, name) for name in keep}
    real = task == "segmentation" and data_dir is not None
    params.update(task=task, method=method, data_dir=str(data_dir) if real else None)
    return params


def downstream_params(config: Settings, task: str, init: str, labels: int, data_dir: str | Path | None) -> dict[str, Any]:
    """The parameters that identify a fine-tuning run (with those of its pretraining)."""
    keep = (
        "volume_size widths n_labeled n_val n_test finetune_epochs finetune_batch_size finetune_lr "
        "finetune_epoch_samples finetune_weight_decay data_seed"
    ).split()
    params = {name: getattr(config, name) for name in keep}
    real = task == "segmentation" and data_dir is not None
    params.update(task=task, init=init, labels=labels, data_dir=str(data_dir) if real else None)
    if init in PRETRAINING:
        params["pretraining"] = fingerprint(pretrain_params(config, task, init, data_dir))
    return params


def pretrain_run_dir(config: Settings, task: str, method: str, seed: int, profile: str, data_dir) -> Path:
    return run_dir_for(profile, CHAPTER, "pretrain", f"{task}/{method}", seed, pretrain_params(config, task, method, data_dir))


def fixed_proxy_batch(volumes: torch.Tensor, permutations: torch.Tensor, task: ProxyTask, config: Settings, seed: int = 0):
    """A proxy batch drawn once with a fixed generator: the same held-out puzzles every epoch."""
    generator = torch.Generator(device=volumes.device).manual_seed(seed)
    return make_proxy_batch(volumes, permutations, task, config, generator)


@torch.no_grad()
def proxy_accuracy(model: SiameseOctad, puzzles: Mapping[str, torch.Tensor], task: ProxyTask, config: Settings) -> dict[str, float]:
    """The permutation and rotation accuracy of ``model`` on held-out ``puzzles`` (eval mode)."""
    was_training = model.training
    model.eval()
    out = proxy_losses(model, puzzles["cubes"], puzzles["classes"], puzzles["rotations"], task, config)
    model.train(was_training)
    return {k: float(v) for k, v in out.items() if k.endswith("accuracy")}


def pretrain(
    config: Settings,
    data: TaskData,
    *,
    method: str,
    seed: int,
    device: torch.device,
    run_dir: Path,
    run_fingerprint: str,
    progress: bool | None = None,
) -> RunOutput:
    """Train the Siamese-Octad on ``method``'s proxy task over the unlabeled pool (puzzles made on the
    device every step) and save its branch, the encoder (``encoder.pt``)."""
    task = PRETRAINING[method]
    runtime.seed_everything(seed)
    model = SiameseOctad(VolumeEncoder(data.in_channels, config.widths), permutation_set(config.num_permutations), config.hidden)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.pretrain_lr, weight_decay=config.pretrain_weight_decay)
    steps = config.pretrain_epochs * (len(data.unlabeled) // config.pretrain_batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.pretrain_lr, total_steps=steps, pct_start=0.1)
    held_out = volumes_of(torch.utils.data.Subset(data.val, range(min(config.proxy_val_volumes, len(data.val)))))
    puzzles = fixed_proxy_batch(held_out.to(device), model.permutations.to(device), task, config)

    def loss_fn(m: SiameseOctad, batch) -> dict[str, torch.Tensor]:
        proxy = make_proxy_batch(batch[0], m.permutations, task, config)
        return proxy_losses(m, proxy["cubes"], proxy["classes"], proxy["rotations"], task, config)

    fit = engine.fit(
        model,
        data.unlabeled,
        loss_fn=loss_fn,
        optimizer=optimizer,
        epochs=config.pretrain_epochs,
        batch_size=config.pretrain_batch_size,
        run_dir=run_dir,
        device=device,
        seed=seed,
        evaluate=lambda m: proxy_accuracy(m, puzzles, task, config),
        restore_best=False,
        scheduler=scheduler,
        scheduler_interval="step",
        channels_last=device.type == "cuda",
        num_workers=config.num_workers,
        fingerprint=run_fingerprint,
        progress=progress,
        desc=f"pretrain {data.task}/{method}/seed {seed}",
    )
    model.cpu()
    torch.save(model.encoder.state_dict(), run_dir / ENCODER_FILE)
    torch.save(model.state_dict(), run_dir / PROXY_MODEL_FILE)
    last = fit.history[-1]
    out = {f"train_{k}": last[f"train/{k}"] for k in ("loss", "permutation_accuracy", "rotation_accuracy") if f"train/{k}" in last}
    out.update({f"val_{k}": last[f"val/{k}"] for k in ("permutation_accuracy", "rotation_accuracy") if f"val/{k}" in last})
    out["volumes_per_s"] = fit.samples_per_s or float("nan")
    return RunOutput(metrics=out, fit=fit, artifacts={"encoder": ENCODER_FILE, "proxy_model": PROXY_MODEL_FILE})


def initial_encoder(config: Settings, in_channels: int, encoder_path: Path | None = None) -> VolumeEncoder:
    """A fresh encoder, or the pretrained branch saved at ``encoder_path``."""
    encoder = VolumeEncoder(in_channels, config.widths)
    if encoder_path is not None:
        if not Path(encoder_path).exists():
            raise FileNotFoundError(f"no pretrained encoder at {encoder_path}: run its pretraining first")
        encoder.load_state_dict(torch.load(encoder_path, map_location="cpu", weights_only=True))
    return encoder


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


def predict_volumes(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 8) -> torch.Tensor:
    """Softmax probabilities of ``model`` over ``dataset``: (N, K) for a classifier, (N, K, S, S, S) for
    a segmentation network."""
    return engine.predict(
        model, dataset, forward=lambda m, b: torch.softmax(m(b[0]).float(), 1), device=device, batch_size=batch_size
    )


REGIONS = {"whole tumour": (1, 2, 3), "tumour core": (1, 3), "enhancing tumour": (3,)}  # BraTS labels 1,2,4 -> 1,2,3


def segmentation_scores(probabilities: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """Mean per-case Dice and HD95 (voxels) of the three BraTS regions, and their means."""
    per_case = metrics.region_dice_hd95(probabilities.argmax(1), masks, REGIONS)
    scores = {name: float(np.mean(values)) for name, values in per_case.items()}
    scores["mean_dice"] = float(np.mean([scores[f"dice/{r}"] for r in REGIONS]))
    scores["mean_hd95"] = float(np.mean([scores[f"hd95/{r}"] for r in REGIONS]))
    return scores


def finetune(
    config: Settings,
    data: TaskData,
    *,
    init: str,
    labels: int,
    seed: int,
    device: torch.device,
    run_dir: Path,
    run_fingerprint: str,
    encoder_path: Path | None = None,
    progress: bool | None = None,
) -> RunOutput:
    """Train the task's network (a classifier, or a U-Net) on ``labels`` labeled volumes from scratch or
    from a pretrained encoder, keep the epoch with the best validation score, and score the test split."""
    runtime.seed_everything(seed)
    encoder = initial_encoder(config, data.in_channels, encoder_path)
    indices = random_subset(len(data.train), labels, seed)
    train = RepeatedSubset(data.train, indices, config.finetune_epoch_samples)
    batch_size = min(config.finetune_batch_size, len(train))
    classify = data.task == "classification"
    model: nn.Module = VolumeClassifier(encoder, len(data.classes)) if classify else UNet3d(encoder, len(data.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.finetune_lr, weight_decay=config.finetune_weight_decay)
    steps = config.finetune_epochs * (len(train) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.finetune_lr, total_steps=steps, pct_start=0.2)
    val_targets = targets_of(data.val)

    if classify:
        def loss_fn(m: nn.Module, batch) -> dict[str, torch.Tensor]:
            volumes, targets = batch
            return {"loss": F.cross_entropy(m(flip_left_right(volumes)).float(), targets)}

        def evaluate(m: nn.Module) -> dict[str, float]:
            scores = metrics.classification_metrics(val_targets, predict_volumes(m, data.val, device), len(data.classes))
            return {"macro_f1": scores["macro_f1"], "accuracy": scores["accuracy"]}

        monitor = "macro_f1"
    else:
        def loss_fn(m: nn.Module, batch) -> dict[str, torch.Tensor]:
            volumes, masks = flip_left_right(*batch)
            return {"loss": segmentation_loss(m(volumes), masks)}

        def evaluate(m: nn.Module) -> dict[str, float]:
            probabilities = predict_volumes(m, data.val, device)
            dice = metrics.region_dice_hd95(probabilities.argmax(1), val_targets, REGIONS, hd95=False)
            return {"mean_dice": float(np.mean([dice[f"dice/{r}"].mean() for r in REGIONS]))}

        monitor = "mean_dice"

    fit = engine.fit(
        model,
        train,
        loss_fn=loss_fn,
        optimizer=optimizer,
        epochs=config.finetune_epochs,
        batch_size=batch_size,
        run_dir=run_dir,
        device=device,
        seed=seed,
        evaluate=evaluate,
        monitor=monitor,
        scheduler=scheduler,
        scheduler_interval="step",
        channels_last=device.type == "cuda",
        num_workers=config.num_workers,
        fingerprint=run_fingerprint,
        progress=progress,
        desc=f"{data.task} {init}/{labels}/seed {seed}",
    )
    probabilities = predict_volumes(model, data.test, device)
    test_targets = targets_of(data.test)
    if classify:
        scores = metrics.classification_metrics(test_targets, probabilities, len(data.classes))
    else:
        scores = segmentation_scores(probabilities, test_targets)
    scores[f"val_{monitor}"] = fit.best_value
    scores["labeled_volumes"] = float(len(indices))
    return RunOutput(metrics=scores, fit=fit)


@dataclass(frozen=True)
class Job:
    """One cell of the chapter's grid: a pretraining, or a fine-tuning from an initialisation."""

    experiment: str  # "pretrain", "label_efficiency" or "ablation"
    task: str
    init: str  # the pretraining method or "scratch"
    seed: int
    labels: int = 0  # labeled volumes (fine-tuning runs)

    def __str__(self) -> str:
        if self.experiment == "pretrain":
            return f"pretrain {self.task}/{self.init} seed {self.seed}"
        return f"{self.experiment}: {self.task} {self.init} on {self.labels} labeled volumes, seed {self.seed}"


def grid(config: Settings) -> tuple[list[Job], list[Job]]:
    """The pretraining runs, then the fine-tuning runs that use them (each list runs in parallel)."""
    methods = {task: ["rubik", *(["rearrangement", "rotation"] if task in config.ablation_tasks else [])] for task in config.tasks}
    pretraining = [Job("pretrain", task, m, s) for task in config.tasks for m in methods[task] for s in config.seeds]
    downstream = [
        Job("label_efficiency", task, init, s, n)
        for task in config.tasks
        for n in config.label_counts
        for init in ("scratch", "rubik")
        for s in config.seeds
    ]
    downstream += [
        Job("ablation", task, m, s, config.ablation_labels)
        for task in config.ablation_tasks
        if task in config.tasks
        for m in ("rearrangement", "rotation")
        for s in config.seeds
    ]
    # segmentation first (the longest runs), so that the parallel workers finish together
    downstream.sort(key=lambda j: j.task != "segmentation")
    pretraining.sort(key=lambda j: j.task != "segmentation")
    return pretraining, downstream


def run_job(job: Job, *, config: Settings, profile: str, device: str, data_dir: str | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Run one grid cell (in this process or in a worker process); writes and returns its record."""
    data = load_data(config, job.task, data_dir)
    torch_device = torch.device(device)
    if job.experiment == "pretrain":
        params = pretrain_params(config, job.task, job.init, data_dir)
        stamp = fingerprint(params)
        return run_once(
            chapter=CHAPTER, profile=profile, experiment="pretrain", variant=f"{job.task}/{job.init}", seed=job.seed,
            params=params, dataset=data.info, device=torch_device,
            train=lambda run_dir: pretrain(
                config, data, method=job.init, seed=job.seed, device=torch_device, run_dir=run_dir,
                run_fingerprint=stamp, progress=progress,
            ),
        )
    params = downstream_params(config, job.task, job.init, job.labels, data_dir)
    stamp = fingerprint(params)
    encoder_path = None
    if job.init in PRETRAINING:
        encoder_path = pretrain_run_dir(config, job.task, job.init, job.seed, profile, data_dir) / ENCODER_FILE
    return run_once(
        chapter=CHAPTER, profile=profile, experiment=job.experiment, variant=f"{job.task}/{job.init}/{job.labels}",
        seed=job.seed, params=params, dataset=data.info, device=torch_device,
        train=lambda run_dir: finetune(
            config, data, init=job.init, labels=job.labels, seed=job.seed, device=torch_device, run_dir=run_dir,
            run_fingerprint=stamp, encoder_path=encoder_path, progress=progress,
        ),
    )


def run_grid(config: Settings, *, profile: str, device: torch.device, data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Pretrain every task's encoders over the seeds, then fine-tune from each and from scratch
    (parallel processes on a CPU)."""
    from medlab.experiment import auto_workers
    from medlab.experiment import run_grid as run_all

    def describe(job: Job, record: dict[str, Any]) -> str:
        m = record["metrics"]
        if job.experiment == "pretrain":
            parts = [f"{k.replace('val_', 'held-out ').replace('_', ' ')} {v:.2f}" for k, v in m.items() if k.startswith("val_")]
            return f"{job}: " + ", ".join(parts)
        if job.task == "classification":
            return f"{job}: accuracy {m['accuracy']:.3f}, macro F1 {m['macro_f1']:.3f}"
        return f"{job}: mean Dice {m['mean_dice']:.3f}, mean HD95 {m['mean_hd95']:.1f}"

    records = []
    for phase in grid(config):
        workers, threads = auto_workers(device, len(phase), workers=config.workers)
        print(f"{len(phase)} runs on {device} with {workers} process(es) x {threads} thread(s)")
        records += run_all(
            run_job, phase, workers=workers, threads=threads, describe=describe, config=config, profile=profile,
            device=str(device), data_dir=None if data_dir is None else str(data_dir),
        )
    return records


# ---------------------------------------------------------------------------------------------
# Throughput: puzzles made on the device against host-side shuffling, same model, one run


class _HostPuzzles(Dataset):
    """Every volume cut, rearranged and rotated on the host, one at a time in the DataLoader (the
    usual per-sample pipeline), with the same random layout and labels as :func:`make_proxy_batch`."""

    def __init__(self, dataset: Dataset, permutations: torch.Tensor, config: Settings, task: ProxyTask):
        self.dataset, self.permutations, self.config, self.task = dataset, permutations, config, task

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        volume = self.dataset[index][0][None]
        proxy = make_proxy_batch(volume, self.permutations, self.task, self.config)
        return proxy["cubes"][0], proxy["classes"][0], proxy["rotations"][0]


def measure_pretraining_throughput(
    config: Settings, data: TaskData, device: torch.device, steps: int = 8, warmup: int = 2, method: str = "rubik"
) -> dict[str, float]:
    """Pretraining voxels/s (voxels of the cubes the network sees) of the chapter's step and of a
    plain loop of the same model, in one run.

    * ``device``: what :func:`pretrain` does: puzzles made on the device for the whole batch,
      channels-last 3D and mixed precision on CUDA, no host synchronisation inside the loop.
    * ``plain``: fp32, channels-first, puzzles made per volume on the host in the DataLoader, and the
      loss read back (``.item()``) after every step.
    """
    from torch.utils.data import DataLoader

    task = PRETRAINING[method]
    batch = config.pretrain_batch_size
    if len(data.unlabeled) < batch:
        raise ValueError(f"{len(data.unlabeled)} volumes are fewer than one batch of {batch}")
    permutations = permutation_set(config.num_permutations)
    voxels_per_step = batch * CUBES * config.cube_size**3
    results: dict[str, float] = {}
    for mode in ("device", "plain"):
        runtime.seed_everything(0)
        optimised = mode == "device"
        channels_last = optimised and device.type == "cuda"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        model = SiameseOctad(VolumeEncoder(data.in_channels, config.widths), permutations, config.hidden).to(device)
        if channels_last:
            engine.to_channels_last(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.pretrain_lr)
        source = data.unlabeled if optimised else _HostPuzzles(data.unlabeled, permutations, config, task)
        loader = DataLoader(
            source, batch_size=batch, shuffle=True, drop_last=True, num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
        )

        def step(item, optimised=optimised, channels_last=channels_last, model=model, optimizer=optimizer):
            if optimised:
                volumes = engine.to_device(item[0], device, channels_last)
                with engine.autocast_for(device):
                    proxy = make_proxy_batch(volumes, model.permutations, task, config)
                    out = proxy_losses(model, proxy["cubes"], proxy["classes"], proxy["rotations"], task, config)
            else:
                cubes, classes, rotations = (x.to(device) for x in item)
                out = proxy_losses(model, cubes, classes, rotations, task, config)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            if not optimised:
                out["loss"].item()

        rate = engine.timed_steps(loader, step, device=device, steps=steps, warmup=warmup)
        results[f"{mode}_voxels_per_s"] = voxels_per_step * rate
        if device.type == "cuda":
            results[f"{mode}_peak_memory_mb"] = engine.peak_memory_mb(device)
    results["speedup"] = results["device_voxels_per_s"] / results["plain_voxels_per_s"]
    return results


def record_throughput(config: Settings, data: TaskData, *, profile: str, device: torch.device, steps: int = 8) -> dict[str, Any]:
    """Measure :func:`measure_pretraining_throughput` and write it as a results record (experiment
    ``throughput``), which ``medlab bench`` reports."""
    from medlab import results
    from medlab.runtime import environment_record

    measured = measure_pretraining_throughput(config, data, device, steps=steps)
    params = {
        "method": "rubik", "task": data.task, "steps": steps, "batch_size": config.pretrain_batch_size,
        "cube_size": config.cube_size, "in_channels": data.in_channels, "widths": list(config.widths),
        "threads": torch.get_num_threads(),
    }
    path = results.write_record(
        chapter=CHAPTER, profile=profile, experiment="throughput", variant=f"rubik pretraining ({data.task})", seed=0,
        metrics=measured, params=params, dataset=data.info["unlabeled"], environment=environment_record(device),
    )
    return results.read_record(path)


# ---------------------------------------------------------------------------------------------
# Reading the runs: figures and findings written from the records

INIT_LABELS = {
    "scratch": "from scratch",
    "rubik": "Rubik's cube (both)",
    "rearrangement": "rearrangement only",
    "rotation": "rotation only",
}
TASK_METRICS = {
    "classification": {"accuracy": "accuracy %", "macro_f1": "macro F1 %", "macro_auroc": "macro AUROC %"},
    "segmentation": {
        "dice/whole tumour": "Dice WT %",
        "dice/tumour core": "Dice TC %",
        "dice/enhancing tumour": "Dice ET %",
        "hd95/whole tumour": "HD95 WT",
        "hd95/tumour core": "HD95 TC",
        "hd95/enhancing tumour": "HD95 ET",
    },
}
HEADLINE = {"classification": "macro_f1", "segmentation": "mean_dice"}  # the score each comparison reads
HEADLINE_NAMES = {"macro_f1": "macro F1", "mean_dice": "Dice (mean of WT, TC, ET)"}


def _show(ax, image: np.ndarray, title: str = "", cmap: str = "gray") -> None:
    ax.imshow(np.rot90(image), cmap=cmap, vmin=-1, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def orthogonal_slices(volume: np.ndarray, centre: Sequence[int] | None = None) -> list[np.ndarray]:
    """The three orthogonal slices of a volume (D, H, W) through ``centre`` (default: the middle)."""
    centre = [s // 2 for s in volume.shape] if centre is None else centre
    return [volume[centre[0]], volume[:, centre[1]], volume[:, :, centre[2]]]


@torch.no_grad()
def puzzle_figure(
    volume: torch.Tensor, config: Settings, proxy_model_path: Path | None = None, channel: int = 0, seed: int = 3
):
    """One volume (C, S, S, S) as the proxy task sees it, in orthogonal slices through the first layer
    of cubes (two voxels inside its inner face, close to the volume's centre): the volume, its cubes cut with random gaps, the cubes rearranged and rotated, and the
    arrangement recovered by inverting the labels a pretrained Siamese-Octad predicts (saved at
    ``proxy_model_path``; without it, by inverting the true labels)."""
    import matplotlib.pyplot as plt

    task = PRETRAINING["rubik"]
    permutations = permutation_set(config.num_permutations)
    generator = torch.Generator().manual_seed(seed)
    proxy = make_proxy_batch(volume[None], permutations, task, config, generator)
    starts = proxy["starts"]
    classes, rotations = proxy["classes"], proxy["rotations"]
    recovered_by = "true labels"
    if proxy_model_path is not None:
        state = torch.load(proxy_model_path, map_location="cpu", weights_only=True)
        model = SiameseOctad(VolumeEncoder(volume.shape[0], config.widths), permutations, config.hidden)
        model.load_state_dict(state)
        model.eval()
        permutation_logits, rotation_logits = model(proxy["cubes"])
        classes, rotations = permutation_logits.argmax(1), rotation_logits > 0
        right = int((classes == proxy["classes"]).item()), int((rotations == proxy["rotations"]).sum())
        recovered_by = f"the network's prediction (order {'right' if right[0] else 'wrong'}, {right[1]}/16 turns right)"
    cubes = cut_cubes(volume[None], starts, config.cube_size)
    rows = {
        "volume": volume[None],
        "cut into 2x2x2 cubes (random gaps)": assemble(cubes, starts, config.volume_size),
        "rearranged and rotated (network input)": assemble(proxy["cubes"], starts, config.volume_size),
        f"recovered with {recovered_by}": assemble(
            unscramble(proxy["cubes"], permutations[classes], rotations), starts, config.volume_size
        ),
    }
    centre = (starts[0, :, 0] + config.cube_size - 2).tolist()  # near the inner face of the first layer
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.8 * len(rows)))
    for r, (name, batch) in enumerate(rows.items()):  # columns: slices across the first, second, third axis
        for c, image in enumerate(orthogonal_slices(batch[0, channel].numpy(), centre)):
            _show(axes[r, c], image)
        axes[r, 1].set_title(name, fontsize=9)
    fig.tight_layout()
    return fig


def proxy_curves_figure(records: Sequence[Mapping[str, Any]], task: str):
    """Held-out proxy accuracy per pretraining epoch (mean ± std over seeds), per variant."""
    import matplotlib.pyplot as plt

    from medlab import plots, results

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for ax, (key, label) in zip(
        axes, (("val/permutation_accuracy", "permutation accuracy"), ("val/rotation_accuracy", "rotation accuracy (per bit)"))
    ):
        series = {}
        for method in PRETRAINING:
            chosen = [r for r in results.select(records, experiment="pretrain", task=task, method=method) if r["history"] and key in r["history"][0]]
            if chosen:
                series[INIT_LABELS[method]] = results.history(chosen, key)
        plots.curves(series, "pretraining epoch", f"held-out {label}", ax=ax)
    fig.suptitle(f"{task}: proxy task", fontsize=10)
    fig.tight_layout()
    return fig


def finetune_curves_figure(records: Sequence[Mapping[str, Any]], task: str, labels: int):
    """The validation score per fine-tuning epoch, from scratch and from each pretraining."""
    import matplotlib.pyplot as plt

    from medlab import plots, results

    key = f"val/{HEADLINE[task]}"
    series = {}
    for init in INITS:
        chosen = [r for r in results.select(records, task=task, init=init, labels=labels) if r["experiment"] != "pretrain"]
        if chosen:
            series[INIT_LABELS[init]] = results.history(chosen, key)
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    plots.curves(series, "fine-tuning epoch", f"validation {HEADLINE_NAMES[HEADLINE[task]]}", ax=ax)
    ax.set_title(f"{task}, {labels} labeled volumes", fontsize=10)
    fig.tight_layout()
    return fig


def label_efficiency_figure(frame):
    """The headline score of each task against the number of labeled volumes, per initialisation."""
    import matplotlib.pyplot as plt

    tasks = [t for t in TASKS if t in set(frame["params.task"])]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = frame[(frame["params.task"] == task) & (frame["experiment"] == "label_efficiency")]
        column = f"metrics.{HEADLINE[task]}"
        for init, group in rows.groupby("params.init", sort=False):
            stats = group.groupby("params.labels")[column].agg(["mean", "std"]).sort_index()
            ax.errorbar(stats.index, stats["mean"] * 100, yerr=stats["std"].fillna(0) * 100, capsize=3, marker="o", label=INIT_LABELS[init])
        ax.set_xscale("log")
        counts = sorted(int(n) for n in set(rows["params.labels"]))
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel("labeled volumes")
        ax.set_ylabel(f"test {HEADLINE_NAMES[HEADLINE[task]]} (%)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _spread(diff: Mapping[str, Any], scale: float = 100.0, unit: str = " points") -> str:
    text = f"{diff['mean'] * scale:+.1f}{unit}"
    if diff["n"] > 1:
        text += f" ± {diff['std'] * scale:.1f}"
    return text


def findings(frame) -> str:
    """A plain-language summary written from the fine-tuning records (Markdown): Rubik's cube
    pretraining against training from scratch per task and number of labels, paired by seed; then
    the ablation against the full proxy task."""
    from scipy import stats

    from medlab.results import paired_difference

    lines: list[str] = []
    verdicts: list[str] = []
    for task in TASKS:
        rows = frame[(frame["params.task"] == task) & (frame["experiment"] == "label_efficiency")]
        if rows.empty:
            continue
        metric = HEADLINE[task]
        name = HEADLINE_NAMES[metric]
        ahead = []
        for labels, group in rows.groupby("params.labels", sort=True):
            d = paired_difference(group, metric, "params.init", "rubik", "scratch")
            if d["n"] == 0:
                continue
            ahead.append(d["mean"] > 0)
            test = ""
            if d["n"] > 1 and d["std"] > 0:
                test = f", p = {stats.ttest_1samp(d['values'], 0.0).pvalue:.2f}"
            extra = ""
            if task == "segmentation":
                h = paired_difference(group, "mean_hd95", "params.init", "rubik", "scratch")
                extra = f"; mean HD95 {_spread(h, 1.0, ' voxels')}"
            lines.append(
                f"- **{task}, {int(labels)} labeled volumes**: Rubik's cube minus scratch, {name} "
                f"{_spread(d)} (ahead on {d['wins']}/{d['n']} seeds{test}){extra}."
            )
        if ahead:
            n, k = len(ahead), sum(ahead)
            where = "at every label count" if k == n else ("at no label count" if k == 0 else f"at {k} of {n} label counts")
            verdicts.append(f"for {task}, the pretrained network's mean {name} is above scratch {where}")
        ablation = frame[(frame["params.task"] == task) & (frame["experiment"].isin(["ablation", "label_efficiency"]))]
        ablated = set(frame[(frame["params.task"] == task) & (frame["experiment"] == "ablation")]["params.init"])
        if ablated:
            labels = int(frame[(frame["params.task"] == task) & (frame["experiment"] == "ablation")]["params.labels"].iloc[0])
            group = ablation[ablation["params.labels"] == labels]
            parts = []
            for method in ("rearrangement", "rotation", "scratch"):
                if method in set(group["params.init"]):
                    d = paired_difference(group, metric, "params.init", method, "rubik")
                    if d["n"]:
                        parts.append(f"{INIT_LABELS[method]} {_spread(d)}")
            if parts:
                lines.append(
                    f"- **Ablation ({task}, {labels} labeled volumes)**, each variant minus the full proxy task, "
                    f"{name}: " + "; ".join(parts) + "."
                )
    if verdicts:
        text = "; ".join(verdicts)
        lines.insert(0, "**Overall.** " + text[0].upper() + text[1:] + ".\n")
    return "\n".join(lines) if lines else "No fine-tuning runs to compare."


BENCHMARK_TABLE = [
    {
        "experiments": ["label_efficiency"],
        "filter": {"params.task": "classification"},
        "by": ["params.init", "params.labels"],
        "metrics": ["accuracy", "macro_f1", "macro_auroc"],
        "percent": ["accuracy", "macro_f1", "macro_auroc"],
        "labels": {"params.init": INIT_LABELS},
        "order": {"params.init": list(INIT_LABELS), "params.labels": None},
        "names": {"accuracy": "accuracy %", "macro_f1": "macro F1 %", "macro_auroc": "macro AUROC %"},
        "caption": "Haemorrhage-type classification on head CT volumes by initialisation and labeled volumes.",
    },
    {
        "experiments": ["label_efficiency"],
        "filter": {"params.task": "segmentation"},
        "by": ["params.init", "params.labels"],
        "metrics": ["dice/whole tumour", "dice/tumour core", "dice/enhancing tumour", "mean_hd95"],
        "percent": ["dice/whole tumour", "dice/tumour core", "dice/enhancing tumour"],
        "labels": {"params.init": INIT_LABELS},
        "order": {"params.init": list(INIT_LABELS), "params.labels": None},
        "names": {
            "dice/whole tumour": "Dice WT %", "dice/tumour core": "Dice TC %", "dice/enhancing tumour": "Dice ET %",
            "mean_hd95": "mean HD95 (voxels)",
        },
        "caption": "Brain tumour segmentation (3D U-Net) by initialisation and labeled volumes.",
    },
]
