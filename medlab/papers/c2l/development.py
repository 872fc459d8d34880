"""Chapter 2's development studies: how far the pretext task gets, what holds it back, and what the
demo's pretraining and fine-tuning are chosen from, made on the development data seed (7, never the
book's 2020).

Every study changes a few of the demo's earlier settings (:data:`EARLIER_DEMO`: 4 pretraining epochs
at rate 0.06 with the official code's views, 12 fine-tuning epochs): MoCo (C2L without mixup) with
other epochs, views, rate, queue, temperature, batch, momentum or width, one seed each; the demo's
whole grid (MoCo and C2L, fine-tuned and probed, three or seven seeds) with longer pretraining at a
smaller rate, with milder views or flips only, and longer fine-tuning (``flips30ft20`` is what the
demo now runs); and the linear probe's positive control (the probe of a backbone fine-tuned from
scratch, beside a random backbone's, three seeds).

Their records ship with the package (``medlab/resources/development/c2l/<study>/``); the 30-, 50- and
100-epoch one-pretraining studies and ``grid50`` were made on one GPU (mixed precision), the others on
a 2-core CPU (each record names its device). To make one again, on any device::

    python -m medlab.papers.c2l.development mocomild100 --root /tmp/c2l-development
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd

from medlab import development
from medlab.development import DEVELOPMENT_DATA_SEED, load_histories, load_studies, study_cli
from medlab.experiment import Job, job
from medlab.report import paired

from .config import SLUG, Settings, settings
from .report import INIT_LABELS
from .runs import PRETEXT_EVAL_IMAGES, SUPERVISED, grid, pretrain_job

OFFICIAL_VIEWS = {"crop_scale": 0.2, "rotation": 10.0, "jitter": 0.4, "cutout_holes": 3}  # the official code's
MILD_VIEWS = {"crop_scale": 0.6, "rotation": 5.0, "jitter": 0.2, "cutout_holes": 0}  # crops of 60-100%, +-5 degrees, no Cutout
NO_VIEWS = {"crop_scale": 1.0, "rotation": 0.0, "jitter": 0.0, "cutout_holes": 0}  # the whole image, flipped or not
SCALED_RATE = {"pretrain_lr": 0.015}  # the paper's 0.03 at batch 128, scaled linearly to batch 64
# the demo's pretraining and fine-tuning length before the flips* studies chose the present ones:
# every study below is a change from them, so that its records keep meaning what they measured
EARLIER_DEMO = {"pretrain_epochs": 4, "pretrain_lr": 0.06, **OFFICIAL_VIEWS, "finetune_epochs": 12}
GRID = "grid"  # a study that runs the demo's whole grid rather than one pretraining
CONTROL = "control"  # a study of the linear probe's positive control (no pretraining)
# study: (pretraining method, GRID or CONTROL, and the settings changed from EARLIER_DEMO)
STUDIES: dict[str, tuple[str, dict[str, Any]]] = {
    "moco30": ("moco", {"pretrain_epochs": 30}),
    "moco100": ("moco", {"pretrain_epochs": 100}),
    "mocoq256": ("moco", {"pretrain_epochs": 100, "queue_size": 256}),
    "mocomild30": ("moco", {"pretrain_epochs": 30, **MILD_VIEWS}),
    "mocomild100": ("moco", {"pretrain_epochs": 100, **MILD_VIEWS}),
    # a quarter of the earlier demo's rate (the paper's 0.03 at batch 128, scaled linearly to batch 64 is 0.015)
    "grid50": (GRID, {"pretrain_epochs": 50, **SCALED_RATE, **MILD_VIEWS}),
    # what tells two synthetic patients apart: each part of the mild views alone, 10 epochs
    "views10flip": ("moco", {"pretrain_epochs": 10, **SCALED_RATE, **NO_VIEWS}),
    "views10crop": ("moco", {"pretrain_epochs": 10, **SCALED_RATE, **NO_VIEWS, "crop_scale": MILD_VIEWS["crop_scale"]}),
    "views10jitter": ("moco", {"pretrain_epochs": 10, **SCALED_RATE, **NO_VIEWS, "jitter": MILD_VIEWS["jitter"]}),
    "views10mild": ("moco", {"pretrain_epochs": 10, **SCALED_RATE, **MILD_VIEWS}),
    # the optimiser and the network instead: one change each from mild views at 20 epochs
    "mild20": ("moco", {"pretrain_epochs": 20, **SCALED_RATE, **MILD_VIEWS}),
    "mild20t02": ("moco", {"pretrain_epochs": 20, **SCALED_RATE, **MILD_VIEWS, "temperature": 0.2}),
    "mild20b32": ("moco", {"pretrain_epochs": 20, **SCALED_RATE, **MILD_VIEWS, "pretrain_batch_size": 32}),
    "mild20m09": ("moco", {"pretrain_epochs": 20, **SCALED_RATE, **MILD_VIEWS, "momentum": 0.9}),
    "mild20w32": ("moco", {"pretrain_epochs": 20, **SCALED_RATE, **MILD_VIEWS, "width": 32}),
    # can the linear probe read a backbone that certainly holds the findings? (the demo's fine-tuning and probe)
    "control": (CONTROL, {}),
    # the demo's grid with flips only (what tells the synthetic patients apart survives), longer, at the
    # scaled rate: what the demo's pretraining is chosen from (30 epochs, CHOSEN_STUDY)
    "flips20": (GRID, {"pretrain_epochs": 20, **SCALED_RATE, **NO_VIEWS}),
    "flips40": (GRID, {"pretrain_epochs": 40, **SCALED_RATE, **NO_VIEWS}),
    "flips30x7": (GRID, {"pretrain_epochs": 30, **SCALED_RATE, **NO_VIEWS}),
    # the same pretrainings, fine-tuned for longer: at 12 epochs the validation AUROC was still rising
    "flips30ft20": (GRID, {"pretrain_epochs": 30, **SCALED_RATE, **NO_VIEWS, "finetune_epochs": 20}),
    "flips30ft24": (GRID, {"pretrain_epochs": 30, **SCALED_RATE, **NO_VIEWS, "finetune_epochs": 24}),
}
GRID_SEEDS = {name: tuple(range(7)) for name in ("flips30x7", "flips30ft20", "flips30ft24")}  # not seeds 0, 1, 2
CHOSEN_STUDY = "flips30ft20"  # the demo pretrains and fine-tunes with its settings
GRID_STUDIES = tuple(n for n, (method, _) in STUDIES.items() if method == GRID)
PRETRAINING_STUDIES = tuple(n for n, (method, _) in STUDIES.items() if method not in (GRID, CONTROL))
# the one-pretraining studies, in the groups the chapter shows them in
LONGER_STUDIES = ("moco30", "moco100", "mocoq256", "mocomild30", "mocomild100")
VIEW_STUDIES = ("views10flip", "views10crop", "views10jitter", "views10mild")
OPTIMISER_STUDIES = ("mild20", "mild20t02", "mild20b32", "mild20m09", "mild20w32")
FLIPS_STUDIES = ("flips20", "flips40", "flips30x7", "flips30ft20", "flips30ft24")
PRETEXT_LEARNED = 0.5  # the evidence standard's gate on the held-out pretext accuracy


def study_settings(name: str) -> Settings:
    """The demo's settings with its earlier pretraining and fine-tuning (:data:`EARLIER_DEMO`) on the
    development data seed, with the study's changes (three seeds for a whole-grid or control study,
    or those of :data:`GRID_SEEDS`; one for a pretraining)."""
    if name not in STUDIES:
        raise ValueError(f"unknown development study {name!r}; expected one of {', '.join(STUDIES)}")
    method, changes = STUDIES[name]
    seeds = GRID_SEEDS.get(name, (0, 1, 2)) if method in (GRID, CONTROL) else (0,)
    return settings("demo", data_seed=DEVELOPMENT_DATA_SEED, seeds=seeds, **{**EARLIER_DEMO, **changes})


def study_jobs(name: str) -> list[Job]:
    """The study's runs: the demo's grid at the study's settings, the one pretraining, or the probe's
    positive control (fine-tuning from scratch, then probes of a random and of the fine-tuned backbone)."""
    config = study_settings(name)  # refuses an unknown study
    method = STUDIES[name][0]
    if method == CONTROL:
        fraction = config.finetune_fractions[-1]
        tuned = [job("label_efficiency", s, phase=1, stage="finetune", init="scratch", protocol="finetune", fraction=fraction) for s in config.seeds]
        probes = [
            job("label_efficiency", s, phase=2 if init == SUPERVISED else 1, stage="probe", init=init, protocol="probe", fraction=fraction)
            for init in ("scratch", SUPERVISED) for s in config.seeds
        ]
        return tuned + probes
    return grid(config) if method == GRID else [pretrain_job(method, 0)]


def run_study(name: str, root: str | Path, device: str | None = None) -> list[dict[str, Any]]:
    """Run one study; its records go to ``<root>/<name>/results/demo/c2l``."""
    return development.run_study(SLUG, study_settings(name), study_jobs(name), name, root, device)


def _pretraining_studies(frame: pd.DataFrame, studies: Sequence[str] | None = None) -> pd.DataFrame:
    """The rows of the one-pretraining studies (the whole-grid and control studies have their own
    reports), or of ``studies`` among them."""
    chosen = list(PRETRAINING_STUDIES) if studies is None else list(studies)
    wrong = [n for n in chosen if n not in PRETRAINING_STUDIES]
    if wrong:
        raise ValueError(f"not one-pretraining development studies: {wrong}")
    return frame[frame["study"].isin(chosen)]


_VIEW_KEYS = tuple(MILD_VIEWS)
_NAMED_VIEWS = {  # (crop_scale, rotation, jitter, cutout_holes) -> words
    tuple(OFFICIAL_VIEWS.values()): "the official views",
    tuple(MILD_VIEWS.values()): "mild views",
    tuple(NO_VIEWS.values()): "flips only",
    tuple((NO_VIEWS | {"crop_scale": MILD_VIEWS["crop_scale"]}).values()): "mild crops only",
    tuple((NO_VIEWS | {"jitter": MILD_VIEWS["jitter"]}).values()): "mild jitter only",
}
# other settings a study may change, and how the table names them
_OTHER_SETTINGS = {
    "pretrain_lr": "rate {:g}", "queue_size": "queue {:,.0f}", "temperature": "temperature {:g}",
    "pretrain_batch_size": "batch {:.0f}", "momentum": "key momentum {:g}", "width": "width {:.0f}",
}


def _views(row: pd.Series) -> str:
    """A pretraining record's views in words (``flips only``), or its view settings."""
    views = tuple(row[f"params.{k}"] for k in _VIEW_KEYS)
    return _NAMED_VIEWS.get(views, "views " + ", ".join(f"{k} {v:g}" for k, v in zip(_VIEW_KEYS, views)))


