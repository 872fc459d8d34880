"""C2L: Comparing to Learn (Zhou et al., MICCAI 2020, arXiv:2007.07423).

Self-supervised pretraining on unlabeled radiographs, then fine-tuning for the 14 findings of
ChestX-ray14. Read from the paper's abstract and the official code's defaults (we re-wrote every
line; see the chapter's deviation ledger). The pieces, with the equation numbers used in chapter 2:

* Eq. (1) InfoNCE: ``l(q, k+) = -log exp(q.k+/T) / (exp(q.k+/T) + sum_{k- in queue} exp(q.k-/T))``,
  every vector on the unit sphere.
* Eq. (2) the key encoder follows the query encoder by momentum: ``xi <- m xi + (1 - m) theta``.
* Eq. (3) image mixup: ``lambda ~ Beta(alpha, alpha)`` folded to ``lambda >= 1/2``; both views are
  mixed with one shared permutation ``pi``: ``x~ = lambda x + (1 - lambda) x[pi]``.
* Eq. (4) feature mixup target: ``k_mix = lambda k + (1 - lambda) k[pi]``, mixed from the key
  encoder's features *before* L2 normalisation.
* Eq. (5) ``L = [l(q, k) + l(q~, k~) + l(q~, k_mix)] / 3``; each of the three comparisons pushes its
  keys into the queue after use (3 B keys per step, as the official code does).

The key encoder's batch statistics are kept apart from the query's (shuffled batch norm): on one
device the batch is permuted before the key encoder and every batch norm of both encoders computes
its statistics over ``bn_splits`` separate sub-batches; on several devices (DDP) the batch is
shuffled across devices (:func:`batch_shuffle`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from medlab import data as datasets
from medlab import engine, metrics, runtime
from medlab.augment import cutout, intensity_jitter, random_affine_crop
from medlab.data.subsets import RepeatedSubset, random_subset
from medlab.experiment import RunOutput, fingerprint, run_dir_for, run_once
from medlab.nets.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone, backbone, narrow_resnet18

CHAPTER = "c2l"
ENCODER_FILE = "encoder.pt"

# Grey-level normalisation of the synthetic radiographs (their pixel mean and spread, rounded).
GREY_MEAN, GREY_STD = 0.45, 0.25

TERMS = {
    "instance": "l(q, k): the two views of an image (instance discrimination)",
    "mixed": "l(q~, k~): the mixed query against the mixed key",
    "mixed_target": "l(q~, k_mix): the mixed query against the mixed key features",
}


@dataclass(frozen=True)
class Variant:
    """A pretraining method: which comparisons of Eq. (5) it makes, and setting changes."""

    description: str
    terms: tuple[str, ...]
    changes: tuple[str, ...] = ()  # settings replaced by their ``ablation_*`` value


PRETRAINING = {
    "moco": Variant("instance discrimination with a momentum encoder (MoCo), no mixup", ("instance",)),
    "c2l": Variant("C2L", ("instance", "mixed", "mixed_target")),
    "c2l_no_instance": Variant("C2L without l(q, k)", ("mixed", "mixed_target")),
    "c2l_no_mixed": Variant("C2L without l(q~, k~)", ("instance", "mixed_target")),
    "c2l_no_mixed_target": Variant("C2L without l(q~, k_mix)", ("instance", "mixed")),
    "c2l_queue": Variant("C2L with the ablation's queue size", ("instance", "mixed", "mixed_target"), ("queue_size",)),
    "c2l_momentum": Variant("C2L with the ablation's momentum", ("instance", "mixed", "mixed_target"), ("momentum",)),
}
INITS = ("scratch", "imagenet", *PRETRAINING)
PROTOCOLS = {"finetune": "every layer trained", "probe": "linear probe on frozen features"}


@dataclass(frozen=True)
class Settings:
    """Everything a chapter-2 run depends on; one instance per profile in :data:`PROFILES`."""

    image_size: int
    n_unlabeled: int
    n_labeled: int
    n_val: int
    n_test: int
    backbone: str  # "narrow_resnet18" (1 channel, ``width``) or a torchvision name
    width: int
    imagenet: bool  # add the ImageNet-initialised row (where the weights can be loaded)
    pretrain_methods: tuple[str, ...]
    ablation_methods: tuple[str, ...]
    seeds: tuple[int, ...]
    pretrain_epochs: int
    pretrain_batch_size: int
    pretrain_lr: float
    queue_size: int
    momentum: float
    ablation_queue_size: int
    ablation_momentum: float
    bn_splits: int
    label_fractions: tuple[float, ...]
    finetune_epochs: int
    finetune_batch_size: int
    finetune_lr: float
    finetune_epoch_samples: int  # a small labeled subset is repeated up to this many samples per epoch
    probe_epochs: int
    probe_lr: float
    ablation_fraction: float
    feature_dim: int = 128
    temperature: float = 0.07
    mixup_alpha: float = 1.0
    pretrain_weight_decay: float = 1e-4
    lr_milestones: tuple[float, ...] = (0.5, 2 / 3, 5 / 6)  # fractions of pretraining: x0.1 at each
    crop_scale: float = 0.2
    rotation: float = 10.0
    jitter: float = 0.4
    cutout_holes: int = 3
    cutout_fraction: float = 32 / 224  # hole side as a fraction of the image side
    finetune_weight_decay: float = 1e-5
    prevalence_floor: float = 0.02
    workers: int = 0  # parallel training processes for the grid; 0 = automatic
    num_workers: int = 0  # data-loading processes per training process
    data_seed: int = 2020


_DEMO = Settings(
    image_size=64,
    n_unlabeled=1536,
    n_labeled=1024,
    n_val=384,
    n_test=1024,
    backbone="narrow_resnet18",
    width=16,
    imagenet=False,
    pretrain_methods=("moco", "c2l"),
    ablation_methods=("c2l_no_instance", "c2l_no_mixed", "c2l_no_mixed_target", "c2l_queue", "c2l_momentum"),
    seeds=(0, 1, 2),
    pretrain_epochs=3,
    pretrain_batch_size=64,
    pretrain_lr=0.06,
    queue_size=1024,
    momentum=0.99,
    ablation_queue_size=256,
    ablation_momentum=0.999,
    bn_splits=4,
    label_fractions=(0.01, 0.1, 1.0),
    finetune_epochs=8,
    finetune_batch_size=32,
    finetune_lr=3e-3,
    finetune_epoch_samples=320,
    probe_epochs=40,
    probe_lr=3e-3,
    ablation_fraction=1.0,
)

PROFILES: dict[str, Settings] = {
    # the demo's grid at a few batches, in one process: every code path in seconds
    "smoke": dataclasses.replace(
        _DEMO,
        image_size=32,
        n_unlabeled=128,
        n_labeled=96,
        n_val=64,
        n_test=96,
        width=8,
        ablation_methods=("c2l_no_instance",),
        seeds=(0,),
        pretrain_epochs=1,
        pretrain_batch_size=32,
        queue_size=128,
        ablation_queue_size=64,
        label_fractions=(0.1, 1.0),
        finetune_epochs=1,
        finetune_epoch_samples=64,
        probe_epochs=2,
        workers=1,
    ),
    "demo": _DEMO,
    "paper": Settings(  # ChestX-ray14 from data_dir; the official code's defaults
        image_size=224,
        n_unlabeled=0,
        n_labeled=0,
        n_val=0,
        n_test=0,
        backbone="resnet18",
        width=64,
        imagenet=True,
        pretrain_methods=("moco", "c2l"),
        ablation_methods=("c2l_no_instance", "c2l_no_mixed", "c2l_no_mixed_target", "c2l_queue", "c2l_momentum"),
        seeds=(0, 1, 2),
        pretrain_epochs=120,
        pretrain_batch_size=128,
        pretrain_lr=0.03,
        queue_size=16384,
        momentum=0.999,
        ablation_queue_size=4096,
        ablation_momentum=0.99,
        bn_splits=8,
        label_fractions=(0.01, 0.1, 1.0),
        finetune_epochs=20,
        finetune_batch_size=64,
        finetune_lr=1e-4,
        finetune_epoch_samples=8192,
        probe_epochs=100,
        probe_lr=1e-3,
        ablation_fraction=0.1,
        num_workers=8,
    ),
}


def settings(profile: str | None = None, **overrides: Any) -> Settings:
    """The settings of ``profile`` (default: ``$MEDLAB_PROFILE`` or demo) with overrides applied."""
    config = runtime.settings_for(PROFILES, runtime.resolve_profile(profile), **overrides)
    unknown = [m for m in (*config.pretrain_methods, *config.ablation_methods) if m not in PRETRAINING]
    if unknown:
        raise ValueError(f"unknown pretraining method(s) {unknown}; expected some of {', '.join(PRETRAINING)}")
    bad = [f for f in config.label_fractions if not 0 < f <= 1]
    if bad or not 0 < config.ablation_fraction <= 1:
        raise ValueError(f"label fractions must be in (0, 1], got {bad or config.ablation_fraction}")
    if config.pretrain_batch_size % config.bn_splits:
        raise ValueError(
            f"pretrain_batch_size {config.pretrain_batch_size} is not divisible by bn_splits {config.bn_splits}"
        )
    return config


def variant_settings(config: Settings, method: str) -> Settings:
    """``config`` with the changes of pretraining ``method`` applied (e.g. the ablation's queue size)."""
    variant = PRETRAINING[method]
    return dataclasses.replace(config, **{name: getattr(config, f"ablation_{name}") for name in variant.changes})


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class ChapterData:
    unlabeled: Dataset
    train: Dataset
    val: Dataset
    test: Dataset
    classes: tuple[str, ...]
    info: dict[str, Any]


_DATA_CACHE: dict[tuple, ChapterData] = {}


def load_data(config: Settings, data_dir: str | Path | None = None) -> ChapterData:
    """ChestX-ray14 from ``data_dir``, or the synthetic radiographs when ``data_dir`` is None.

    ``unlabeled`` is the pretraining pool (on the real data: the training split's images, whose labels
    pretraining never reads); ``train`` is the labeled set the label fractions are drawn from.
    Loaded once per process and configuration.
    """
    key = (
        config.image_size,
        config.n_unlabeled,
        config.n_labeled,
        config.n_val,
        config.n_test,
        config.prevalence_floor,
        config.data_seed,
        None if data_dir is None else str(Path(data_dir).expanduser().resolve()),
    )
    if key not in _DATA_CACHE:
        common: dict[str, Any] = dict(data_dir=data_dir, image_size=config.image_size)
        if data_dir is None:
            common.update(prevalence_floor=config.prevalence_floor, seed=config.data_seed)
            sizes = {
                "unlabeled": config.n_unlabeled,
                "train": config.n_labeled,
                "val": config.n_val,
                "test": config.n_test,
            }
            splits = {s: datasets.load("chestxray14", s, n=n, **common) for s, n in sizes.items()}
        else:
            splits = {s: datasets.load("chestxray14", s, **common) for s in ("unlabeled", "train", "val", "test")}
        info = {split: ds.info for split, ds in splits.items()}
        info["kind"] = info["train"]["kind"]
        _DATA_CACHE[key] = ChapterData(
            splits["unlabeled"], splits["train"], splits["val"], splits["test"], tuple(splits["train"].classes), info
        )
    return _DATA_CACHE[key]


def label_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """The indices of a ``fraction`` of ``n`` labeled images (at least one), drawn by ``seed``."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return random_subset(n, max(1, int(round(fraction * n))), seed)


# ---------------------------------------------------------------------------------------------
# Model


class SplitBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics come from ``splits`` separate sub-batches (sample ``i``
    is in sub-batch ``i mod splits``). In eval mode it is an ordinary batch norm with the same state,
    so its weights load into ``nn.BatchNorm2d``. One device's stand-in for per-GPU batch norm."""

    def __init__(self, num_features: int, splits: int, **kwargs: Any):
        super().__init__(num_features, **kwargs)
        self.splits = splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.splits == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        if n % self.splits:
            raise ValueError(f"a batch of {n} cannot be split into {self.splits} batch-norm groups")
        mean = self.running_mean.repeat(self.splits)
        var = self.running_var.repeat(self.splits)
        out = F.batch_norm(
            x.reshape(n // self.splits, c * self.splits, h, w),
            mean,
            var,
            self.weight.repeat(self.splits),
            self.bias.repeat(self.splits),
            True,
            self.momentum,
            self.eps,
        ).reshape(n, c, h, w)
        self.running_mean.copy_(mean.view(self.splits, c).mean(0))
        self.running_var.copy_(var.view(self.splits, c).mean(0))
        self.num_batches_tracked.add_(1)
        return out


def split_batch_norms(module: nn.Module, splits: int) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` in ``module`` by a :class:`SplitBatchNorm2d` with the same state."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm2d):
            split = SplitBatchNorm2d(child.num_features, splits, eps=child.eps, momentum=child.momentum)
            split.load_state_dict(child.state_dict())
            setattr(module, name, split)
        else:
            split_batch_norms(child, splits)
    return module


class Encoder(nn.Module):
    """``f(x)``: normalisation, a backbone and a linear projection to ``feature_dim`` (Eq. 1's encoder).

    Takes grey-level images in [0, 1] ``(N, 1, H, W)``; a 3-channel torchvision backbone gets the grey
    channel repeated and ImageNet normalisation.
    """

    def __init__(self, config: Settings, pretrained_imagenet: bool = False):
        super().__init__()
        if config.backbone == "narrow_resnet18":
            if pretrained_imagenet:
                raise ValueError("the narrow ResNet-18 has no ImageNet weights")
            self.backbone: Backbone = narrow_resnet18(config.width, in_channels=1)
            mean, std = (GREY_MEAN,), (GREY_STD,)
        else:
            self.backbone = backbone(config.backbone, pretrained=pretrained_imagenet)
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        self.in_channels = len(mean)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.head = nn.Linear(self.backbone.out_features, config.feature_dim)

    @property
    def fill_value(self) -> float:
        """The grey level that normalises to 0 (Cutout's fill, as the official code cuts after normalising)."""
        return float(self.mean.mean())

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] != self.in_channels:
            images = images.expand(-1, self.in_channels, -1, -1)
        return self.backbone((images - self.mean) / self.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


class MomentumContrast(nn.Module):
    """The query encoder ``f_theta`` (trained), the key encoder ``f_xi`` (its momentum average, Eq. 2)
    and the queue of negative keys. Both encoders and the queue are saved in the state dict."""

    def __init__(self, config: Settings):
        super().__init__()
        self.query = split_batch_norms(Encoder(config), config.bn_splits)
        self.key = copy.deepcopy(self.query)
        for parameter in self.key.parameters():
            parameter.requires_grad_(False)
        stdv = 1.0 / math.sqrt(config.feature_dim / 3)  # unit-norm on average, as the official init
        self.register_buffer("queue", torch.rand(config.queue_size, config.feature_dim) * 2 * stdv - stdv)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """Eq. (2): ``xi <- m xi + (1 - m) theta`` over the parameters (batch-norm buffers are not averaged)."""
        keys = [p for p in self.key.parameters()]
        queries = [p.detach() for p in self.query.parameters()]
        torch._foreach_mul_(keys, momentum)
        torch._foreach_add_(keys, queries, alpha=1 - momentum)

    @torch.no_grad()
    def key_features(self, images: torch.Tensor) -> torch.Tensor:
        """The key encoder's un-normalised features, computed on a shuffled batch and put back in order."""
        shuffled, restore = batch_shuffle(images)
        return batch_unshuffle(self.key(shuffled), restore)

    def enqueue(self, keys: torch.Tensor) -> None:
        """Push ``keys`` (normalised, from every device) into the FIFO queue, overwriting the oldest."""
        keys = gather_from_all_devices(keys.detach().to(self.queue.dtype))
        index = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % len(self.queue)
        # out of place: the previous queue is still needed by the backward pass of earlier terms
        self.queue = self.queue.index_copy(0, index, keys)
        self.queue_ptr = (self.queue_ptr + len(keys)) % len(self.queue)


def info_nce(
    queries: torch.Tensor, keys: torch.Tensor, queue: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (1), InfoNCE with the positive key in column 0 and the queue as negatives.

    ``queries`` and ``keys`` are ``(B, D)`` and unit-norm, ``queue`` is ``(K, D)``. Returns the mean
    loss and the fraction of queries whose positive key scores highest (the pretext accuracy).
    """
    with torch.autocast(device_type=queries.device.type, enabled=False):  # logits / T need fp32
        queries, keys = queries.float(), keys.float()
        positive = (queries * keys).sum(dim=1, keepdim=True)
        negative = queries @ queue.float().t()
        logits = torch.cat([positive, negative], dim=1) / temperature
    target = torch.zeros(len(queries), dtype=torch.long, device=queries.device)
    accuracy = (logits.argmax(dim=1) == 0).float().mean()
    return F.cross_entropy(logits, target), accuracy


def mixup_lambda(alpha: float, device: torch.device) -> torch.Tensor:
    """Eq. (3)'s coefficient: ``lambda ~ Beta(alpha, alpha)`` folded to ``max(lambda, 1 - lambda)``,
    sampled on the device (no host synchronisation)."""
    concentration = torch.tensor(float(alpha), device=device)
    lam = torch.distributions.Beta(concentration, concentration).sample()
    return torch.maximum(lam, 1 - lam)


def mix(x: torch.Tensor, lam: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Eq. (3) / Eq. (4): ``lambda x + (1 - lambda) x[pi]`` (for images or features)."""
    return lam * x + (1 - lam) * x[permutation]


def augment_view(images: torch.Tensor, config: Settings, fill: float) -> torch.Tensor:
    """One independently augmented view per image, on the device: the official pipeline's random
    resized crop, rotation, flip, brightness/contrast jitter and Cutout (grey images: no hue,
    saturation or grey-scale conversion)."""
    out = random_affine_crop(images, scale=(config.crop_scale, 1.0), degrees=config.rotation)
    out = intensity_jitter(out, config.jitter, config.jitter)
    length = max(1, round(config.cutout_fraction * images.shape[-1]))
    return cutout(out, config.cutout_holes, length, fill=fill)


def compare_views(
    model: MomentumContrast, view_q: torch.Tensor, view_k: torch.Tensor, terms: Sequence[str], config: Settings
) -> dict[str, torch.Tensor]:
    """Eq. (5) on two augmented views of a batch: the comparisons named in ``terms``, in the official
    order (each one's keys are enqueued before the next comparison), and their mean as ``loss``."""
    key_raw = model.key_features(view_k)
    parts: dict[str, torch.Tensor] = {}
    if "instance" in terms:
        q = F.normalize(model.query(view_q).float(), dim=1)
        k = F.normalize(key_raw.float(), dim=1)
        parts["instance"], parts["accuracy"] = info_nce(q, k, model.queue, config.temperature)
        model.enqueue(k)
    if "mixed" in terms or "mixed_target" in terms:
        lam = mixup_lambda(config.mixup_alpha, view_q.device)
        permutation = torch.randperm(len(view_q), device=view_q.device)
        q_mixed = F.normalize(model.query(mix(view_q, lam, permutation)).float(), dim=1)
        if "mixed" in terms:
            k_mixed = F.normalize(model.key_features(mix(view_k, lam, permutation)).float(), dim=1)
            parts["mixed"], accuracy = info_nce(q_mixed, k_mixed, model.queue, config.temperature)
            parts.setdefault("accuracy", accuracy)
            model.enqueue(k_mixed)
        if "mixed_target" in terms:
            k_mix = F.normalize(mix(key_raw.float(), lam, permutation), dim=1)
            parts["mixed_target"], accuracy = info_nce(q_mixed, k_mix, model.queue, config.temperature)
            parts.setdefault("accuracy", accuracy)
            model.enqueue(k_mix)
    loss = sum(parts[t] for t in terms) / len(terms)
    return {"loss": loss, **parts}


def make_pretrain_loss(method: str, config: Settings) -> Callable:
    """The pretraining loss of ``method`` for the engine: two views augmented on the device, then
    :func:`compare_views`."""
    terms = PRETRAINING[method].terms

    def loss_fn(model: MomentumContrast, batch) -> dict[str, torch.Tensor]:
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        fill = model.query.fill_value
        return compare_views(model, augment_view(images, config, fill), augment_view(images, config, fill), terms, config)

    return loss_fn


# ---------------------------------------------------------------------------------------------
# Several devices: the DDP form of shuffled batch norm, and the queue fed by every device


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


@torch.no_grad()
def gather_from_all_devices(x: torch.Tensor) -> torch.Tensor:
    """The concatenation of ``x`` from every DDP process (``x`` itself on one device)."""
    if not _distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def batch_shuffle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle a batch before the key encoder; returns the shuffled batch and what undoes it.

    On one device: a random permutation (with :class:`SplitBatchNorm2d`, each key is normalised
    with sub-batch statistics its query did not see). Under DDP: the batches of all devices are
    gathered, permuted with one permutation from process 0, and each device takes its slice.
    """
    if not _distributed():
        permutation = torch.randperm(len(x), device=x.device)
        return x[permutation], torch.argsort(permutation)
    gathered = gather_from_all_devices(x)
    permutation = torch.randperm(len(gathered), device=x.device)
    torch.distributed.broadcast(permutation, src=0)
    rank = torch.distributed.get_rank()
    mine = permutation.view(torch.distributed.get_world_size(), -1)[rank]
    return gathered[mine], torch.argsort(permutation)


@torch.no_grad()
def batch_unshuffle(x: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
    """Undo :func:`batch_shuffle` on the key encoder's output."""
    if not _distributed():
        return x[restore]
    gathered = gather_from_all_devices(x)
    rank = torch.distributed.get_rank()
    mine = restore.view(torch.distributed.get_world_size(), -1)[rank]
    return gathered[mine]


# ---------------------------------------------------------------------------------------------
# Downstream: multi-label classification of the 14 findings


class FindingClassifier(nn.Module):
    """A (pretrained) encoder's backbone with a linear layer for the findings (sigmoid outputs,
    trained with binary cross-entropy). The projection head of pretraining is dropped."""

    def __init__(self, encoder: Encoder, num_findings: int):
        super().__init__()
        self.encoder = encoder
        self.encoder.head = nn.Identity()
        self.classifier = nn.Linear(encoder.backbone.out_features, num_findings)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder.features(images))


def plain_batch_norms(module: nn.Module) -> nn.Module:
    """Turn :class:`SplitBatchNorm2d` back into ``nn.BatchNorm2d`` (for fine-tuning)."""
    for name, child in module.named_children():
        if isinstance(child, SplitBatchNorm2d):
            plain = nn.BatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum)
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain)
        else:
            plain_batch_norms(child)
    return module


def initial_encoder(config: Settings, init: str, encoder_path: Path | None = None) -> Encoder:
    """The encoder a downstream run starts from: random (``scratch``), ImageNet, or pretrained weights
    (the query encoder saved by a pretraining run)."""
    if init == "scratch":
        return Encoder(config)
    if init == "imagenet":
        return Encoder(config, pretrained_imagenet=True)
    if encoder_path is None or not Path(encoder_path).exists():
        raise FileNotFoundError(
            f"no pretrained encoder for {init!r} at {encoder_path}: run its pretraining first (run_grid does)"
        )
    encoder = Encoder(config)
    encoder.load_state_dict(torch.load(encoder_path, map_location="cpu", weights_only=True))
    return encoder


def finetune_augment(images: torch.Tensor) -> torch.Tensor:
    """Mild augmentation for fine-tuning: crops of 80-100% of the image, +-5 degrees, no flips (a
    radiograph's left and right differ: the heart lies on the image's right)."""
    return random_affine_crop(images, scale=(0.8, 1.0), degrees=5.0, flip_p=0.0)


def predict_scores(model: nn.Module, dataset: Dataset, device: torch.device, num_workers: int = 0) -> torch.Tensor:
    """Sigmoid scores of every finding, ``(N, 14)``."""
    return engine.predict(
        model,
        dataset,
        forward=lambda m, batch: torch.sigmoid(m(batch[0]).float()),
        device=device,
        num_workers=num_workers,
    )


def extract_features(encoder: Encoder, dataset: Dataset, device: torch.device, num_workers: int = 0) -> torch.Tensor:
    """The backbone's pooled features of every image (eval mode, no augmentation)."""
    return engine.predict(
        encoder, dataset, forward=lambda m, batch: m.features(batch[0]).float(), device=device, num_workers=num_workers
    )


def targets_of(dataset: Dataset) -> torch.Tensor:
    if hasattr(dataset, "targets"):
        return torch.as_tensor(dataset.targets, dtype=torch.float32)
    if isinstance(dataset, RepeatedSubset):
        return targets_of(dataset.dataset)[dataset.indices]
    raise TypeError(f"cannot read the labels of a {type(dataset).__name__}")


def auroc_scores(labels: torch.Tensor, scores: torch.Tensor, classes: Sequence[str]) -> dict[str, float]:
    """Mean AUROC over the findings and one ``auroc/<finding>`` per finding (NaN where undefined)."""
    result = metrics.multilabel_auroc(labels, scores, classes)
    out = {"mean_auroc": result["mean"], "undefined_auroc": float(result["undefined"])}
    out.update({f"auroc/{name}": float(v) for name, v in zip(classes, result["per_label"])})
    return out


# ---------------------------------------------------------------------------------------------
# Runs


def pretrain_params(config: Settings, method: str, data_dir: str | Path | None) -> dict[str, Any]:
    """The parameters that identify a pretraining run."""
    config = variant_settings(config, method)
    keep = (
        "image_size n_unlabeled backbone width pretrain_epochs pretrain_batch_size pretrain_lr queue_size "
        "momentum bn_splits feature_dim temperature mixup_alpha pretrain_weight_decay lr_milestones crop_scale "
        "rotation jitter cutout_holes cutout_fraction prevalence_floor data_seed"
    ).split()
    params = {name: getattr(config, name) for name in keep}
    params.update(method=method, terms=list(PRETRAINING[method].terms), data_dir=None if data_dir is None else str(data_dir))
    return params


def downstream_params(
    config: Settings, init: str, protocol: str, fraction: float, data_dir: str | Path | None
) -> dict[str, Any]:
    """The parameters that identify a fine-tuning or probing run (with those of its pretraining)."""
    params = dataclasses.asdict(config)
    for grid_field in (
        "pretrain_methods", "ablation_methods", "seeds", "workers", "label_fractions", "ablation_fraction", "imagenet",
        "ablation_queue_size", "ablation_momentum",
    ):
        params.pop(grid_field)
    params.update(init=init, protocol=protocol, fraction=fraction, data_dir=None if data_dir is None else str(data_dir))
    if init in PRETRAINING:
        params["pretraining"] = fingerprint(pretrain_params(config, init, data_dir))
    return params


def pretrain_run_dir(config: Settings, method: str, seed: int, profile: str, data_dir: str | Path | None) -> Path:
    return run_dir_for(profile, CHAPTER, "pretrain", method, seed, pretrain_params(config, method, data_dir))


def pretrain(
    config: Settings,
    chapter_data: ChapterData,
    *,
    method: str,
    seed: int,
    device: torch.device,
    run_dir: Path,
    run_fingerprint: str,
    progress: bool | None = None,
) -> RunOutput:
    """Pretrain with ``method`` on the unlabeled pool and save the query encoder (``encoder.pt``)."""
    config = variant_settings(config, method)
    runtime.seed_everything(seed)
    model = MomentumContrast(config)
    optimizer = torch.optim.SGD(
        model.query.parameters(), lr=config.pretrain_lr, momentum=0.9, weight_decay=config.pretrain_weight_decay
    )
    milestones = sorted({max(1, round(f * config.pretrain_epochs)) for f in config.lr_milestones})
    milestones = [m for m in milestones if m < config.pretrain_epochs]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    fit = engine.fit(
        model,
        chapter_data.unlabeled,
        loss_fn=make_pretrain_loss(method, config),
        optimizer=optimizer,
        epochs=config.pretrain_epochs,
        batch_size=config.pretrain_batch_size,
        run_dir=run_dir,
        device=device,
        seed=seed,
        scheduler=scheduler,
        channels_last=device.type == "cuda",
        num_workers=config.num_workers,
        fingerprint=run_fingerprint,
        progress=progress,
        desc=f"pretrain {method}/seed {seed}",
        after_step=lambda m: m.momentum_update(config.momentum),
    )
    encoder = plain_batch_norms(copy.deepcopy(model.query)).cpu()
    torch.save(encoder.state_dict(), run_dir / ENCODER_FILE)
    last = fit.history[-1]
    scores = {
        "loss": last["train/loss"],
        "accuracy": last["train/accuracy"],
        "images_per_s": fit.samples_per_s or float("nan"),
    }
    for term in PRETRAINING[method].terms:
        scores[f"loss/{term}"] = last[f"train/{term}"]
    return RunOutput(metrics=scores, fit=fit, artifacts={"encoder": ENCODER_FILE})


def finetune(
    config: Settings,
    chapter_data: ChapterData,
    *,
    init: str,
    fraction: float,
    seed: int,
    device: torch.device,
    run_dir: Path,
    run_fingerprint: str,
    encoder_path: Path | None = None,
    progress: bool | None = None,
) -> RunOutput:
    """Fine-tune every layer on ``fraction`` of the labels (BCE), select the epoch by validation mean
    AUROC, and report test AUROC per finding."""
    runtime.seed_everything(seed)
    classes = chapter_data.classes
    model = FindingClassifier(initial_encoder(config, init, encoder_path), len(classes))
    indices = label_subset(len(chapter_data.train), fraction, seed)
    train = RepeatedSubset(chapter_data.train, indices, config.finetune_epoch_samples)
    batch_size = min(config.finetune_batch_size, len(train))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.finetune_lr, weight_decay=config.finetune_weight_decay)
    steps = config.finetune_epochs * (len(train) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.finetune_lr, total_steps=steps, pct_start=0.2)
    val_labels = targets_of(chapter_data.val)

    def loss_fn(m: FindingClassifier, batch) -> dict[str, torch.Tensor]:
        images, labels = batch
        return {"loss": F.binary_cross_entropy_with_logits(m(finetune_augment(images)).float(), labels.float())}

    def evaluate(m: FindingClassifier) -> dict[str, float]:
        scores = predict_scores(m, chapter_data.val, device, config.num_workers)
        return {"mean_auroc": metrics.multilabel_auroc(val_labels, scores)["mean"]}

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
        monitor="mean_auroc",
        scheduler=scheduler,
        scheduler_interval="step",
        channels_last=device.type == "cuda",
        num_workers=config.num_workers,
        fingerprint=run_fingerprint,
        progress=progress,
        desc=f"finetune {init}/{fraction:g}/seed {seed}",
    )
    scores = auroc_scores(targets_of(chapter_data.test), predict_scores(model, chapter_data.test, device), classes)
    scores["val_mean_auroc"] = fit.best_value
    scores["labeled_images"] = float(len(indices))
    return RunOutput(metrics=scores, fit=fit)


def linear_probe(
    config: Settings,
    chapter_data: ChapterData,
    *,
    init: str,
    fraction: float,
    seed: int,
    device: torch.device,
    run_dir: Path,
    run_fingerprint: str,
    encoder_path: Path | None = None,
    progress: bool | None = None,
) -> RunOutput:
    """Train only a linear layer on the frozen encoder's features (standardised with the training
    subset's statistics), select the epoch by validation mean AUROC, report test AUROC."""
    runtime.seed_everything(seed)
    classes = chapter_data.classes
    encoder = initial_encoder(config, init, encoder_path).to(device)
    indices = label_subset(len(chapter_data.train), fraction, seed)
    train_subset = RepeatedSubset(chapter_data.train, indices)
    features = {
        name: extract_features(encoder, ds, device, config.num_workers)
        for name, ds in (("train", train_subset), ("val", chapter_data.val), ("test", chapter_data.test))
    }
    mean, std = features["train"].mean(0), features["train"].std(0, unbiased=False) + 1e-6
    standard = {name: (f - mean) / std for name, f in features.items()}
    train = TensorDataset(standard["train"], targets_of(train_subset))
    val_labels, test_labels = targets_of(chapter_data.val), targets_of(chapter_data.test)
    model = nn.Linear(standard["train"].shape[1], len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.probe_lr, weight_decay=1e-4)

    def loss_fn(m: nn.Linear, batch) -> dict[str, torch.Tensor]:
        x, labels = batch
        return {"loss": F.binary_cross_entropy_with_logits(m(x).float(), labels)}

    def scores_of(m: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(m(x.to(device)).float()).cpu()

    fit = engine.fit(
        model,
        train,
        loss_fn=loss_fn,
        optimizer=optimizer,
        epochs=config.probe_epochs,
        batch_size=min(256, len(train)),
        run_dir=run_dir,
        device=device,
        seed=seed,
        evaluate=lambda m: {"mean_auroc": metrics.multilabel_auroc(val_labels, scores_of(m, standard["val"]))["mean"]},
        monitor="mean_auroc",
        drop_last=False,
        fingerprint=run_fingerprint,
        progress=False if progress is None else progress,
        desc=f"probe {init}/{fraction:g}/seed {seed}",
    )
    model.eval()
    with torch.no_grad():
        scores = auroc_scores(test_labels, scores_of(model, standard["test"]), classes)
    scores["val_mean_auroc"] = fit.best_value
    scores["labeled_images"] = float(len(indices))
    return RunOutput(metrics=scores, fit=fit)


@dataclass(frozen=True)
class Job:
    """One cell of the chapter's grid: a pretraining, or a downstream run from an initialisation."""

    experiment: str  # "pretrain", "label_efficiency" or "ablation"
    init: str  # the pretraining method, "scratch" or "imagenet"
    seed: int
    protocol: str = ""  # "finetune" or "probe" (downstream runs)
    fraction: float = 1.0

    def __str__(self) -> str:
        if self.experiment == "pretrain":
            return f"pretrain {self.init} seed {self.seed}"
        return f"{self.experiment}: {self.init} {self.protocol} on {self.fraction:.0%} of the labels, seed {self.seed}"


def imagenet_status(config: Settings) -> str | None:
    """``None`` when ImageNet weights can be used for ``config``, else why they cannot (for the table)."""
    if not config.imagenet:
        return (
            f"not run: the {config.backbone} of this profile has no ImageNet weights "
            "(the paper profile uses torchvision's ResNet-18 and loads them)"
        )
    try:
        backbone(config.backbone, pretrained=True)
    except RuntimeError as error:
        return f"not run: {error}"
    return None


def grid(config: Settings) -> tuple[list[Job], list[Job]]:
    """The pretraining runs, then the downstream runs that use them (each list runs in parallel)."""
    methods = list(dict.fromkeys([*config.pretrain_methods, *config.ablation_methods]))
    pretraining = [Job("pretrain", m, s) for m in methods for s in config.seeds]
    inits = ["scratch", *config.pretrain_methods]
    if config.imagenet and imagenet_status(config) is None:
        inits.insert(1, "imagenet")
    downstream = [
        Job("label_efficiency", init, s, protocol, f)
        for protocol in PROTOCOLS
        for f in config.label_fractions
        for init in inits
        for s in config.seeds
    ]
    downstream += [Job("ablation", m, s, "probe", config.ablation_fraction) for m in config.ablation_methods for s in config.seeds]
    # longest first, so that the parallel workers finish together
    downstream.sort(key=lambda j: (j.protocol != "finetune", -j.fraction))
    return pretraining, downstream


def run_job(job: Job, *, config: Settings, profile: str, device: str, data_dir: str | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Run one grid cell (in this process or in a worker process); writes and returns its record."""
    chapter_data = load_data(config, data_dir)
    torch_device = torch.device(device)
    if job.experiment == "pretrain":
        params = pretrain_params(config, job.init, data_dir)
        stamp = fingerprint(params)
        return run_once(
            chapter=CHAPTER,
            profile=profile,
            experiment="pretrain",
            variant=job.init,
            seed=job.seed,
            params=params,
            dataset=chapter_data.info,
            device=torch_device,
            train=lambda run_dir: pretrain(
                config, chapter_data, method=job.init, seed=job.seed, device=torch_device,
                run_dir=run_dir, run_fingerprint=stamp, progress=progress,
            ),
        )
    params = downstream_params(config, job.init, job.protocol, job.fraction, data_dir)
    stamp = fingerprint(params)
    encoder_path = None
    if job.init in PRETRAINING:
        encoder_path = pretrain_run_dir(config, job.init, job.seed, profile, data_dir) / ENCODER_FILE
    train = finetune if job.protocol == "finetune" else linear_probe
    return run_once(
        chapter=CHAPTER,
        profile=profile,
        experiment=job.experiment,
        variant=f"{job.init}/{job.protocol}/{job.fraction:g}",
        seed=job.seed,
        params=params,
        dataset=chapter_data.info,
        device=torch_device,
        train=lambda run_dir: train(
            config, chapter_data, init=job.init, fraction=job.fraction, seed=job.seed, device=torch_device,
            run_dir=run_dir, run_fingerprint=stamp, encoder_path=encoder_path, progress=progress,
        ),
    )


def run_grid(
    config: Settings, *, profile: str, device: torch.device, data_dir: str | Path | None = None
) -> list[dict[str, Any]]:
    """Pretrain every method and seed, then fine-tune and probe from each (parallel processes on a CPU)."""
    from medlab.experiment import auto_workers
    from medlab.experiment import run_grid as run_all

    def describe(job: Job, record: dict[str, Any]) -> str:
        m = record["metrics"]
        if job.experiment == "pretrain":
            return f"{job}: loss {m['loss']:.3f}, pretext accuracy {m['accuracy']:.2f}"
        return f"{job}: mean AUROC {m['mean_auroc']:.3f}"

    records = []
    for phase in grid(config):
        workers, threads = auto_workers(device, len(phase), workers=config.workers)
        print(f"{len(phase)} runs on {device} with {workers} process(es) x {threads} thread(s)")
        records += run_all(
            run_job,
            phase,
            workers=workers,
            threads=threads,
            describe=describe,
            config=config,
            profile=profile,
            device=str(device),
            data_dir=None if data_dir is None else str(data_dir),
        )
    return records


# ---------------------------------------------------------------------------------------------
# Throughput: the engine's pretraining step against a plain fp32 loop of the same model


class _HostViews(Dataset):
    """Two independently augmented views per image, made on the host per sample by torchvision (the
    usual DataLoader pipeline), with the same augmentations as :func:`augment_view`."""

    def __init__(self, dataset: Dataset, config: Settings, fill: float):
        from torchvision.transforms import v2

        size = config.image_size
        self.dataset, self.config, self.fill = dataset, config, fill
        self.transform = v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=(config.crop_scale, 1.0), antialias=True),
                v2.RandomRotation(config.rotation),
                v2.ColorJitter(brightness=config.jitter, contrast=config.jitter),
                v2.RandomHorizontalFlip(),
            ]
        )
        self.length = max(1, round(config.cutout_fraction * size))

    def __len__(self) -> int:
        return len(self.dataset)

    def view(self, image: torch.Tensor) -> torch.Tensor:
        out = self.transform(image).clamp(0, 1)
        return cutout(out[None], self.config.cutout_holes, self.length, fill=self.fill)[0]

    def __getitem__(self, index: int):
        image = self.dataset[index][0]
        return self.view(image), self.view(image)


def measure_pretraining_throughput(
    config: Settings, dataset: Dataset, device: torch.device, steps: int = 10, warmup: int = 2, method: str = "c2l"
) -> dict[str, float]:
    """Pretraining images/s of the chapter's step and of a plain loop of the same model, in one run.

    * ``device``: what :func:`pretrain` does through the engine: views augmented on the device,
      channels-last and mixed precision on CUDA, no host synchronisation inside the loop.
    * ``plain``: fp32, channels-first, views augmented per sample on the host in the DataLoader, and
      the loss read back (``.item()``) after every step.
    """
    from torch.utils.data import DataLoader

    terms = PRETRAINING[method].terms
    batch = config.pretrain_batch_size
    if len(dataset) < batch:
        raise ValueError(f"{len(dataset)} images are fewer than one batch of {batch}")
    results: dict[str, float] = {}
    for mode in ("device", "plain"):
        runtime.seed_everything(0)
        optimised = mode == "device"
        channels_last = optimised and device.type == "cuda"
        model = MomentumContrast(config).to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.query.parameters(), lr=config.pretrain_lr, momentum=0.9)
        fill = model.query.fill_value
        source = dataset if optimised else _HostViews(dataset, config, fill)
        loader = DataLoader(
            source, batch_size=batch, shuffle=True, drop_last=True, num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
        )

        def step(item, optimised=optimised, channels_last=channels_last, model=model, optimizer=optimizer, fill=fill):
            if optimised:
                images = engine.to_device(item[0], device, channels_last)
                with engine.autocast_for(device):
                    view_q, view_k = augment_view(images, config, fill), augment_view(images, config, fill)
                    out = compare_views(model, view_q, view_k, terms, config)
            else:
                view_q, view_k = item[0].to(device), item[1].to(device)
                out = compare_views(model, view_q, view_k, terms, config)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            with torch.no_grad():
                model.momentum_update(config.momentum)
            if not optimised:
                out["loss"].item()

        results[f"{mode}_images_per_s"] = batch * engine.timed_steps(loader, step, device=device, steps=steps, warmup=warmup)
    results["speedup"] = results["device_images_per_s"] / results["plain_images_per_s"]
    return results


def record_throughput(
    config: Settings, chapter_data: ChapterData, *, profile: str, device: torch.device, steps: int = 10
) -> dict[str, Any]:
    """Measure :func:`measure_pretraining_throughput` and write it as a results record
    (experiment ``throughput``), which ``medlab bench`` reports."""
    from medlab import results
    from medlab.runtime import environment_record

    measured = measure_pretraining_throughput(config, chapter_data.unlabeled, device, steps=steps)
    params = {"method": "c2l", "steps": steps, "batch_size": config.pretrain_batch_size,
              "image_size": config.image_size, "backbone": config.backbone, "width": config.width,
              "threads": torch.get_num_threads()}
    path = results.write_record(
        chapter=CHAPTER, profile=profile, experiment="throughput", variant="c2l pretraining", seed=0,
        metrics=measured, params=params, dataset=chapter_data.info["unlabeled"], environment=environment_record(device),
    )
    return results.read_record(path)


# ---------------------------------------------------------------------------------------------
# Reading the runs: labels, figures and findings written from the records

INIT_LABELS = {
    "scratch": "from scratch",
    "imagenet": "ImageNet",
    "moco": "MoCo (no mixup)",
    "c2l": "C2L",
    "c2l_no_instance": "C2L w/o l(q, k)",
    "c2l_no_mixed": "C2L w/o l(q~, k~)",
    "c2l_no_mixed_target": "C2L w/o l(q~, k_mix)",
    "c2l_queue": "C2L, other queue size",
    "c2l_momentum": "C2L, other momentum",
}


def variant_label(config: Settings) -> dict[str, str]:
    """Display names of the pretraining methods, with the ablation's queue size and momentum."""
    labels = dict(INIT_LABELS)
    labels["c2l"] = f"C2L (queue {config.queue_size}, m {config.momentum})"
    labels["c2l_queue"] = f"C2L, queue {config.ablation_queue_size}"
    labels["c2l_momentum"] = f"C2L, m {config.ablation_momentum}"
    labels["moco"] = f"MoCo (queue {config.queue_size}, m {config.momentum})"
    return labels


def label_efficiency_figure(frame):
    """Mean AUROC against the share of labels, per initialisation; fine-tuning solid, probe dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (init, protocol), group in frame.groupby(["params.init", "params.protocol"], sort=False):
        stats = group.groupby("params.fraction")["metrics.mean_auroc"].agg(["mean", "std"]).sort_index()
        ax.errorbar(
            stats.index * 100, stats["mean"] * 100, yerr=stats["std"].fillna(0) * 100, capsize=3,
            linestyle="-" if protocol == "finetune" else "--", marker="o",
            label=f"{INIT_LABELS.get(init, init)}, {'fine-tuned' if protocol == 'finetune' else 'linear probe'}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("labeled images used (%)")
    ax.set_ylabel("test mean AUROC (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def project_features(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D t-SNE embedding of features (scikit-learn), standardised first."""
    from sklearn.manifold import TSNE

    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
    return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(features)


def feature_map_figure(
    config: Settings,
    chapter_data: ChapterData,
    *,
    profile: str,
    device: torch.device,
    data_dir: str | Path | None = None,
    seed: int = 0,
    max_images: int = 800,
):
    """t-SNE of test-image backbone features for a random encoder, MoCo and C2L (pretraining ``seed``),
    coloured by finding (images with exactly one finding, and images with none)."""
    import matplotlib.pyplot as plt

    labels = targets_of(chapter_data.test).numpy()
    single = np.flatnonzero(labels.sum(1) <= 1)[:max_images]
    groups = np.where(labels[single].sum(1) == 0, -1, labels[single].argmax(1))
    subset = RepeatedSubset(chapter_data.test, single)
    inits = ["scratch", *[m for m in ("moco", "c2l") if m in config.pretrain_methods]]
    fig, axes = plt.subplots(1, len(inits), figsize=(4.6 * len(inits), 4.4), squeeze=False)
    shown = [-1, *[k for k in np.argsort(-np.bincount(groups[groups >= 0], minlength=len(chapter_data.classes)))[:6]]]
    for ax, init in zip(axes[0], inits):
        runtime.seed_everything(seed)
        path = pretrain_run_dir(config, init, seed, profile, data_dir) / ENCODER_FILE if init != "scratch" else None
        encoder = initial_encoder(config, init, path).to(device)
        points = project_features(extract_features(encoder, subset, device).numpy(), seed)
        for k in shown:
            mask = groups == k
            name = "no finding" if k == -1 else chapter_data.classes[k].replace("_", " ")
            ax.scatter(points[mask, 0], points[mask, 1], s=5, alpha=0.6 if k >= 0 else 0.25,
                       color="lightgrey" if k == -1 else None, label=name)
        ax.set_title(INIT_LABELS[init])
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, -1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def _spread(diff: Mapping[str, Any]) -> str:
    text = f"{diff['mean'] * 100:+.1f} points"
    if diff["n"] > 1:
        text += f" ± {diff['std'] * 100:.1f}"
    return text


def findings(frame) -> str:
    """A plain-language summary written from the downstream records (Markdown): C2L against training
    from scratch and against MoCo, per protocol and share of labels, paired by seed; then the ablation."""
    from scipy import stats

    from medlab.results import paired_difference

    lines: list[str] = []
    versus_scratch: list[float] = []
    versus_moco: list[float] = []
    efficiency = frame[frame["experiment"] == "label_efficiency"]
    for (protocol, fraction), group in efficiency.groupby(["params.protocol", "params.fraction"], sort=True):
        inits = set(group["params.init"])
        if "c2l" not in inits:
            continue
        parts = []
        for baseline in ("scratch", "moco", "imagenet"):
            if baseline not in inits:
                continue
            d = paired_difference(group, "mean_auroc", "params.init", "c2l", baseline)
            if d["n"] == 0:
                continue
            if baseline == "scratch" and protocol == "finetune":
                versus_scratch.append(d["mean"])
            if baseline == "moco" and protocol == "finetune":
                versus_moco.append(d["mean"])
            test = ""
            if d["n"] > 1 and d["std"] > 0:
                test = f", p = {stats.ttest_1samp(d['values'], 0.0).pvalue:.2f}"
            parts.append(f"{_spread(d)} vs {INIT_LABELS[baseline]} (ahead on {d['wins']}/{d['n']} seeds{test})")
        if parts:
            label = "fine-tuned" if protocol == "finetune" else "linear probe"
            lines.append(f"- **{label}, {fraction:.0%} of the labels**, C2L mean AUROC " + "; ".join(parts) + ".")
    ablation = frame[(frame["params.protocol"] == "probe")]
    if "ablation" in set(frame["experiment"]):
        fraction = frame[frame["experiment"] == "ablation"]["params.fraction"].iloc[0]
        group = ablation[ablation["params.fraction"] == fraction]
        if "c2l" in set(group["params.init"]):
            drops = []
            for method in sorted(set(group["params.init"]) - {"c2l", "scratch", "imagenet"}):
                d = paired_difference(group, "mean_auroc", "params.init", method, "c2l")
                if d["n"]:
                    drops.append((d["mean"], f"{INIT_LABELS.get(method, method)} {_spread(d)}"))
            if drops:
                drops.sort()
                lines.append(
                    f"- **Ablation** (linear probe, {fraction:.0%} of the labels), each variant minus full C2L, "
                    "most harmful first: " + "; ".join(text for _, text in drops) + "."
                )
    if versus_scratch:
        above = sum(v > 0 for v in versus_scratch)
        n = len(versus_scratch)
        if above == n:
            verdict = "After fine-tuning, C2L's mean AUROC is above training from scratch at every share of the labels"
        elif above == 0:
            verdict = "After fine-tuning, C2L's mean AUROC is not above training from scratch at any share of the labels"
        else:
            verdict = f"After fine-tuning, C2L's mean AUROC is above training from scratch at {above} of {n} shares of the labels"
        if versus_moco:
            above_moco = sum(v > 0 for v in versus_moco)
            verdict += (
                f"; against MoCo without mixup, C2L's mean is ahead at {above_moco} of {len(versus_moco)} shares."
            )
        lines.insert(0, f"**Overall.** {verdict}\n")
    return "\n".join(lines) if lines else "No C2L runs to compare."


BENCHMARK_TABLE = {
    "experiments": ["label_efficiency"],
    "by": ["params.init", "params.protocol", "params.fraction"],
    "metrics": ["mean_auroc"],
    "percent": ["mean_auroc"],
    "labels": {
        "params.init": INIT_LABELS,
        "params.protocol": {"finetune": "fine-tuned", "probe": "linear probe"},
        "params.fraction": {0.01: "1%", 0.1: "10%", 1.0: "100%"},
    },
    "order": {"params.protocol": ["finetune", "probe"], "params.init": list(INIT_LABELS), "params.fraction": None},
    "names": {"mean_auroc": "mean AUROC %"},
    "caption": "Test mean AUROC over the 14 findings (%) by initialisation, protocol and share of the labels.",
}
