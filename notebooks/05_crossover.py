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
# # 5. Crossover-Net: cross-shaped patches for non-elongated targets
#
# **Paper.** Qian Yu, Yinghuan Shi, Yefeng Zheng, Yang Gao, Jianbing Zhu, Yakang Dai. *Crossover-Net:
# Leveraging the Vertical-Horizontal Crossover Relation for Robust Segmentation.* 2020.
# [arXiv:2004.01397](https://arxiv.org/abs/2004.01397). Official code:
# [Qianyu1226/Crossover-Net](https://github.com/Qianyu1226/Crossover-Net).
#
# **The idea.** A kidney tumour, the myocardium or a breast mass is not elongated: it has no long axis
# along which a network could follow it, and its boundary with the tissue around it is often weak. The
# paper turns segmentation into the classification of every pixel, each from a *crossover-patch*
# centred on it: a tall, narrow vertical patch and a wide, flat horizontal one that cross on the pixel.
# One trunk reads both arms; a head on their two embeddings decides whether the centre belongs to the
# target. The loss asks the two arms to *agree* where they see the same pixels (the square where they
# overlap) and to *differ* on their ends, which see different surroundings, so that each direction
# contributes what the other cannot.
#
# ```{admonition} What this chapter is built from
# :class: note
# The paper's abstract and the official code (its network, its loss and its training script, read to
# understand and re-implemented here) could be studied for this book, together with the patch sampling
# and post-processing of its predecessor, Crossbar-Net (TIP 2019). The paper's full text, its tables and
# its own statement of the loss could not: where the code and the paper may differ, this chapter follows
# the code, and every choice is listed in the deviation ledger at the end. No number of the paper could be
# verified, so none is quoted.
# ```
#
# **Results.** *What the runs show* states, from the runs' records and under the book's evidence standard,
# whether Crossover-Net beat the same two arms trained with cross-entropy alone and a 2D U-Net, on
# synthetic data.

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
# the benchmark records shipped with the package, `medlab/resources/bench/crossover/`):

# %%
from medlab.results import resource_card

resource_card("crossover")

# %% [markdown]
# ## Parameters and setup
#
# On Colab, the notebook's first cell (hidden in the book) installs the book's package. The
# `parameters` cell is what papermill and `medlab run` override: `profile` is `smoke` (seconds, for CI),
# `demo` (the book, minutes on a CPU) or `paper` (the real data under `data_dir`, the official network
# for 100 x 20 arms, one GPU). `task` chooses the target: `kidney_tumour` (KiTS19), `myocardium` (ACDC) or
# `mass` (INbreast). Any setting of `medlab.papers.crossover.Settings` can be passed through `overrides`,
# or on the command line as `medlab run crossover -p overrides '{"diversity_weight": 0.5}'`.

# %% tags=["parameters"]
import os

profile = os.environ.get("MEDLAB_PROFILE", "demo")  # smoke | demo | paper
data_dir = None  # the task's real dataset in its official layout (KiTS19, ACDC or INbreast); None = synthetic
device = None  # None = automatic (cuda > mps > cpu); or "cpu", "cuda", "mps"
seeds = None  # e.g. [0, 1, 2] or "0,1,2"; None = the profile's
epochs = None  # epochs of the patch networks; None = the profile's
task = None  # "kidney_tumour", "myocardium" or "mass"; None = the profile's (kidney_tumour)
overrides = {}  # any other setting, e.g. {"consistency_weight": 0.5}

# %%
import pandas as pd
from IPython.display import Markdown, display

from medlab import experiment, plots, report, results
from medlab.papers import crossover as cx

run = experiment.setup(cx, profile, device=device, data_dir=data_dir, seeds=seeds, epochs=epochs, task=task, **overrides)
profile, config, device = run.profile, run.config, run.device
run.settings_table()

