"""Figures shared by the chapters (matplotlib), and showing the package's code in a notebook."""

from __future__ import annotations

import inspect
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


def show_source(*objects: Any) -> Any:
    """Display the source of modules, functions or classes from the package as highlighted code.

    The book shows the one tested copy of each method part instead of a pasted duplicate.
    """
    from IPython.display import Markdown

    blocks = []
    for obj in objects:
        if inspect.ismodule(obj):  # a whole file, e.g. a chapter's method.py
            where = f"{obj.__name__} ({obj.__name__.replace('.', '/')}.py)"
            blocks.append(f"`{where}`\n\n```python\n{inspect.getsource(obj).rstrip()}\n```")
            continue
        module = inspect.getmodule(obj)
        where = f"{module.__name__}.{obj.__qualname__}" if module else obj.__qualname__
        blocks.append(f"`{where}`\n\n```python\n{inspect.getsource(obj).rstrip()}\n```")
    return Markdown("\n\n".join(blocks))


def image_grid(dataset, classes: Sequence[str], per_class: int = 6, title: str | None = None, seed: int = 0):
    """A grid of ``per_class`` random images of each class (rows) from a dataset of ``(image, label)``."""
    targets = torch.as_tensor(dataset.targets).numpy()
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(
        len(classes), per_class, figsize=(1.4 * per_class, 1.45 * len(classes)), squeeze=False
    )
    for k, name in enumerate(classes):
        members = np.flatnonzero(targets == k)
        chosen = rng.choice(members, size=min(per_class, members.size), replace=False) if members.size else []
        for j, ax in enumerate(axes[k]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(chosen):
                image = dataset[int(chosen[j])][0]
                ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
        axes[k, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def class_counts(
    counts: Mapping[str, Sequence[int]], classes: Sequence[str], title: str = "Images per class"
):
    """Grouped bars of class counts per split (log scale: the imbalance spans two orders of magnitude)."""
    fig, ax = plt.subplots(figsize=(7, 3))
    width = 0.8 / len(counts)
    x = np.arange(len(classes))
    for i, (split, values) in enumerate(counts.items()):
        ax.bar(x + i * width, values, width, label=split)
    ax.set_xticks(x + width * (len(counts) - 1) / 2, classes)
    ax.set_yscale("log")
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def heatmaps(
    matrices: Mapping[str, np.ndarray],
    labels: Sequence[str],
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool = True,
    hide_diagonal: bool = False,
):
    """Side-by-side heat maps of square matrices over the same class labels.

    ``hide_diagonal`` blanks the diagonal, so that the colour scale shows the class pairs.
    """
    fig, axes = plt.subplots(1, len(matrices), figsize=(3.9 * len(matrices), 3.6), squeeze=False)
    for ax, (title, matrix) in zip(axes[0], matrices.items()):
        matrix = np.array(matrix, dtype=float)
        if hide_diagonal:
            np.fill_diagonal(matrix, np.nan)
        image = ax.imshow(matrix, cmap="viridis", vmin=vmin, vmax=vmax)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        if annotate:
            for (i, j), value in np.ndenumerate(matrix):
                if np.isnan(value):
                    continue
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="w" if value < np.nanmean(matrix) else "k",
                )
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def curves(series: Mapping[str, np.ndarray], xlabel: str, ylabel: str, title: str | None = None, ax=None):
    """Mean ± std bands: ``series`` maps a label to an array (runs, points)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
    else:
        fig = ax.figure
    for label, values in series.items():
        values = np.asarray(values, dtype=float)
        mean = np.nanmean(values, axis=0)
        x = np.arange(1, mean.size + 1)
        ax.plot(x, mean, label=label)
        if values.shape[0] > 1:
            std = np.nanstd(values, axis=0, ddof=1)
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def reliability(
    diagrams: Mapping[str, Mapping[str, Sequence[float]]], ax=None, title: str = "Reliability (test set)"
):
    """Reliability diagrams: accuracy against confidence per bin, the diagonal being perfect calibration."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(4, 4))
    else:
        fig = ax.figure
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    for label, bins in diagrams.items():
        conf = np.asarray(bins["confidence"], dtype=float)
        acc = np.asarray(bins["accuracy"], dtype=float)
        keep = ~np.isnan(conf) & ~np.isnan(acc)
        ax.plot(conf[keep], acc[keep], "o-", ms=3, label=label)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig
