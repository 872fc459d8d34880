"""Robust cross-denoising network (Zhang, Liu, Ma, Zhuo, Zheng, IJCAI 2020, arXiv:2006.10990).

Optic disc and cup segmentation trained on a *source* domain whose masks are partly corrupted, and used
on a *target* domain (another camera) whose images come without labels. The paper's code is not public
and its full text could not be read for this book: the pieces below follow its abstract, and every
detail it leaves open is a choice recorded in chapter 4's deviation ledger. In the order of chapter 4:

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
* A variant of Eq. (6) that is not the paper's reading, chosen on the development data: pseudo-labels
  only where both peers agree, each with a fixed confidence: :func:`agreed_pseudo_labels`.
* Eq. (7) each peer's objective: Eq. (5) on the samples its peer selected plus ``lambda(t)`` Eq. (6):
  :func:`cross_weight`, :func:`peer_objective`; the two peers: :class:`Peers`.

Every function runs on the device without waiting for it: no data-dependent shapes, no reads of a
tensor's value on the host (masked means and per-class thresholds are computed over whole tensors).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` where ``mask`` is true (0 where it is nowhere true), without indexing."""
    return torch.where(mask, values, 0.0).sum() / mask.sum().clamp_min(1)


# ---------------------------------------------------------------------------------------------
# Eq. (1): the standard segmentation loss


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


# ---------------------------------------------------------------------------------------------
# Eq. (2): peer review by small-loss selection


def keep_ratio(epoch: int, forget_rate: float, selection_epochs: int) -> float:
    """Eq. (2): the fraction of each batch a network hands to its peer after ``epoch`` epochs
    (0-based), falling linearly from 1 to ``1 - forget_rate`` over ``selection_epochs``."""
    ramp = min(epoch / selection_epochs, 1.0) if selection_epochs > 0 else 1.0
    return 1.0 - forget_rate * ramp


def selection_count(batch: int, ratio: float) -> int:
    """Eq. (2): how many of ``batch`` samples a network hands to its peer, ``ceil(ratio * batch)``
    (at least one). It depends on the batch size only, so it is known on the host."""
    return max(1, min(batch, math.ceil(ratio * batch - 1e-9)))


def small_loss_selection(losses: torch.Tensor, ratio: float) -> torch.Tensor:
    """Eq. (2): the indices of the :func:`selection_count` samples with the smallest loss."""
    return torch.argsort(losses.detach())[: selection_count(len(losses), ratio)]


# ---------------------------------------------------------------------------------------------
# Eqs. (3)-(5): the noise-tolerant loss


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


# ---------------------------------------------------------------------------------------------
# Eq. (6): class-imbalanced cross learning


