"""Chapter 5, Crossover-Net (arXiv:2004.01397): the method (:mod:`.method`), its settings
(:mod:`.config`), its runs (:mod:`.runs`), its scores (:mod:`.scores`), the throughput measurement
(:mod:`.throughput`) and its report (:mod:`.report`), re-exported for the notebook and the chapter
contract (:mod:`medlab.chapter`)."""

from . import method
from .config import ABLATION, BASELINES, DATASETS, MAIN, METHODS, PROFILES, SLUG, TASKS, Method, Settings, Task, settings
from .method import (
    TRUNKS,
    ArmTrunk,
    CrossoverNet,
    TrunkSpec,
    arm_distance,
    balance_classes,
    clean_up,
    crossover_loss,
    extract_patches,
    min_max,
    overlap_and_ends,
    pad_for_patches,
    sample_centres,
)
from .report import COMPARISONS, TABLES, findings
from .runs import (
    ChapterData,
    check_data,
    describe,
    grid,
    load_data,
    load_model,
    make_model,
    patch_step,
    probabilities,
    run_job,
    segment,
    train,
    training_centres,
)
from .scores import centroid_distance, segmentation_scores, true_positive_fraction
from .report import (
    COLOURS,
    METHOD_LABELS,
    arm_features,
    arm_features_figure,
    arms_figure,
    curves_figure,
    loss_terms_table,
    metrics_table,
    predictions_figure,
    samples_figure,
    sampling_figure,
    tasks_figure,
)
from .throughput import measure_dense_throughput, patchwise_logits, record_throughput
