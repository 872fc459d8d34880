# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. CCL-Net: inter-class correlations as soft labels
#
# **Paper.** Dong Wei, Shilei Cao, Kai Ma, Yefeng Zheng. *Learning and Exploiting Interclass Visual
# Correlations for Medical Image Classification.* MICCAI 2020. [arXiv:2007.06371](https://arxiv.org/abs/2007.06371).
#
# **The idea.** A classifier trained on one-hot ("hard") labels is told that a melanoma is exactly as
# unlike a nevus as it is unlike a vascular lesion. It is not: some classes look alike. CCL-Net learns
# *how much* each pair of classes resembles each other from the training images, by placing an
# embedding for every class in a metric space next to the embeddings of the images, and reads a
# class-correlation matrix off the geometry of those class embeddings. Each row of that matrix, passed
# through a softmax, is a *soft label*: the target the classifier is trained on instead of the one-hot
# vector. The correlation-learning block is a light head beside the backbone, trained with it end to end,
# and the soft labels are regenerated at every step.
#
# ```{admonition} A reconstruction from the abstract
# :class: warning
# The official code is not public, and only the paper's abstract and the opening of its introduction
# could be read for this book. The losses below follow the abstract's description (distance metric
# learning of class-specific embeddings, a loss based on a geometric reading of correlation, soft labels
# generated on the fly, end-to-end training); their exact form is ours, and every choice is listed in the
# deviation ledger at the end. Treat this chapter as *inspired by* CCL-Net, not as its reproduction.
# ```
#
# **Results.** The section *What the runs show* states, from the runs' records, what the demo's
# comparisons can show: each paired by seed, with its 95% interval, and a direction only where the
# interval excludes zero (the book's evidence standard).

# %% tags=["remove-cell"]
# Colab (or any Python without medlab): install the book's package first. MEDLAB_PACKAGE overrides
# where it comes from (a local wheel or folder).
import importlib.util
import os
import subprocess
import sys

PACKAGE = os.environ.get("MEDLAB_PACKAGE", "medlab @ git+https://github.com/medlab-book/medlab")
if importlib.util.find_spec("medlab") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", PACKAGE], check=True)

# %% [markdown]
# **Resource card.** Measured by `medlab bench` on this book's machines (the table is generated from
# the benchmark records shipped with the package, `medlab/resources/bench/ccl/`):

# %%
from medlab.results import resource_card

resource_card("ccl")

# %% [markdown]
# ## Parameters and setup
#
# On Colab, the notebook's first cell (hidden in the book) installs the book's package. The
# `parameters` cell is what papermill and `medlab run` override: `profile` is `smoke` (seconds, for CI),
# `demo` (the book, minutes on a CPU) or `paper` (the real ISIC 2018 data with the paper's settings, one
# GPU). Any other setting of `medlab.papers.ccl.Settings` can be passed through `overrides`, or on the
# command line as `medlab run ccl -p lambda_cc 4`.

# %% tags=["parameters"]
import os

profile = os.environ.get("MEDLAB_PROFILE", "demo")  # smoke | demo | paper
data_dir = None  # ISIC 2018 Task 3 in its official layout; None = synthetic data
device = None  # None = automatic (cuda > mps > cpu); or "cpu", "cuda", "mps"
seeds = None  # e.g. [0, 1, 2] or "0,1,2"; None = the profile's
epochs = None  # None = the profile's
backbones = None  # e.g. "resnet18,resnet50"; None = the profile's
overrides = {}  # any other setting, e.g. {"lambda_cc": 4.0}

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from medlab import experiment, plots, results
from medlab.papers import ccl

run = experiment.setup(
    ccl, profile, device=device, data_dir=data_dir, seeds=seeds, epochs=epochs, backbones=backbones, **overrides
)
profile, config, device = run.profile, run.config, run.device
run.settings_table()

