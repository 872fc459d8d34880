"""Registry entry of dataset ``brats``."""

from medlab.data.registry import register
from medlab.data.splits import SPLITS

register(
    "brats",
    "BraTS 2018-2020 brain MR (t1, t1ce, t2, flair) with tumour sub-region masks; synthetic look-alike without data_dir",
    SPLITS,
    real="medlab.data.formats.brats:BraTS",
    synthetic="medlab.data.synth.brains3d:brats_lookalike",
)
