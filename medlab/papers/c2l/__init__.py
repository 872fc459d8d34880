"""Chapter 2, C2L (arXiv:2007.07423): the method (:mod:`.method`), its settings (:mod:`.config`), its
runs (:mod:`.runs`), the pretraining throughput (:mod:`.throughput`) and its report (:mod:`.report`),
re-exported for the notebook and the chapter contract (:mod:`medlab.chapter`)."""

from . import method
from .config import (
    DATASETS,
    INITS,
    PRETRAINING,
    PROFILES,
    PROTOCOLS,
    SLUG,
    TERMS,
    Settings,
    Variant,
    settings,
    variant_settings,
)
from .method import (
    Encoder,
    FindingClassifier,
    MomentumContrast,
    SplitBatchNorm2d,
    augment_view,
    batch_shuffle,
    batch_unshuffle,
    compare_views,
    gather_from_all_devices,
    info_nce,
    mix,
    mixup_lambda,
    plain_batch_norms,
    split_batch_norms,
)
from .report import (
    COMPARISONS,
    INIT_LABELS,
    PROTOCOL_LABELS,
    TABLES,
    ablation_table,
    downstream_frame,
    efficiency_table,
    feature_map_figure,
    findings,
    label_efficiency_figure,
    per_finding_table,
    pretraining_figure,
    project_features,
    variant_label,
)
from .runs import (
    ENCODER_FILE,
    ChapterData,
    check_data,
    describe,
    downstream_identity,
    encoder_of,
    extract_features,
    grid,
    imagenet_status,
    initial_encoder,
    label_subset,
    load_data,
    make_pretrain_loss,
    new_encoder,
    pretrain_identity,
    pretrain_job,
    run_job,
    targets_of,
)
from .throughput import measure_pretraining_throughput, record_throughput

__all__ = [
    "COMPARISONS", "ChapterData", "DATASETS", "ENCODER_FILE", "Encoder", "FindingClassifier", "INITS", "INIT_LABELS",
    "MomentumContrast", "PRETRAINING", "PROFILES", "PROTOCOLS", "PROTOCOL_LABELS", "SLUG", "Settings",
    "SplitBatchNorm2d", "TABLES", "TERMS", "Variant", "ablation_table", "augment_view", "batch_shuffle",
    "batch_unshuffle", "check_data", "compare_views", "describe", "downstream_frame", "downstream_identity",
    "efficiency_table", "encoder_of", "extract_features", "feature_map_figure", "findings", "gather_from_all_devices",
    "grid", "imagenet_status", "info_nce", "initial_encoder", "label_efficiency_figure", "label_subset", "load_data",
    "make_pretrain_loss", "measure_pretraining_throughput", "method", "mix", "mixup_lambda", "new_encoder",
    "per_finding_table", "plain_batch_norms", "pretrain_identity", "pretrain_job", "pretraining_figure",
    "project_features", "record_throughput", "run_job", "settings", "split_batch_norms", "targets_of",
    "variant_label", "variant_settings",
]
