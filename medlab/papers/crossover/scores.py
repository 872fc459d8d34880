"""Chapter 5 scores: the measures Crossbar-Net and Crossover-Net report, per crop, from MONAI and SciPy.

* Dice and the 95th-percentile Hausdorff distance (pixels) of the target: :func:`medlab.metrics.region_dice_hd95`
  (MONAI; an empty prediction scores Dice 0 and HD95 the crop's diagonal);
* the true-positive fraction ``|P n T| / |T|`` (the sensitivity: MONAI's confusion-matrix metric);
* the centroid distance: the distance in pixels between the centres of mass of the prediction and of
  the truth (SciPy); an empty prediction scores the crop's diagonal.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import ndimage

from medlab import metrics

TARGET = {"target": (1,)}
NAMES = {"dice": "Dice %", "hd95": "HD95 (px)", "tpf": "TPF %", "centroid": "centroid dist. (px)", "dice_raw": "Dice before clean-up %"}
PERCENT = ("dice", "tpf", "dice_raw")


def true_positive_fraction(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``|P n T| / |T|`` per crop of binary masks (N, H, W) (MONAI's sensitivity; NaN where T is empty)."""
    from monai.metrics import compute_confusion_matrix_metric, get_confusion_matrix

    p = torch.as_tensor(np.asarray(pred, dtype=np.float32))[:, None]
    t = torch.as_tensor(np.asarray(truth, dtype=np.float32))[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        matrix = get_confusion_matrix(p, t, include_background=True)
        return compute_confusion_matrix_metric("sensitivity", matrix)[:, 0].numpy().astype(float)


def centroid_distance(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The distance (pixels) between the centres of mass of prediction and truth per crop (N, H, W); the
    crop's diagonal where the prediction is empty, NaN where the truth is."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    diagonal = float(np.hypot(*pred.shape[1:]))
    out = np.full(len(pred), np.nan)
    for i, (p, t) in enumerate(zip(pred, truth)):
        if not t.any():
            continue
        out[i] = diagonal if not p.any() else float(np.hypot(*np.subtract(ndimage.center_of_mass(p), ndimage.center_of_mass(t))))
    return out


def segmentation_scores(pred: np.ndarray, truth: np.ndarray, raw: np.ndarray | None = None) -> dict[str, float]:
    """Mean over crops of Dice, HD95, true-positive fraction and centroid distance of binary masks
    (N, H, W) after the clean-up, the Dice of the ``raw`` masks before it, and ``n_eval``."""
    pred, truth = np.asarray(pred, dtype=np.int64), np.asarray(truth, dtype=np.int64)
    per_crop = metrics.region_dice_hd95(pred, truth, TARGET)
    scores = {
        "dice": float(np.mean(per_crop["dice/target"])),
        "hd95": float(np.mean(per_crop["hd95/target"])),
        "tpf": float(np.nanmean(true_positive_fraction(pred, truth))),
        "centroid": float(np.nanmean(centroid_distance(pred, truth))),
    }
    if raw is not None:
        scores["dice_raw"] = float(np.mean(metrics.region_dice_hd95(np.asarray(raw, dtype=np.int64), truth, TARGET, hd95=False)["dice/target"]))
    scores["n_eval"] = float(len(pred))
    return scores


def dice_per_crop(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of each crop (MONAI; both empty: 1)."""
    return metrics.region_dice_hd95(np.asarray(pred, dtype=np.int64), np.asarray(truth, dtype=np.int64), TARGET, hd95=False)["dice/target"]
