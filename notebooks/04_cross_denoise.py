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
# # 4. Cross-denoising: peer networks against corrupted labels and domain shift
#
# **Paper.** Qinming Zhang, Luyan Liu, Kai Ma, Cheng Zhuo, Yefeng Zheng. *Cross-denoising Network
# against Corrupted Labels in Medical Image Segmentation with Domain Shift.* IJCAI 2020.
# [arXiv:2006.10990](https://arxiv.org/abs/2006.10990).
#
# **The idea.** Segmentation masks drawn by clinicians are never perfect: an outline drawn too wide or
# too tight, shifted, wobbly or a coarse polygon. A network trained long enough learns those errors too.
# And a network trained on one hospital's camera meets another camera's images in use. The paper trains
# two *peer* networks that review each other: each picks the training samples it finds reliable (those
# with a small loss) and hands them to its peer; a *noise-tolerant loss* trusts the core of each
# structure more than its outline and leaves out the pixels the peer confidently rejects; and *class-level
# cross learning* lets each network teach its peer on the unlabelled images of the new camera, with its
# most confident pixels of each class, so that the small optic cup is not drowned by the background.
# The task: segmenting the optic disc and the optic cup in colour fundus photographs, whose vertical
# ratio is a glaucoma indicator.
#
# ```{admonition} What this chapter is built from
# :class: note
# The paper's abstract and the opening of its introduction could be read for this book; its full text
# could not, and its code is not public. The three components above are what the abstract names; how
# each is computed here (the equations below) is this book's reconstruction, and every choice is listed
# in the deviation ledger at the end. No number of the paper could be verified, so none is quoted.
# ```
#
# **Results.** The section *What the runs show* sums up, from the runs' records, whether the method beat
# a single network and Co-teaching on the synthetic demo data.

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
# the benchmark records shipped with the package, `medlab/resources/bench/cross_denoise/`):

# %%
from medlab.results import resource_card

resource_card("cross_denoise")

# %% [markdown]
# ## Parameters and setup
#
# On Colab, the notebook's first cell (hidden in the book) installs the book's package. The
# `parameters` cell is what papermill and `medlab run` override: `profile` is `smoke` (seconds, for CI),
# `demo` (the book, minutes on a CPU) or `paper` (REFUGE and Drishti-GS from `data_dir` and
# `target_data_dir`, 256-pixel crops, one GPU). Any setting of `medlab.papers.cross_denoise.Settings`
# can be passed through `overrides`, or on the command line as `medlab run cross_denoise -p forget_rate 0.3`.

# %% tags=["parameters"]
import os

profile = os.environ.get("MEDLAB_PROFILE", "demo")  # smoke | demo | paper
data_dir = None  # REFUGE (the source domain) in its official layout; None = synthetic source images
target_data_dir = None  # Drishti-GS1 (the target domain); None = synthetic target images
device = None  # None = automatic (cuda > mps > cpu); or "cpu", "cuda", "mps"
seeds = None  # e.g. [0, 1, 2] or "0,1,2"; None = the profile's
epochs = None  # None = the profile's
noise_rates = None  # shares of corrupted training masks, e.g. "0,0.5"; None = the profile's
overrides = {}  # any other setting, e.g. {"confident_fraction": 0.3}

# %%
import pandas as pd
from IPython.display import Markdown, display

from medlab import experiment, plots, results
from medlab.papers import cross_denoise as cd

run = experiment.setup(
    cd, profile, device=device, data_dir=data_dir, seeds=seeds, epochs=epochs, noise_rates=noise_rates, **overrides
)
profile, config, device = run.profile, run.config, run.device
if profile == "paper" and target_data_dir is None:
    raise ValueError("the paper profile needs Drishti-GS as the target domain: set target_data_dir (see data/README.md)")
run.settings_table()

