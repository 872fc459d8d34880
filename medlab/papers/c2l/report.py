"""Chapter 2 report: labels, figures, tables and findings, read from the runs' records (the feature
maps reopen the encoders the pretraining records point to)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from medlab import plots, results, runtime
from medlab.chapter import ComparisonSpec, TableSpec
from medlab.data.subsets import RepeatedSubset
from medlab.report import paired, spread

from .config import Settings
from .method import Encoder
from .runs import ChapterData, encoder_of, extract_features, targets_of

INIT_LABELS = {
    "scratch": "from scratch",
    "imagenet": "ImageNet",
    "moco": "MoCo (no mixup)",
    "c2l": "C2L",
    "c2l_no_instance": "C2L w/o l(q, k)",
    "c2l_no_mixed": "C2L w/o l(q~, k~)",
    "c2l_no_mixed_target": "C2L w/o l(q~, k_mix)",
    "c2l_queue": "C2L, other queue size",
    "c2l_momentum": "C2L, other momentum",
}
PROTOCOL_LABELS = {"finetune": "fine-tuned", "probe": "linear probe"}

TABLES = (
    TableSpec(
        experiments=("label_efficiency",),
        by=("params.init", "params.protocol", "params.fraction"),
        metrics=("mean_auroc",),
        percent=("mean_auroc",),
        labels={
            "params.init": INIT_LABELS,
            "params.protocol": PROTOCOL_LABELS,
            "params.fraction": {0.01: "1%", 0.1: "10%", 1.0: "100%"},
        },
        order={"params.protocol": ["finetune", "probe"], "params.init": list(INIT_LABELS), "params.fraction": None},
        names={"mean_auroc": "mean AUROC %"},
        caption="Test mean AUROC over the 14 findings (%) by initialisation, protocol and share of the labels.",
    ),
)
COMPARISONS: tuple[ComparisonSpec, ...] = ()


def variant_label(config: Settings) -> dict[str, str]:
    """Display names of the pretraining methods, with the ablation's queue size and momentum."""
    labels = dict(INIT_LABELS)
    labels["c2l"] = f"C2L (queue {config.queue_size}, m {config.momentum})"
    labels["c2l_queue"] = f"C2L, queue {config.ablation_queue_size}"
    labels["c2l_momentum"] = f"C2L, m {config.ablation_momentum}"
    labels["moco"] = f"MoCo (queue {config.queue_size}, m {config.momentum})"
    return labels


def downstream_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The fine-tuning and probing rows of ``frame``, with display columns ``init``, ``protocol`` and
    ``labels`` (the share of the labels, e.g. ``10%``)."""
    downstream = frame[frame["experiment"].isin(["label_efficiency", "ablation"])].copy()
    downstream["init"] = downstream["params.init"].map(INIT_LABELS)
    downstream["protocol"] = downstream["params.protocol"]
    downstream["labels"] = downstream["params.fraction"].map(lambda f: f"{f:.0%}")
    return downstream


def pretraining_figure(records: Sequence[Mapping[str, Any]], methods: Sequence[str]):
    """The pretraining loss (Eq. 5) and pretext accuracy per epoch, mean ± std over seeds."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, (key, label) in zip(axes, {"train/loss": "pretraining loss", "train/accuracy": "pretext accuracy"}.items()):
        series = {
            INIT_LABELS[m]: results.history(results.select(records, experiment="pretrain", method=m), key)
            for m in methods
        }
        plots.curves(series, "epoch", label, ax=ax)
    fig.tight_layout()
    return fig


def efficiency_table(downstream: pd.DataFrame, protocol: str, fractions: Sequence[float]) -> pd.DataFrame:
    """Test mean AUROC (%, mean ± std over seeds) per initialisation and share of the labels."""
    rows = downstream[(downstream["experiment"] == "label_efficiency") & (downstream["protocol"] == protocol)]
    table = results.summarize(rows, ["mean_auroc"], by=("init", "labels"), percent=["mean_auroc"])
    return table["mean_auroc"].unstack("labels")[[f"{f:.0%}" for f in fractions]]


