"""Chapter 1 report: labels, figures, tables and findings, read from the runs' records only."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from medlab import metrics, plots, results
from medlab.chapter import ComparisonSpec, TableSpec
from medlab.report import evaluate_all, t_interval, verdicts_markdown
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

# The evidence standard (medlab.report): balanced accuracy, floor = chance over 7 balanced classes.
FLOOR, CEILING = 1 / 7, 1.0
ON_ABLATION_BACKBONE = "on_ablation_backbone"  # a column of results_frame: the run used the ablation backbone


def _spec(name: str, method: str, baseline: str, *, main: bool = False, ablation: bool = False) -> ComparisonSpec:
    return ComparisonSpec(
        name=name, metric="balanced_accuracy", column="params.method", method=method, baseline=baseline,
        floor=FLOOR, ceiling=CEILING, main=main,
        where={ON_ABLATION_BACKBONE: True} if ablation else {"experiment": "comparison"},
    )


# Main: the paper's claim, CCL-Net against hard-label training (paired by seed; with several backbones,
# as in the paper profile, each seed's difference is the mean over the backbones). The others: the
# second baseline of the comparison, and the rows of the ablation, on the ablation backbone.
COMPARISONS: tuple[ComparisonSpec, ...] = (
    _spec("CCL-Net vs hard labels", "ccl", "hard", main=True),
    _spec("CCL-Net vs label smoothing", "ccl", "label_smoothing"),
    _spec("label smoothing vs hard labels", "label_smoothing", "hard"),
    _spec("CCL block + hard labels vs hard labels", "ccl_no_soft", "hard", ablation=True),
    _spec("CCL-Net vs CCL block + hard labels", "ccl", "ccl_no_soft", ablation=True),
    _spec("CCL-Net vs CCL-Net w/o L_cc", "ccl", "ccl_no_cc", ablation=True),
    _spec("true-similarity smoothing vs label smoothing", "oracle_soft", "label_smoothing", ablation=True),
)


def results_frame(records: Sequence[Mapping[str, Any]], ablation_backbone: str) -> pd.DataFrame:
    """The runs' records as one table (:func:`medlab.results.to_frame`) with the columns the chapter
    reads: ``backbone``, ``method`` (its label) and ``on_ablation_backbone``, which the ablation's
    comparisons select (the comparison runs of that backbone are the ablation's reference rows)."""
    frame = results.to_frame(records)
    frame["backbone"] = frame["params.backbone"]
    frame["method"] = frame["params.method"].map(METHOD_LABELS)
    frame[ON_ABLATION_BACKBONE] = frame["params.backbone"] == ablation_backbone
    return frame


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


def correlation_findings(frame: pd.DataFrame) -> str:
    """How well the learned class correlations match the generator's truth (Spearman over the 21
    class pairs, mean and 95% t-interval over runs), with and without the correlation loss, beside the
    weight cosines of the hard-label classifier (Markdown; empty on real data, which has no truth)."""
    key = "metrics.ccl_correlation_spearman"
    if key not in frame or frame[key].dropna().empty:
        return ""

    def text(values: np.ndarray) -> str:
        if values.size < 2:
            return f"{values.mean():.2f} ({values.size} run)"
        lo, hi = t_interval(values)
        return f"{values.mean():.2f} (95% interval {lo:.2f} to {hi:.2f}, {values.size} runs)"

    on = frame[frame[ON_ABLATION_BACKBONE].astype(bool)] if ON_ABLATION_BACKBONE in frame else frame
    found = {m: on[on["params.method"] == m][key].dropna().to_numpy() for m in ("ccl", "ccl_no_cc")}
    hard_key = "metrics.classifier_cosine_spearman"
    hard = on[on["params.method"] == "hard"][hard_key].dropna().to_numpy() if hard_key in on else np.array([])
    if not found["ccl"].size:
        return ""
    line = f"- Class correlations: CCL-Net's learned R ranks the class pairs like the true similarity at Spearman {text(found['ccl'])}"
    if found["ccl_no_cc"].size:
        line += f"; without the correlation loss (Eq. 5) at {text(found['ccl_no_cc'])}"
    if hard.size:
        line += f"; the weight cosines of the hard-label classifier at {text(hard)}"
    return line + "."


def findings(frame: pd.DataFrame) -> str:
    """What the runs show, in words that follow the intervals (Markdown): the verdicts of the declared
    :data:`COMPARISONS` (:func:`medlab.report.verdicts_markdown`), then whether the learned class
    correlations match the truth. ``frame`` is :func:`results_frame`'s table."""
    if "params.method" not in frame or "ccl" not in set(frame["params.method"]):
        return "No CCL-Net runs to compare."
    if ON_ABLATION_BACKBONE not in frame:
        ablation = frame.loc[frame["params.method"] == "ccl_no_cc", "params.backbone"]
        frame = frame.assign(**{ON_ABLATION_BACKBONE: frame["params.backbone"].isin(set(ablation))})
    lines = [verdicts_markdown(evaluate_all(COMPARISONS, frame), METHOD_LABELS)]
    correlation = correlation_findings(frame)
    if correlation:
        lines.append(correlation)
    return "\n".join(lines)
