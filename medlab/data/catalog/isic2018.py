"""Registry entry of dataset ``isic2018``."""

from medlab.data.registry import register

register(
    "isic2018",
    "ISIC 2018 Task 3 skin-lesion diagnosis (7 classes); synthetic look-alike without data_dir",
    real="medlab.data.formats.isic2018:ISIC2018Task3",
    synthetic="medlab.data.synth.skin_lesions:isic2018_lookalike",
)