# %% [markdown]
# ## The problem and the idea
#
# Segmentation as classification: for every pixel $p$ of a region of interest, decide whether it belongs
# to the target from the image around it.
#
# **Eq. (1), the crossover-patch.** Around $p$, a vertical patch $x^v_p$ of $L$ rows by $W$ columns and a
# horizontal patch $x^h_p$ of $W$ rows by $L$ columns ($L = 5W$: 100 x 20 pixels in the paper, 40 x 8 in the
# demo). They share the $W \times W$ square around $p$. The horizontal patch is transposed, so that both
# arms are $L \times W$ and read along their length.
#
# **Eq. (2), the network.** One trunk $g$ (convolutions without padding, ReLU, max-pooling) turns an arm
# into a *feature line* $F \in \mathbb{R}^{C \times n}$, whose $n$ positions run along the arm, and then
# into an embedding $e = g(x)$; a head classifies the centre pixel from both embeddings,
# $$\hat y_p = \operatorname{softmax}\!\big(A\,\operatorname{ReLU}([\,g(x^v_p);\ g(x^h_p)\,]) + b\big).$$
# The trunk is *shared*: the two arms are two views read by the same filters.
#
# **Eq. (3), the loss.** Over a batch $b = 1..B$, the distance between the arms per channel $k$ and position
# $j$ of the feature line,
# $$d_{kj} = \sqrt{\textstyle\sum_b \big(F^v_{bkj} - F^h_{bkj}\big)^2},$$
# taken on the positions over the overlap $\mathcal O$ (the central square) and on those over the two ends
# $\mathcal S$ (the first and last $n/5$), each map min-max normalised, $\bar d = (d - \min d) / (\max d - \min d)$:
# $$\mathcal L = \mathrm{CE}(\hat y, y) + \lambda_c\,\operatorname{mean}_{k,\,j \in \mathcal O} \bar d_{kj}
#   - \lambda_d\,\operatorname{mean}_{k,\,j \in \mathcal S} \bar d_{kj}.$$
# *Consistency*: where both arms see the same pixels, their features should agree. *Diversity*: where they
# see different surroundings, their features should differ, so that the head gets two views, not one view
# twice. The official code weights both terms 1.
#
# **Eq. (4), sampling.** Training centres are drawn denser near the target's boundary, where the
# decisions are hard (a regular grid, a share of the boundary pixels, and rings around the boundary with
# falling rates), then balanced between target and background.
#
# **Eq. (5), dense prediction and clean-up.** Every pixel of the region is classified; the mask is closed
# with a small disk, its holes are filled and its largest connected component is kept.

# %% [markdown]
# ## Data
#
# The paper evaluates on CT kidney tumours, cardiac MR and X-ray breast masses. Without `data_dir` this
# chapter uses **synthetic** look-alikes of all three, drawn with exact masks from a seed
# (`medlab.data.synth.kidney_ct`, `cardiac_mr` and `mammograms`), each with what the paper is about: a
# target that is not elongated, a weak or ambiguous boundary, and similar-looking tissue beside it. Top
# row: contrast-enhanced CT around a kidney in Hounsfield units (windowed to [-79, 304] HU), the tumour
# growing out of the kidney and enhancing almost like it, bowel loops of the same brightness nearby.
# Middle: short-axis cine MR, the myocardium ring with papillary muscles inside the cavity as dark as it.
# Bottom: mammogram crops, masses with circumscribed, lobulated, ill-defined or spiculated margins in
# fibroglandular tissue about as dense as they are. The target is outlined in red.

# %%
fig = cx.tasks_figure(config.image_size)

# %% [markdown]
# The demo trains and evaluates on the first task, the kidney tumour (the paper's first application):
# crops of 64 pixels around the kidney. The test crops come from the same generator with another seed;
# the development choices listed in the ledger were made on yet another seed (`data_seed + 1000`), never
# on these test crops. To use real data, download KiTS19, ACDC or INbreast (see `data/README.md`), set
# `data_dir` and `task`, and run the `paper` profile: the readers (`medlab.data.formats.kits19`, `acdc`,
# `inbreast`) cut the same kind of crops from the official layouts, and the chapter checks that its
# settings fit the data before any training starts.

# %%
data = cx.load_data(config, data_dir)
fig = cx.samples_figure(data)
pd.DataFrame({split: {k: v for k, v in data.info[split].items() if not isinstance(v, (list, dict))} for split in ("train", "val", "test")}).T

# %% [markdown]
# A crossover-patch on a training crop, centred on a pixel of the tumour's boundary: the vertical arm
# (red) and the horizontal arm (cyan), and both arms as the trunk reads them, the shared square marked.

# %%
fig = cx.arms_figure(data, config.trunk)

