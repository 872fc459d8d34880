"""Chapter 6, LT-Net (arXiv:2003.07072): the method (:mod:`.method`), its settings (:mod:`.config`), its
runs (:mod:`.runs`) and its report (:mod:`.report`), re-exported for the notebook and the chapter
contract (:mod:`medlab.chapter`)."""

from . import method
from .config import ABLATION, BASELINES, DATASETS, MAIN, METHODS, PROFILES, SLUG, Method, Settings, settings
from .method import (
    Cycle,
    RegistrationNet,
    Weights,
    compose,
    folding_share,
    jacobian_determinant,
    ltnet_loss,
    onehot,
    segment,
    similarity_loss,
    smoothness_loss,
    soft_dice_loss,
    transfer,
    warp,
)
from .report import COMPARISONS, TABLES, findings
from .runs import ChapterData, augment, check_data, describe, grid, load_data, load_model, predict, registration_step, run_job, scores, train, weights_of
from .report import (
    METHOD_LABELS,
    curves_figure,
    data_figure,
    field_statistics,
    field_summary,
    metrics_table,
    structures_figure,
    structures_table,
    cycle_figure,
    warp_figure,
)
from .throughput import record_throughput
