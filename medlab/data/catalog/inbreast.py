"""Registry entry of dataset ``inbreast``."""

from medlab.data.registry import register

register(
    "inbreast",
    "INbreast full-field digital mammograms, 2D crops centred on each mass, masks from the outlines; synthetic mass crops without data_dir",
    real="medlab.data.formats.inbreast:INbreast",
    synthetic="medlab.data.synth.mammograms:inbreast_lookalike",
)