# %% [markdown]
# ## The problem and the idea
#
# Let $x$ be an image with label $y \in \{1, \dots, K\}$, $h = f(x) \in \mathbb{R}^D$ the pooled feature
# of a backbone $f$, and $o = W h + b$ the classifier's logits. Hard-label training minimises
# $-\log \operatorname{softmax}(o)_y$. Label smoothing spreads a fixed mass $\varepsilon$ uniformly over
# the other classes; it regularises, but says nothing about *which* classes are alike.
#
# **The CCL block** (Eq. 1) embeds the sample and one learnable vector per class on the unit sphere:
#
# $$ z = \frac{P h}{\lVert P h \rVert}, \qquad e_k = \frac{E_k}{\lVert E_k \rVert}, \quad k = 1..K. \tag{1}$$
#
# **Distance metric learning** (Eq. 2) pulls a sample towards its class embedding and away from the others,
# with a softmax over scaled cosine similarities (a normalised-softmax metric loss with scale $s$):
#
# $$ p(k \mid x) = \frac{\exp(s\,\langle z, e_k\rangle)}{\sum_j \exp(s\,\langle z, e_j\rangle)}, \qquad
#    \mathcal{L}_{\text{dml}} = -\log p(y \mid x). \tag{2}$$
#
# **Correlation, read geometrically** (Eq. 3). Pearson's correlation between two variables is the cosine
# of the angle between their centred vectors. By the same reading, the correlation between classes $i$
# and $j$ is the cosine between their unit embeddings:
#
# $$ R_{ij} = \langle e_i, e_j \rangle \in [-1, 1], \qquad R_{ii} = 1. \tag{3}$$
#
# **Soft labels, generated on the fly** (Eq. 4): row $i$ of $R$, sharpened by a temperature $\tau$,
#
# $$ q_i = \operatorname{softmax}_j\!\left(R_{ij} / \tau\right). \tag{4}$$
#
# Because $R_{ii} = 1$ is the largest entry, $q_i$ always peaks at the true class. At initialisation the
# class embeddings are nearly orthogonal ($R_{ij} \approx 0$), so $q_i$ starts as label smoothing and
# becomes data-driven as the embeddings move.
#
# **The correlation loss** (Eq. 5). Metric learning alone drives class embeddings apart, and most
# strongly the pairs whose samples are most often confused, which erases the very correlations we want
# (the chapter shows this below). The geometric loss asks the class geometry to agree with the sample
# geometry: the correlation of class $y$ with class $j$ should equal the cosine that the samples of
# class $y$ have with $e_j$,
#
# $$ \mathcal{L}_{\text{cc}} = \mathbb{E}_x\; \frac{1}{K-1}\sum_{j \neq y} \big(R_{yj} - \operatorname{sg}\langle z, e_j\rangle\big)^2, \tag{5}$$
#
# where $\operatorname{sg}$ stops the gradient, so only the class embeddings move: images of one class
# that look like another pull the two class embeddings together.
#
# **Training** (Eqs. 6-7): the classifier learns from the soft label of the true class, and everything
# is trained end to end:
#
# $$ \mathcal{L}_{\text{cls}} = -\sum_j \operatorname{sg}(q_{yj}) \log \operatorname{softmax}(o)_j, \tag{6}$$
#
# $$ \mathcal{L} = \mathcal{L}_{\text{cls}} + \lambda_{\text{dml}} \mathcal{L}_{\text{dml}} + \lambda_{\text{cc}} \mathcal{L}_{\text{cc}}. \tag{7}$$