# %% [markdown]
# ## The problem and the idea
#
# Training images $x_i$ of the source domain come with masks $\tilde y_i$, some of which are corrupted;
# the clean masks $y_i$ are unknown to the training (this chapter keeps them only to measure). Target
# images come without masks. Two networks $f_A$ and $f_B$ of the same architecture but different
# initialisations output probabilities over background, disc rim and cup; the disc is rim plus cup.
#
# **Eq. (1), the standard loss** per sample: pixel cross-entropy plus one minus the soft Dice of the
# two nested regions, disc and cup,
# $$\ell(x, \tilde y) = \mathrm{CE}(f(x), \tilde y) + 1 - \tfrac12\textstyle\sum_{r \in \{\text{disc}, \text{cup}\}} \mathrm{Dice}_r .$$
#
# **Eq. (2), peer review.** In each batch, network $A$ ranks the samples by its own loss and selects the
# fraction $R(t)$ with the smallest loss; network $B$ learns from those, and vice versa. A network
# learns clean patterns before it memorises errors, so early on a small loss points to a clean mask;
# two networks with different initialisations make different mistakes, so each filters errors the other
# would have kept. $R(t) = 1 - \tau \min(t / T_k, 1)$ with $\tau$ the share of samples to drop (here: the
# true share of corrupted masks, as Co-teaching assumes) and $T_k$ epochs of warm-up.
#
# **Eqs. (3)-(5), the noise-tolerant loss.** The annotation errors above all move a structure's outline
# and leave its core right. Each pixel's loss is weighted by how far it lies from the (noisy) outlines,
# $$w_p = \prod_{r} \Big(1 - e^{-d_r(p)^2 / (2 (s \rho_r)^2)}\Big),$$
# with $d_r(p)$ the distance to the outline of region $r$ and $\rho_r$ the region's equivalent radius; and a
# pixel whose label the peer rejects with confidence $\gamma$ is left out,
# $m_p = \mathbb 1[q_\text{peer}(\tilde y_p) \ge 1 - \gamma]$. The loss is Eq. (1) with every pixel weighted by $w_p m_p$.
#
# **Eq. (6), class-imbalanced cross learning.** On a batch of target images, each network's argmax
# labels become pseudo-labels for its peer, but only the most confident fraction $q$ of the pixels *of
# each class*: a single threshold would keep almost only background, the most confident class. The
# peer's cross-entropy on them is averaged within each class, then over classes.
#
# **Eq. (7)**: each network minimises Eq. (5) on the samples its peer selected plus $\lambda(t)$ times
# Eq. (6), with $\lambda$ rising from 0 after the warm-up. The prediction is the mean of the two
# networks' probabilities.

# %% [markdown]
# ## Data
#
# The demo uses synthetic colour fundus crops around the optic disc (`medlab.data.synth.fundus`): a
# retina with its illumination falloff, a bright yellowish disc, a paler cup inside it, vessels leaving
# the disc, and in some images a pale crescent of peripapillary atrophy beside the disc (a look-alike of
# the disc's edge). The **source** domain imitates REFUGE's training camera, the **target** domain another
# camera like Drishti-GS's (colour cast, brightness, zoom, sharpness). Top: source images; bottom: target
# images; the right half shows the clean masks (disc green, cup cyan).

# %%
data = cd.load_data(config, data_dir, target_data_dir)
fig = cd.domains_figure(data)
pd.DataFrame({part: info for part, info in data.info.items() if isinstance(info, dict)}).T

# %% [markdown]
# The training masks are corrupted with the kinds of error annotators make
# (`medlab.data.mask_noise`): the outline *dilated* or *eroded*, the whole annotation *shifted*, an
# *elastic* wobble, or a *coarse polygon* of a few clicks. Magnitudes scale with each structure's size.
# One example of each, on three source images:

# %%
fig = cd.noise_examples_figure(data, strength=config.noise_strength)

# %% [markdown]
# How much each kind damages a mask: Dice of the corrupted against the clean mask, over every source
# training image (%):

# %%
cd.noise_damage_table(data, strength=config.noise_strength)

# %% [markdown]
# ## Method: the code
#
# The chapter's method is one file, `medlab/papers/cross_denoise/method.py`: the equations above in
# their order (the standard loss and the peer review, Eqs. 1-2; the noise-tolerant loss, Eqs. 3-5;
# class-imbalanced cross learning, Eq. 6; each peer's objective, Eq. 7), each function naming its
# equation and taking its hyper-parameters explicitly. It is unit-tested (`tests/test_cross_denoise.py`:
# each equation on tiny tensors, several by hand). Nothing in it waits for the device: masked means and
# the per-class confidence thresholds are computed over whole tensors, so no shape depends on the data.
# This is that file.

