"""Chapter 7 report: labels, the declared comparisons, tables, figures and findings, read from the data and
the runs' records (the example images are saved in each synthesis run's folder)."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from medlab import results
from medlab.chapter import ComparisonSpec, TableSpec
from medlab.report import paired, significance_text, spread

from .config import ABLATION, MAIN, METHODS
from .method import TARGETS
from .runs import EXAMPLES_FILE

METHOD_LABELS = {
    "tc_mgan": "TC-MGAN", "mgan": "MGAN", "pix2pix": "pix2pix (one per target)",
    "no_cls": "TC-MGAN without the classifier", "no_gp": "TC-MGAN with clipping instead of GP",
}
INPUT_LABELS = {"t2": "T2 alone", "real": "four real modalities", "tc_mgan": "T2 + TC-MGAN's", "mgan": "T2 + MGAN's",
                "pix2pix": "T2 + pix2pix's", "no_cls": "T2 + no-classifier's", "no_gp": "T2 + clipping's"}
TARGET_LABELS = {"flair": "FLAIR", "t1ce": "T1ce", "t1": "T1"}
COLOURS = {"tc_mgan": "tab:red", "mgan": "tab:blue", "pix2pix": "tab:green", "no_cls": "tab:purple", "no_gp": "tab:orange"}
ORDER = [*MAIN, *ABLATION]
METRICS = ("dice_share", "dice", "psnr_tumour", "ssim_tumour", "mae_tumour", "psnr_brain", "ssim_brain", "mae_brain")
NAMES = {
    "dice_share": "judge's Dice, share of real (%)", "dice": "tumour Dice (judge, %)", "psnr_tumour": "PSNR tumour (dB)", "ssim_tumour": "SSIM tumour",
    "mae_tumour": "MAE tumour", "psnr_brain": "PSNR brain (dB)", "ssim_brain": "SSIM brain", "mae_brain": "MAE brain",
}
# The comparisons read each synthetic image against its references, measured in the same run:
# ``dice_share``, the judge's tumour Dice on the synthetic images as a share of its Dice on the real ones
# (floor 0, a blank image, which the judge scores near 0; ceiling 1, the real image: a better synthesis
# cannot be told apart by the judge); and ``psnr_*_gain``, the PSNR in dB above that of the T2 input
# taken as the target (floor 0: a network that copies its input; ceiling 20 dB: an error ten times
# smaller in amplitude than the input's).
GAIN_CEILING_DB = 20.0

TABLES = (
    TableSpec(
        experiments=("comparison", "ablation"), by=("params.method",), metrics=METRICS, percent=("dice_share", "dice"),
        labels={"params.method": METHOD_LABELS}, order={"params.method": ORDER}, names=NAMES,
        caption="Synthesis of FLAIR, T1ce and T1 from T2 on the test slices, averaged over the three targets: the judge's "
                "tumour Dice on the synthetic images, PSNR, SSIM and MAE inside the tumour and over the brain.",
    ),
    TableSpec(
        experiments=("downstream",), by=("params.inputs",), metrics=("dice", "dice_slice"), percent=("dice", "dice_slice"),
        labels={"params.inputs": INPUT_LABELS}, names={"dice": "tumour Dice (%)", "dice_slice": "per-slice Dice, the code's (%)"},
        caption="The downstream claim: a tumour segmentor trained and tested on T2 alone, on T2 with a method's synthetic "
                "FLAIR, T1ce and T1, or on the four real modalities.",
    ),
)

COMPARISONS = (
    ComparisonSpec(name="TC-MGAN vs MGAN (judge's tumour Dice on the synthetic modalities, share of its Dice on the real ones)",
                   metric="dice_share", column="params.method", method="tc_mgan", baseline="mgan", floor=0.0, ceiling=1.0, main=True),
    ComparisonSpec(name="MGAN vs pix2pix (PSNR inside the tumour, dB above T2 as the target)", metric="psnr_tumour_gain",
                   column="params.method", method="mgan", baseline="pix2pix", floor=0.0, ceiling=GAIN_CEILING_DB, percent=False),
    ComparisonSpec(name="MGAN vs pix2pix (PSNR over the brain, dB above T2 as the target)", metric="psnr_brain_gain",
                   column="params.method", method="mgan", baseline="pix2pix", floor=0.0, ceiling=GAIN_CEILING_DB, percent=False),
    ComparisonSpec(name="TC-MGAN vs MGAN (PSNR inside the tumour, dB above T2 as the target)", metric="psnr_tumour_gain",
                   column="params.method", method="tc_mgan", baseline="mgan", floor=0.0, ceiling=GAIN_CEILING_DB, percent=False),
    ComparisonSpec(name="Downstream: segmentor on T2 + TC-MGAN's synthetic modalities vs T2 alone (Dice)", metric="dice",
                   column="params.inputs", method="tc_mgan", baseline="t2", floor=0.0, ceiling=1.0, where={"experiment": "downstream"}),
    ComparisonSpec(name="Ablation: without vs with the modality classifier (judge's Dice share)", metric="dice_share",
                   column="params.method", method="no_cls", baseline="tc_mgan", floor=0.0, ceiling=1.0),
    ComparisonSpec(name="Ablation: weight clipping vs gradient penalty (judge's Dice share)", metric="dice_share",
                   column="params.method", method="no_gp", baseline="tc_mgan", floor=0.0, ceiling=1.0),
)


def metrics_table(frame: pd.DataFrame, per_target: bool = False) -> pd.DataFrame:
    """Every method's test scores, mean ± std over its seeds, in the book's order (per target modality
    with ``per_target``)."""
    rows = frame[frame["params.method"].isin(ORDER)] if "params.method" in frame else frame.iloc[:0]
    rows = rows.assign(method=rows["params.method"].map(METHOD_LABELS), order=rows["params.method"].map(ORDER.index))
    rows = rows.sort_values("order", kind="stable")
    if not per_target:
        return results.summarize(rows, list(METRICS), by=("method",), percent=["dice_share", "dice"], names=NAMES)
    metrics = [f"{t}/{m}" for t in TARGETS for m in ("dice", "psnr_tumour", "ssim_tumour", "psnr_brain")]
    names = {f"{t}/{m}": f"{TARGET_LABELS[t]} {NAMES[m].split(' (')[0]}" for t in TARGETS for m in ("dice", "psnr_tumour", "ssim_tumour", "psnr_brain")}
    return results.summarize(rows, metrics, by=("method",), percent=[f"{t}/dice" for t in TARGETS], names=names)


def downstream_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The downstream segmentor's test Dice per input, mean ± std over seeds (empty without such runs)."""
    rows = frame[frame["experiment"] == "downstream"] if "experiment" in frame else frame.iloc[:0]
    if rows.empty:
        return pd.DataFrame({"note": ["no downstream runs in this profile (set downstream_inputs)"]})
    rows = rows.assign(inputs=rows["params.inputs"].map(INPUT_LABELS))
    return results.summarize(rows, ["dice", "dice_slice"], by=("inputs",), percent=["dice", "dice_slice"],
                             names={"dice": "tumour Dice (%)", "dice_slice": "per-slice Dice, the code's (%)"})


