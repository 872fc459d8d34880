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
