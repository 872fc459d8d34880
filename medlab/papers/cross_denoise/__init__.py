"""Chapter 4, cross-denoising peer networks (arXiv:2006.10990): the method (:mod:`.method`), its
settings (:mod:`.config`), its runs (:mod:`.runs`), the throughput measurement (:mod:`.throughput`) and
its report (:mod:`.report`), re-exported for the notebook and the chapter contract (:mod:`medlab.chapter`)."""

from . import method
from .config import CLASSES, DATASETS, METHODS, MIXED, NOISE_KINDS, PROFILES, REGIONS, SLUG, Method, Settings, settings
from .method import (
    Peers,
    class_level_pseudo_labels,
    cross_learning_loss,
    cross_weight,
    disagreement_filter,
    keep_ratio,
    key_location_weights,
    masked_mean,
    noise_tolerant_loss,
    peer_objective,
    region_probabilities,
    region_targets,
    segmentation_loss,
    small_loss_selection,
)
from .report import (
    COLOURS,
    COMPARISONS,
    METHOD_LABELS,
    METRIC_NAMES,
    PERCENT,
    TABLES,
    curves_figure,
    domains_figure,
    findings,
    key_weights_figure,
    metrics_table,
    noise_damage_table,
    noise_examples_figure,
    noise_rate_figure,
    picks_by_kind,
    predictions_figure,
    pseudo_label_table,
    selection_figure,
)
from .runs import (
    SELECTION_FILE,
    ChapterData,
    NoisyTrainingSet,
    TensorPairs,
    check_data,
    corrupted_masks,
    describe,
    flip_half,
    grid,
    load_data,
    load_peers,
    make_peers,
    noise_seed,
    predict,
    run_job,
    segmentation_net,
    segmentation_scores,
    selection_summary,
    train,
    training_set,
    training_step,
)
from .throughput import measure_training_throughput, record_throughput

__all__ = [
    "CLASSES", "COLOURS", "COMPARISONS", "ChapterData", "DATASETS", "METHODS", "METHOD_LABELS", "METRIC_NAMES",
    "MIXED", "Method", "NOISE_KINDS", "NoisyTrainingSet", "PERCENT", "PROFILES", "Peers", "REGIONS",
    "SELECTION_FILE", "SLUG", "Settings", "TABLES", "TensorPairs", "check_data", "class_level_pseudo_labels",
    "corrupted_masks", "cross_learning_loss", "cross_weight", "curves_figure", "describe", "disagreement_filter",
    "domains_figure", "findings", "flip_half", "grid", "keep_ratio", "key_location_weights", "key_weights_figure",
    "load_data", "load_peers", "make_peers", "masked_mean", "measure_training_throughput", "method",
    "metrics_table", "noise_damage_table", "noise_examples_figure", "noise_rate_figure", "noise_seed",
    "noise_tolerant_loss", "peer_objective", "picks_by_kind", "predict", "predictions_figure",
    "pseudo_label_table", "record_throughput", "region_probabilities", "region_targets", "run_job",
    "segmentation_loss", "segmentation_net", "segmentation_scores", "selection_figure", "selection_summary",
    "settings", "small_loss_selection", "train", "training_set", "training_step",
]
