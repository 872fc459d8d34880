"""Chapter 7, TC-MGAN (arXiv:2005.00925): the method (:mod:`.method`), its settings (:mod:`.config`), its
runs (:mod:`.runs`), its scores (:mod:`.scores`) and its report (:mod:`.report`), re-exported for the
notebook and the chapter contract (:mod:`medlab.chapter`)."""

from . import method
from .config import ABLATION, DATASETS, MAIN, METHODS, PROFILES, SLUG, Method, Settings, settings
from .method import (
    TARGETS, Critic, PatchDiscriminator, Segmentor, UNetGenerator, classification_loss, condition, critic_loss, dice_loss,
    generator_loss, gradient_penalty, pix2pix_d_loss, pix2pix_g_loss, segmentor_loss,
)
from .report import (
    COLOURS, COMPARISONS, INPUT_LABELS, METHOD_LABELS, downstream_table, TABLES, TARGET_LABELS, curves_figure, examples_figure, findings, metrics_table,
    references_table, samples_figure,
)
from .runs import ChapterData, Synthesis, check_data, describe, evaluate, gan_step, grid, load_data, run_job
from .scores import dice_per_slice, slice_dice, synthesis_scores, tumour_dice
