"""The template chapter: the smallest package that satisfies the chapter contract. Copy this folder
and ``notebooks/templates/00_template.py`` to start a chapter (see the book page "Adding a chapter").

Its "paper" is label smoothing (Szegedy et al., CVPR 2016) against one-hot targets, on a few tiny
synthetic skin-lesion images: small enough that its smoke profile runs in seconds, which the tests of
the sweep and of distributed training use."""

from . import method
from .config import DATASETS, METHODS, PROFILES, SLUG, Settings, settings
from .report import COMPARISONS, TABLES, findings
from .runs import describe, grid, load_data, run_job

__all__ = [
    "COMPARISONS", "DATASETS", "METHODS", "PROFILES", "SLUG", "Settings", "TABLES", "describe", "findings", "grid",
    "load_data", "method", "run_job", "settings",
]
