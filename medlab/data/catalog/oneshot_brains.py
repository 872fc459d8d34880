"""Registry entry of dataset ``oneshot_brains``."""

from medlab.data.registry import register
from medlab.data.splits import SPLITS

register(
    "oneshot_brains",
    "One-shot brain segmentation: one labelled atlas and T1 brain volumes with structure labels (OASIS as prepared for registration); synthetic MNI152 deformations without data_dir",
    SPLITS,
    real="medlab.data.formats.oasis:OASIS",
    synthetic="medlab.data.synth.oneshot_brains:oneshot_brains_lookalike",
)
