"""Chapter 6 report: labels, the declared comparisons, tables, figures and findings, read from the data
and the runs' records (figures that need a trained network load it from the run's folder)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from medlab import results
from medlab.chapter import ComparisonSpec, GateSpec, TableSpec
from medlab.report import paired, spread

from .config import ABLATION, BASELINES, MAIN, METHODS
from .method import jacobian_determinant, onehot, transfer
from .runs import ChapterData, load_model, predict

METHOD_LABELS = {
    "ltnet": "LT-Net",
    "oneway": "one-way registration",
    "identity": "identity (atlas label as is)",
    "atlas_seg": "U-Net on the atlas, augmented",
    "supervised": "U-Net, fully supervised",
    "no_image_cycle": "LT-Net without the image cycle",
    "no_label_cycle": "LT-Net without the label cycle",
    "no_field_cycle": "LT-Net without the field cycle",
}
COLOURS = {"ltnet": "tab:red", "oneway": "tab:blue", "identity": "0.5", "atlas_seg": "tab:green", "supervised": "tab:purple"}
ORDER = [*MAIN, *BASELINES, *ABLATION]
METRICS = ("dice", "hd95", "folding")
PERCENT = ("dice", "folding")
NAMES = {"dice": "mean Dice (%)", "hd95": "mean HD95 (voxels)", "folding": "folding voxels (%)"}

TABLES = (
    TableSpec(
        experiments=("comparison", "baselines", "ablation"), by=("params.method",), metrics=METRICS, percent=PERCENT,
        labels={"params.method": METHOD_LABELS}, order={"params.method": ORDER}, names=NAMES,
        caption="Test targets: Dice and HD95 (voxels) averaged over the structures, and the share of voxels where the forward field folds (registrations).",
    ),
)

_ONEWAY_LEARNED = GateSpec(
    "one-way registration beats the identity (the un-warped atlas label)", metric="dice",
    where={"params.method": "oneway"}, above={"params.method": "identity"},
)


def _dice(name: str, method: str, baseline: str, main: bool = False, gates: tuple = ()) -> ComparisonSpec:
    return ComparisonSpec(name=name, metric="dice", column="params.method", method=method, baseline=baseline, floor=0.0, ceiling=1.0, main=main, gates=gates)


COMPARISONS = (
    _dice("LT-Net vs one-way registration (mean Dice over structures)", "ltnet", "oneway", main=True, gates=(_ONEWAY_LEARNED,)),
    _dice("One-way registration vs the identity (mean Dice)", "oneway", "identity"),
    _dice("LT-Net vs a U-Net trained on the atlas with augmentation (mean Dice)", "ltnet", "atlas_seg"),
    _dice("LT-Net vs the fully supervised U-Net (mean Dice)", "ltnet", "supervised"),
    _dice("Ablation: without vs with the image cycle (mean Dice)", "no_image_cycle", "ltnet"),
    _dice("Ablation: without vs with the label cycle (mean Dice)", "no_label_cycle", "ltnet"),
    _dice("Ablation: without vs with the field cycle (mean Dice)", "no_field_cycle", "ltnet"),
)


def metrics_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Every method's test scores, mean ± std over its seeds, in the book's order."""
    rows = frame[frame["params.method"].isin(ORDER)]
    rows = rows.assign(method=rows["params.method"].map(METHOD_LABELS), order=rows["params.method"].map(ORDER.index))
    present = [m for m in METRICS if f"metrics.{m}" in rows]
    return results.summarize(rows.sort_values("order", kind="stable"), present, by=("method",), percent=[m for m in PERCENT if m in present], names=NAMES)


def structures_table(frame: pd.DataFrame, structures: Sequence[str], metric: str = "dice") -> pd.DataFrame:
    """Dice (%) or HD95 per structure (columns) and method (rows), mean over seeds."""
    rows = {}
    for method in ORDER:
        chosen = frame[frame["params.method"] == method]
        if chosen.empty:
            continue
        scale = 100.0 if metric == "dice" else 1.0
        rows[METHOD_LABELS[method]] = {s: scale * chosen[f"metrics.{metric}_{s.replace(' ', '_')}"].mean() for s in structures}
    return pd.DataFrame(rows).T.round(1)


