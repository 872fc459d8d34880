"""Chapter 3, Rubik's cube recovery (arXiv:1910.02241): the method (:mod:`.method`), its settings
(:mod:`.config`), its runs (:mod:`.runs`), the pretraining throughput (:mod:`.throughput`) and its
report (:mod:`.report`), re-exported for the notebook and the chapter contract (:mod:`medlab.chapter`)."""

from . import method
from .config import DATASETS, INITS, PRETRAINING, PROFILES, SLUG, TASKS, ProxyTask, Settings, settings
from .method import (
    CUBES,
    ROTATION_AXES,
    SiameseOctad,
    assemble,
    cut_cubes,
    draw_proxy_labels,
    make_proxy_batch,
    min_hamming_distance,
    permutation_set,
    proxy_losses,
    random_layout,
    rearrangement_loss,
    rotation_loss,
    scramble,
    unscramble,
)
from .report import (
    COMPARISONS,
    HEADLINE,
    HEADLINE_NAMES,
    INIT_LABELS,
    TABLES,
    TASK_METRICS,
    ablation_table,
    ct_examples_figure,
    data_table,
    downstream_frame,
    finetune_curves_figure,
    findings,
    label_efficiency_figure,
    label_summary,
    majority_floor,
    mr_example_figure,
    orthogonal_slices,
    proxy_curves_figure,
    puzzle_figure,
    task_table,
)
from .runs import (
    ENCODER_FILE,
    PROXY_MODEL_FILE,
    REGIONS,
    TaskData,
    check_data,
    describe,
    encoder_file,
    finetune,
    grid,
    identity,
    initial_encoder,
    load_data,
    pretrain,
    pretraining_job,
    puzzle,
    puzzle_losses,
    run_job,
    segmentation_scores,
    targets_of,
    volumes_of,
)
from .throughput import measure_pretraining_throughput, record_throughput

__all__ = [
    "COMPARISONS", "CUBES", "DATASETS", "ENCODER_FILE", "HEADLINE", "HEADLINE_NAMES", "INITS", "INIT_LABELS",
    "PRETRAINING", "PROFILES", "PROXY_MODEL_FILE", "ProxyTask", "REGIONS", "ROTATION_AXES", "SLUG", "Settings",
    "SiameseOctad", "TABLES", "TASKS", "TASK_METRICS", "TaskData", "ablation_table", "assemble", "check_data",
    "ct_examples_figure", "cut_cubes", "data_table", "describe", "downstream_frame", "draw_proxy_labels",
    "encoder_file", "finetune", "finetune_curves_figure", "findings", "grid", "identity", "initial_encoder",
    "label_efficiency_figure", "label_summary", "load_data", "majority_floor", "make_proxy_batch", "measure_pretraining_throughput",
    "method", "min_hamming_distance", "mr_example_figure", "orthogonal_slices", "permutation_set", "pretrain",
    "pretraining_job", "proxy_curves_figure", "proxy_losses", "puzzle", "puzzle_figure", "puzzle_losses",
    "random_layout", "rearrangement_loss", "record_throughput", "rotation_loss", "run_job", "scramble",
    "segmentation_scores", "settings", "targets_of", "task_table", "unscramble", "volumes_of",
]
