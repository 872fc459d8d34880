"""Chapter 5 report: labels, the declared comparisons, tables, figures and findings, read from the data
and the runs' records (figures that need a trained network load it from the run's folder)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from medlab import results
from medlab.chapter import ComparisonSpec, TableSpec
from medlab.report import paired, spread

from .config import ABLATION, BASELINES, MAIN, TASKS
from .method import TRUNKS, extract_patches, overlap_and_ends, pad_for_patches, sample_centres
from .runs import ChapterData, load_model, probabilities, segment
from .scores import NAMES, PERCENT, dice_per_crop

METHOD_LABELS = {
    "crossover": "Crossover-Net",
    "ce_only": "two arms, CE only",
    "unet": "2D U-Net",
    "vertical": "vertical arm only",
    "horizontal": "horizontal arm only",
    "square": "square patch",
    "consistency_only": "CE + consistency",
    "diversity_only": "CE - diversity",
    "no_minmax": "Crossover-Net without min-max",
}
COLOURS = {"crossover": "tab:red", "ce_only": "tab:blue", "unet": "tab:green", "vertical": "tab:purple", "horizontal": "tab:orange", "square": "tab:brown"}
METRICS = ("dice", "hd95", "tpf", "centroid", "dice_raw")
ORDER = [*MAIN, *BASELINES, *ABLATION]

TABLES = (
    TableSpec(
        experiments=("comparison", "baselines", "ablation"), by=("params.method",), metrics=METRICS, percent=PERCENT,
        labels={"params.method": METHOD_LABELS}, order={"params.method": ORDER}, names=NAMES,
        caption="Target segmentation on the test crops after the clean-up: Dice, HD95 and centroid distance (pixels), true-positive fraction, and Dice before the clean-up.",
    ),
)


def _dice(name: str, method: str, baseline: str, main: bool = False, metric: str = "dice") -> ComparisonSpec:
    return ComparisonSpec(name=name, metric=metric, column="params.method", method=method, baseline=baseline, floor=0.0, ceiling=1.0, main=main)


COMPARISONS = (
    _dice("Crossover-Net vs the two arms with cross-entropy only (Dice)", "crossover", "ce_only", main=True),
    _dice("Crossover-Net vs a 2D U-Net on the same crops (Dice)", "crossover", "unet", main=True),
    _dice("Crossover-Net vs CE only, before the clean-up (Dice)", "crossover", "ce_only", metric="dice_raw"),
    _dice("Crossover-Net vs CE only (true-positive fraction)", "crossover", "ce_only", metric="tpf"),
    _dice("Two arms vs the vertical arm alone (Dice, CE only)", "ce_only", "vertical"),
    _dice("Two arms vs the horizontal arm alone (Dice, CE only)", "ce_only", "horizontal"),
    _dice("Two arms vs a square patch of the same area (Dice, CE only)", "ce_only", "square"),
    _dice("Ablation: CE + consistency vs CE only (Dice)", "consistency_only", "ce_only"),
    _dice("Ablation: CE - diversity vs CE only (Dice)", "diversity_only", "ce_only"),
    _dice("Ablation: without vs with the min-max normalisation (Dice)", "no_minmax", "crossover"),
)


def metrics_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Every method's test scores, mean ± std over its seeds, in the book's order."""
    rows = frame[frame["params.method"].isin(ORDER)]
    rows = rows.assign(method=rows["params.method"].map(METHOD_LABELS), order=rows["params.method"].map(ORDER.index))
    return results.summarize(rows.sort_values("order", kind="stable"), list(METRICS), by=("method",), percent=PERCENT, names=NAMES)


# ---------------------------------------------------------------------------------------------
# The data and the patches


def _show(ax, image, mask=None, title: str = "", colour: str = "red", extra=None) -> None:
    ax.imshow(np.asarray(image).squeeze(), cmap="gray", vmin=0, vmax=1)
    for m, c in ((mask, colour), *(extra or [])):
        if m is not None and np.asarray(m).any():
            ax.contour(np.asarray(m, dtype=float), levels=[0.5], colors=c, linewidths=0.9)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def samples_figure(data: ChapterData, count: int = 8):
    """Training crops of the task with their target outlined."""
    import matplotlib.pyplot as plt

    images, masks = data.train
    count = min(count, len(images))
    fig, axes = plt.subplots(1, count, figsize=(1.6 * count, 1.9), squeeze=False)
    for k, ax in enumerate(axes[0]):
        _show(ax, images[k], masks[k])
    fig.suptitle(f"{data.info['kind']} {TASKS_LABEL.get(data.task.dataset, data.task.dataset)}: {data.task.target} outlined", fontsize=9)
    fig.tight_layout()
    return fig