def label_efficiency_figure(frame: pd.DataFrame):
    """Mean AUROC against the share of labels, per initialisation; fine-tuning solid, probe dashed."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (init, protocol), group in frame.groupby(["params.init", "params.protocol"], sort=False):
        stats = group.groupby("params.fraction")["metrics.mean_auroc"].agg(["mean", "std"]).sort_index()
        ax.errorbar(
            stats.index * 100, stats["mean"] * 100, yerr=stats["std"].fillna(0) * 100, capsize=3,
            linestyle="-" if protocol == "finetune" else "--", marker="o",
            label=f"{INIT_LABELS.get(init, init)}, {PROTOCOL_LABELS[protocol]}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("labeled images used (%)")
    ax.set_ylabel("test mean AUROC (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def per_finding_table(downstream: pd.DataFrame, classes: Sequence[str], fraction: float) -> pd.DataFrame:
    """Test AUROC per finding (%, mean over seeds) after fine-tuning on ``fraction`` of the labels,
    one column per initialisation."""
    rows = downstream[
        (downstream["experiment"] == "label_efficiency")
        & (downstream["protocol"] == "finetune")
        & (downstream["params.fraction"] == fraction)
    ]
    columns = [f"metrics.auroc/{name}" for name in classes]
    table = (rows.groupby("init", sort=False)[columns].mean() * 100).round(1)
    table.columns = [name.replace("_", " ") for name in classes]
    return table.T


def project_features(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 2-D t-SNE embedding of features (scikit-learn), standardised first."""
    from sklearn.manifold import TSNE

    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
    return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(features)


def feature_map_figure(
    records: Sequence[Mapping[str, Any]],
    chapter_data: ChapterData,
    *,
    device: torch.device,
    seed: int = 0,
    max_images: int = 800,
):
    """t-SNE of test-image backbone features for a random encoder and the MoCo and C2L encoders that
    the pretraining records of ``seed`` saved, coloured by finding (images with exactly one finding,
    and images with none)."""
    import matplotlib.pyplot as plt

    pretrained = {
        m: found[0]
        for m in ("moco", "c2l")
        if (found := results.select(records, experiment="pretrain", method=m, seed=seed))
    }
    if not pretrained:
        raise ValueError(f"no MoCo or C2L pretraining record of seed {seed} among the {len(records)} records")
    params = next(iter(pretrained.values()))["params"]
    labels = targets_of(chapter_data.test).numpy()
    single = np.flatnonzero(labels.sum(1) <= 1)[:max_images]
    groups = np.where(labels[single].sum(1) == 0, -1, labels[single].argmax(1))
    subset = RepeatedSubset(chapter_data.test, single)
    inits = ["scratch", *pretrained]
    fig, axes = plt.subplots(1, len(inits), figsize=(4.6 * len(inits), 4.4), squeeze=False)
    shown = [-1, *[k for k in np.argsort(-np.bincount(groups[groups >= 0], minlength=len(chapter_data.classes)))[:6]]]
    for ax, init in zip(axes[0], inits):
        runtime.seed_everything(seed)
        if init == "scratch":
            encoder = Encoder(params["backbone"], width=params["width"], feature_dim=params["feature_dim"])
        else:
            encoder = encoder_of(pretrained[init])
        points = project_features(extract_features(encoder.to(device), subset, device).numpy(), seed)
        for k in shown:
            mask = groups == k
            name = "no finding" if k == -1 else chapter_data.classes[k].replace("_", " ")
            ax.scatter(points[mask, 0], points[mask, 1], s=5, alpha=0.6 if k >= 0 else 0.25,
                       color="lightgrey" if k == -1 else None, label=name)
        ax.set_title(INIT_LABELS[init])
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, -1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