# %% [markdown]
# The training centres of Eq. (4) on three crops: denser near the boundary, as many target (red) as
# background (blue) centres over the training set.

# %%
fig = cx.sampling_figure(data, config)

# %% [markdown]
# ## Method: the code
#
# The chapter's method is one file, `medlab/papers/crossover/method.py`: Eqs. (1)-(5) in order, each
# function naming its equation and taking its hyper-parameters explicitly. It is unit-tested
# (`tests/test_crossover.py`: the loss by hand, the patches against direct slicing, the fully convolutional
# prediction against patch-by-patch prediction, gradients, the sampling and the clean-up). Dense
# prediction never loops over pixels: every max-pooling becomes a stride-1 pooling and every later layer is
# dilated by the stride it skipped, which computes at every pixel exactly what the network computes on
# the patch centred there. This is that file.

# %%
plots.show_source(cx.method)

# %% [markdown]
# One training step of every patch network (in `runs.py`): the patches of a batch of centres are
# gathered on the device from the padded training crops, so the step never waits for the host; the
# baselines are the same step with one arm, a square patch, or the regulariser switched off (`cx.METHODS`).

# %%
plots.show_source(cx.patch_step)

# %% [markdown]
# ## Training
#
# The grid: Crossover-Net, the same two arms with cross-entropy only, and a MONAI 2D U-Net trained on the
# same crops, at every seed; the single arms, the square patch and the ablation at the `side_seeds`
# (in the demo, the same six seeds). At one seed every patch network trains on the same centres. Every method trains with Adam
# and a one-cycle schedule and is scored after its last epoch; the validation Dice after every epoch is
# logged for the curves only. On a CPU the runs go to parallel worker processes; each writes its record
# under `results/<profile>/crossover/` as it finishes and checkpoints every epoch under `runs/`, so
# rerunning the cell after an interruption resumes where it stopped.

# %%
records = experiment.run_grid(cx, config, profile=profile, device=device, data_dir=data_dir)
frame = results.to_frame(records)

# %% [markdown]
# Validation Dice after every epoch, against the share of training done (before the clean-up; mean ±
# std over seeds; the U-Net runs more epochs, each over whole crops), and the three terms of Eq. (3)
# while Crossover-Net trains: the loss wants the diversity term to rise (the ends of the arms pulling
# apart) and the consistency term to fall (the arms agreeing on their shared square).

# %%
fig = cx.curves_figure(records)

# %% [markdown]
# ## Evaluation
#
# Every test crop is segmented pixel by pixel (Eq. 5), cleaned up, and scored against its exact mask:
# Dice, the 95th-percentile Hausdorff distance and the distance between the centroids of prediction and
# truth (pixels), and the true-positive fraction (the share of the target found), the measures
# Crossbar-Net reported; Dice before the clean-up beside them. The U-Net's masks get the same clean-up.
# Mean ± std over seeds.

# %%
cx.metrics_table(frame)

# %% [markdown]
# Test crops with the truth (green) and each method's segmentation after the clean-up (red), the runs of
# the first seed, every method:

# %%
fig = cx.predictions_figure(records, data, config.seeds[0])

# %% [markdown]
# What the loss does to the arms. Left: on test patches centred near the tumour's boundary, the distance
# between the vertical and the horizontal arm's features at each position of the feature line (relative to
# the features' size), for Crossover-Net and for the same network trained with cross-entropy only; the
# overlap is shaded yellow, the ends grey. Right: the feature lines of one patch, both arms.

# %%
if {"crossover", "ce_only"} <= set(config.methods):
    fig = cx.arm_features_figure(records, data, config.seeds[0])

# %% [markdown]
# ## Ablation
#
# The terms of Eq. (3) one at a time (consistency only, diversity only), both without the min-max
# normalisation (the distances as root mean squares over the batch), and the patch shape: one arm alone,
# or a square patch of the same area, all with cross-entropy only. The evaluation table above holds their
# scores; the comparisons below pair them with their reference by seed. Here, the terms of Eq. (3) at the
# start and the end of training, mean over seeds (the consistency and diversity columns are the
# normalised means the loss uses, or the raw root-mean-square distances without min-max; a term whose
# weight is 0, as in the cross-entropy-only network, is watched, not trained): min-max
# normalisation bounds both terms in [0, 1], whatever the size of the features; without it nothing stops
# the trunk from inflating its features to push the ends apart.