# %% [markdown]
# ## Data
#
# The paper uses ISIC 2018 Task 3: 10,015 dermoscopic images of seven diagnoses with a strong imbalance
# (two thirds are nevi). Without `data_dir`, this chapter uses a **synthetic** look-alike generated by
# `medlab.data.synth.skin_lesions`: the same seven classes, in ISIC 2018's proportions, each defined by a
# prototype in a space of eight visual attributes a dermatologist reads (pigment, redness, border
# irregularity, colour variegation, dots and globules, size, scale, vessels). Every image draws its
# attributes around its class prototype and is rendered on random skin with nuisances (tone,
# illumination, hair, the dark corners of a dermoscope). Classes with nearby prototypes look alike, and
# the generator knows by how much: the **ground-truth similarity** of two classes is a Gaussian kernel of
# the distance between their prototypes. That is what a method that learns inter-class correlations
# should recover.
#
# The training split keeps ISIC 2018's imbalance: the demo draws 10,015 images, the size of ISIC 2018's
# training set, in its proportions (6,705 nevi, 115 dermatofibromas). The validation and test splits are
# **class-balanced** (the same number of images of every class; the demo has 150 per class for
# validation, 1,050 images, and 400 per class for test, 2,800 images): balanced accuracy is the mean of
# the seven per-class recalls, and in ISIC's proportions the rarest class of a 1,400-image test set has
# 16 images, so a single image would move the metric by almost a point, as much as the effects the
# chapter measures. With 400 per class, one image moves balanced accuracy by 0.04 points.
#
# To use the real data, download ISIC 2018 Task 3 (see `data/README.md`) and set `data_dir`;
# `medlab data check isic2018 /path/to/isic2018` validates the layout first.