def references_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The judge's Dice on the real test images and on a blank image, and the PSNR of T2 taken as each
    target (the same for every run of a seed)."""
    rows = frame[frame["experiment"] == "comparison"]
    cols = {f"{t}/{m}": f"{TARGET_LABELS[t]}: {label}" for t in TARGETS
            for m, label in (("real_dice", "judge on real (%)"), ("blank_dice", "judge on blank (%)"), ("t2_psnr_tumour", "T2 as target, PSNR tumour"))}
    return results.summarize(rows.assign(all="all runs"), list(cols), by=("all",), percent=[c for c in cols if "dice" in c], names=cols)


def samples_figure(data, count: int = 4):
    """The four contrasts of the first test slices with a tumour, the whole tumour outlined."""
    import matplotlib.pyplot as plt

    from medlab.data.constants import MODALITIES

    images, masks = data.test
    chosen = torch.nonzero(masks.flatten(1).any(1)).flatten()[:count]
    fig, axes = plt.subplots(len(chosen), len(MODALITIES), figsize=(1.7 * len(MODALITIES), 1.7 * max(len(chosen), 1)), squeeze=False)
    for row, i in enumerate(chosen.tolist()):
        for col, name in enumerate(MODALITIES):
            _show(axes[row, col], images[i, col].numpy(), masks[i].numpy(), name.upper() if row == 0 else "")
    fig.tight_layout()
    return fig


def examples_figure(records: Sequence[Mapping], seed: int = 0, index: int = 0):
    """T2, the real FLAIR/T1ce/T1 and each method's synthetic ones for one test slice (tumour outlined),
    with the absolute error maps below."""
    import matplotlib.pyplot as plt

    runs = {r["params"]["method"]: r for r in records if r.get("seed") == seed and r["experiment"] in ("comparison", "ablation")}
    methods = [m for m in ORDER if m in runs]
    if not methods:
        return None
    shown = {m: torch.load(results.run_folder(runs[m]) / EXAMPLES_FILE) for m in methods}
    first = shown[methods[0]]
    mask = first["mask"][index].numpy()
    fig, axes = plt.subplots(2 * len(TARGETS), len(methods) + 2, figsize=(1.6 * (len(methods) + 2), 1.6 * 2 * len(TARGETS)))
    for row, target in enumerate(TARGETS):
        real = first["real"][target][index].numpy()
        top, bottom = axes[2 * row], axes[2 * row + 1]
        _show(top[0], first["t2"][index].numpy(), mask, "T2 (input)" if row == 0 else "")
        _show(top[1], real, mask, f"real {TARGET_LABELS[target]}")
        bottom[0].axis("off"), bottom[1].axis("off")
        for col, m in enumerate(methods, start=2):
            fake = shown[m]["fake"][target][index].numpy()
            _show(top[col], fake, mask, f"{METHOD_LABELS[m]}" if row == 0 else "")
            bottom[col].imshow(np.abs(fake - real), cmap="magma", vmin=0, vmax=1)
            bottom[col].set_title(f"|error| {TARGET_LABELS[target]}", fontsize=7)
            bottom[col].axis("off")
    fig.tight_layout()
    return fig


def _show(ax, image, mask=None, title: str = "") -> None:
    ax.imshow(image, cmap="gray", vmin=-1, vmax=1)
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors="red", linewidths=0.7)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def curves_figure(records: Sequence[Mapping], seed: int = 0):
    """The critic's and the generator's losses per epoch (training means), one line per method: each
    method's own objective (WGAN sums for the GANs, BCE for pix2pix), and the L1 reconstruction error as
    a mean per pixel for all (the GANs' loss sums it over the pixels, as the official code does)."""
    import matplotlib.pyplot as plt

    runs = [r for r in records if r.get("seed") == seed and r["experiment"] in ("comparison", "ablation")]
    if not runs:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    for r in runs:
        m = r["params"]["method"]
        history = r.get("history") or []
        epochs = [h["epoch"] for h in history]
        pixels = 1 if METHODS[m].kind == "pix2pix" else r["params"]["image_size"] ** 2
        for ax, key, scale in zip(axes, ("train/d_loss", "train/g_loss", "train/g_rec"), (1, 1, pixels)):
            if history and key in history[0]:
                ax.plot(epochs, [h[key] / scale for h in history], label=METHOD_LABELS[m], color=COLOURS.get(m))
    for ax, title in zip(axes, ("critic / discriminator loss", "generator loss", "L1 error per pixel")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def findings(frame: pd.DataFrame) -> str:
    """The main comparisons, paired by seed (Markdown)."""
    if "params.method" not in frame or not {"tc_mgan", "mgan"} <= set(frame["params.method"].dropna()):
        return "No pair of methods to compare."
    lines = []
    d = paired(frame, "dice", "params.method", "tc_mgan", "mgan")
    lines.append(f"- TC-MGAN minus MGAN, the judge's tumour Dice itself (not as a share): {spread(d)} ({significance_text(d)}).")
    rows = frame[frame["experiment"] == "comparison"]
    if "metrics.real_dice" in rows:
        lines.append(f"- The judge on the real test images: {100 * rows['metrics.real_dice'].mean():.1f}% Dice; on a blank image "
                     f"{100 * rows['metrics.blank_dice'].mean():.1f}%. T2 taken as the target: {rows['metrics.t2_psnr_tumour'].mean():.1f} dB "
                     f"inside the tumour, {rows['metrics.t2_psnr_brain'].mean():.1f} dB over the brain.")
    if "pix2pix" in set(frame["params.method"]):
        p = paired(frame, "psnr_tumour", "params.method", "mgan", "pix2pix")
        lines.append(f"- MGAN minus pix2pix, PSNR inside the tumour: {spread(p, scale=1.0, unit=' dB', digits=2)} ({significance_text(p)}).")
    return "\n".join(lines)
