"""Shared reporting: paired comparisons between methods over seeds, their intervals, and the words
that go with them. Chapters' ``report.py`` modules build their findings from these helpers, so every
chapter states a difference the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Paired:
    """``method - baseline`` on one metric, paired by seed."""

    values: np.ndarray  # one difference per seed present for both
    mean: float
    std: float  # sample standard deviation (ddof=1); NaN with fewer than two seeds
    n: int
    wins: int  # seeds where the method is ahead (difference > 0)
    ci95: tuple[float, float]  # t-interval of the mean difference; NaN with fewer than two seeds
    p_value: float  # two-sided one-sample t-test of the differences against 0; NaN when undefined

    @property
    def half_width(self) -> float:
        lo, hi = self.ci95
        return (hi - lo) / 2


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean of ``values`` (NaN, NaN with fewer than two values)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if values.size < 2:
        return float("nan"), float("nan")
    mean, sem = values.mean(), values.std(ddof=1) / np.sqrt(values.size)
    if sem == 0:
        return float(mean), float(mean)
    half = stats.t.ppf(0.5 + level / 2, values.size - 1) * sem
    return float(mean - half), float(mean + half)


def paired(frame: pd.DataFrame, metric: str, column: str, method: Any, baseline: Any) -> Paired:
    """``method - baseline`` on ``metrics.<metric>``, paired by seed, over the rows of ``frame`` whose
    ``column`` is ``method`` or ``baseline``."""
    from scipy import stats

    values = frame.pivot_table(index="seed", columns=column, values=f"metrics.{metric}", aggfunc="mean")
    if method not in values or baseline not in values:
        raise KeyError(f"{column} has no {method!r} or {baseline!r}; it has {sorted(values.columns, key=str)}")
    diff = (values[method] - values[baseline]).dropna().to_numpy(dtype=float)
    n = int(diff.size)
    p_value = float("nan")
    if n > 1 and diff.std(ddof=1) > 0:
        p_value = float(stats.ttest_1samp(diff, 0.0).pvalue)
    return Paired(
        values=diff,
        mean=float(diff.mean()) if n else float("nan"),
        std=float(diff.std(ddof=1)) if n > 1 else float("nan"),
        n=n,
        wins=int((diff > 0).sum()),
        ci95=t_interval(diff),
        p_value=p_value,
    )


def spread(diff: Paired | Mapping[str, Any], scale: float = 100.0, unit: str = " points", digits: int = 1) -> str:
    """``+1.2 points ± 0.8`` (mean ± sample std of the paired differences, scaled)."""
    mean = diff.mean if isinstance(diff, Paired) else diff["mean"]
    std = diff.std if isinstance(diff, Paired) else diff["std"]
    n = diff.n if isinstance(diff, Paired) else diff["n"]
    text = f"{mean * scale:+.{digits}f}{unit}"
    if n > 1:
        text += f" ± {std * scale:.{digits}f}"
    return text


def significance_text(diff: Paired) -> str:
    """``paired t-test p = 0.12``, or why there is none."""
    if np.isnan(diff.p_value):
        return "too few seeds for a test" if diff.n < 2 else "no spread between seeds"
    return f"paired t-test p = {diff.p_value:.2f}"


# ---------------------------------------------------------------------------------------------
# The evidence standard: gates, intervals and verdicts of a chapter's declared comparisons

LEARNED = 0.5  # the baseline must be at least halfway from floor to ceiling ...
SATURATED = 0.95  # ... and below 95% of the way
TARGET_HALF_WIDTH = 0.03  # main comparisons: 3 points of a 0-100 scale, or 3% of floor-to-ceiling
VERDICTS = ("better", "worse", "no_difference", "void")


def direction(ci95: tuple[float, float], higher_is_better: bool = True) -> str:
    """The evidence standard's rule for words (item 4): ``better`` or ``worse`` only when the 95%
    interval of method - baseline excludes zero, else ``no_difference`` (also for an undefined interval)."""
    lo, hi = ci95
    if lo > 0 or hi < 0:
        return "better" if (lo > 0) == higher_is_better else "worse"
    return "no_difference"


def _rows(frame: pd.DataFrame, where: Mapping[str, Any]) -> pd.DataFrame:
    for column, value in where.items():
        if column not in frame:
            return frame.iloc[0:0]
        frame = frame[frame[column] == value]
    return frame


def progress(value: float, floor: float, ceiling: float) -> float:
    """How far ``value`` lies from ``floor`` (0) to ``ceiling`` (1); works for lower-is-better metrics
    (floor above ceiling) too."""
    return (value - floor) / (ceiling - floor)


def target_half_width(spec: Any) -> float:
    """The precision a main comparison must reach, in the metric's units."""
    return TARGET_HALF_WIDTH if spec.percent else TARGET_HALF_WIDTH * abs(spec.ceiling - spec.floor)