# %%
plots.show_source(cd.method)

# %% [markdown]
# One training step of every method (in `runs.py`): the single network and Co-teaching are the same step
# with components switched off (`cd.METHODS`). The epoch, hence the share of each batch a peer selects
# and the weight of cross learning, is counted on the host, so the step never reads a value back from
# the device. The networks are MONAI 2D U-Nets; the key-location weights are computed once per run from
# the noisy masks; the loop is the book's training engine, the same for every chapter.

# %%
plots.show_source(cd.training_step)

# %% [markdown]
# The key-location weights of one noisy mask (white: full weight, black: none), and the peer filter on
# top of them once a peer exists:

# %%
fig = cd.key_weights_figure(data, config.boundary_band)

# %% [markdown]
# ## Training
#
# The grid: every method at every noise rate (mixed kinds), the single network and the full method on
# each kind of noise alone, and the ablation, over the profile's seeds. At one seed every method trains
# on the same corrupted masks. No epoch is chosen: the target domain has no labels to choose with, so
# each run is scored after its last epoch. The target Dice after every epoch is logged for the curves
# below only. On a CPU the runs go to parallel worker processes. Each run writes its results record under
# `results/<profile>/cross_denoise/` as it finishes and checkpoints every epoch under `runs/`: rerunning
# the cell after an interruption resumes where it stopped.

# %%
records = experiment.run_grid(
    cd, config, profile=profile, device=device, data_dir=data_dir, target_data_dir=target_data_dir
)
frame = results.to_frame(records)
frame["method"] = frame["params.method"].map(cd.METHOD_LABELS)
frame["rate %"] = (frame["params.rate"] * 100).round().astype(int)
frame["kind"] = frame["params.kind"]

# %% [markdown]
# ## Evaluation
#
# **Noise rate.** Target-domain scores against the clean masks, per method and share of corrupted
# training masks (mixed kinds): Dice in %, HD95 (MONAI) in pixels of the crop, and the absolute error of
# the vertical cup-to-disc ratio (vCDR), the number a clinician reads. Mean ± std over seeds.

# %%
mixed = frame[(frame["params.kind"] == cd.MIXED) & frame["params.method"].isin(config.methods)]
cd.metrics_table(mixed, ("method", "rate %"))

# %%
fig = cd.noise_rate_figure(frame)

# %% [markdown]
# **Domain shift.** The same networks on the source domain's test images (clean masks): the gap to the
# target columns above is what the change of camera costs.

# %%
source_names = {f"source/{k}": v for k, v in cd.METRIC_NAMES.items()}
results.summarize(mixed, list(source_names), by=("method", "rate %"), percent=[f"source/{k}" for k in cd.PERCENT], names=source_names)

# %% [markdown]
# Predictions at the ablation's noise rate, seed 0. Top: corrupted source training masks (what the
# networks were told); bottom: target test images with each method's prediction (disc green, cup cyan).

# %%
fig = cd.predictions_figure(records, data, rate=config.ablation_rate, seed=config.seeds[0], methods=config.methods)

# %% [markdown]
# The target Dice after every epoch at the highest noise rate (mean ± std over seeds). A single network
# that memorises the corrupted masks rises, then falls back as training goes on.

# %%
fig = cd.curves_figure(records, max(config.noise_rates))

# %% [markdown]
# ## Which samples the peers selected
#
# Each peer's picks for the other, against which masks were actually corrupted (the full method at the
# ablation's rate, seed 0). Left: the share of corrupted masks among a peer's picks per epoch; the dashed
# line is their share in the batches, what random picking would give. Right: how often each sample was
# picked per epoch (rows: the clean samples, then the corrupted ones grouped by kind).

# %%
selection_run = results.select(records, method="cross_denoise", rate=config.ablation_rate, kind=cd.MIXED, seed=config.seeds[0])
if config.ablation_rate > 0 and selection_run:
    fig = cd.selection_figure(
        selection_run[0], f"cross-denoising, {config.ablation_rate:.0%} corrupted, seed {config.seeds[0]}"
    )