# %%
cx.loss_terms_table(records)

# %% [markdown]
# ## What the runs show
#
# The chapter's declared comparisons (`cx.COMPARISONS`), decided by the book's evidence standard from the
# records of this execution and written to `results/<profile>/crossover/comparisons.json`: paired by seed,
# with the 95% t-interval of the mean difference; a comparison is void when its baseline did not learn
# (Dice below 0.5) or is saturated, and a main comparison also when its interval is wider than ±3 points.

# %%
verdicts = report.chapter_verdicts(cx, frame, profile)
report.verdicts_table(verdicts)

# %%
display(Markdown(report.verdicts_markdown(verdicts, cx.METHOD_LABELS)))

# %%
fig = report.differences_figure(cx.COMPARISONS, frame, cx.METHOD_LABELS)

# %% [markdown]
# Every method against Crossover-Net on the other measures (mean ± std of the paired differences over
# seeds):

# %%
display(Markdown(cx.findings(frame)))

# %% [markdown]
# ## Performance
#
# Dense prediction is what a patch classifier spends its time on at test time: one patch per pixel. Below,
# in the same process, the chapter's fully convolutional prediction beside the plain way, gathering both
# arms of every pixel and classifying them in chunks (`medlab/papers/crossover/throughput.py`; the two
# give the same logits, which the tests check). The record is what `medlab bench` reports.

# %%
throughput = cx.record_throughput(config, data, profile=profile, device=device)
pd.Series(throughput["metrics"]).map(lambda v: f"{v:,.1f}").to_frame(f"{device} ({run.environment['device'].get('name')})")

