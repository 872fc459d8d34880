"""Chapter 4, cross-denoising peer networks (arXiv:2006.10990): the method (:mod:`.method`), its
settings (:mod:`.config`), its data (:mod:`.data`), its runs (:mod:`.runs`), the throughput measurement
(:mod:`.throughput`), its report (:mod:`.report`) and figures (:mod:`.figures`), re-exported for the
notebook and the chapter contract (:mod:`medlab.chapter`)."""

from . import method
from .config import CLASSES, DATASETS, METHODS, MIXED, NOISE_KINDS, PROFILES, REGIONS, SLUG, Method, Settings, settings
from .method import (
    Peers,
    agreed_pseudo_labels,
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
    selection_count,
    small_loss_selection,
)
from .figures import (
    curves_figure,
    domains_figure,
    key_weights_figure,
    noise_damage_table,
    noise_examples_figure,
    picks_by_kind,
    predictions_figure,
    selection_figure,
)
from .report import (
    COLOURS,
    COMPARISONS,
    METHOD_LABELS,
    METRIC_NAMES,
    PERCENT,
    PRIMARY,
    PSEUDO_NAMES,
    SOURCE_NAMES,
    TABLES,
    findings,
    metrics_table,
    noise_axis_figure,
    pseudo_history,
    pseudo_label_table,
    results_frame,
    source_table,
)
from .data import (
    SPLITS,
    ChapterData,
    NoisyTrainingSet,
    check_data,
    corrupted_masks,
    load_data,
    load_split,
    noise_seed,
    training_set,
)
from .runs import (
    CURVE_IMAGES,
    SELECTION_FILE,
    describe,
    flip_half,
    grid,
    load_peers,
    make_peers,
    predict,
    pseudo_label_quality,
    run_job,
    segmentation_net,
    segmentation_scores,
    selection_summary,
    train,
    training_step,
)
from .throughput import measure_training_throughput, record_throughput

__all__ = [
    "agreed_pseudo_labels", "ChapterData", "check_data", "class_level_pseudo_labels", "CLASSES", "COLOURS",
    "COMPARISONS", "corrupted_masks", "cross_learning_loss", "cross_weight", "CURVE_IMAGES", "curves_figure",
    "DATASETS", "describe", "disagreement_filter", "domains_figure", "findings", "flip_half", "grid",
    "keep_ratio", "key_location_weights", "key_weights_figure", "load_data", "load_peers", "load_split",
    "make_peers", "masked_mean", "measure_training_throughput", "Method", "method", "METHOD_LABELS", "METHODS",
    "METRIC_NAMES", "metrics_table", "MIXED", "noise_axis_figure", "noise_damage_table",
    "noise_examples_figure", "NOISE_KINDS", "noise_seed", "noise_tolerant_loss", "NoisyTrainingSet",
    "peer_objective", "Peers", "PERCENT", "picks_by_kind", "predict", "predictions_figure", "PRIMARY",
    "PROFILES", "pseudo_history", "pseudo_label_quality", "pseudo_label_table", "PSEUDO_NAMES",
    "record_throughput", "region_probabilities", "region_targets", "REGIONS", "results_frame", "run_job",
    "segmentation_loss", "segmentation_net", "segmentation_scores", "selection_count", "selection_figure",
    "SELECTION_FILE", "selection_summary", "Settings", "settings", "SLUG", "small_loss_selection",
    "SOURCE_NAMES", "source_table", "SPLITS", "TABLES", "train", "training_set", "training_step",
]
