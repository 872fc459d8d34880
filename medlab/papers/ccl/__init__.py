"""Chapter 1, CCL-Net (arXiv:2007.06371): the method (:mod:`.method`), its settings (:mod:`.config`),
its runs (:mod:`.runs`) and its report (:mod:`.report`), re-exported for the notebook and the chapter
contract (:mod:`medlab.chapter`)."""

from . import method
from .config import DATASETS, METHODS, PROFILES, SLUG, Settings, settings
from .method import (
    CCLBlock,
    Classifier,
    ccl_loss,
    class_correlation,
    correlation_loss,
    dml_logits,
    dml_loss,
    make_backbone,
    oracle_soft_labels,
    soft_cross_entropy,
    soft_labels,
)
from .report import (
    COMPARISONS,
    FLOOR,
    METHOD_LABELS,
    METRIC_LABELS,
    PERCENT,
    TABLES,
    correlation_findings,
    correlation_summary,
    curves_figure,
    findings,
    recall_table,
    reliability_figure,
    results_frame,
)
from .runs import (
    ChapterData,
    balanced_split,
    check_data,
    describe,
    grid,
    learned_correlations,
    load_data,
    make_loss,
    run_job,
    train_and_evaluate,
)

__all__ = [
    "CCLBlock", "COMPARISONS", "ChapterData", "Classifier", "DATASETS", "FLOOR", "METHODS", "METHOD_LABELS",
    "METRIC_LABELS", "PERCENT", "PROFILES", "SLUG", "Settings", "TABLES", "balanced_split", "ccl_loss",
    "check_data", "class_correlation", "correlation_findings", "correlation_loss", "correlation_summary",
    "curves_figure", "describe", "dml_logits", "dml_loss", "findings", "grid", "learned_correlations", "load_data",
    "make_backbone", "make_loss", "method", "oracle_soft_labels", "recall_table", "reliability_figure",
    "results_frame", "run_job", "settings", "soft_cross_entropy", "soft_labels", "train_and_evaluate",
]