TASKS_LABEL = {"kits19": "kidney-tumour CT crops", "acdc": "cine-MR crops", "inbreast": "mammogram crops"}


def tasks_figure(image_size: int = 64, count: int = 4, seed: int = 0):
    """The three synthetic tasks side by side (the generators of KiTS19, ACDC and INbreast), target outlined."""
    import matplotlib.pyplot as plt

    from medlab import data as datasets

    fig, axes = plt.subplots(len(TASKS), count, figsize=(1.7 * count, 1.8 * len(TASKS)), squeeze=False)
    for row, (name, task) in enumerate(TASKS.items()):
        crops = datasets.load(task.dataset, "train", n=count, seed=seed, image_size=image_size)
        for col in range(count):
            image, mask = crops[col]
            _show(axes[row, col], image, mask)
        axes[row, 0].set_title(f"look-alike of {task.description}", fontsize=8, loc="left")
    fig.tight_layout()
    return fig


def arms_figure(data: ChapterData, trunk: str = "small", index: int = 0):
    """A crossover-patch over a training crop (the vertical arm red, the horizontal arm blue, centred on
    a pixel of the target's boundary), and the two arms as the trunk reads them: the horizontal one
    transposed, both running along their length, their shared square marked."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    spec = TRUNKS[trunk]
    image, mask = data.train[0][index : index + 1], data.train[1][index]
    rows, cols = np.nonzero(mask.numpy())
    r, c = int(rows[np.argmin(cols)]), int(cols.min())  # the target's leftmost pixel
    padded = pad_for_patches(image, spec.length)
    where = [torch.tensor([v]) for v in (0, r, c)]
    arms = {a: extract_patches(padded, *where, spec.length, spec.width, a, spec.length)[0, 0] for a in ("vertical", "horizontal")}
    fig, axes = plt.subplots(1, 3, figsize=(8, 3.2), gridspec_kw={"width_ratios": [3, 1, 1]})
    _show(axes[0], image[0], mask, "crossover-patch on a crop")
    L, W = spec.length, spec.width
    axes[0].add_patch(Rectangle((c - W // 2 - 0.5, r - L // 2 - 0.5), W, L, fill=False, ec="tab:red", lw=1.5))
    axes[0].add_patch(Rectangle((c - L // 2 - 0.5, r - W // 2 - 0.5), L, W, fill=False, ec="tab:cyan", lw=1.5))
    axes[0].plot(c, r, "y+", ms=8)
    for ax, (name, patch) in zip(axes[1:], arms.items()):
        ax.imshow(patch, cmap="gray", vmin=0, vmax=1)
        ax.add_patch(Rectangle((-0.5, L // 2 - W // 2 - 0.5), W, W, fill=False, ec="yellow", lw=1))
        ax.set_title(f"{name}" + (" (transposed)" if name == "horizontal" else ""), fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def sampling_figure(data: ChapterData, config: Any, count: int = 3, seed: int = 0):
    """The training centres of Eq. (4) on a few crops: target centres red, background blue, denser
    near the boundary, as many of each class."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(1, count, figsize=(2.6 * count, 2.8), squeeze=False)
    for k, ax in enumerate(axes[0]):
        image, mask = data.train[0][k], data.train[1][k].numpy()
        rows, cols, labels = sample_centres(
            mask, rng, grid_step=config.grid_step, boundary_fraction=config.boundary_fraction,
            ring_offsets=tuple(config.ring_offsets), ring_rates=tuple(config.ring_rates),
        )
        _show(ax, image, mask, f"{int(labels.sum())} target, {int((labels == 0).sum())} background")
        ax.scatter(cols, rows, s=3, c=np.where(labels == 1, "red", "deepskyblue"))
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Figures of the runs


