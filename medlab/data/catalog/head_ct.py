"""Registry entry of dataset ``head_ct``."""

from medlab.data.registry import register
from medlab.data.splits import SPLITS

register(
    "head_ct",
    "Head CT volumes, haemorrhage type (none, intraparenchymal, subdural, intraventricular); synthetic only",
    SPLITS,
    real=None,
    synthetic="medlab.data.synth.brains3d:head_ct_lookalike",
    real_unavailable=(
        "the head CT set of the Rubik's cube paper (1,486 scans from the authors' hospital) is private, so "
        "medlab has no reader for it; leave data_dir unset for the synthetic head CTs (data/README.md, "
        "BraTS section)"
    ),
)
