"""Metrics: thin, tested wrappers over scikit-learn, torchmetrics, MONAI and SciPy.

Only what no library offers is written here (the agreement between two class-similarity matrices).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats
from sklearn import metrics as skm
from torchmetrics.functional.classification import multiclass_calibration_error


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _check_probabilities(probs: np.ndarray, num_classes: int | None) -> np.ndarray:
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be (samples, classes), got shape {probs.shape}")
    if num_classes is not None and probs.shape[1] != num_classes:
        raise ValueError(f"probabilities have {probs.shape[1]} columns, expected {num_classes} classes")
    sums = probs.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        raise ValueError(
            f"rows of the probability matrix must sum to 1 (found sums from {sums.min():.3f} to {sums.max():.3f}); apply softmax first"
        )
    return probs


def _renormalise(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1.0)
    return p / p.sum(axis=1, keepdims=True)


def expected_calibration_error(y_true, probs, n_bins: int = 15) -> float:
    """Expected calibration error of the top-1 confidence (L1, equal-width bins; torchmetrics)."""
    probs_t = torch.as_tensor(_as_numpy(probs), dtype=torch.float32)
    target = torch.as_tensor(_as_numpy(y_true), dtype=torch.long)
    return float(
        multiclass_calibration_error(probs_t, target, num_classes=probs_t.shape[1], n_bins=n_bins, norm="l1")
    )


def classification_metrics(
    y_true, probs, num_classes: int | None = None, n_bins: int = 15
) -> dict[str, float]:
    """Accuracy, balanced accuracy (mean class recall: ISIC 2018's ranking metric), macro F1,
    expected calibration error, negative log-likelihood and macro one-vs-rest AUROC."""
    y = _as_numpy(y_true).astype(int)
    p = _check_probabilities(_as_numpy(probs).astype(np.float64), num_classes)
    k = p.shape[1]
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"{y.shape[0]} labels but {p.shape[0]} rows of probabilities")
    pred = p.argmax(axis=1)
    labels = np.arange(k)
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
        "macro_f1": skm.f1_score(y, pred, average="macro", labels=labels, zero_division=0),
        "ece": expected_calibration_error(y, p, n_bins=n_bins),
        "nll": skm.log_loss(y, _renormalise(p), labels=labels),
    }
    present = np.unique(y)
    if present.size == k:
        out["macro_auroc"] = skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=labels)
    return {name: float(value) for name, value in out.items()}


def per_class_recall(y_true, probs, num_classes: int) -> np.ndarray:
    y = _as_numpy(y_true).astype(int)
    pred = _as_numpy(probs).argmax(axis=1)
    return skm.recall_score(y, pred, labels=np.arange(num_classes), average=None, zero_division=0)


def confusion(y_true, probs, num_classes: int, normalize: str | None = "true") -> np.ndarray:
    """Confusion matrix (rows: true class); ``normalize='true'`` gives per-class recall rows."""
    y = _as_numpy(y_true).astype(int)
    pred = _as_numpy(probs).argmax(axis=1)
    return skm.confusion_matrix(y, pred, labels=np.arange(num_classes), normalize=normalize)


def reliability_curve(y_true, probs, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-1 reliability diagram: per confidence bin, the mean confidence, the accuracy and the count."""
    y = _as_numpy(y_true).astype(int)
    p = _as_numpy(probs)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=confidence, minlength=n_bins) / counts
        accuracy = np.bincount(which, weights=correct, minlength=n_bins) / counts
    return mean_conf, accuracy, counts


def pool_reliability(curves) -> dict[str, np.ndarray]:
    """Pool reliability curves of several runs (same bins), weighting each bin by its sample count."""
    counts = np.array([np.asarray(c["count"], dtype=float) for c in curves])
    total = counts.sum(axis=0)
    pooled = {}
    for key in ("confidence", "accuracy"):
        values = np.nan_to_num(np.array([np.asarray(c[key], dtype=float) for c in curves]))
        with np.errstate(invalid="ignore", divide="ignore"):
            pooled[key] = np.where(total > 0, (values * counts).sum(axis=0) / total, np.nan)
    pooled["count"] = total
    return pooled


