"""Facts about the real datasets that a synthetic generator and a reader both use: class lists, their
order and their frequencies. Defined once here; the reader and generator modules re-export them."""

from __future__ import annotations

import numpy as np

# --- ISIC 2018 Task 3 (skin-lesion diagnosis) ---------------------------------------------------------

ISIC2018_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")  # the ground-truth CSV's column order
ISIC2018_CLASS_DESCRIPTIONS = {
    "MEL": "melanoma",
    "NV": "melanocytic nevus",
    "BCC": "basal cell carcinoma",
    "AKIEC": "actinic keratosis / intraepithelial carcinoma",
    "BKL": "benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
}
# Images per class in the ISIC 2018 Task 3 training set (10,015 in all).
ISIC2018_TRAIN_COUNTS = np.array([1113, 6705, 514, 327, 1099, 115, 142])

# --- ChestX-ray14 (NIH) ---------------------------------------------------------------------------------

# The 14 findings, in the order CheXNet-style list files and most papers use.
FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NO_FINDING = "No Finding"
# Images carrying each finding in Data_Entry_2017.csv (112,120 images in all; an image may carry several).
FINDING_COUNTS = np.array(
    [11559, 2776, 13317, 19894, 5782, 6331, 1431, 5302, 4667, 2303, 2516, 1686, 3385, 227]
)
TOTAL_IMAGES = 112120
PREVALENCE = FINDING_COUNTS / TOTAL_IMAGES
# 60,361 of ChestX-ray14's 112,120 images are labelled "No Finding".
NO_FINDING_FRACTION = 60361 / 112120

# --- fundus segmentation (REFUGE, Drishti-GS1) -------------------------------------------------------------

FUNDUS_CLASSES = ("background", "disc rim", "cup")  # mask indices 0, 1, 2: disc = mask >= 1, cup = mask == 2

# --- BraTS (brain tumour MR) ----------------------------------------------------------------------------

MODALITIES = ("t1", "t1ce", "t2", "flair")
TUMOUR_CLASSES = ("background", "necrotic core", "oedema", "enhancing tumour")  # training indices 0..3
# The BraTS label value of each training index: background, necrotic / non-enhancing tumour core,
# peritumoral oedema, enhancing tumour
BRATS_LABELS = (0, 1, 2, 4)
GRADES = ("HGG", "LGG")
