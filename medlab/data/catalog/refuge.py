"""Registry entry of dataset ``refuge``."""

from medlab.data.registry import register

register(
    "refuge",
    "REFUGE 2018 colour fundus photographs, optic disc and cup masks (disc-centred crops); synthetic look-alike without data_dir",
    real="medlab.data.formats.refuge:REFUGE",
    synthetic="medlab.data.synth.fundus:refuge_lookalike",
)