# %% [markdown]
# After the warm-up, the share of corrupted masks among the picks, per method and noise rate (%; random
# picking would give the rate itself), and which kinds of corruption slipped through: the share of each
# kind's masks the peers still picked in the last epoch.

# %%
picks = frame[frame["params.kind"] == cd.MIXED]
picks = picks[picks["metrics.picked_corrupted"].notna()] if "metrics.picked_corrupted" in picks else picks.iloc[:0]
if not picks.empty:
    display(results.summarize(picks, ["picked_corrupted"], by=("method", "rate %"), percent=["picked_corrupted"],
                              names={"picked_corrupted": "corrupted share of the picks %"}))
    if config.ablation_rate > 0 and selection_run:
        display(cd.picks_by_kind(selection_run[0]))

# %% [markdown]
# **Noise kind.** Each kind of corruption alone, half of the training masks corrupted:

# %%
kinds = frame[frame["params.rate"] == config.kind_rate]
kinds = kinds[kinds["params.method"].isin(config.kind_methods) & (kinds["experiment"].isin(["noise_kind", "noise_rate"]))]
cd.metrics_table(kinds, ("kind", "method"))

# %% [markdown]
# ## Ablation
#
# The full method with one component removed at a time, at the ablation's rate (mixed kinds); the single
# network and Co-teaching for reference.

# %%
ablation = frame[(frame["params.rate"] == config.ablation_rate) & (frame["params.kind"] == cd.MIXED)]
cd.metrics_table(ablation, ("method",))

# %% [markdown]
# How good the cross-learning pseudo-labels were: the share of the kept target pixels whose pseudo-label
# matches the (never used) target mask, averaged over the last epoch of each run with cross learning, all
# pixels and cup pixels only (%).

# %%
pseudo = cd.pseudo_label_table(records)
if pseudo is not None:
    display(pseudo)

# %% [markdown]
# Reading the ablation with this table: cross learning can only help when the pseudo-labels it keeps are
# mostly right. The class-level weighting gives the cup a third of the loss, so wrong cup pseudo-labels
# weigh as much as right background ones, and each peer passes its errors on to the other.
#
# ## What the runs show
#
# Written from the results records of this execution, paired by seed (with three seeds a paired t-test
# has little power; read the p-values as a guide, not a verdict):

# %%
display(Markdown(cd.findings(frame)))

# %% [markdown]
# ## Performance
#
# A training step of the full method runs two U-Nets on the source batch and two on a target batch. The
# chapter's step computes the key-location weights once per run, keeps everything on the device, runs
# channels-last with mixed precision on CUDA and never waits for the device inside the loop. Below, in
# the same process, its throughput beside a plain loop of the same step: fp32, weights computed per
# sample on the host in the DataLoader, the loss read back after every step
# (`medlab/papers/cross_denoise/throughput.py`). The record is what `medlab bench` reports.

# %%
throughput = cd.record_throughput(config, data, profile=profile, device=device, steps=3 if profile == "smoke" else 8)
pd.Series(throughput["metrics"]).map(lambda v: f"{v:,.2f}").to_frame(f"{device} ({run.environment['device'].get('name')})")