def gate_passes(gate: Any, frame: pd.DataFrame) -> bool:
    """Whether a :class:`medlab.chapter.GateSpec` holds on ``frame`` (False when it has no records)."""
    values = _rows(frame, gate.where).get(f"metrics.{gate.metric}", pd.Series(dtype=float)).dropna()
    if values.empty:
        return False
    ok = True
    if gate.at_least is not None:
        ok &= bool(values.mean() >= gate.at_least)
    if gate.above is not None:
        reference = _rows(frame, gate.above).get(f"metrics.{gate.metric}", pd.Series(dtype=float)).dropna()
        ok &= bool(not reference.empty and values.mean() > reference.mean())
    return ok


def gate_reason(gate: Any, frame: pd.DataFrame) -> str:
    """Why a :class:`medlab.chapter.GateSpec` fails, with the values it compared."""
    values = _rows(frame, gate.where).get(f"metrics.{gate.metric}", pd.Series(dtype=float)).dropna()
    if values.empty:
        return f"{gate.name.replace('_', ' ')}: no records of {gate.metric}"
    parts = []
    if gate.at_least is not None:
        parts.append(f"at least {gate.at_least:.3g} needed")
    if gate.above is not None:
        reference = _rows(frame, gate.above).get(f"metrics.{gate.metric}", pd.Series(dtype=float)).dropna()
        parts.append(f"the reference's mean is {reference.mean():.3f}" if not reference.empty else "no reference records")
    return f"{gate.name.replace('_', ' ')} fails: mean {gate.metric} {values.mean():.3f} ({'; '.join(parts)})"


