"""Chapter 1 report: labels, figures, tables and findings, read from the runs' records only."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from medlab import metrics, plots, results
from medlab.chapter import ComparisonSpec, TableSpec
from medlab.report import paired, significance_text, spread
from medlab.results import format_mean_std

METHOD_LABELS = {
    "hard": "hard labels",
    "label_smoothing": "label smoothing",
    "ccl": "CCL-Net",
    "ccl_no_cc": "CCL-Net w/o L_cc",
    "ccl_no_soft": "CCL block + hard labels",
    "oracle_soft": "true-similarity smoothing",
}
METRIC_LABELS = {
    "balanced_accuracy": "bal. acc. %",
    "accuracy": "acc. %",
    "macro_f1": "macro F1 %",
    "macro_auroc": "AUROC %",
    "ece": "ECE",
    "ccl_correlation_spearman": "ρ(R, truth)",
    "classifier_cosine_spearman": "ρ(W cos, truth)",
}
PERCENT = ("balanced_accuracy", "accuracy", "macro_f1", "macro_auroc")

TABLES = (
    TableSpec(
        experiments=("comparison", "ablation"),
        by=("params.backbone", "params.method"),
        metrics=("balanced_accuracy", "accuracy", "macro_f1", "ece"),
        percent=("balanced_accuracy", "accuracy", "macro_f1"),
        labels={"params.method": METHOD_LABELS},
        order={"params.backbone": None, "params.method": list(METHOD_LABELS)},
        names=METRIC_LABELS,
        caption="Test-set balanced accuracy, accuracy and macro F1 (%), and expected calibration error.",
    ),
)
COMPARISONS: tuple[ComparisonSpec, ...] = ()


def correlation_summary(records: Sequence[Mapping[str, Any]], key: str = "ccl_correlation") -> np.ndarray:
    """The mean over runs of a learned class-similarity matrix stored in the records' artifacts."""
    mats = [np.asarray(r["artifacts"][key]) for r in records if key in r.get("artifacts", {})]
    if not mats:
        raise ValueError(f"no record holds the matrix {key!r}")
    return np.mean(mats, axis=0)


def curves_figure(records: Sequence[Mapping[str, Any]], backbones: Sequence[str], methods: Sequence[str]):
    """Validation balanced accuracy and training loss per epoch (mean ± std over seeds), per backbone."""
    import matplotlib.pyplot as plt

    curves = {"val/balanced_accuracy": "validation balanced accuracy", "train/cls": "training loss (classification)"}
    fig, axes = plt.subplots(len(backbones), 2, figsize=(11, 3.4 * len(backbones)), squeeze=False)
    for row, backbone_name in enumerate(backbones):
        for col, (key, label) in enumerate(curves.items()):
            series = {
                METHOD_LABELS[m]: results.history(
                    results.select(records, experiment="comparison", backbone=backbone_name, method=m), key
                )
                for m in methods
            }
            plots.curves(series, "epoch", label, title=backbone_name, ax=axes[row, col])
    fig.tight_layout()
    return fig


def reliability_figure(records: Sequence[Mapping[str, Any]], backbones: Sequence[str], methods: Sequence[str]):
    """Accuracy against confidence on the test set, pooled over seeds, per backbone."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(backbones), figsize=(4.2 * len(backbones), 4), squeeze=False)
    for ax, backbone_name in zip(axes[0], backbones):
        diagrams = {}
        for m in methods:
            runs = results.select(records, experiment="comparison", backbone=backbone_name, method=m)
            diagrams[METHOD_LABELS[m]] = metrics.pool_reliability([r["artifacts"]["reliability"] for r in runs])
        plots.reliability(diagrams, ax=ax, title=backbone_name)
    fig.tight_layout()
    return fig


def recall_table(records: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> pd.DataFrame:
    """Recall per class (%, mean over seeds) of every backbone and method of the comparison."""
    recall = pd.DataFrame(
        {
            "backbone": r["params"]["backbone"],
            "method": METHOD_LABELS[r["params"]["method"]],
            **dict(zip(classes, np.asarray(r["artifacts"]["per_class_recall"]) * 100)),
        }
        for r in results.select(records, experiment="comparison")
    )
    return recall.groupby(["backbone", "method"], sort=False)[list(classes)].mean().round(1)


def findings(frame: pd.DataFrame, metric: str = "balanced_accuracy") -> str:
    """A plain-language summary of the runs, written from their records (Markdown).

    For each backbone: CCL-Net minus each baseline, paired by seed, with a paired t-test; then how
    well the learned correlations match the truth, with and without the correlation loss.
    """
    name = metric.replace("_", " ")
    lines = []
    versus_hard = []
    comparison = frame[frame["experiment"] == "comparison"]
    for backbone_name, group in comparison.groupby("params.backbone", sort=False):
        methods = set(group["params.method"])
        if "ccl" not in methods:
            continue
        for baseline in ("hard", "label_smoothing"):
            if baseline not in methods:
                continue
            d = paired(group, metric, "params.method", "ccl", baseline)
            if baseline == "hard":
                versus_hard.append(d.mean)
            e = paired(group, "ece", "params.method", "ccl", baseline)
            lines.append(
                f"- **{backbone_name}**, CCL-Net minus {METHOD_LABELS[baseline]}: {name} "
                f"{spread(d)} (CCL-Net ahead on {d.wins} of {d.n} seeds; {significance_text(d)}); "
                f"calibration error (ECE) {spread(e, 1, '', 3)} (lower is better)."
            )
    key = "metrics.ccl_correlation_spearman"
    if key in frame:
        by_method = {m: frame[frame["params.method"] == m][key].dropna().to_numpy() for m in ("ccl", "ccl_no_cc")}
        hard = comparison[comparison["params.method"] == "hard"]["metrics.classifier_cosine_spearman"].dropna().to_numpy()
        if by_method["ccl"].size:
            text = (
                f"- Class correlations: CCL-Net's learned R agrees with the true similarity at Spearman "
                f"{format_mean_std(by_method['ccl'], 2)} ({by_method['ccl'].size} runs)"
            )
            if by_method["ccl_no_cc"].size:
                text += f"; without the correlation loss (Eq. 5) at {format_mean_std(by_method['ccl_no_cc'], 2)}"
            if hard.size:
                text += f"; the weight cosines of the hard-label classifiers at {format_mean_std(hard, 2)}"
            lines.append(text + ".")
    ablation_backbone = frame[frame["params.method"] == "oracle_soft"]["params.backbone"]
    if len(ablation_backbone):
        group = frame[frame["params.backbone"] == ablation_backbone.iloc[0]]
        if "label_smoothing" in set(group["params.method"]):
            d = paired(group, metric, "params.method", "oracle_soft", "label_smoothing")
            lines.append(
                f"- Smoothing shaped by the *true* similarity minus uniform label smoothing (same mass): "
                f"{name} {spread(d)} on {ablation_backbone.iloc[0]} (ahead on {d.wins} of {d.n} seeds)."
            )
    if versus_hard:
        above, below, n = sum(v > 0 for v in versus_hard), sum(v < 0 for v in versus_hard), len(versus_hard)
        if above == n:
            verdict = f"CCL-Net's mean {name} is above hard-label training on every backbone."
        elif below == n:
            verdict = f"CCL-Net does not beat hard-label training on this data: its mean {name} is lower on every backbone."
        else:
            verdict = f"No consistent effect: CCL-Net's mean {name} is above hard-label training on {above} of {n} backbones and below on {below}."
        lines.insert(0, f"**Overall.** {verdict}\n")
    return "\n".join(lines) if lines else "No CCL-Net runs to compare."