def off_diagonal(matrix) -> np.ndarray:
    """The strictly upper-triangular entries of a square matrix (each class pair once)."""
    m = _as_numpy(matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {m.shape}")
    return m[np.triu_indices(m.shape[0], k=1)]


def matrix_agreement(learned, reference) -> dict[str, float]:
    """How well a learned class-similarity matrix agrees with a reference one, over class pairs.

    Spearman's rank correlation is the headline number (the scales of the two matrices differ, their
    orderings of class pairs should not); Pearson's correlation is given beside it. Symmetric matrices
    are compared on their upper triangles.
    """
    a, b = off_diagonal(learned), off_diagonal(reference)
    if a.shape != b.shape:
        raise ValueError(
            f"matrices of different sizes: {_as_numpy(learned).shape} vs {_as_numpy(reference).shape}"
        )
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return {"spearman": float("nan"), "pearson": float("nan")}
    return {
        "spearman": float(stats.spearmanr(a, b).statistic),
        "pearson": float(stats.pearsonr(a, b).statistic),
    }


def cosine_similarity_matrix(vectors) -> np.ndarray:
    """Pairwise cosine similarity of the rows of ``vectors`` (e.g. a classifier's weight vectors)."""
    v = _as_numpy(vectors).astype(np.float64)
    return skm.pairwise.cosine_similarity(v)


def multilabel_auroc(y_true, scores, names=None) -> dict[str, object]:
    """Per-label AUROC (scikit-learn) and their mean, for multi-label ``(samples, labels)`` arrays.

    A label without both positives and negatives has no AUROC: it is NaN in ``per_label``, left out
    of ``mean`` and counted in ``undefined``.
    """
    y = _as_numpy(y_true).astype(int)
    s = _as_numpy(scores).astype(np.float64)
    if y.shape != s.shape or y.ndim != 2:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must both be (samples, labels)")
    if names is not None and len(names) != y.shape[1]:
        raise ValueError(f"{len(names)} label names for {y.shape[1]} labels")
    per_label = np.full(y.shape[1], np.nan)
    for j in range(y.shape[1]):
        if 0 < y[:, j].sum() < len(y):
            per_label[j] = skm.roc_auc_score(y[:, j], s[:, j])
    defined = per_label[~np.isnan(per_label)]
    return {
        "mean": float(defined.mean()) if defined.size else float("nan"),
        "per_label": per_label,
        "undefined": int(np.isnan(per_label).sum()),
        "names": list(names) if names is not None else None,
    }


def region_dice_hd95(
    pred_labels,
    true_labels,
    regions: dict[str, tuple[int, ...]],
    spacing: tuple[float, ...] | None = None,
    hd95: bool = True,
) -> dict[str, np.ndarray]:
    """Per-case Dice and 95th-percentile Hausdorff distance (MONAI) of label *regions*, as BraTS scores
    its nested tumour regions: each region is the union of some label indices.

    ``pred_labels`` and ``true_labels`` are integer label maps (N, *spatial). Returns arrays of length
    N under ``dice/<region>`` and ``hd95/<region>`` (in voxels, or in the units of ``spacing``). The
    BraTS conventions for empty regions: both empty scores Dice 1 and HD95 0; one empty scores Dice 0
    and HD95 the length of the volume's diagonal (the worst possible). ``hd95=False`` skips the
    distances (Dice only, for quick validation).
    """
    import warnings

    from monai.metrics import compute_dice, compute_hausdorff_distance

    pred = torch.as_tensor(_as_numpy(pred_labels))
    true = torch.as_tensor(_as_numpy(true_labels))
    if pred.shape != true.shape or pred.ndim < 2:
        raise ValueError(f"label maps must share a shape (N, *spatial), got {tuple(pred.shape)} and {tuple(true.shape)}")
    spatial = pred.shape[1:]
    steps = np.ones(len(spatial)) if spacing is None else np.asarray(spacing, dtype=float)
    if steps.shape != (len(spatial),):
        raise ValueError(f"spacing needs {len(spatial)} values, got {spacing}")
    diagonal = float(np.sqrt(np.sum((np.asarray(spatial) * steps) ** 2)))
    out: dict[str, np.ndarray] = {}
    for name, labels in regions.items():
        p = torch.isin(pred, torch.as_tensor(labels)).unsqueeze(1).float()
        t = torch.isin(true, torch.as_tensor(labels)).unsqueeze(1).float()
        p_any = p.flatten(1).any(1).numpy()
        t_any = t.flatten(1).any(1).numpy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dice = compute_dice(p, t, include_background=True, ignore_empty=False)[:, 0].numpy().astype(float)
            distance = np.full(len(p), np.nan)
            both = np.flatnonzero(p_any & t_any)
            if hd95 and both.size:
                distance[both] = compute_hausdorff_distance(
                    p[both], t[both], include_background=True, percentile=95,
                    spacing=None if spacing is None else list(steps),
                )[:, 0].numpy()
        dice[~p_any & ~t_any] = 1.0
        dice[p_any ^ t_any] = 0.0
        out[f"dice/{name}"] = dice
        if hd95:
            distance[~p_any & ~t_any] = 0.0
            distance[p_any ^ t_any] = diagonal
            out[f"hd95/{name}"] = distance
    return out


def _rows_spanned(region: np.ndarray) -> np.ndarray:
    """Rows from the first to the last that hold the region (0 when empty), over the last two axes."""
    rows = region.any(axis=-1)
    h = rows.shape[-1]
    first = rows.argmax(axis=-1)
    last = h - 1 - rows[..., ::-1].argmax(axis=-1)
    return np.where(rows.any(axis=-1), last - first + 1, 0)


def vertical_cup_to_disc_ratio(mask):
    """The vertical cup-to-disc ratio (vCDR) of a label mask: the rows the cup spans over the rows the disc
    spans (from its top row to its bottom row), the clinical measurement of glaucomatous cupping.

    ``mask`` is ``(H, W)`` (returns a float) or a batch ``(N, H, W)`` (returns a float64 numpy array),
    numpy or torch, with this module's convention: disc ``mask >= 1``, cup ``mask == 2``. The ratio is nan
    where the disc is empty and 0 where the cup is.
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"mask must be (H, W) or (N, H, W), got shape {mask.shape}")
    disc = _rows_spanned(mask >= 1).astype(np.float64)
    cup = _rows_spanned(mask == 2).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(disc > 0, cup / np.where(disc > 0, disc, 1), np.nan)
    return float(ratio) if mask.ndim == 2 else ratio
