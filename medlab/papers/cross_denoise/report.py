"""Chapter 4 report: labels, the benchmark tables, the declared comparisons (the evidence standard of
:mod:`medlab.report`), and the tables, figures and findings read from the runs' records."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from medlab import results
from medlab.chapter import ComparisonSpec, TableSpec
from medlab.report import evaluate_all, t_interval, verdicts_markdown

from .config import METHODS, MIXED, NOISE_KINDS

METHOD_LABELS = {
    "single": "single network (CE + Dice)",
    "coteaching": "peer selection (Co-teaching)",
    "random_drop": "two networks, random drop (control)",
    "no_cross_learning": "peer selection + noise-tolerant loss",
    "cross_denoise": "cross-denoising (full)",
    "agreement": "cross-denoising, agreement variant",
    "no_selection": "- peer sample selection",
    "no_noise_tolerant": "- noise-tolerant loss",
    "global_confidence": "cross learning with one global threshold",
}
METRIC_NAMES = {
    "mean_dice": "mean Dice %",
    "dice/optic disc": "Dice disc %",
    "dice/optic cup": "Dice cup %",
    "hd95/optic disc": "HD95 disc (px)",
    "hd95/optic cup": "HD95 cup (px)",
    "vcdr_error": "vCDR abs. error",
}
PERCENT = ("mean_dice", "dice/optic disc", "dice/optic cup")
SOURCE_NAMES = {"source/mean_dice": "mean Dice %", "source/dice/optic disc": "Dice disc %", "source/dice/optic cup": "Dice cup %",
                "source/vcdr_error": "vCDR abs. error"}
COLOURS = {"single": "tab:gray", "coteaching": "tab:blue", "random_drop": "tab:olive", "no_cross_learning": "tab:green",
           "cross_denoise": "tab:red", "agreement": "tab:purple"}

# The primary metric: the mean of the disc and cup Dice on the target test images (what the paper's
# task scores, and what the main corruption of the demo hurts; see the deviation ledger). An empty
# prediction scores 0, a perfect one 1.
PRIMARY = "mean_dice"
FLOOR, CEILING = 0.0, 1.0

_BY_METHOD = dict(percent=PERCENT, labels={"params.method": METHOD_LABELS}, names=METRIC_NAMES)
TABLES = (
    TableSpec(
        experiments=("main",), by=("params.method",), metrics=tuple(METRIC_NAMES),
        order={"params.method": list(METHOD_LABELS)}, **_BY_METHOD,
        caption="Target-domain segmentation at the chapter's main corruption (the profile's main_kind on main_rate of the training masks).",
    ),
    TableSpec(
        experiments=("main", "clean", "noise_rate"), by=("params.method", "params.rate"), metrics=tuple(METRIC_NAMES),
        order={"params.method": list(METHOD_LABELS), "params.rate": None}, **_BY_METHOD,
        caption="Target-domain segmentation against the share of corrupted training masks (the main kind of corruption).",
    ),
    TableSpec(
        experiments=("noise_kind",), by=("params.kind", "params.method"), metrics=tuple(METRIC_NAMES),
        order={"params.kind": [*NOISE_KINDS, MIXED], "params.method": list(METHOD_LABELS)}, **_BY_METHOD,
        caption="Target-domain segmentation by kind of corruption at the profile's kind_rate (paper profile; the main kind "
        "at that rate is in the noise-rate table).",
    ),
)


AXIS_RATES = (0.25, 0.5)  # the noise-rate axis of the demo and paper profiles (noise_rates)


def _spec(name: str, method: str, baseline: str, *, main: bool = False, metric: str = PRIMARY,
          experiment: str = "main") -> ComparisonSpec:
    return ComparisonSpec(
        name=name, metric=metric, column="params.method", method=method, baseline=baseline, floor=FLOOR,
        ceiling=CEILING, main=main, where={"experiment": experiment},
    )


COMPARISONS: tuple[ComparisonSpec, ...] = (
    _spec("peer selection vs single network", "coteaching", "single", main=True),
    _spec("cross-denoising (full) vs single network", "cross_denoise", "single"),
    _spec("peer selection vs random drop", "coteaching", "random_drop"),
    _spec("random drop (two networks) vs single network", "random_drop", "single"),
    _spec("noise-tolerant loss on top of peer selection", "no_cross_learning", "coteaching"),
    _spec("cross learning on top (full vs without it)", "cross_denoise", "no_cross_learning"),
    _spec("agreement variant vs full cross-denoising", "agreement", "cross_denoise"),
    _spec("agreement variant vs single network", "agreement", "single"),
    _spec("agreement variant vs the same peers without cross learning", "agreement", "no_cross_learning"),
    _spec("peer selection vs single network, source test set", "coteaching", "single", metric=f"source/{PRIMARY}"),
    _spec("cross-denoising vs single network, clean masks", "cross_denoise", "single", experiment="clean"),
    *(
        ComparisonSpec(
            name=f"peer selection vs single network, {rate:.0%} eroded (noise-rate axis)", metric=PRIMARY,
            column="params.method", method="coteaching", baseline="single", floor=FLOOR, ceiling=CEILING,
            where={"experiment": "noise_rate", "params.rate": rate},
        )
        for rate in AXIS_RATES
    ),
    ComparisonSpec(
        name="the corruption's damage (single network, corrupted vs clean masks)", metric=PRIMARY, column="experiment",
        method="main", baseline="clean", floor=FLOOR, ceiling=CEILING, where={"params.method": "single"},
    ),
)


def metrics_table(rows: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """The target-domain metrics of ``rows`` (a records frame), mean ± std over seeds per ``by`` group."""
    return results.summarize(rows, list(METRIC_NAMES), by=tuple(by), percent=PERCENT, names=METRIC_NAMES)


def source_table(rows: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """The same networks on the source domain's test images (clean masks), mean ± std over seeds."""
    return results.summarize(rows, list(SOURCE_NAMES), by=tuple(by), percent=[k for k in SOURCE_NAMES if "dice" in k],
                             names=SOURCE_NAMES)