# %%
data = ccl.check_data(config, data_dir)  # loads the data and fails now if the settings do not fit it
classes = data.classes
sizes = {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
print(f"{data.info['kind']} data: {sizes}")
plots.image_grid(data.train, classes, per_class=8, title="Training images by class");

# %%
plots.class_counts({split: data.info[split]["class_counts"] for split in sizes}, classes);

# %%
if data.similarity is not None:
    plots.heatmaps({"ground-truth class similarity": data.similarity}, classes, vmin=0, vmax=1);


# %% [markdown]
# ## Method: the code
#
# The chapter's method is one file, `medlab/papers/ccl/method.py`: the equations above in their order,
# each function naming its equation and taking its hyper-parameters explicitly. It is unit-tested
# (`tests/test_ccl.py`: each equation on tiny tensors with hand-computed values). This is that file.

# %%
plots.show_source(ccl.method)

# %% [markdown]
# All methods share one training step, `make_loss` (in `runs.py`), which augments the batch on the
# device and differs only in the classification target and in which of the CCL losses are switched on;
# the loop itself is the book's one engine (`medlab.engine.fit`: mixed precision on CUDA, a checkpoint
# per epoch, exact resume).

# %%
plots.show_source(ccl.make_loss)

# %% [markdown]
# Before training, the soft labels of randomly initialised class embeddings are close to label smoothing:
# the true class keeps most of the mass and the rest is spread almost evenly.

# %%
with torch.no_grad():
    block = ccl.CCLBlock(64, len(classes), config.embedding_dim)
    correlation = ccl.class_correlation(block.class_vectors())
    q0 = ccl.soft_labels(correlation, config.soft_temperature)
pd.DataFrame(q0.numpy(), index=classes, columns=classes).round(3)

# %% [markdown]
# ## Training
#
# The grid: every backbone with hard labels, label smoothing and CCL-Net, over the profile's seeds, then
# the ablation rows on one backbone. The demo trains one backbone, a narrow ResNet-18 (ResNet-18's
# layout with a quarter of its channels, 16 in its first stage, from scratch at 32 px), and spends its
# budget on what lets the comparisons show something rather than on breadth: a training split of
# ISIC 2018's size (10,015 images), 6 epochs (about 1,900 steps of 32 images; in development the
# validation accuracy gained under a point in the last epoch), class-balanced validation and test splits (1,050 and 2,800 images), and 5 seeds:
# 3 methods and 3 ablation rows, 30 runs. The paper profile keeps the paper's three ImageNet backbones.
# Images are sampled class-balanced (every class equally often per epoch, a common remedy
# for class imbalance) and augmented on the device with random flips and 90° rotations; the epoch with
# the best validation balanced accuracy is kept. On a CPU the runs go to parallel worker processes.
# Each run writes its results record under `results/<profile>/ccl/` as it finishes, and checkpoints
# every epoch under `runs/`: rerunning the cell after an interruption resumes where it stopped.

# %%
records = experiment.run_grid(ccl, config, profile=profile, device=device, data_dir=data_dir)
frame = ccl.results_frame(records, config.ablation_backbone)
print(f"{len(records)} runs: {len(config.seeds)} seeds x {len(config.backbones)} backbone(s) x {len(config.methods)} methods "
      f"+ {len(config.ablation_methods)} ablation rows; {len(data.test)} test images")

# %% [markdown]
# Validation balanced accuracy and training loss per epoch (mean ± std over seeds). The classification
# loss of label smoothing and CCL-Net cannot fall as low as that of hard labels (their targets have
# entropy), so compare the shapes of those curves, not their levels.

# %%
ccl.curves_figure(records, config.backbones, config.methods);

# %% [markdown]
# ## Evaluation
#
# On the test split, for every backbone and method (mean ± std over seeds; accuracies in %). Balanced
# accuracy, the mean of the per-class recalls, is ISIC 2018's ranking metric; ECE is the expected
# calibration error of the top-1 confidence (15 bins, lower is better).

# %%
comparison = frame[frame["experiment"] == "comparison"]
results.summarize(
    comparison,
    ["balanced_accuracy", "accuracy", "macro_f1", "macro_auroc", "ece"],
    by=("backbone", "method"),
    percent=ccl.PERCENT,
    names=ccl.METRIC_LABELS,
)

# %% [markdown]
# Recall per class (%, mean over seeds): the rare classes are where the methods differ most.

# %%
ccl.recall_table(records, classes)

# %% [markdown]
# Calibration: accuracy against confidence on the test set, pooled over seeds.

# %%
ccl.reliability_figure(records, config.backbones, config.methods);

# %% [markdown]
# ### Did CCL-Net learn the class correlations?
#
# Left, the generator's ground truth; middle, the correlation matrix $R$ (Eq. 3) CCL-Net learned, averaged
# over seeds; right, the cosines between the weight vectors of the hard-label classifier, a common way to
# read class similarity off any trained classifier. The diagonals (all 1) are left blank so that the
# colours show the class pairs. The agreement with the truth is Spearman's rank
# correlation over the 21 class pairs (their scales differ, their orderings should not).

# %%
backbone_name = config.ablation_backbone
ccl_runs = results.select(records, experiment="comparison", backbone=backbone_name, method="ccl")
hard_runs = results.select(records, experiment="comparison", backbone=backbone_name, method="hard")
matrices = {
    f"CCL-Net R ({backbone_name})": ccl.correlation_summary(ccl_runs),
    f"hard labels: weight cosines ({backbone_name})": ccl.correlation_summary(
        hard_runs, key="classifier_cosine"
    ),
}
if data.similarity is not None:
    matrices = {"ground truth": data.similarity, **matrices}
plots.heatmaps(matrices, classes, hide_diagonal=True);

# %%
if data.similarity is not None:
    agreement = ["ccl_correlation_spearman", "classifier_cosine_spearman"]
    display(
        results.summarize(
            comparison, agreement, by=("backbone", "method"), digits=2, names=ccl.METRIC_LABELS
        )
    )
else:
    print(
        "The real data has no ground-truth similarity: compare the learned R with clinical knowledge."
    )

# %% [markdown]
# ## Ablation
#
# On one backbone: CCL-Net without the correlation loss (Eq. 5), the CCL block as an auxiliary head only
# (the classifier keeps hard labels, so only the metric-learning losses act on the backbone), and, as a
# reference that only synthetic data allows, label smoothing whose mass (the same $\varepsilon$ as label
# smoothing) is spread over the other classes in proportion to their *true* similarity. That last row asks
# whether correlation-shaped soft labels help at all on this data, separately from whether CCL-Net
# learns the correlations. The last column shows what the correlation loss does to the learned $R$.

# %%
ablation = frame[frame["on_ablation_backbone"]]
columns = ["balanced_accuracy", "macro_f1", "ece"]
if data.similarity is not None:
    columns.append("ccl_correlation_spearman")
results.summarize(
    ablation, columns, by=("method",), percent=ccl.PERCENT, digits=2, names=ccl.METRIC_LABELS
)

# %% [markdown]
# ## What the runs show
#
# Generated from the results records of this execution under the book's evidence standard
# (`medlab.report`). Each comparison is a difference of test balanced accuracy, *method minus
# baseline*, paired by seed: the seeds redraw the initialisation, the batch order and the augmentations,
# while the data and the test set stay fixed. The main comparison is the paper's claim, CCL-Net against
# hard labels. Before any direction is stated, the baseline must have learned (at least halfway from
# chance, 1/7, to 100%) without saturating (below 95% of the way), and the main comparison's 95%
# interval must be at most ±3 points wide; a comparison whose gate fails is *void*, with its reason.
# "Better" or "worse" is said only when the interval excludes zero, otherwise "no difference detectable
# at ±X": the size of an effect these runs could have seen. The verdicts are also written to
# `results/<profile>/ccl/comparisons.json`, which the benchmarks page reads.

# %%
from medlab import report

verdicts = report.chapter_verdicts(ccl, frame, profile)
report.verdicts_table(verdicts)

# %%
display(Markdown(report.verdicts_markdown(verdicts, ccl.METHOD_LABELS)))
display(Markdown(ccl.correlation_findings(frame)))

# %% [markdown]
# Each grey point is one seed's difference; the red diamond is their mean with its 95% interval; the
# dashed line is "no difference".

# %%
report.differences_figure(ccl.COMPARISONS, frame, ccl.METHOD_LABELS);

# %% [markdown]
# **How to read the ablation.** Each row isolates one part of the method:
#
# - *hard labels* vs *CCL block + hard labels*: the effect of the metric-learning losses on the shared
#   backbone alone (the classifier's target is the same).
# - *CCL block + hard labels* vs *CCL-Net*: the effect of training the classifier on the learned soft labels.
# - *CCL-Net w/o L_cc* vs *CCL-Net*: the effect of the correlation loss, on accuracy and on how well $R$
#   matches the truth.
# - *label smoothing* vs *true-similarity smoothing*: whether putting the smoothing mass on truly similar
#   classes helps at all on this data. If even the truth does not beat uniform smoothing, learning the
#   correlations cannot be expected to.
#
# **Try it.** `medlab run ccl -p lambda_cc 4`, `-p soft_temperature 0.5` (softer labels), `-p epochs 12`
# (does a longer schedule separate the methods?), `-p seeds 0,1,2,3,4,5,6,7,8,9` (a narrower interval), or
# `--profile paper -p data_dir ...` on ISIC 2018.

# %% [markdown]
# ## Reproduction notes
#
# **The paper's numbers.** The results tables of the paper could not be read for this book, so its
# numbers are not reproduced here; the abstract reports "consistent improvements" of CCL-Net over several
# backbones on ISIC 2018, without figures. The `paper` profile runs the same grid on the real data
# (`medlab run ccl --profile paper -p data_dir /path/to/isic2018`) and its records appear on the
# benchmarks page when they exist. The demo above runs on synthetic data and at a teaching scale; it
# answers whether the *idea* helps there, not whether the paper's figures hold.
#
# **Deviation ledger.** Every detail the readable part of the paper does not fix, and what this chapter chose.
#
# | What | The paper | This chapter | Why |
# |---|---|---|---|
# | CCL block | "lightweight plug-in head", class-specific embeddings learned by distance metric learning | one linear projection of the pooled feature to 128-d, unit-normalised; one learnable 128-d vector per class | the lightest head that gives class and sample embeddings in one space |
# | Metric | not known | cosine similarity with scale $s = 16$ (normalised softmax) | bounded correlations (Eq. 3) need unit vectors |
# | Correlation matrix | "geometrical explanation of correlation" | $R_{ij}$ = cosine between class embeddings | correlation = cosine of centred vectors |
# | Soft labels | "generated on the fly" | $\operatorname{softmax}(R_{y\cdot}/\tau)$, $\tau = 0.25$, gradient stopped | $\tau = 0.25$ makes the initial soft label equal to label smoothing with $\varepsilon \approx 0.1$ |
# | Correlation loss | "an intuitive loss based on a geometrical explanation of correlation" | Eq. 5: class-to-class cosine = sample-to-class cosine | our reading; see below for its weight |
# | Loss weights | not known | $\lambda_{\text{dml}} = 1$, $\lambda_{\text{cc}} = 16$ | $\lambda_{\text{cc}} = s$ puts the gradients of Eq. 5 and Eq. 2 on the class embeddings in the same range. In development $\lambda_{\text{cc}} = 1$ left the learned $R$ anti-correlated with the truth (metric learning pushes confusable classes apart hardest), and $\lambda_{\text{cc}} = 64$ agreed better than 16; 16 was kept, chosen by the gradient argument, not by the test set |
# | Backbones | "several widely used modern network structures" (not named in the abstract) | demo: one narrow ResNet-18 (16 channels in its first stage) from scratch; paper profile: ResNet-18, ResNet-50, DenseNet-121 from ImageNet | the demo spends its budget on power, not breadth. At 32 px on one CPU thread the narrow ResNet-18 trains 1,750 images per CPU-second (1,640 with the CCL block), ShuffleNetV2, the previous demo's backbone, 480 (510): 3.6 times as many images for the same time, which pays for a training split of ISIC 2018's size |
# | Batch norm | not applicable | momentum 0.1 when training from scratch (torchvision's MobileNetV3 uses 0.01) | with 0.01 the running statistics lag on short schedules and evaluation collapses to one class |
# | Sampling | not known | class-balanced sampling for every method | balanced accuracy is the target metric; without it the rare classes are barely learned in a short run |
# | Optimiser | not known | AdamW, one-cycle schedule; demo lr 3e-3; paper profile lr 1e-4, 30 epochs, 224 px, batch 32 | common defaults for from-scratch and fine-tuning runs; ImageNet-initialised networks converge on ISIC 2018 within a few tens of epochs |
# | Augmentation | not known | random flips and 90° rotations on the device | dermoscopy has no canonical orientation |
# | Split | not known (the 2018 validation and test labels were not public in 2020) | official Training / Validation / Test parts | the parts are public now; note that several images can show the same lesion |
# | Model selection | not known | epoch with the best validation balanced accuracy | the challenge's ranking metric |
# | Data (demo) | ISIC 2018 | synthetic look-alike with known class similarity, 32 px, 10,015 training images in ISIC 2018's proportions | offline, seeded, the truth is known. The previous demo (1,400 training images, two backbones, 8 epochs, 3 seeds) left its hard-label baseline under-fitted and every difference inside the seed noise |
# | Evaluation splits (demo) | ISIC 2018's own (imbalanced) parts | class-balanced synthetic validation (150 per class) and test (400 per class) splits, drawn with the generator's `balanced` option from their own seeds | in ISIC's proportions the rarest class of the previous 1,400-image test set had 16 images, so one image moved balanced accuracy by 0.9 points; with 400 per class one image moves it by 0.04 points, small against the seed-to-seed spread |
# | Schedule and seeds (demo) | not known | 6 epochs (1,872 steps), 5 seeds, 3 methods and 3 ablation rows: 30 runs | chosen on the development data seed (`data_seed` 3018, not the demo's 2018), never on the demo's test split: the hard-label baseline reached 76.2% balanced accuracy (72% of the way from chance, 14.3%, to 100%: learned, not saturated); CCL-Net minus hard labels was -0.5 points, 95% interval -2.1 to +1.2 (half-width 1.7, within the standard's 3; every comparison read "no difference"); from epoch 5 to epoch 6 validation balanced accuracy still rose by 0.8 points on average (26 runs; the last epoch best in 20), a gain small against that level, while 8 epochs would not fit 30 runs in the demo's budget. A run costs about 44 seconds on one of 2 idle cores (39 CPU-seconds measured on the loaded development machine, times 1.09, the ratio of the previous demo's idle run time to its CPU time measured beside it), so the whole notebook takes about 12 minutes on 2 idle cores |
# | Reference row | none | label smoothing with its mass spread by the true similarity | separates "do correlation-shaped labels help here?" from "does CCL-Net learn them?"; an earlier version applied Eq. 4 to the true similarity, which made the reference far softer than every other method and so not comparable |
