"""Chapter 4 figures: the data and its corrupted masks, the predictions, the peers' selection and the
training curves, drawn from the data and the runs' records (figures that need a run's files find its
folder with :func:`medlab.results.run_folder`)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from medlab import metrics, results

from .config import NOISE_KINDS, REGIONS
from .data import ChapterData, corrupted_masks
from .method import key_location_weights
from .report import COLOURS, METHOD_LABELS
from .runs import SELECTION_FILE, load_peers, selection_summary


# ---------------------------------------------------------------------------------------------
# The data and its noise


def _overlay(ax, image: torch.Tensor, mask: torch.Tensor | np.ndarray | None, title: str = "") -> None:
    ax.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    if mask is not None:
        m = np.asarray(mask)
        for level, colour in ((1, "lime"), (2, "cyan")):
            if (m >= level).any() and not (m >= level).all():
                ax.contour(m >= level, levels=[0.5], colors=colour, linewidths=1.0)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def domains_figure(data: ChapterData, count: int = 6):
    """Source and target images side by side."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, count, figsize=(1.6 * count, 3.5), squeeze=False)
    for row, (name, (images, masks)) in enumerate((("source", data.source_train), ("target", data.target_test))):
        for col in range(min(count, len(images))):
            _overlay(axes[row, col], images[col], masks[col] if col >= count // 2 else None)
        axes[row, 0].set_title(f"{name} domain", fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def noise_examples_figure(data: ChapterData, seed: int = 0, strength: float = 1.0, samples: int = 3):
    """Source images with their clean mask and one corruption of each kind (disc green, cup cyan)."""
    import matplotlib.pyplot as plt

    images, clean = data.source_train
    chosen = range(min(samples, len(images)))
    fig, axes = plt.subplots(len(chosen), 2 + len(NOISE_KINDS), figsize=(1.6 * (2 + len(NOISE_KINDS)), 1.7 * len(chosen)), squeeze=False)
    for row, i in enumerate(chosen):
        _overlay(axes[row, 0], images[i], None, "image" if row == 0 else "")
        _overlay(axes[row, 1], images[i], clean[i], "clean mask" if row == 0 else "")
        for col, kind in enumerate(NOISE_KINDS, start=2):
            noisy = corrupted_masks(clean[i : i + 1], 1.0, kind, seed + i, strength)[0][0]
            _overlay(axes[row, col], images[i], noisy, kind if row == 0 else "")
    fig.tight_layout()
    return fig


def noise_damage_table(data: ChapterData, strength: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Dice (%) of every source training mask corrupted by each kind of noise against the clean mask."""
    clean = data.source_train[1]
    damage = {}
    for kind in NOISE_KINDS:
        noisy = corrupted_masks(clean, 1.0, kind, seed=seed, strength=strength)[0]
        dice = metrics.region_dice_hd95(noisy, clean, REGIONS, hd95=False)
        damage[kind] = {f"Dice {r} %": 100 * dice[f"dice/{r}"].mean() for r in REGIONS}
    return pd.DataFrame(damage).T.round(1)


def key_weights_figure(data: ChapterData, band: float, kind: str = "dilation"):
    """One source image, its mask corrupted by ``kind``, and the key-location weights of Eq. (3) of
    that noisy mask (white: full weight, black: none)."""
    import matplotlib.pyplot as plt

    example = corrupted_masks(data.source_train[1][:1], 1.0, kind, seed=0)[0][0]
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.6))
    axes[0].imshow(data.source_train[0][0].permute(1, 2, 0).numpy())
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(example, cmap="viridis")
    axes[1].set_title(f"noisy mask ({kind})", fontsize=9)
    axes[2].imshow(key_location_weights(example.numpy(), band), cmap="gray", vmin=0, vmax=1)
    axes[2].set_title("key-location weights", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Figures and tables of the runs


def predictions_figure(
    records: Sequence[Mapping[str, Any]], data: ChapterData, *, kind: str, rate: float, seed: int,
    methods: Sequence[str], samples: int = 4,
):
    """Source training images (image, clean mask, the noisy mask the runs trained on) and target test
    images (image, clean mask, each method's prediction), for the runs with ``rate`` of the masks
    corrupted by ``kind`` and ``seed``, whose checkpoints are read from their run folders."""
    import matplotlib.pyplot as plt

    samples = min(samples, len(data.target_test[0]))
    runs = {}
    for m in methods:
        found = results.select(records, method=m, rate=rate, kind=kind, seed=seed)
        if not found:
            raise ValueError(f"no record of {m} at rate {rate:g} ({kind}), seed {seed}")
        runs[m] = found[0]
    strength = next(iter(runs.values()))["params"]["noise_strength"]
    noisy = corrupted_masks(data.source_train[1], rate, kind, seed, strength)
    corrupted = np.flatnonzero(noisy[1].numpy())[:samples]
    models = {m: load_peers(record) for m, record in runs.items()}
    columns = 2 + len(methods)
    fig, axes = plt.subplots(2 * samples, columns, figsize=(1.7 * columns, 1.75 * 2 * samples), squeeze=False)
    for row, i in enumerate(corrupted):
        image = data.source_train[0][i]
        _overlay(axes[row, 0], image, None, "source image" if row == 0 else "")
        _overlay(axes[row, 1], image, data.source_train[1][i], "clean mask" if row == 0 else "")
        _overlay(axes[row, 2], image, noisy[0][i], f"noisy mask ({noisy[2][i]})")
        for col in range(3, columns):
            axes[row, col].axis("off")
    images, masks = data.target_test
    with torch.no_grad():
        predictions = {m: model(images[:samples]).argmax(1) for m, model in models.items()}
    for k in range(samples):
        row = samples + k
        _overlay(axes[row, 0], images[k], None, "target image" if k == 0 else "")
        _overlay(axes[row, 1], images[k], masks[k], "clean mask" if k == 0 else "")
        for col, m in enumerate(methods, start=2):
            dice = metrics.region_dice_hd95(predictions[m][k : k + 1], masks[k : k + 1], REGIONS, hd95=False)
            name = METHOD_LABELS[m].split(" (")[0]
            _overlay(axes[row, col], images[k], predictions[m][k],
                     f"{name}\nDice {dice['dice/optic disc'][0]:.2f} / {dice['dice/optic cup'][0]:.2f}")
    fig.suptitle(f"{rate:.0%} of the training masks corrupted ({kind}), seed {seed} (Dice disc / cup)", fontsize=9)
    fig.tight_layout()
    return fig


def _selection(record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    path = results.run_folder(record) / SELECTION_FILE
    if not path.exists():
        raise FileNotFoundError(f"no selection record {path}: a run of a two-network method writes it")
    with np.load(path) as saved:
        return {k: saved[k] for k in saved.files}


def selection_figure(record: Mapping[str, Any], title: str = ""):
    """What each peer of a run selected for the other, against which training masks were actually
    corrupted: per epoch the share of its picks that were corrupted (random picking gives the dashed
    line), and the pick rate of every sample (rows: clean samples first, then corrupted, grouped by kind)."""
    import matplotlib.pyplot as plt

    saved = _selection(record)
    picked, offered, corrupted, kinds = saved["picked"], saved["offered"], saved["corrupted"].astype(bool), saved["kinds"]
    summary = selection_summary(picked, offered, corrupted)
    epochs = np.arange(1, picked.shape[1] + 1)
    order = np.lexsort((kinds, corrupted))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    ax = axes[0]
    ax.plot(epochs, summary["offered_corrupted"], "k--", label="share in the batches (random picking)")
    for peer, colour in zip("ab", ("tab:red", "tab:orange")):
        ax.plot(epochs, summary[f"picked_corrupted_{peer}"], color=colour, label=f"picked by peer {peer.upper()}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("corrupted share of the picks")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    rate = picked / np.maximum(offered[None], 1)
    clean = int((~corrupted).sum())
    for peer, ax in enumerate(axes[1:]):
        im = ax.imshow(rate[peer][:, order].T, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest",
                       extent=(0.5, picked.shape[1] + 0.5, len(order), 0))
        ax.axhline(clean, color="white", lw=1.5)
        ax.set_xlabel("epoch")
        ax.set_title(f"peer {'AB'[peer]}: pick rate per sample", fontsize=9)
        ax.set_yticks([clean / 2, (clean + len(order)) / 2], [f"clean\n({clean})", f"corrupted\n({len(order) - clean})"] if peer == 0 else ["", ""])
    fig.colorbar(im, ax=axes[2], fraction=0.05)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def picks_by_kind(record: Mapping[str, Any]) -> pd.DataFrame:
    """The share (%) of each kind's training masks (and of the clean ones) that the peers of a run
    still picked in its last epoch."""
    saved = _selection(record)
    last = saved["picked"][:, -1].sum(0) / np.maximum(saved["offered"][-1] * saved["picked"].shape[0], 1)
    kinds = np.where(saved["corrupted"], saved["kinds"], "clean")
    return pd.Series(last).groupby(kinds).mean().mul(100).round(1).to_frame("picked in the last epoch %")


def curves_figure(records: Sequence[Mapping[str, Any]], rate: float, kind: str):
    """Target Dice (disc and cup) after every epoch at one noise rate, mean over seeds, per method: a
    network that memorises the corrupted masks rises and then falls."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for method in COLOURS:
        chosen = results.select(records, method=method, rate=rate, kind=kind)
        if not chosen:
            continue
        for ax, key in zip(axes, ("val/target_dice_disc", "val/target_dice_cup")):
            curves = results.history(chosen, key) * 100
            mean, std = curves.mean(0), curves.std(0)
            epochs = np.arange(1, len(mean) + 1)
            ax.plot(epochs, mean, color=COLOURS[method], label=METHOD_LABELS[method])
            ax.fill_between(epochs, mean - std, mean + std, color=COLOURS[method], alpha=0.15)
    for ax, name in zip(axes, ("disc", "cup")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"target Dice {name} (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{rate:.0%} of the training masks corrupted ({kind})", fontsize=10)
    fig.tight_layout()
    return fig