def _describe(row: pd.Series) -> str:
    """The study's views in words, then every other pretraining setting it changed from the demo's
    earlier settings (:data:`EARLIER_DEMO`)."""
    earlier = settings("demo", **EARLIER_DEMO)
    words = [_views(row)]
    words += [fmt.format(row[f"params.{k}"]) for k, fmt in _OTHER_SETTINGS.items() if row[f"params.{k}"] != getattr(earlier, k)]
    return ", ".join(words)


def development_table(
    root: str | Path | None = None, images_per_s: float | None = None, studies: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per study (every one-pretraining study, or ``studies``): its settings, the held-out pretext
    accuracy (%, chance ``1 / 256``) and the kNN probe's mean AUROC (%) of the encoder at
    initialisation, at the best epoch and at the last, the device it ran on and its images per second
    there; given ``images_per_s`` (a pretraining's training images/s on another machine), the minutes
    one such pretraining would take there."""
    frame = _pretraining_studies(load_studies(SLUG, root), studies)
    histories = _pretraining_studies(load_histories(SLUG, root), studies)
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
            "ran on": row["device"],
            "images/s": row["metrics.images_per_s"],
        }
        if images_per_s:
            entry["minutes per pretraining here"] = images / images_per_s / 60
        rows.append(entry)
    if not rows:
        raise FileNotFoundError(f"no records of development studies {list(studies or [])}")
    order = list(studies) if studies is not None else list(STUDIES)
    table = pd.DataFrame(rows).sort_values("study", key=lambda names: names.map(order.index)).set_index("study")
    return table.round(1)


def development_figure(root: str | Path | None = None, studies: Sequence[str] | None = None):
    """Held-out pretext accuracy and kNN probe per pretraining epoch (epoch 0: at random
    initialisation), one line per study (every one-pretraining study, or ``studies``); dashed: the
    evidence standard's pretext gate (50%); dotted: chance (1 / 256) and the random encoder's kNN probe."""
    histories = _pretraining_studies(load_histories(SLUG, root), studies)
    frame = _pretraining_studies(load_studies(SLUG, root), studies).set_index("study")
    order = list(studies) if studies is not None else list(STUDIES)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for study, history in sorted(histories.groupby("study"), key=lambda item: order.index(item[0])):
        row = frame.loc[study]
        label = f"{int(row['params.pretrain_epochs'])} epochs, {_describe(row)}"
        epochs = [0, *history["epoch"]]  # epoch 0: the encoder at random initialisation
        pretext = [row["metrics.init_pretext_accuracy"], *history["val/pretext_accuracy"]]
        knn = [row["metrics.init_knn_auroc"], *history["val/knn_auroc"]]
        axes[0].plot(epochs, [100 * v for v in pretext], label=label)
        axes[1].plot(epochs, [100 * v for v in knn], label=label)
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


def grid_study_frame(name: str = "grid50", root: str | Path | None = None) -> pd.DataFrame:
    """The records of the whole-grid study ``name``, as one frame (:func:`medlab.results.to_frame`'s
    columns): what the chapter's comparisons (``c2l.COMPARISONS``) are evaluated on."""
    if name not in GRID_STUDIES:
        raise ValueError(f"{name!r} is not a whole-grid development study; those are {', '.join(GRID_STUDIES)}")
    frame = load_studies(SLUG, root)
    rows = frame[frame["study"] == name]
    if rows.empty:
        raise FileNotFoundError(f"no records of development study {name!r} among {sorted(frame['study'].unique())}")
    return rows.reset_index(drop=True)


def grid_study_pretraining(
    name: str = "grid50", root: str | Path | None = None, images_per_s: Mapping[str, float] | None = None
) -> pd.DataFrame:
    """Per pretraining method of the whole-grid study: the held-out pretext accuracy (%, chance
    ``1 / 256``) of each seed and their mean, and the kNN probe's mean AUROC (%) at initialisation and
    at the end (means over seeds); given ``images_per_s`` (per method, a pretraining's training
    images/s on another machine), the minutes one such pretraining would take there."""
    frame = grid_study_frame(name, root)
    rows = []
    pretrainings = frame[frame["experiment"] == "pretrain"]
    for method in sorted(pretrainings["params.method"].unique(), key=list(INIT_LABELS).index):
        runs = pretrainings[pretrainings["params.method"] == method].sort_values("seed")
        epochs, pool = int(runs["params.pretrain_epochs"].iloc[0]), int(runs["params.n_unlabeled"].iloc[0])
        pretext = 100 * runs["metrics.heldout_pretext_accuracy"]
        entry = {
            "pretraining": INIT_LABELS.get(method, method), "epochs": epochs, "seeds": len(runs),
            "pretext % per seed": ", ".join(f"{v:.1f}" for v in pretext), "pretext % mean": pretext.mean(),
            "kNN AUROC at init %": 100 * runs["metrics.init_knn_auroc"].mean(),
            "kNN AUROC last %": 100 * runs["metrics.knn_auroc"].mean(),
        }
        if images_per_s and images_per_s.get(method):
            entry["minutes per pretraining here"] = epochs * pool / images_per_s[method] / 60
        rows.append(entry)
    return pd.DataFrame(rows).set_index("pretraining").round(1)


def grid_studies_summary(studies: Sequence[str] = FLIPS_STUDIES, root: str | Path | None = None) -> pd.DataFrame:
    """One row per whole-grid study: its pretraining and fine-tuning epochs, views and seeds; the
    held-out pretext accuracy of MoCo and C2L, the linear probe of a random, a MoCo and a C2L encoder,
    and the fine-tuned random initialisation, MoCo and C2L (test mean AUROC), all means over seeds in
    %; and the chapter's main comparison evaluated on the study's records
    (:data:`medlab.papers.c2l.COMPARISONS`): its difference and interval, verdict and failed gates."""
    from medlab.report import evaluate_all

    from .report import COMPARISONS

    rows = []
    for name in studies:
        frame = grid_study_frame(name, root)
        pretrain = frame[frame["experiment"] == "pretrain"]
        downstream = frame[(frame["experiment"] == "label_efficiency") & (frame["params.fraction"] == 1.0)]
        score = downstream.groupby(["params.protocol", "params.init"])["metrics.mean_auroc"].mean()
        pretext = pretrain.groupby("params.method")["metrics.heldout_pretext_accuracy"].mean()
        main = next(v for v in evaluate_all(COMPARISONS, frame) if v["main"])
        rows.append({
            "study": name, "epochs": int(pretrain["params.pretrain_epochs"].iloc[0]),
            "fine-tuning epochs": int(downstream[downstream["params.protocol"] == "finetune"]["params.finetune_epochs"].iloc[0]),
            "views": _views(pretrain.iloc[0]), "seeds": int(pretrain["seed"].nunique()),
            "pretext MoCo %": 100 * pretext["moco"], "pretext C2L %": 100 * pretext["c2l"],
            "probe random %": 100 * score["probe", "scratch"], "probe MoCo %": 100 * score["probe", "moco"],
            "probe C2L %": 100 * score["probe", "c2l"],
            "fine-tuned random %": 100 * score["finetune", "scratch"],
            "fine-tuned MoCo %": 100 * score["finetune", "moco"], "fine-tuned C2L %": 100 * score["finetune", "c2l"],
            "main: C2L - MoCo, points": f"{100 * main['diff_mean']:+.1f} [{100 * main['ci95'][0]:+.1f}, {100 * main['ci95'][1]:+.1f}]",
            "verdict": main["verdict"],
            "gates failed": ", ".join(gate for gate, passed in main["gates"].items() if not passed) or "none",
        })
    return pd.DataFrame(rows).set_index("study").round(1)


def probe_control_table(name: str = "control", root: str | Path | None = None) -> pd.DataFrame:
    """The probe's positive control: per seed, the linear probe of a random backbone beside that of the
    backbone fine-tuned from scratch on the same labels (test mean AUROC, %), the fine-tuned
    classifier's own score, and the paired difference of the two probes (95% t-interval over seeds)."""
    frame = load_studies(SLUG, root)
    rows = frame[frame["study"] == name]
    if rows.empty or SUPERVISED not in set(rows["params.init"]):
        raise FileNotFoundError(f"no records of the probe's positive control (study {name!r}, a {SUPERVISED!r} probe)")
    score = rows.assign(
        column=rows["params.protocol"].map({"finetune": "fine-tuned from scratch"}).fillna(
            rows["params.init"].map({"scratch": "probe of a random backbone", SUPERVISED: "probe of the fine-tuned backbone"})
        )
    ).pivot_table(index="seed", columns="column", values="metrics.mean_auroc")
    columns = ["probe of a random backbone", "probe of the fine-tuned backbone", "fine-tuned from scratch"]
    table = 100 * score[columns].rename_axis(columns=None)
    d = paired(rows[rows["params.protocol"] == "probe"], "mean_auroc", "params.init", SUPERVISED, "scratch")
    table.loc["mean"] = table.mean()
    table["probe difference, points"] = 100 * (score[columns[1]] - score[columns[0]])
    table.loc["mean", "probe difference, points"] = 100 * d.mean
    table["95% CI"] = ""
    table.loc["mean", "95% CI"] = f"[{100 * d.ci95[0]:+.1f}, {100 * d.ci95[1]:+.1f}]"
    return table.round(1)


def main(argv: list[str] | None = None) -> None:
    study_cli(__doc__.splitlines()[0], STUDIES, run_study, argv)


if __name__ == "__main__":
    main()
