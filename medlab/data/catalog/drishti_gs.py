"""Registry entry of dataset ``drishti_gs``."""

from medlab.data.registry import register

register(
    "drishti_gs",
    "Drishti-GS1 colour fundus photographs, optic disc and cup from the annotators' soft maps; synthetic look-alike (another camera) without data_dir",
    real="medlab.data.formats.drishti_gs:DrishtiGS",
    synthetic="medlab.data.synth.fundus:drishti_gs_lookalike",
)