def ablation_table(frame: pd.DataFrame, config: Settings) -> pd.DataFrame:
    """The linear probe at the ablation's share of the labels for C2L, MoCo and every ablation
    variant, beside the pretext accuracy of the last pretraining epoch (%, mean ± std over seeds)."""
    probe = frame[
        (frame["params.protocol"] == "probe")
        & (frame["params.fraction"] == config.ablation_fraction)
        & frame["params.init"].isin(["c2l", "moco", *config.ablation_methods])
    ]
    pretext = frame[frame["experiment"] == "pretrain"][["variant", "seed", "metrics.accuracy"]]
    pretext.columns = ["params.init", "seed", "metrics.pretext_accuracy"]
    ablation = probe[["params.init", "seed", "metrics.mean_auroc"]].merge(pretext, on=["params.init", "seed"])
    ablation["method"] = ablation["params.init"].map(variant_label(config))
    return results.summarize(
        ablation,
        ["mean_auroc", "pretext_accuracy"],
        by=("method",),
        percent=["mean_auroc", "pretext_accuracy"],
        names={"mean_auroc": "probe mean AUROC %", "pretext_accuracy": "pretext accuracy %"},
    )


def findings(frame: pd.DataFrame) -> str:
    """A plain-language summary written from the downstream records (Markdown): C2L against training
    from scratch and against MoCo, per protocol and share of labels, paired by seed (with a paired
    t-test); then the ablation."""
    lines: list[str] = []
    versus_scratch: list[float] = []
    versus_moco: list[float] = []
    efficiency = frame[frame["experiment"] == "label_efficiency"]
    for (protocol, fraction), group in efficiency.groupby(["params.protocol", "params.fraction"], sort=True):
        inits = set(group["params.init"])
        if "c2l" not in inits:
            continue
        parts = []
        for baseline in ("scratch", "moco", "imagenet"):
            if baseline not in inits:
                continue
            d = paired(group, "mean_auroc", "params.init", "c2l", baseline)
            if d.n == 0:
                continue
            if baseline == "scratch" and protocol == "finetune":
                versus_scratch.append(d.mean)
            if baseline == "moco" and protocol == "finetune":
                versus_moco.append(d.mean)
            test = "" if np.isnan(d.p_value) else f", p = {d.p_value:.2f}"
            parts.append(f"{spread(d)} vs {INIT_LABELS[baseline]} (ahead on {d.wins}/{d.n} seeds{test})")
        if parts:
            heading = f"- **{PROTOCOL_LABELS[protocol]}, {fraction:.0%} of the labels**, C2L mean AUROC "
            lines.append(heading + "; ".join(parts) + ".")
    ablation = frame[(frame["params.protocol"] == "probe")]
    if "ablation" in set(frame["experiment"]):
        fraction = frame[frame["experiment"] == "ablation"]["params.fraction"].iloc[0]
        group = ablation[ablation["params.fraction"] == fraction]
        if "c2l" in set(group["params.init"]):
            drops = []
            for method in sorted(set(group["params.init"]) - {"c2l", "scratch", "imagenet"}):
                d = paired(group, "mean_auroc", "params.init", method, "c2l")
                if d.n:
                    drops.append((d.mean, f"{INIT_LABELS.get(method, method)} {spread(d)}"))
            if drops:
                drops.sort()
                lines.append(
                    f"- **Ablation** (linear probe, {fraction:.0%} of the labels), each variant minus full C2L, "
                    "most harmful first: " + "; ".join(text for _, text in drops) + "."
                )
    if versus_scratch:
        above = sum(v > 0 for v in versus_scratch)
        n = len(versus_scratch)
        verdict = "After fine-tuning, C2L's mean AUROC is "
        if above == n:
            verdict += "above training from scratch at every share of the labels"
        elif above == 0:
            verdict += "not above training from scratch at any share of the labels"
        else:
            verdict += f"above training from scratch at {above} of {n} shares of the labels"
        if versus_moco:
            above_moco = sum(v > 0 for v in versus_moco)
            shares = f"{above_moco} of {len(versus_moco)} shares"
            verdict += f"; against MoCo without mixup, C2L's mean is ahead at {shares}."
        lines.insert(0, f"**Overall.** {verdict}\n")
    return "\n".join(lines) if lines else "No C2L runs to compare."