def results_frame(records) -> pd.DataFrame:
    """The runs' records as one table (:func:`medlab.results.to_frame`) with the columns the chapter
    shows: ``method`` (its label), ``rate %`` and ``kind``."""
    frame = results.to_frame(records)
    frame = frame[frame["experiment"] != "throughput"].copy() if "experiment" in frame else frame
    frame["method"] = frame["params.method"].map(METHOD_LABELS)
    frame["rate %"] = (frame["params.rate"] * 100).round().astype(int)
    frame["kind"] = frame["params.kind"]
    return frame


def noise_axis_figure(frame: pd.DataFrame, kind: str, methods: Sequence[str], metrics: Sequence[str] = (PRIMARY, "dice/optic disc", "dice/optic cup")):
    """``metrics`` on the target test images against the share of training masks corrupted by ``kind``,
    one line per method: the mean over seeds with its 95% t-interval (seaborn)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    rows = frame[(frame["params.kind"] == kind) & frame["params.method"].isin(list(methods))]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        data = pd.DataFrame({
            "corrupted %": rows["params.rate"] * 100, "value": rows[f"metrics.{metric}"] * 100,
            "method": rows["params.method"].map(METHOD_LABELS),
        })
        sns.pointplot(
            data=data, x="corrupted %", y="value", hue="method", native_scale=True, errorbar=t_interval,
            dodge=0.25 if data["method"].nunique() > 1 else False,
            capsize=0.15, ax=ax, palette={METHOD_LABELS[m]: COLOURS.get(m, "k") for m in methods},
            hue_order=[METHOD_LABELS[m] for m in methods if METHOD_LABELS[m] in set(data["method"])],
        )
        ax.set_xlabel(f"training masks corrupted by {kind} (%)")
        ax.set_ylabel(f"target {METRIC_NAMES[metric]}")
        ax.grid(alpha=0.3)
        if ax is not axes[0][0] and ax.get_legend() is not None:
            ax.get_legend().remove()
    if axes[0][0].get_legend() is not None:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


PSEUDO_NAMES = {
    "pseudo/kept": "pixels kept %", "pseudo/accuracy": "kept pixels right %", "pseudo/cup_precision": "kept cup pixels right %",
    "pseudo/cup_coverage": "true cup kept %", "pseudo/cup_confidence": "peer's confidence on kept cup %",
}


def pseudo_label_table(frame: pd.DataFrame) -> pd.DataFrame | None:
    """The pseudo-labels of Eq. (6) the trained peers would hand each other on the target training
    images (their masks are read only to measure), per method and share of corrupted masks: mean ± std
    over seeds (%); None without a two-network run. A run whose peers would keep no cup pixel (the
    agreement variant can) has no cup precision and is left out."""
    if "metrics.pseudo/cup_precision" not in frame:
        return None
    rows = frame[frame["metrics.pseudo/cup_precision"].notna()]
    if rows.empty:
        return None
    return results.summarize(rows, list(PSEUDO_NAMES), by=("method", "rate %"), percent=list(PSEUDO_NAMES), names=PSEUDO_NAMES)


def pseudo_history(records, rate: float, kind: str, methods: Sequence[str]) -> pd.DataFrame:
    """Per epoch, the share (%) of the cup pixels the peers kept as pseudo-labels during training that
    were cup in the (never used) target mask, mean over peers and seeds (NaN before cross learning)."""
    import warnings

    columns = {}
    for method in methods:
        chosen = results.select(records, method=method, rate=rate, kind=kind)
        if chosen and METHODS[method].cross_learning:
            curves = np.stack([results.history(chosen, f"train/pseudo_cup_accuracy_{p}") for p in "ab"])
            with warnings.catch_warnings():  # the epochs before cross learning have no value
                warnings.simplefilter("ignore", RuntimeWarning)
                columns[METHOD_LABELS[method]] = np.round(np.nanmean(curves, axis=(0, 1)) * 100, 1)
    table = pd.DataFrame(columns)
    table.index = np.arange(1, len(table) + 1)
    table.index.name = "epoch"
    return table


# ---------------------------------------------------------------------------------------------
# What the runs show


def findings(frame: pd.DataFrame, verdicts: list[dict] | None = None) -> str:
    """"What the runs show" in words that follow the intervals: the verdicts of :data:`COMPARISONS`
    (``verdicts``, e.g. from :func:`medlab.report.chapter_verdicts`, else evaluated on ``frame``) by
    :func:`medlab.report.verdicts_markdown`, then how well the peers' selection avoided the corrupted
    masks at the main corruption."""
    lines = [verdicts_markdown(evaluate_all(COMPARISONS, frame) if verdicts is None else verdicts, METHOD_LABELS)]
    if "metrics.picked_corrupted" in frame:
        picks = frame[(frame["experiment"] == "main") & frame["metrics.picked_corrupted"].notna()]
        for method, group in picks.groupby("params.method", sort=False):
            share, rate = group["metrics.picked_corrupted"], float(group["params.rate"].iloc[0])
            lo, hi = t_interval(share.to_numpy())
            interval = f" (95% interval {lo:.0%} to {hi:.0%})" if np.isfinite(lo) else ""
            lines.append(
                f"- **Selection, {METHOD_LABELS.get(method, method)}**: after the warm-up, {share.mean():.0%}{interval} of "
                f"the masks the networks handed each other were corrupted, against {rate:.0%} among those offered."
            )
    return "\n".join(lines)
