"""C2L: Comparing to Learn (Zhou et al., MICCAI 2020, arXiv:2007.07423).

Self-supervised pretraining on unlabeled radiographs, then fine-tuning for the 14 findings of
ChestX-ray14. Read from the paper's abstract and the official code's defaults (we re-wrote every
line; see the chapter's deviation ledger). The pieces, in the order of chapter 2:

* Eq. (1) InfoNCE: ``l(q, k+) = -log exp(q.k+/T) / (exp(q.k+/T) + sum_{k- in queue} exp(q.k-/T))``,
  every vector on the unit sphere; the encoder ``f`` is a backbone and a linear projection.
* Eq. (2) the key encoder follows the query encoder by momentum: ``xi <- m xi + (1 - m) theta``.
* Eq. (3) image mixup: ``lambda ~ Beta(alpha, alpha)`` folded to ``lambda >= 1/2``; both views are
  mixed with one shared permutation ``pi``: ``x~ = lambda x + (1 - lambda) x[pi]``.
* Eq. (4) feature mixup target: ``k_mix = lambda k + (1 - lambda) k[pi]``, mixed from the key
  encoder's features *before* L2 normalisation.
* Eq. (5) ``L = [l(q, k) + l(q~, k~) + l(q~, k_mix)] / 3``; each of the three comparisons pushes its
  keys into the queue after use (3 B keys per step, as the official code does).

The key encoder's batch statistics are kept apart from the query's (shuffled batch norm): in one
process the batch is permuted before the key encoder and every batch norm of both encoders computes
its statistics over ``bn_splits`` separate sub-batches; in several processes (DDP) the batch is
shuffled across processes, each process's batch norm uses its own share, and every process enqueues
the keys of all processes, so the queues stay identical.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medlab.augment import cutout, intensity_jitter, random_affine_crop
from medlab.nets.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone, backbone, narrow_resnet18

# Grey-level normalisation of the synthetic radiographs (their pixel mean and spread, rounded).
GREY_MEAN, GREY_STD = 0.45, 0.25


# ---------------------------------------------------------------------------------------------
# Eq. (1): the encoder and InfoNCE


class Encoder(nn.Module):
    """``f(x)``: normalisation, a backbone and a linear projection to ``feature_dim`` (Eq. 1's encoder).

    ``architecture`` is ``"narrow_resnet18"`` (1 channel, ``width`` channels in its first stage) or a
    torchvision name. Takes grey-level images in [0, 1] ``(N, 1, H, W)``; a 3-channel torchvision
    backbone gets the grey channel repeated and ImageNet normalisation.
    """

    def __init__(self, architecture: str, *, width: int, feature_dim: int, pretrained_imagenet: bool = False):
        super().__init__()
        if architecture == "narrow_resnet18":
            if pretrained_imagenet:
                raise ValueError("the narrow ResNet-18 has no ImageNet weights")
            self.backbone: Backbone = narrow_resnet18(width, in_channels=1)
            mean, std = (GREY_MEAN,), (GREY_STD,)
        else:
            self.backbone = backbone(architecture, pretrained=pretrained_imagenet)
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        self.in_channels = len(mean)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.head = nn.Linear(self.backbone.out_features, feature_dim)

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


# ---------------------------------------------------------------------------------------------
# Eq. (2): the momentum encoder and the queue


class MomentumContrast(nn.Module):
    """The query encoder ``f_theta`` (trained), the key encoder ``f_xi`` (its momentum average, Eq. 2)
    and the queue of ``queue_size`` negative keys. Both encoders and the queue are in the state dict.

    Calling the model runs the query encoder (its un-normalised features): under DistributedDataParallel
    only what runs through the wrapper's forward has its gradients averaged across processes.
    """

    def __init__(self, encoder: Encoder, *, queue_size: int, bn_splits: int):
        super().__init__()
        self.query = split_batch_norms(encoder, bn_splits)
        self.key = copy.deepcopy(self.query)
        for parameter in self.key.parameters():
            parameter.requires_grad_(False)
        feature_dim = encoder.head.out_features
        stdv = 1.0 / math.sqrt(feature_dim / 3)  # unit-norm on average, as the official init
        self.register_buffer("queue", torch.rand(queue_size, feature_dim) * 2 * stdv - stdv)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        # every process keeps its own queue, identical through enqueue(): DDP need not broadcast it
        self._ddp_params_and_buffers_to_ignore = ("queue", "queue_ptr")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The query encoder's un-normalised features ``f_theta(x)``."""
        return self.query(images)

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
        """Push ``keys`` (normalised, from every process) into the FIFO queue, overwriting the oldest."""
        keys = gather_from_all_devices(keys.detach().to(self.queue.dtype))
        index = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % len(self.queue)
        # out of place: the previous queue is still needed by the backward pass of earlier terms
        self.queue = self.queue.index_copy(0, index, keys)
        self.queue_ptr = (self.queue_ptr + len(keys)) % len(self.queue)


# ---------------------------------------------------------------------------------------------
# Eq. (3) to (5): mixup of images and of features, and the three comparisons


def mixup_lambda(alpha: float, device: torch.device) -> torch.Tensor:
    """Eq. (3)'s coefficient: ``lambda ~ Beta(alpha, alpha)`` folded to ``max(lambda, 1 - lambda)``,
    sampled on the device (no host synchronisation)."""
    concentration = torch.tensor(float(alpha), device=device)
    lam = torch.distributions.Beta(concentration, concentration).sample()
    return torch.maximum(lam, 1 - lam)


def mix(x: torch.Tensor, lam: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """Eq. (3) / Eq. (4): ``lambda x + (1 - lambda) x[pi]`` (for images or features)."""
    return lam * x + (1 - lam) * x[permutation]


def compare_views(
    model: MomentumContrast,
    view_q: torch.Tensor,
    view_k: torch.Tensor,
    terms: Sequence[str],
    *,
    temperature: float,
    mixup_alpha: float,
) -> dict[str, torch.Tensor]:
    """Eq. (5) on two augmented views of a batch: the comparisons named in ``terms`` (``instance``
    l(q, k), ``mixed`` l(q~, k~), ``mixed_target`` l(q~, k_mix)), in the official order (each one's
    keys are enqueued before the next comparison), and their mean as ``loss``.

    ``model`` may be the DistributedDataParallel wrapper of a :class:`MomentumContrast`: the queries
    go through its forward, the keys through the key encoder (no gradients).
    """
    key_raw = model.key_features(view_k)
    parts: dict[str, torch.Tensor] = {}
    if "instance" in terms:
        q = F.normalize(model(view_q).float(), dim=1)
        k = F.normalize(key_raw.float(), dim=1)
        parts["instance"], parts["accuracy"] = info_nce(q, k, model.queue, temperature)
        model.enqueue(k)
    if "mixed" in terms or "mixed_target" in terms:
        lam = mixup_lambda(mixup_alpha, view_q.device)
        permutation = torch.randperm(len(view_q), device=view_q.device)
        q_mixed = F.normalize(model(mix(view_q, lam, permutation)).float(), dim=1)
        if "mixed" in terms:
            k_mixed = F.normalize(model.key_features(mix(view_k, lam, permutation)).float(), dim=1)
            parts["mixed"], accuracy = info_nce(q_mixed, k_mixed, model.queue, temperature)
            parts.setdefault("accuracy", accuracy)
            model.enqueue(k_mixed)
        if "mixed_target" in terms:
            k_mix = F.normalize(mix(key_raw.float(), lam, permutation), dim=1)
            parts["mixed_target"], accuracy = info_nce(q_mixed, k_mix, model.queue, temperature)
            parts.setdefault("accuracy", accuracy)
            model.enqueue(k_mix)
    loss = sum(parts[t] for t in terms) / len(terms)
    return {"loss": loss, **parts}


# ---------------------------------------------------------------------------------------------
# Shuffled batch norm: sub-batch statistics in one process, a shuffle across processes in several


def world_size() -> int:
    """The number of processes training together (1 unless ``torch.distributed`` is initialised)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class SplitBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics come from ``splits`` separate sub-batches (sample ``i``
    is in sub-batch ``i mod splits``). In eval mode, and in several processes (where each process's
    batch is a sub-batch already), it is an ordinary batch norm with the same state, so its weights
    load into ``nn.BatchNorm2d``. One process's stand-in for per-GPU batch norm.

    A channels-last input is normalised on a view of itself and gives a channels-last output."""

    def __init__(self, num_features: int, splits: int, **kwargs: Any):
        super().__init__(num_features, **kwargs)
        self.splits = splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.splits == 1 or world_size() > 1:
            return super().forward(x)
        n, c, h, w = x.shape
        if n % self.splits:
            raise ValueError(f"a batch of {n} cannot be split into {self.splits} batch-norm groups")
        if not x.is_contiguous():
            return self._forward_strided(x)
        # contiguous (N, C, H, W): the sub-batches side by side as the channels of one batch norm
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

    def _forward_strided(self, x: torch.Tensor) -> torch.Tensor:
        """The same statistics on a view ``(N / splits, splits, C, H, W)`` of a channels-last (or any
        other non-contiguous) input: no copy, and the output keeps the input's memory format."""
        n, c, h, w = x.shape
        groups = x.view(n // self.splits, self.splits, c, h, w)  # groups[j, k] is sample j * splits + k
        var, mean = torch.var_mean(groups, dim=(0, 3, 4), correction=0, keepdim=True)
        scale = torch.rsqrt(var.float() + self.eps) * self.weight.view(1, 1, c, 1, 1)
        shift = self.bias.view(1, 1, c, 1, 1) - mean.float() * scale
        out = torch.addcmul(shift.to(x.dtype), groups, scale.to(x.dtype))
        with torch.no_grad():
            count = groups.numel() // (self.splits * c)
            unbiased = var.float() * (count / max(count - 1, 1))
            self.running_mean.lerp_(mean.float().view(self.splits, c).mean(0), self.momentum)
            self.running_var.lerp_(unbiased.view(self.splits, c).mean(0), self.momentum)
            self.num_batches_tracked.add_(1)
        return out.view(n, c, h, w)


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


@torch.no_grad()
def gather_from_all_devices(x: torch.Tensor) -> torch.Tensor:
    """The concatenation of ``x`` from every process, in rank order (``x`` itself in one process)."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts)


@torch.no_grad()
def batch_shuffle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle a batch before the key encoder; returns the shuffled batch and what undoes it.

    In one process: a random permutation (with :class:`SplitBatchNorm2d`, each key is normalised
    with sub-batch statistics its query did not see). In several: the batches of all processes are
    gathered, permuted with one permutation from process 0, and each process takes its slice.
    """
    if world_size() == 1:
        permutation = torch.randperm(len(x), device=x.device)
        return x[permutation], torch.argsort(permutation)
    gathered = gather_from_all_devices(x)
    permutation = torch.randperm(len(gathered), device=x.device)
    torch.distributed.broadcast(permutation, src=0)
    mine = permutation.view(world_size(), -1)[torch.distributed.get_rank()]
    return gathered[mine], torch.argsort(permutation)


@torch.no_grad()
def batch_unshuffle(x: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
    """Undo :func:`batch_shuffle` on the key encoder's output."""
    if world_size() == 1:
        return x[restore]
    gathered = gather_from_all_devices(x)
    return gathered[restore.view(world_size(), -1)[torch.distributed.get_rank()]]


# ---------------------------------------------------------------------------------------------
# The two views, augmented on the device


def augment_view(
    images: torch.Tensor,
    *,
    crop_scale: float,
    rotation: float,
    jitter: float,
    cutout_holes: int,
    cutout_fraction: float,
    fill: float,
) -> torch.Tensor:
    """One independently augmented view per image, on the device: the official pipeline's random
    resized crop (``crop_scale`` to 1 of the area), rotation (up to ``rotation`` degrees), flip,
    brightness/contrast ``jitter`` and Cutout (``cutout_holes`` squares of side ``cutout_fraction``
    of the image, filled with ``fill``); grey images: no hue, saturation or grey-scale conversion."""
    out = random_affine_crop(images, scale=(crop_scale, 1.0), degrees=rotation)
    out = intensity_jitter(out, jitter, jitter)
    length = max(1, round(cutout_fraction * images.shape[-1]))
    return cutout(out, cutout_holes, length, fill=fill)


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
