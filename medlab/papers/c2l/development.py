"""Chapter 2's development studies: how far the pretext task gets with longer pretraining, made on
the development data seed (7, never the book's 2020) with one seed each: MoCo (C2L without mixup) at
the demo's settings with one or two changes (epochs, milder views, a shorter queue).

Their records ship with the package (``medlab/resources/development/c2l/<study>/``); they were made on
one GPU (mixed precision). To make one again, on any device::

    python -m medlab.papers.c2l.development mocomild100 --root /tmp/c2l-development
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from medlab.development import load_histories, load_studies, prepare_study, study_cli

from .config import SLUG, Settings, settings
from .runs import PRETEXT_EVAL_IMAGES, pretrain_job

DEVELOPMENT_DATA_SEED = 7
MILD_VIEWS = {"crop_scale": 0.6, "rotation": 5.0, "jitter": 0.2, "cutout_holes": 0}  # crops of 60-100%, +-5 degrees, no Cutout
# study: (pretraining method, settings changed from the demo's)
STUDIES: dict[str, tuple[str, dict[str, Any]]] = {
    "moco30": ("moco", {"pretrain_epochs": 30}),
    "moco100": ("moco", {"pretrain_epochs": 100}),
    "mocoq256": ("moco", {"pretrain_epochs": 100, "queue_size": 256}),
    "mocomild30": ("moco", {"pretrain_epochs": 30, **MILD_VIEWS}),
    "mocomild100": ("moco", {"pretrain_epochs": 100, **MILD_VIEWS}),
}
PRETEXT_LEARNED = 0.5  # the evidence standard's gate on the held-out pretext accuracy


def study_settings(name: str) -> Settings:
    """The demo's settings on the development data seed with the study's changes."""
    if name not in STUDIES:
        raise ValueError(f"unknown development study {name!r}; expected one of {', '.join(STUDIES)}")
    return settings("demo", data_seed=DEVELOPMENT_DATA_SEED, seeds=(0,), **STUDIES[name][1])


def run_study(name: str, root: str | Path, device: str | None = None) -> list[dict[str, Any]]:
    """Run one study's pretraining; its record goes to ``<root>/<name>/results/demo/c2l``."""
    from medlab import experiment
    from medlab.papers import c2l

    chosen = prepare_study(name, root, device)
    job = pretrain_job(STUDIES[name][0], 0)
    return experiment.run_grid(c2l, study_settings(name), profile="demo", device=chosen, jobs=[job])


def _describe(row: pd.Series) -> str:
    views = "mild views" if row["params.crop_scale"] == MILD_VIEWS["crop_scale"] else "the demo's views"
    return f"{views}, queue {int(row['params.queue_size']):,}"


def development_table(root: str | Path | None = None, images_per_s: float | None = None) -> pd.DataFrame:
    """Per study: its settings, the held-out pretext accuracy (%, chance ``1 / 256``) and the kNN probe's
    mean AUROC (%) of the encoder at initialisation, at the best epoch and at the last, and the images
    per second of the device it ran on; given ``images_per_s`` (a pretraining's training images/s on
    another machine), the minutes one such pretraining would take there."""
    frame = load_studies(SLUG, root)
    histories = load_histories(SLUG, root)
    rows = []
    for _, row in frame[frame["experiment"] == "pretrain"].iterrows():
        history = histories[histories["study"] == row["study"]]
        epochs = int(row["params.pretrain_epochs"])
        images = epochs * int(row["params.n_unlabeled"])
        entry = {
            "study": row["study"], "pretraining": f"{row['params.method']}, {_describe(row)}", "epochs": epochs,
            "pretext at init %": 100 * row["metrics.init_pretext_accuracy"],
            "pretext best %": 100 * history["val/pretext_accuracy"].max(),
            "pretext last %": 100 * row["metrics.heldout_pretext_accuracy"],
            "kNN AUROC at init %": 100 * row["metrics.init_knn_auroc"],
            "kNN AUROC last %": 100 * row["metrics.knn_auroc"],
            f"images/s ({row['device']})": row["metrics.images_per_s"],
        }
        if images_per_s:
            entry["minutes per pretraining here"] = images / images_per_s / 60
        rows.append(entry)
    table = pd.DataFrame(rows).sort_values(["pretraining", "epochs"]).set_index("study")
    return table.round(1)


def development_figure(root: str | Path | None = None):
    """Held-out pretext accuracy and kNN probe per pretraining epoch, one line per study; dashed: the
    evidence standard's pretext gate (50%); dotted: chance (1 / 256)."""
    histories = load_histories(SLUG, root)
    frame = load_studies(SLUG, root).set_index("study")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for study, history in histories.groupby("study", sort=True):
        row = frame.loc[study]
        label = f"{int(row['params.pretrain_epochs'])} epochs, {_describe(row)}"
        axes[0].plot(history["epoch"], 100 * history["val/pretext_accuracy"], label=label)
        axes[1].plot(history["epoch"], 100 * history["val/knn_auroc"], label=label)
    axes[0].axhline(100 * PRETEXT_LEARNED, ls="--", c="grey", lw=1)
    axes[0].axhline(100 / PRETEXT_EVAL_IMAGES, ls=":", c="grey", lw=1)
    axes[1].axhline(100 * frame["metrics.init_knn_auroc"].mean(), ls=":", c="grey", lw=1)
    axes[0].set(xlabel="pretraining epoch", ylabel="held-out pretext accuracy %")
    axes[1].set(xlabel="pretraining epoch", ylabel="kNN probe, validation mean AUROC %")
    axes[1].legend(fontsize=7, loc="lower right")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> None:
    study_cli(__doc__.splitlines()[0], STUDIES, run_study, argv)


if __name__ == "__main__":
    main()