def evaluate(spec: Any, frame: pd.DataFrame) -> dict[str, Any]:
    """The verdict of one :class:`medlab.chapter.ComparisonSpec` on the records in ``frame``.

    The interval is the t-interval of the per-seed paired differences (seeds are the unit of
    replication: each seed redraws initialisation, batch order and augmentation, and the test set is
    fixed). Gates: the baseline learned (at least halfway from floor to ceiling) and is not saturated
    (below 95% of the way), the comparison's own gates (e.g. pretext task learned), at least two
    seeds, and for main comparisons an interval half-width within the target. Words follow the
    interval: ``better``/``worse`` only when it excludes zero, ``no_difference`` otherwise, ``void``
    when a gate fails.
    """
    rows = _rows(frame, spec.where)
    metric = f"metrics.{spec.metric}"
    out: dict[str, Any] = {
        "name": spec.name, "main": spec.main, "metric": spec.metric, "higher_is_better": spec.higher_is_better,
        "floor": spec.floor, "ceiling": spec.ceiling, "baseline": spec.baseline, "method": spec.method,
        "baseline_mean": None, "method_mean": None, "diff_mean": None, "ci95": [None, None], "n_seeds": 0,
        "n_eval": None, "gates": {}, "verdict": "void", "reason": "", "percent": spec.percent,
    }
    present = set(rows.get(spec.column, []))
    missing = [v for v in (spec.method, spec.baseline) if v not in present]
    if metric not in rows or missing:
        out["reason"] = f"no records of {', '.join(map(str, missing)) or spec.metric}"
        return out
    means = rows.groupby(spec.column)[metric].mean()
    baseline_mean, method_mean = float(means[spec.baseline]), float(means[spec.method])
    diff = paired(rows, spec.metric, spec.column, spec.method, spec.baseline)
    reached = progress(baseline_mean, spec.floor, spec.ceiling)
    gates = {
        "baseline_learned": bool(reached >= LEARNED),
        "baseline_not_saturated": bool(reached < SATURATED),
        "two_or_more_seeds": diff.n >= 2,
    }
    for gate in getattr(spec, "gates", ()):
        gates[gate.name] = gate_passes(gate, frame)
    if spec.main and diff.n >= 2:
        gates["precise_enough"] = bool(diff.half_width <= target_half_width(spec) + 1e-12)
    n_eval = rows.get("metrics.n_eval")
    out.update(
        baseline_mean=baseline_mean, method_mean=method_mean, diff_mean=diff.mean, ci95=list(diff.ci95),
        n_seeds=diff.n, n_eval=None if n_eval is None or n_eval.dropna().empty else float(n_eval.dropna().mean()),
        gates=gates,
    )
    failed = [name for name, ok in gates.items() if not ok]
    scale, unit = (100.0, " points") if spec.percent else (1.0, "")
    if failed:
        why = {
            "baseline_learned": f"the baseline reached {reached:.0%} of the way from floor to ceiling (at least {LEARNED:.0%} needed)",
            "baseline_not_saturated": f"the baseline is saturated ({reached:.0%} of the way to the ceiling)",
            "two_or_more_seeds": f"{diff.n} paired seed(s): no interval",
            "precise_enough": f"the interval ±{diff.half_width * scale:.1f}{unit} is wider than the ±{target_half_width(spec) * scale:.1f}{unit} the standard asks",
        }
        for gate in getattr(spec, "gates", ()):
            why[gate.name] = gate_reason(gate, frame)
        out["verdict"] = "void"
        out["reason"] = "; ".join(why.get(name, f"gate failed: {name}") for name in failed)
        return out
    out["verdict"] = direction(diff.ci95, spec.higher_is_better)
    if out["verdict"] == "no_difference":
        out["reason"] = f"no difference detectable at ±{diff.half_width * scale:.1f}{unit}"
    return out


def evaluate_all(specs: Any, frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [evaluate(spec, frame) for spec in specs]


def comparisons_path(slug: str, profile: str, root: Any = None) -> Any:
    from pathlib import Path

    from medlab.results import results_root

    return Path(root if root is not None else results_root()) / profile / slug / "comparisons.json"


def write_comparisons(slug: str, profile: str, verdicts: list[dict[str, Any]], root: Any = None) -> Any:
    """Write ``results/<profile>/<slug>/comparisons.json`` (the machine-readable verdicts)."""
    import json

    from medlab.results import _jsonable

    path = comparisons_path(slug, profile, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_jsonable(verdicts), indent=1) + "\n")
    tmp.replace(path)
    return path


def load_comparisons(slug: str, profile: str, root: Any = None) -> list[dict[str, Any]]:
    import json

    path = comparisons_path(slug, profile, root)
    return json.loads(path.read_text()) if path.exists() else []


def sentence(verdict: Mapping[str, Any], labels: Mapping[Any, str] | None = None) -> str:
    """One comparison in words that follow its interval."""
    labels = labels or {}
    method, baseline = labels.get(verdict["method"], verdict["method"]), labels.get(verdict["baseline"], verdict["baseline"])
    scale, unit = (100.0, " points") if verdict.get("percent", True) else (1.0, "")
    name = verdict["metric"].replace("_", " ")
    if verdict["verdict"] == "void":
        return f"**{verdict['name']}**: void — {verdict['reason']}."
    lo, hi = verdict["ci95"]
    text = (
        f"**{verdict['name']}**: {method} minus {baseline}, {name} {verdict['diff_mean'] * scale:+.1f}{unit} "
        f"(95% interval {lo * scale:+.1f} to {hi * scale:+.1f}, {verdict['n_seeds']} seeds"
        + (f", {verdict['n_eval']:.0f} test items" if verdict.get("n_eval") else "")
        + "): "
    )
    if verdict["verdict"] == "better":
        return text + f"{method} is better."
    if verdict["verdict"] == "worse":
        return text + f"{method} is worse."
    return text + f"{verdict['reason']}."


