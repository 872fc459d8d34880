"""Chapter 7 scores: synthesis quality (PSNR, SSIM, MAE from torchmetrics) over the brain and inside the
tumour, and the tumour Dice of a segmentor, per slice, averaged over slices."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

DATA_RANGE = 2.0  # images are in [-1, 1]
MIN_TUMOUR_PIXELS = 1  # the tumour-region metrics are averaged over the test slices with a tumour


def synthesis_scores(fake: torch.Tensor, real: torch.Tensor, brain: torch.Tensor, tumour: torch.Tensor) -> dict[str, float]:
    """PSNR (dB), SSIM and MAE of ``fake`` against ``real`` (``(N, 1, H, W)`` in [-1, 1]) over the pixels of
    ``brain`` and of ``tumour`` (bool ``(N, H, W)``), each computed per slice and averaged over the slices
    where the region is not empty. PSNR and MAE use the region's pixels only (torchmetrics'
    ``peak_signal_noise_ratio`` on them, data range 2); SSIM is torchmetrics' SSIM map (Gaussian window
    11, sigma 1.5) averaged over the region."""
    fake, real = fake.float().clamp(-1, 1), real.float()
    ssim_map = structural_similarity_index_measure(fake, real, data_range=DATA_RANGE, reduction="none", return_full_image=True)[1]
    out: dict[str, float] = {}
    for name, region in (("brain", brain), ("tumour", tumour)):
        psnr, ssim, mae = [], [], []
        for i in range(len(fake)):
            where = region[i].bool()
            if int(where.sum()) < MIN_TUMOUR_PIXELS:
                continue
            f, r = fake[i, 0][where], real[i, 0][where]
            mse = float(((f - r) ** 2).mean())
            psnr.append(float(peak_signal_noise_ratio(f, r, data_range=DATA_RANGE)) if mse > 0 else 100.0)
            ssim.append(float(ssim_map[i, 0][where].mean()))
            mae.append(float((f - r).abs().mean()))
        for key, values in (("psnr", psnr), ("ssim", ssim), ("mae", mae)):
            out[f"{key}_{name}"] = float(np.mean(values)) if values else float("nan")
    return out


def dice_per_slice(pred: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``(2 |A n B| + s) / (|A| + |B| + s)`` of each slice's binary masks ``(N, H, W)`` (the code's score)."""
    p, t = pred.flatten(1).float(), target.flatten(1).float()
    return (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)


def tumour_dice(probs: torch.Tensor, target: torch.Tensor) -> float:
    """The Dice of ``probs > 0.5`` pooled over all slices, ``2 sum|A n B| / (sum|A| + sum|B|)``: 0 for a
    segmentor that finds nothing, and not inflated by the many small tumour sections a per-slice mean with
    smoothing scores near 1/2 when it finds nothing (NaN when no slice holds a tumour)."""
    pred, target = (probs > 0.5).float(), target.float()
    total = float(pred.sum() + target.sum())
    if float(target.sum()) == 0:
        return float("nan")
    return 2 * float((pred * target).sum()) / total


def slice_dice(probs: torch.Tensor, target: torch.Tensor) -> float:
    """The code's score: the mean over all slices of the per-slice Dice with smoothing 1 (a slice without
    tumour scores 1 when nothing is found)."""
    return float(dice_per_slice(probs > 0.5, target).mean())