# %% [markdown]
# **Try it.** `medlab run cross_denoise -p epochs 60`, `-p overrides '{"forget_rate": 0.3}'` (Co-teaching
# without knowing the true noise rate), `-p overrides '{"boundary_band": 0.1}'`, or
# `--profile paper -p data_dir /path/to/REFUGE -p target_data_dir /path/to/Drishti-GS1_files` on a GPU.
#
# ## Reproduction notes
#
# **The paper's numbers.** Not quoted: the full text could not be read for this book, and no number from
# it could be verified. The `paper` profile runs the chapter's grid with REFUGE's training images as the
# source domain and Drishti-GS as the target, on 256-pixel disc crops; its records appear on the
# benchmarks page when they exist. The demo runs on synthetic fundus crops at a teaching scale (64
# pixels, 128 training images, minutes on a CPU): it shows the method end to end and what it does at
# that scale, not whether the paper's results hold.
#
# **Deviation ledger.**
#
# | What | The paper | This chapter | Why |
# |---|---|---|---|
# | Data | REFUGE and Drishti-GS | demo: synthetic fundus crops in a REFUGE-like source and a Drishti-GS-like target domain; paper profile: REFUGE training images (source), REFUGE validation images (source test), Drishti-GS training images unlabelled and its test images (target) | CPU budget and offline build; which dataset was source and which target is not known to us |
# | Label noise | corrupted masks (protocol not known to us) | dilation, erosion, shift, elastic deformation, coarse polygons, magnitudes relative to each structure's size, times a strength of 1.5 in the demo; a share of the masks (0, 25, 50, 75%) corrupted, each with a kind drawn at random, or one kind alone | the errors clinicians make; clean masks kept for evaluation. At strength 1 (the noise module's ranges), corrupting half the masks left them at a mean Dice of 0.94 (disc) and 0.92 (cup) against the clean ones, too mild to test denoising; 1.5 was set before any method was run at it |
# | Regions of interest | not known to us | square crops around the disc, centred on the ground-truth disc (an oracle for the usual detection step) | isolates segmentation from localisation |
# | Backbone | not known to us | MONAI 2D U-Net, demo widths 8-16-32-64 with one residual unit per level; paper profile 16-256 | a standard segmentation network from a maintained library |
# | Standard loss | not known to us | cross-entropy + soft Dice of the nested regions disc and cup (Eq. 1) | the usual disc/cup objective |
# | Peer review | two peers select reliable samples for each other | Co-teaching's small-loss exchange per batch with $R(t) = 1 - \tau \min(t/T_k, 1)$, $\tau$ = the true corrupted share, $T_k$ = 5 epochs (demo); pixel-level filtering inside the selected samples by the noise-tolerant loss | the abstract's description matches Co-teaching, which the paper cites; knowing $\tau$ is Co-teaching's assumption, and `forget_rate` sets it otherwise |
# | Noise-tolerant loss | captures the key location and filters the discrepancy (formula not known to us) | Eq. (3): pixel weights fading to $w_0 = 0.5$ within about $s = 0.15$ of each region's equivalent radius from the noisy outlines; Eq. (4): pixels whose label the peer rejects with 90% confidence left out, from the end of the warm-up on | our reading of "key location" (the structure's core) and "discrepancy" (disagreement between the label and the peer). Development runs (seed 0, half the masks corrupted, noise strength 1, one run each): $s = 0.25$ without a floor erased the rim, which at 64 pixels is 2-4 pixels wide and lies wholly near an outline (the peers called the whole disc cup; source-test cup Dice 0.39, against 0.75 with the filter alone); $s = 0.15$ without a floor gave 0.55, with the floor 0.73. The filter waits for the warm-up because a peer that has not learned the cup yet rejects every cup label; in that run it made no measurable difference |
# | Class-imbalanced cross learning | most confident predictions at the class level | on unlabelled target images: each class's most confident 50% of pixels per batch as the peer's pseudo-labels, loss averaged per class; weight ramped from 0 to 1 over 5 epochs after the warm-up | the dossier's interpretation (cross pseudo-labelling with per-class thresholds); the target images make it the domain-adaptation part. In a development run (seed 0, half corrupted, strength 1) it lowered the target cup Dice from 0.78 to 0.49, with 60-68% of the kept cup pseudo-labels right; it was kept as designed and not tuned, and the ablation measures it |
# | Prediction | not known to us | mean of the two peers' probabilities (Co-teaching and cross-denoising); the single network alone | uses both peers; the single baseline gets no ensemble, which favours the peers slightly |
# | Training | not known to us | AdamW, one-cycle schedule (peak learning rate 0.003), left-right flips, 20 epochs of 128 images in batches of 16 (demo; 100 epochs of 400 images in the paper profile); no epoch selection (the target has no labels) | common defaults; the demo's 75 runs fit in about 11 minutes on 2 CPU cores |
# | Evaluation | not known to us | per-image Dice and HD95 (MONAI) of disc and cup on the target test images; vCDR absolute error; a missing disc scores the worst vCDR error (1) | the REFUGE challenge's measures |