def verdicts_markdown(verdicts: list[dict[str, Any]], labels: Mapping[Any, str] | None = None) -> str:
    """"What the runs show": the main comparisons first, then the others, one line each."""
    ordered = [v for v in verdicts if v["main"]] + [v for v in verdicts if not v["main"]]
    lines = []
    for verdict in ordered:
        lines.append(("- (main) " if verdict["main"] else "- ") + sentence(verdict, labels))
    return "\n".join(lines) if lines else "No comparisons declared."


def verdicts_table(verdicts: list[dict[str, Any]]) -> pd.DataFrame:
    """The verdicts as a table: means, paired difference with its interval, seeds, test items, verdict."""
    rows = []
    for v in verdicts:
        percent = v.get("percent", True)
        scale = 100.0 if percent else 1.0
        fmt = (lambda x: "" if x is None else f"{x * scale:.1f}") if percent else (lambda x: "" if x is None else f"{x:.3g}")
        lo, hi = v["ci95"]
        rows.append(
            {
                "comparison": v["name"] + (" (main)" if v["main"] else ""),
                "baseline": fmt(v["baseline_mean"]),
                "method": fmt(v["method_mean"]),
                "difference [95% CI]": "" if v["diff_mean"] is None else f"{v['diff_mean'] * scale:+.1f} [{(lo or 0) * scale:+.1f}, {(hi or 0) * scale:+.1f}]",
                "seeds": v["n_seeds"],
                "test items": "" if v["n_eval"] is None else f"{v['n_eval']:.0f}",
                "verdict": v["verdict"].replace("_", " "),
            }
        )
    return pd.DataFrame(rows).set_index("comparison") if rows else pd.DataFrame()


def differences_figure(specs: Any, frame: pd.DataFrame, labels: Mapping[Any, str] | None = None):
    """Per-seed paired differences (points) with the mean and its 95% interval, one row per comparison
    (seaborn); the zero line is "no difference"."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    labels = labels or {}
    rows, intervals = [], []
    for spec in specs:
        subset = _rows(frame, spec.where)
        if spec.column not in subset or not {spec.method, spec.baseline} <= set(subset[spec.column]):
            continue
        diff = paired(subset, spec.metric, spec.column, spec.method, spec.baseline)
        scale = 100.0 if spec.percent else 1.0
        name = spec.name + (" (main)" if spec.main else "")
        rows += [{"comparison": name, "difference": v * scale} for v in diff.values]
        intervals.append((name, diff.mean * scale, [x * scale for x in diff.ci95]))
    fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.55 * max(1, len(intervals))))
    if rows:
        data = pd.DataFrame(rows)
        sns.stripplot(data=data, x="difference", y="comparison", ax=ax, color="0.35", size=5, jitter=0.12)
        for i, (_, mean, (lo, hi)) in enumerate(intervals):
            ax.errorbar(mean, i, xerr=[[mean - lo], [hi - mean]], fmt="D", color="tab:red", capsize=4, zorder=3)
    ax.axvline(0, color="0.2", lw=0.8, ls="--")
    ax.set_xlabel("method minus baseline, per seed (points where the metric is a share)")
    ax.set_ylabel("")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def chapter_verdicts(chapter: Any, frame: pd.DataFrame, profile: str, root: Any = None) -> list[dict[str, Any]]:
    """Evaluate a chapter's declared ``COMPARISONS`` on ``frame`` and write them to
    ``results/<profile>/<slug>/comparisons.json`` (what "What the runs show" and the benchmarks page
    are generated from); returns the verdicts."""
    verdicts = evaluate_all(chapter.COMPARISONS, frame)
    write_comparisons(chapter.SLUG, profile, verdicts, root)
    return verdicts