# %% [markdown]
# **Try it.** `medlab run crossover -p task myocardium` or `-p task mass` (the other synthetic tasks),
# `-p overrides '{"diversity_weight": 0.3}'`, or `--profile paper -p data_dir /path/to/kits19/data` on a GPU
# (`-p task myocardium -p data_dir /path/to/ACDC` for ACDC, `-p task mass -p data_dir "/path/to/INbreast Release 1.0"`
# for INbreast).
#
# ## Reproduction notes
#
# **The paper's numbers.** Not quoted: no number from the paper's results tables could be read for this
# book. The abstract reports "promising results" on CT kidney tumours, MR cardiac images and X-ray breast
# masses against state-of-the-art segmentation models. The `paper` profile runs the chapter's grid on
# KiTS19 (or ACDC, or INbreast) with the official network for 100 x 20 arms and the official optimiser
# settings; its records appear on the benchmarks page when they exist. The demo runs on synthetic kidney
# crops at a teaching scale (64-pixel crops, 40 x 8 arms, minutes on a CPU): it shows the method end to end
# and what it does there, not whether the paper's results hold.
#
# **Deviation ledger.**
#
# | What | The paper / official code | This chapter | Why |
# |---|---|---|---|
# | Data | a private CT set (94 patients, 3,500 slices, per Crossbar-Net), an unnamed cardiac MR set, INbreast | demo: synthetic kidney-tumour CT crops in HU (and look-alikes of the two other tasks); paper profile: KiTS19 tumour slices, ACDC ED/ES myocardium, INbreast masses | CPU budget and offline build; KiTS19 and ACDC are the public sets closest to the paper's tasks |
# | Regions of interest | slices cropped around the kidney and tumour (test-time ROIs not described) | square crops around the target's organ (kidney, left ventricle) or the mass, from the ground truth, resized to 64 (demo) or 128 pixels (paper profile) | isolates segmentation from localisation, as the paper's crops do |
# | Patch size and trunk | 100 x 20 arms; conv 5x3 (16, 36), pool, conv 5x3 (64), pool, conv 3x3 (64): a 64 x 19 feature line; three 7x1 convs to 500; head 1000 -> 2 | paper profile: the same; demo: 40 x 8 arms (the same 5:1), conv 5x3 (8, 16), pool, conv 3x2 (32): a 32 x 14 feature line, three column convs to 64, head 128 -> 2 | the official trunk costs 57 times the multiply-adds of the demo's per patch (23.3 million against 0.41 million); the demo keeps its shape at a size the CPU budget allows |
# | Orientation of the horizontal arm | stored beside the vertical arm as 100 x 20 (transpose or rotation: not known) | transposed | one choice, stated; it makes the horizontal arm the vertical arm of the transposed image, which dense prediction uses |
# | Loss: pairing of the arms | features flattened with a reshape that mixes samples and channels before the distance | each sample's vertical line against its own horizontal line (a permute, not a reshape) | the loss's intent; the official reshape compares unrelated features |
# | Loss: positions | overlap positions 7-10 and ends 0-2, 16-18 of 19 (round(5/2) around the centre, 19 // 5 at each end) | $2\,\mathrm{round}(n/10)$ positions around the centre and $n // 5$ at each end: the same for $n = 19$; 6-7 and 0-1, 12-13 of 14 in the demo | the official arithmetic generalised to any line length |
# | Loss: weights and normalisation | weights 1, 1; min-max normalisation; `print` calls in the loss | the same (`consistency_weight`, `diversity_weight`, the `normalise` flag); no printing; the ablation's unnormalised variant uses root mean squares over the batch ($d / \sqrt B$) | exposes what the code fixes; the raw sum over the batch would grow with the batch size |
# | Sampling | Crossbar-Net's MATLAB sampling: grid, 40 % of boundary pixels, boundary shifted by 1, 3, 6, 10, 15, 21 pixels at 15 % down to 7.5 %, classes balanced | paper profile: those offsets and rates, grid every 8 pixels; demo: grid every 6 pixels, 40 % of the boundary, rings at 2, 4, 6, 9 pixels at 30, 20, 15, 10 %, balanced, at most 12,000 centres per run, drawn per seed | the demo's offsets scaled to its 64-pixel crops; the cap bounds the CPU time (each epoch sees every centre once) |
# | Optimiser | Adam, learning rate 1e-4 (the script's later rates never reach the optimiser), 16 epochs, batches of 200 | paper profile: Adam 1e-4, 16 epochs, batches of 200; demo: Adam, one-cycle to 1e-3 then cosine to 0, 8 epochs, batches of 200 | the demo trains from 12,000 centres in minutes; the schedule settles the last epoch's weights, which are the ones scored |
# | Dense prediction | not in the official code (patch-level inference only) | every pixel of the crop, fully convolutional (the same logits as patch by patch), then closing, hole filling and the largest component | the paper segments regions; the exact equivalence is tested |
# | Clean-up | Crossbar-Net: closing with a disk of radius 3, holes filled, largest component | radius 1 in the demo (3 in the paper profile), applied to every method, U-Net included; no hole filling for the myocardium | the demo's crops are about half the paper's scale; a ring's hole is the cavity |
# | U-Net baseline | not known which models the paper compared with | MONAI 2D U-Net (16-32-64-128, one residual unit per level), Dice + cross-entropy, Adam one-cycle to 3e-3, 40 epochs of the 128 training crops, batches of 16 | the standard a reader would pick, trained on the same crops |
# | Augmentation | none in the official script | none, for every method | the same data for all |
# | Evaluation | Crossbar-Net: Dice, true-positive fraction, centroid distance, Hausdorff distance | Dice, HD95 (MONAI), true-positive fraction and centroid distance per crop, after the clean-up; 192 test crops; 6 seeds for every method | the predecessor's measures; seeds and test size chosen for the evidence standard's precision |
# | Development | — | made on the development seed (`data_seed + 1000`), never on the test crops. One run at a constant learning rate of 1e-3: the validation Dice swung by up to 0.1 between epochs (0.64, 0.55, 0.65), and the last epoch is the one scored, so every method got the one-cycle schedule. With it, 4 seeds of the main methods: Dice 0.692 (Crossover-Net), 0.699 (CE only), 0.796 (U-Net); the paired differences had standard deviations of 0.005 (against CE only) and 0.010 (against the U-Net) over seeds, so 6 seeds meet the ±3-point target. The whole design (54 runs) then gave, on that seed: both baselines between the gates (CE only 0.70, U-Net 0.79 Dice), Crossover-Net minus CE only -0.9 points [-1.9, +0.0], minus the U-Net -10.1 [-11.5, -8.7], every side comparison decided (none void), in 978 CPU-seconds (about 8 minutes on two idle cores). 8 epochs and at most 12,000 centres per run fit that budget; the validation curves were flat over the last two epochs | the evidence standard's precision within the demo's 15 minutes |
