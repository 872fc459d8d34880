"""Registry entry of dataset ``brats_slices``."""

from medlab.data.registry import register

register(
    "brats_slices",
    "BraTS axial slices (t1, t1ce, t2, flair) with the whole tumour, chosen and scaled as TC-MGAN's code does; synthetic look-alike without data_dir",
    ("train", "val", "test"),
    real="medlab.data.formats.brats_slices:BraTSSlices",
    synthetic="medlab.data.synth.brain_slices:brats_slices_lookalike",
)
