"""Registry entry of dataset ``chestxray14``."""

from medlab.data.registry import register
from medlab.data.splits import SPLITS

register(
    "chestxray14",
    "ChestX-ray14 frontal radiographs, 14 findings (multi-label); synthetic radiographs without data_dir",
    SPLITS,
    real="medlab.data.formats.chestxray14:ChestXray14",
    synthetic="medlab.data.synth.chest_xrays:chestxray14_lookalike",
)
