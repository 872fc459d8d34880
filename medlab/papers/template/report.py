"""The template chapter's report: its table, its declared comparisons and its findings."""

from __future__ import annotations

import pandas as pd

from medlab.chapter import ComparisonSpec, TableSpec
from medlab.report import paired, significance_text, spread

TABLES = (
    TableSpec(
        experiments=("comparison",), by=("params.method",), metrics=("accuracy", "balanced_accuracy"),
        percent=("accuracy", "balanced_accuracy"), caption="Test accuracy (%).",
    ),
)
COMPARISONS: tuple[ComparisonSpec, ...] = ()


def findings(frame: pd.DataFrame) -> str:
    """Label smoothing minus one-hot targets, paired by seed (Markdown)."""
    if not {"hard", "smoothing"} <= set(frame.get("params.method", [])):
        return "No pair of methods to compare."
    d = paired(frame, "accuracy", "params.method", "smoothing", "hard")
    return f"Label smoothing minus one-hot targets: accuracy {spread(d)} ({significance_text(d)})."