def curves_figure(records: Sequence[Mapping[str, Any]]):
    """Validation Dice (before the clean-up) after every epoch, mean ± std over seeds, per main method,
    and the terms of Eq. (3) during Crossover-Net's training."""
    import matplotlib.pyplot as plt

    from medlab import plots

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for method in MAIN:  # against the share of training done: the U-Net runs more, shorter epochs
        chosen = results.select(records, method=method)
        if not chosen:
            continue
        curve = results.history(chosen, "val/dice")
        done = 100 * np.arange(1, curve.shape[1] + 1) / curve.shape[1]
        mean, std = np.nanmean(curve, 0), np.nanstd(curve, 0)
        axes[0].plot(done, mean, "o-", ms=3, color=COLOURS[method], label=METHOD_LABELS[method])
        axes[0].fill_between(done, mean - std, mean + std, color=COLOURS[method], alpha=0.15)
    axes[0].set_xlabel("training done (% of the epochs)")
    axes[0].set_ylabel("validation Dice (before the clean-up)")
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    chosen = results.select(records, method="crossover")
    if chosen:
        terms = {name: results.history(chosen, f"train/{name}") for name in ("ce", "consistency", "diversity")}
        plots.curves(terms, "epoch", "Crossover-Net: terms of Eq. (3), training mean", ax=axes[1])
    fig.tight_layout()
    return fig