def class_level_pseudo_labels(
    peer_logits: torch.Tensor, fraction: float, class_level: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (6), the selection: the peer's argmax labels and a boolean mask of the pixels kept.

    Per class (``class_level``): of the pixels the peer assigns to class ``k`` in the batch, the
    ``fraction`` with the highest confidence. Globally (else): the ``fraction`` most confident pixels
    of the batch, whatever their class, which the background dominates. Each group's threshold is the
    ``1 - fraction`` quantile of its confidences, taken over the whole batch with the other pixels
    masked out (NaN), so no shape depends on the data; an empty group keeps nothing.
    """
    with torch.no_grad():
        probabilities = torch.softmax(peer_logits.float(), 1)
        confidence, labels = probabilities.max(1)
        if class_level:
            classes = torch.arange(probabilities.shape[1], device=labels.device)
            groups = labels[None] == classes.view(-1, *(1,) * labels.dim())  # (K, N, H, W)
        else:
            groups = torch.ones_like(labels, dtype=torch.bool)[None]
        members = groups.flatten(1)
        values = confidence.flatten()[None].expand_as(members)
        if fraction < 1:
            thresholds = torch.nanquantile(torch.where(members, values, float("nan")), 1.0 - fraction, dim=1)
        else:
            thresholds = torch.where(members, values, float("inf")).amin(1)
        keep = (groups & (confidence[None] >= thresholds.view(-1, *(1,) * labels.dim()))).any(0)
    return labels, keep


def agreed_pseudo_labels(
    peer_logits: torch.Tensor, own_logits: torch.Tensor, confidence: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (6), a variant that is not the paper's reading (chapter 4 labels it so): the peer's argmax
    labels, kept only where both networks predict the same class, each with a probability of at least
    ``confidence`` (one fixed threshold for every class, instead of a fixed share of each class)."""
    with torch.no_grad():
        peer_confidence, labels = torch.softmax(peer_logits.float(), 1).max(1)
        own_confidence, own_labels = torch.softmax(own_logits.float(), 1).max(1)
        keep = (labels == own_labels) & (peer_confidence >= confidence) & (own_confidence >= confidence)
    return labels, keep


def cross_learning_loss(logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor, class_level: bool = True) -> torch.Tensor:
    """Eq. (6), the loss: cross-entropy on the kept pseudo-labelled pixels, averaged within each class
    and then over the classes present (``class_level``), or over all kept pixels (else). 0 when no
    pixel is kept."""
    pixel_ce = F.cross_entropy(logits.float(), labels, reduction="none")
    if not class_level:
        return masked_mean(pixel_ce, keep)
    classes = torch.arange(logits.shape[1], device=labels.device).view(-1, *(1,) * labels.dim())
    members = (keep[None] & (labels[None] == classes)).flatten(1)  # (K, pixels)
    counts = members.sum(1)
    means = torch.where(members, pixel_ce.flatten()[None], 0.0).sum(1) / counts.clamp_min(1)
    present = counts > 0
    return torch.where(present, means, 0.0).sum() / present.sum().clamp_min(1)


# ---------------------------------------------------------------------------------------------
# Eq. (7): each peer's objective, and the two peers


def cross_weight(epoch: int, weight: float, selection_epochs: int, ramp_epochs: int) -> float:
    """lambda(t) of Eq. (7) after ``epoch`` epochs (0-based): 0 while the peers warm up
    (``selection_epochs``), then rising linearly to ``weight`` over ``ramp_epochs``."""
    ramp = (epoch - selection_epochs + 1) / max(ramp_epochs, 1)
    return weight * float(min(max(ramp, 0.0), 1.0))


def peer_objective(
    logits: torch.Tensor,
    peer_logits: torch.Tensor,
    noisy_masks: torch.Tensor,
    key_weights: torch.Tensor,
    rows: torch.Tensor,
    *,
    noise_tolerant: bool,
    confidence: float,
    cross_weight: float = 0.0,
    target_logits: torch.Tensor | None = None,
    peer_target_logits: torch.Tensor | None = None,
    fraction: float = 0.5,
    class_level: bool = True,
    agreement: float | None = None,
) -> dict[str, torch.Tensor]:
    """Eq. (7) for one learner: Eq. (5) (or Eq. (1) without ``noise_tolerant``) on the samples
    ``rows`` its peer selected, plus ``cross_weight`` times Eq. (6) on the target batch with the
    peer's pseudo-labels (with ``agreement``, the variant :func:`agreed_pseudo_labels` at that
    confidence). Returns ``loss``, its ``supervised`` part and, with cross learning, the ``cross``
    part, the ``pseudo_labels`` and the ``kept`` pixels."""
    if noise_tolerant:
        supervised = noise_tolerant_loss(
            logits[rows], noisy_masks[rows], key_weights[rows], peer_logits[rows].detach(), confidence
        ).mean()
    else:
        supervised = segmentation_loss(logits[rows], noisy_masks[rows]).mean()
    out = {"loss": supervised, "supervised": supervised}
    if cross_weight > 0:
        if agreement is not None:
            labels, keep = agreed_pseudo_labels(peer_target_logits.detach(), target_logits.detach(), agreement)
        else:
            labels, keep = class_level_pseudo_labels(peer_target_logits.detach(), fraction, class_level)
        cross = cross_learning_loss(target_logits, labels, keep, class_level)
        out.update(loss=supervised + cross_weight * cross, cross=cross, pseudo_labels=labels, kept=keep)
    return out


class Peers(nn.Module):
    """One or two segmentation networks, predicting the mean of their probabilities, with the record
    of which training samples each peer picked for the other (buffers, so a resumed run keeps them):
    ``picked[peer, epoch, sample]`` counts the times network ``peer`` selected ``sample`` for its peer
    in ``epoch``, ``offered[epoch, sample]`` the times the sample was in a batch.

    ``steps_done`` counts the optimiser steps on the host (the training step reads the epoch from it
    without waiting for the device); the state dict keeps it, so a resumed run continues the count.
    """

    def __init__(self, nets: Sequence[nn.Module], epochs: int, n_samples: int):
        super().__init__()
        self.nets = nn.ModuleList(nets)
        self.steps_done = 0
        self.register_buffer("picked", torch.zeros(len(self.nets), epochs, n_samples, dtype=torch.int16))
        self.register_buffer("offered", torch.zeros(epochs, n_samples, dtype=torch.int16))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The mean of the networks' softmax probabilities (N, 3, H, W)."""
        return torch.stack([torch.softmax(net(images).float(), 1) for net in self.nets]).mean(0)

    def record_selection(self, epoch: int, index: torch.Tensor, chosen: Sequence[torch.Tensor]) -> None:
        """Count the batch's samples (``index``) as offered in ``epoch``, and those each peer chose
        (``chosen[peer]``, positions in the batch) as picked; on the device, without waiting for it."""
        with torch.no_grad():
            self.offered[epoch, index] += 1
            for peer, picked in enumerate(chosen):
                self.picked[peer, epoch, index[picked]] += 1

    def get_extra_state(self) -> dict[str, int]:
        return {"steps_done": self.steps_done}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.steps_done = int(state["steps_done"])
