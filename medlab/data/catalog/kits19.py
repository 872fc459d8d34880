"""Registry entry of dataset ``kits19``."""

from medlab.data.registry import register

register(
    "kits19",
    "KiTS19 contrast-enhanced CT, 2D crops around the kidney holding a tumour, tumour masks; synthetic kidney-tumour CT without data_dir",
    real="medlab.data.formats.kits19:KiTS19",
    synthetic="medlab.data.synth.kidney_ct:kits19_lookalike",
)