@torch.no_grad()
def arm_features(record: Mapping[str, Any], data: ChapterData, count: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """For a run's trained two-arm network, on test patches centred within 3 pixels of the target's
    boundary: the distance between the arms per feature-line position (root mean square over the
    batch, mean over channels), and the feature lines of one patch (C, n) for each arm."""
    model = load_model(record)
    spec = model.spec
    images, masks = data.test
    rng = np.random.default_rng(seed)
    picks = []
    for i, mask in enumerate(masks.numpy()):
        rows, cols, _ = sample_centres(mask, rng, grid_step=10**6, boundary_fraction=1.0, ring_offsets=(3.0,), ring_rates=(1.0,))
        picks += [(i, r, c) for r, c in zip(rows, cols)]
    chosen = np.array(picks)[rng.choice(len(picks), min(count, len(picks)), replace=False)]
    index, rows, cols = (torch.from_numpy(chosen[:, k]) for k in range(3))
    padded = pad_for_patches(images, spec.length)
    patches = {a: extract_patches(padded, index, rows, cols, spec.length, spec.width, a, spec.length) for a in model.arms}
    _, lines = model(patches)
    v, h = lines["vertical"], lines["horizontal"]
    distance = ((v - h) ** 2).mean(0).sqrt().mean(0).numpy()
    scale = float(torch.cat([v, h]).pow(2).mean().sqrt())
    return {"distance": distance / max(scale, 1e-8), "vertical": v[0].numpy(), "horizontal": h[0].numpy()}


def arm_features_figure(records: Sequence[Mapping[str, Any]], data: ChapterData, seed: int, methods: Sequence[str] = ("crossover", "ce_only")):
    """The arms' feature lines on the overlap and on the ends: for each method (its run at ``seed``), the
    distance between the arms along the line (relative to the features' size; overlap shaded yellow,
    ends grey), and one patch's two feature lines."""
    import matplotlib.pyplot as plt

    found = {m: results.select(records, method=m, seed=seed) for m in methods}
    found = {m: r[0] for m, r in found.items() if r}
    fig, axes = plt.subplots(1, 1 + 2 * len(found), figsize=(3.6 + 2.4 * len(found), 3.2), squeeze=False)
    axes = axes[0]
    for k, (method, record) in enumerate(found.items()):
        features = arm_features(record, data)
        n = len(features["distance"])
        overlap, ends = overlap_and_ends(n, TRUNKS[record["params"]["trunk"]].length / TRUNKS[record["params"]["trunk"]].width)
        axes[0].plot(np.arange(n), features["distance"], "o-", color=COLOURS.get(method), label=METHOD_LABELS[method])
        for name in ("vertical", "horizontal"):
            ax = axes[1 + 2 * k + (name == "horizontal")]
            ax.imshow(features[name], aspect="auto", cmap="magma")
            ax.set_title(f"{METHOD_LABELS[method]}\n{name} arm", fontsize=7)
            ax.set_xlabel("position", fontsize=7)
            ax.set_xticks([0, n - 1])
            ax.set_yticks([])
        axes[1 + 2 * k].set_ylabel("channels", fontsize=7)
    axes[0].axvspan(overlap[0] - 0.5, overlap[-1] + 0.5, color="gold", alpha=0.3, label="overlap")
    for side in (ends[: len(ends) // 2], ends[len(ends) // 2 :]):
        axes[0].axvspan(side[0] - 0.5, side[-1] + 0.5, color="0.6", alpha=0.3)
    axes[0].set_xlabel("position along the arms")
    axes[0].set_ylabel("arm distance / feature size")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def predictions_figure(records: Sequence[Mapping[str, Any]], data: ChapterData, seed: int, methods: Sequence[str] = ORDER, count: int = 3):
    """Test crops with the truth (green) and each method's segmentation after the clean-up (red), the
    runs at ``seed``; the title gives the crop's Dice."""
    import matplotlib.pyplot as plt

    images, masks = data.test[0][:count], data.test[1][:count]
    count = len(images)
    models = {m: load_model(results.select(records, method=m, seed=seed)[0]) for m in methods if results.select(records, method=m, seed=seed)}
    radius = next(iter(records))["params"]["closing_radius"]
    fig, axes = plt.subplots(count, 1 + len(models), figsize=(1.5 * (1 + len(models)), 1.6 * count), squeeze=False)
    for col, (method, model) in enumerate(models.items(), start=1):
        _, cleaned = segment(probabilities(model, images, torch.device("cpu")), radius, data.task.fill_holes)
        dice = dice_per_crop(cleaned, masks.numpy())
        for row in range(count):
            _show(axes[row, col], images[row], cleaned[row], f"{METHOD_LABELS[method]}\nDice {dice[row]:.2f}" if row == 0 else f"Dice {dice[row]:.2f}", extra=[(masks[row], "lime")])
    for row in range(count):
        _show(axes[row, 0], images[row], masks[row], "truth" if row == 0 else "", colour="lime")
    fig.tight_layout()
    return fig


def loss_terms_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The terms of Eq. (3) in the first and the last epoch of every two-arm run that logged them, mean
    over seeds: what each variant of the loss did to the arms' distances."""
    rows = []
    for method in ORDER:
        chosen = [r for r in results.select(records, method=method) if r.get("history") and "train/ce" in r["history"][-1]]
        if not chosen or "train/consistency" not in chosen[0]["history"][-1]:
            continue
        row = {"method": METHOD_LABELS[method]}
        for term in ("ce", "consistency", "diversity"):
            curve = results.history(chosen, f"train/{term}")
            row[f"{term}, epoch 1"], row[f"{term}, last epoch"] = float(np.nanmean(curve[:, 0])), float(np.nanmean(curve[:, -1]))
        rows.append(row)
    return pd.DataFrame(rows).set_index("method").round(3) if rows else pd.DataFrame()


# ---------------------------------------------------------------------------------------------
# What the runs show (beside the verdicts)


def findings(frame: pd.DataFrame) -> str:
    """Each method minus Crossover-Net on Dice, HD95 and the true-positive fraction, paired by seed
    (Markdown); the verdicts of the declared comparisons are :func:`medlab.report.chapter_verdicts`'."""
    if "params.method" not in frame or "crossover" not in set(frame["params.method"]):
        return "No Crossover-Net runs to compare."
    lines = []
    for method in ORDER:
        if method == "crossover" or method not in set(frame["params.method"]):
            continue
        d = paired(frame, "dice", "params.method", "crossover", method)
        if d.n == 0:
            continue
        hd = paired(frame, "hd95", "params.method", "crossover", method)
        tpf = paired(frame, "tpf", "params.method", "crossover", method)
        lines.append(
            f"- Crossover-Net minus {METHOD_LABELS[method]} ({d.n} seeds): Dice {spread(d)}, "
            f"HD95 {spread(hd, 1.0, ' px')}, true-positive fraction {spread(tpf)}."
        )
    return "\n".join(lines) if lines else "No pair of runs to compare."