# ---------------------------------------------------------------------------------------------
# Figures of the data


def _slice(volume: Any, axis: int = 2, index: int | None = None) -> np.ndarray:
    v = np.asarray(volume).squeeze()
    index = v.shape[axis] // 2 + 2 if index is None else index
    return np.rot90(np.take(v, index, axis=axis))


def _show(ax, image, labels=None, title: str = "", axis: int = 2, index: int | None = None) -> None:
    ax.imshow(_slice(image, axis, index), cmap="gray", vmin=0, vmax=1)
    if labels is not None:
        lab = _slice(labels, axis, index).astype(float)
        ax.imshow(np.ma.masked_where(lab == 0, lab), cmap="tab10", vmin=0.5, vmax=10.5, alpha=0.4, interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def data_figure(data: ChapterData, count: int = 4):
    """The atlas with its structures and a few test targets with their true labels, axial and coronal
    middle slices."""
    import matplotlib.pyplot as plt

    images, labels = data.test
    count = min(count, len(images))
    fig, axes = plt.subplots(2, count + 1, figsize=(1.9 * (count + 1), 4.0), squeeze=False)
    for row, axis in enumerate((2, 1)):
        _show(axes[row, 0], data.atlas[0], data.atlas[1], "atlas" if row == 0 else "", axis)
        for k in range(count):
            _show(axes[row, k + 1], images[k], labels[k], f"target {k}" if row == 0 else "", axis)
    names = ", ".join(f"{k + 1} {s}" for k, s in enumerate(data.structures[:9]))
    fig.suptitle(f"{data.info['kind']} data; structures: {names}", fontsize=8)
    fig.tight_layout()
    return fig


def _grid_lines(ax, field: np.ndarray, step: int = 3, colour: str = "yellow") -> None:
    """The deformation grid of a 2D displacement (2, H, W) (rows, columns in voxels) on ``ax``."""
    h, w = field.shape[1:]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    r, c = rows + field[0], cols + field[1]
    for i in range(0, h, step):
        ax.plot(c[i], r[i], color=colour, lw=0.5)
    for j in range(0, w, step):
        ax.plot(c[:, j], r[:, j], color=colour, lw=0.5)


def _axial(field: torch.Tensor, index: int) -> np.ndarray:
    """The in-plane displacement of an axial slice, rotated as :func:`_slice` shows it."""
    f = field[:, :, :, index].numpy()  # (3, X, Y): components along x and y
    rot = np.stack([np.rot90(f[1]), np.rot90(f[0])])  # after rot90: rows run along -y, columns along x
    return np.stack([-rot[0], rot[1]])


@torch.no_grad()
def warp_figure(records: Sequence[Mapping[str, Any]], data: ChapterData, seed: int, methods: Sequence[str] = MAIN, count: int = 2):
    """Atlas, target, the atlas warped to the target by each registration (labels overlaid, Dice in the
    title) and the deformation grid of its forward field, axial middle slices; runs at ``seed``."""
    import matplotlib.pyplot as plt

    found = {m: results.select(records, method=m, seed=seed) for m in methods}
    models = {m: load_model(r[0], data.num_classes) for m, r in found.items() if r}
    images, labels = data.test[0][:count], data.test[1][:count]
    count = len(images)
    index = images.shape[-1] // 2 + 2
    fig, axes = plt.subplots(count, 2 + 2 * len(models), figsize=(1.9 * (2 + 2 * len(models)), 2.1 * count), squeeze=False)
    atlas_maps = onehot(data.atlas[1][None], data.num_classes)
    for row in range(count):
        _show(axes[row, 0], data.atlas[0], data.atlas[1], "atlas" if row == 0 else "")
        _show(axes[row, 1], images[row], labels[row], "target (truth)" if row == 0 else "")
        for k, (method, model) in enumerate(models.items()):
            out = transfer(model, data.atlas[0], atlas_maps, images[row : row + 1], cycle=False)
            pred = out.warped_label.argmax(1)[0]
            dice = _mean_dice(pred, labels[row], len(data.structures))
            _show(axes[row, 2 + 2 * k], out.warped_image[0], pred, f"{METHOD_LABELS[method]}\nwarped atlas, Dice {dice:.2f}")
            _show(axes[row, 3 + 2 * k], images[row], None, "forward field" if row == 0 else "")
            _grid_lines(axes[row, 3 + 2 * k], _axial(out.forward[0], index))
    fig.tight_layout()
    return fig


def _mean_dice(pred: torch.Tensor, truth: torch.Tensor, structures: int) -> float:
    values = []
    for k in range(1, structures + 1):
        p, t = pred == k, truth == k
        if p.any() or t.any():
            values.append(2 * float((p & t).sum()) / float(p.sum() + t.sum()))
    return float(np.mean(values)) if values else 1.0


@torch.no_grad()
def cycle_figure(records: Sequence[Mapping[str, Any]], data: ChapterData, seed: int, methods: Sequence[str] = MAIN):
    """For one test target: the forward field, the backward field (atlas-warped-to-target back to the
    atlas) and the cycle's residual ``|u_B + u_F o (id + u_B)|`` (voxels), and the atlas reconstructed
    through the cycle, for each registration method at ``seed`` (the one-way network is asked for a
    backward field too, though it never trained with one)."""
    import matplotlib.pyplot as plt

    found = {m: results.select(records, method=m, seed=seed) for m in methods}
    models = {m: load_model(r[0], data.num_classes) for m, r in found.items() if r}
    target = data.test[0][:1]
    atlas_maps = onehot(data.atlas[1][None], data.num_classes)
    index = target.shape[-1] // 2 + 2
    fig, axes = plt.subplots(len(models), 4, figsize=(9, 2.4 * max(1, len(models))), squeeze=False)
    for row, (method, model) in enumerate(models.items()):
        out = transfer(model, data.atlas[0], atlas_maps, target, cycle=True)
        fwd, bwd = out.forward[0].norm(dim=0), out.backward[0].norm(dim=0)
        residual = out.residual[0].norm(dim=0)
        top = float(max(fwd.max(), bwd.max()))
        for col, (volume, title) in enumerate(((fwd, "|forward field|"), (bwd, "|backward field|"))):
            im = axes[row, col].imshow(_slice(volume, 2, index), cmap="viridis", vmin=0, vmax=top)
            axes[row, col].set_title(f"{METHOD_LABELS[method]}\n{title} (voxels)" if col == 0 else title, fontsize=8)
            axes[row, col].axis("off")
        fig.colorbar(im, ax=axes[row, 1], fraction=0.046)
        im = axes[row, 2].imshow(_slice(residual, 2, index), cmap="magma", vmin=0, vmax=max(1.0, float(residual.max())))
        axes[row, 2].set_title(f"cycle residual, mean {float(residual.mean()):.2f} voxels", fontsize=8)
        axes[row, 2].axis("off")
        fig.colorbar(im, ax=axes[row, 2], fraction=0.046)
        recon = out.cycled_label.argmax(1)[0]
        _show(axes[row, 3], out.cycled_image[0], recon, f"atlas through the cycle, label Dice {_mean_dice(recon, data.atlas[1], len(data.structures)):.2f}")
    fig.tight_layout()
    return fig


def structures_figure(frame: pd.DataFrame, structures: Sequence[str], methods: Sequence[str] = ORDER):
    """Dice per structure per method: each seed a point, the mean a bar."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = []
    for _, r in frame[frame["params.method"].isin(methods)].iterrows():
        for s in structures:
            rows.append({"method": METHOD_LABELS[r["params.method"]], "structure": s, "Dice": 100 * r[f"metrics.dice_{s.replace(' ', '_')}"]})
    long = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(10, 3.6))
    if long.empty:
        return fig
    order = [METHOD_LABELS[m] for m in methods if METHOD_LABELS[m] in set(long["method"])]
    sns.barplot(long, x="structure", y="Dice", hue="method", hue_order=order, errorbar=None, alpha=0.5, ax=ax)
    sns.stripplot(long, x="structure", y="Dice", hue="method", hue_order=order, dodge=True, size=2.5, ax=ax, legend=False)
    ax.set_ylabel("Dice (%)")
    ax.set_xlabel("")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def curves_figure(records: Sequence[Mapping[str, Any]]):
    """Development Dice after every epoch (mean ± std over seeds) for the main methods, and the terms of
    LT-Net's loss while it trains."""
    import matplotlib.pyplot as plt

    from medlab import plots

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    for method in (*MAIN, *ABLATION):
        chosen = results.select(records, method=method)
        if not chosen:
            continue
        curve = results.history(chosen, "val/dice")
        epochs = np.arange(1, curve.shape[1] + 1)
        mean, std = np.nanmean(curve, 0), np.nanstd(curve, 0)
        axes[0].plot(epochs, mean, "o-", ms=3, color=COLOURS.get(method), label=METHOD_LABELS[method])
        axes[0].fill_between(epochs, mean - std, mean + std, color=COLOURS.get(method), alpha=0.15)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("development mean Dice")
    axes[0].grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    chosen = results.select(records, method="ltnet")
    if chosen:
        names = ("similarity", "smoothness", "image_cycle", "label_cycle", "field_cycle")
        terms = {n: results.history(chosen, f"train/{n}") for n in names if f"train/{n}" in (chosen[0].get("history") or [{}])[-1]}
        plots.curves(terms, "epoch", "LT-Net: loss terms, training mean", ax=axes[1])
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# What the runs show (beside the verdicts)


def findings(frame: pd.DataFrame) -> str:
    """Each method minus LT-Net on mean Dice, HD95 and folding, paired by seed (Markdown); the verdicts of
    the declared comparisons are :func:`medlab.report.chapter_verdicts`'."""
    if "params.method" not in frame or "ltnet" not in set(frame["params.method"]):
        return "No LT-Net runs to compare."
    lines = []
    for method in ORDER:
        if method == "ltnet" or method not in set(frame["params.method"]):
            continue
        d = paired(frame, "dice", "params.method", "ltnet", method)
        if d.n == 0:
            continue
        hd = paired(frame, "hd95", "params.method", "ltnet", method)
        text = f"- LT-Net minus {METHOD_LABELS[method]} ({d.n} seeds): mean Dice {spread(d)}, HD95 {spread(hd, 1.0, ' voxels', 2)}"
        if METHODS[method].kind == "registration" and "metrics.folding" in frame:
            f = paired(frame, "folding", "params.method", "ltnet", method)
            text += f", folding voxels {spread(f, 100.0, ' points', 3)}"
        lines.append(text + ".")
    return "\n".join(lines) if lines else "No pair of runs to compare."


def field_statistics(forward: torch.Tensor, backward: torch.Tensor, residual: torch.Tensor) -> dict[str, float]:
    """How far a registration moves the atlas and how well its backward pass undoes it: the mean length
    (voxels) of the forward field, of the backward field and of the cycle's residual (3), the 1st
    percentile of the forward field's Jacobian determinant and its folding share (%). Fields (N, 3, *S)."""
    det = jacobian_determinant(forward).flatten()
    return {
        "mean |forward| (voxels)": float(forward.norm(dim=1).mean()),
        "mean |backward| (voxels)": float(backward.norm(dim=1).mean()),
        "mean cycle residual (voxels)": float(residual.norm(dim=1).mean()),
        "Jacobian, 1st percentile": float(torch.quantile(det.double(), 0.01)),
        "folding (%)": float(100 * (det <= 0).double().mean()),
    }


def field_summary(records: Sequence[Mapping[str, Any]], data: ChapterData, seed: int, methods: Sequence[str] = (*MAIN, *ABLATION)) -> pd.DataFrame:
    """:func:`field_statistics` of each registration method at ``seed`` over the test targets (the one-way
    network is asked for a backward field too, though it never trained with one)."""
    atlas_maps = onehot(data.atlas[1][None], data.num_classes)
    rows = {}
    for method in methods:
        found = results.select(records, method=method, seed=seed)
        if not found or METHODS[method].kind != "registration":
            continue
        model = load_model(found[0], data.num_classes).eval()
        parts = {"forward": [], "backward": [], "residual": []}
        with torch.no_grad():
            for start in range(0, len(data.test[0]), 4):
                out = transfer(model, data.atlas[0], atlas_maps, data.test[0][start : start + 4], cycle=True)
                for name in parts:
                    parts[name].append(getattr(out, name))
        rows[METHOD_LABELS[method]] = field_statistics(*(torch.cat(parts[n]) for n in ("forward", "backward", "residual")))
    return pd.DataFrame(rows).T.round(3)
