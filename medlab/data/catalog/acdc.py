"""Registry entry of dataset ``acdc``."""

from medlab.data.registry import register

register(
    "acdc",
    "ACDC short-axis cine MR (ED and ES frames), 2D crops around the left ventricle, myocardium masks; synthetic cine-MR slices without data_dir",
    real="medlab.data.formats.acdc:ACDC",
    synthetic="medlab.data.synth.cardiac_mr:acdc_lookalike",
)
