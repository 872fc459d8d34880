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
# # 6. LT-Net: one-shot segmentation by label transfer with a forward-backward cycle
#
# **Paper.** Shuxin Wang, Shilei Cao, Dong Wei, Renzhen Wang, Kai Ma, Liansheng Wang, Deyu Meng, Yefeng
# Zheng. *LT-Net: Label Transfer by Learning Reversible Voxel-wise Correspondence for One-shot Medical
# Image Segmentation.* CVPR 2020. [arXiv:2003.07072](https://arxiv.org/abs/2003.07072). No official code
# is public.
#
# **The idea.** Only one brain volume is labelled: the *atlas*. Instead of training a segmentation network
# on one example, learn where every voxel of the atlas lies in each unlabelled volume (a dense
# correspondence, a displacement field), and carry the atlas label along it: *label transfer*. A
# registration network learns the correspondence from image similarity alone. LT-Net adds a second pass
# backwards, from the warped atlas back to the atlas, and asks the round trip to return what it started
# from: the atlas image, the atlas label, and a displacement that cancels. These cycle-consistency signals
# supervise the forward correspondence too, which the abstract credits with stable training.
#
# ```{admonition} What this chapter is built from
# :class: note
# The paper's abstract and the opening of its introduction. Its method section, its loss formulas, its
# network, its data and its tables could not be read for this book, and no code is public. Every formula
# here is a reconstruction from the abstract, built from standard registration parts (MONAI's VoxelMorph
# U-Net, warping, local normalised cross-correlation and diffusion regulariser); the deviation ledger at the
# end lists each choice. No number of the paper is quoted.
# ```
#
# **Results.** *What the runs show* states, from the runs' records and under the book's evidence standard,
# whether LT-Net beat the same registration network trained one way (VoxelMorph-style), on synthetic
# brains.

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
# the benchmark records shipped with the package, `medlab/resources/bench/ltnet/`):

# %%
from medlab.results import resource_card

resource_card("ltnet")

# %% [markdown]
# ## Parameters and setup
#
# The `parameters` cell is what papermill and `medlab run` override: `profile` is `smoke` (seconds, for
# CI), `demo` (the book, minutes on a CPU) or `paper` (OASIS under `data_dir`, larger volumes, 35
# structures, one GPU). Any setting of `medlab.papers.ltnet.Settings` can be passed through `overrides`,
# or on the command line as `medlab run ltnet -p overrides '{"field_cycle_weight": 0.3}'`.

# %% tags=["parameters"]
import os

profile = os.environ.get("MEDLAB_PROFILE", "demo")  # smoke | demo | paper
data_dir = None  # OASIS as prepared for registration (neurite-oasis); None = synthetic brains
device = None  # None = automatic (cuda > mps > cpu); or "cpu", "cuda", "mps"
seeds = None  # e.g. [0, 1, 2] or "0,1,2"; None = the profile's
epochs = None  # epochs of the registration networks; None = the profile's
overrides = {}  # any other setting, e.g. {"field_cycle_weight": 0.3}

# %%
import pandas as pd
from IPython.display import Markdown, display

from medlab import experiment, plots, report, results
from medlab.papers import ltnet as lt

run = experiment.setup(lt, profile, device=device, data_dir=data_dir, seeds=seeds, epochs=epochs, **overrides)
profile, config, device = run.profile, run.config, run.device
run.settings_table()

# %% [markdown]
# ## The problem and the idea
#
# One labelled atlas $(x_a, y_a)$, many unlabelled volumes $x_u$. A network $G$ maps a pair (moving,
# fixed) to a displacement field $u$ in voxels; warping the moving volume by it, $(m \circ u)(p) = m(p + u(p))$
# (trilinear), should give the fixed one.
#
# **Forward, label transfer.** $u_F = G(x_a, x_u)$, $\tilde x = x_a \circ u_F$, and the segmentation of
# $x_u$ is the warped atlas label $\tilde y = y_a \circ u_F$ (one-hot maps warped trilinearly, then argmax).
#
# **Backward.** $u_B = G(\tilde x, x_a)$, the same network from the warped atlas back to the atlas;
# $\hat x_a = \tilde x \circ u_B$ and $\hat y_a = \tilde y \circ u_B$ reconstruct the atlas through the cycle.
#
# **The loss.**
# $$\mathcal L = \underbrace{-\mathrm{LNCC}(\tilde x, x_u)}_{\text{similarity}}
#   + \lambda_s \tfrac12\big(\|\nabla u_F\|^2 + \|\nabla u_B\|^2\big)
#   + \lambda_x \|\hat x_a - x_a\|_1
#   + \lambda_y \big(1 - \mathrm{Dice}(\hat y_a, y_a)\big)
#   + \lambda_u \big\|u_B + u_F \circ (\mathrm{id} + u_B)\big\|^2 .$$
# The image cycle, the label (anatomy) cycle and the correspondence cycle: $u_B(p) + u_F(p + u_B(p))$ is
# the displacement the whole round trip applies to the atlas, zero when the two fields undo each other.
# The label cycle is the only term that uses the one label. The one-way baseline keeps the similarity and
# $\|\nabla u_F\|^2$ and never runs the backward pass: VoxelMorph, whose warped atlas label is the
# segmentation.

# %% [markdown]
# ## Data
#
# Without `data_dir` this chapter uses **synthetic** brains (`medlab.data.synth.oneshot_brains`). The
# atlas is the MNI152 2009 T1 template that nilearn ships, with six structures drawn from its grey and
# white matter maps and MNI coordinates: cortex, white matter, deep grey matter, ventricles, cerebellum
# and brainstem. Each target is the atlas warped by a random affine, a smooth random displacement and
# atrophy-like changes (larger ventricles, a smaller brain), with a random gamma, a bias field and noise;
# its labels are warped with it, so every target's truth is known. The atlas is not among the targets.
# Volumes are 24 x 32 x 24 voxels of about 6.5 mm in the demo. The unlabelled training targets, the
# development targets (curves only) and the test targets are drawn from different seeds; the choices in the
# ledger were made on another data seed (`data_seed + 1000`), never on the test targets. With `data_dir`,
# the reader `medlab.data.formats.oasis` reads OASIS-1 as prepared for registration (see `data/README.md`).

# %%
data = lt.load_data(config, data_dir)
lt.check_data(config, data_dir)
fig = lt.data_figure(data)
pd.DataFrame({split: {k: v for k, v in data.info[split].items() if not isinstance(v, (list, dict))} for split in ("unlabeled", "val", "test")}).T

# %% [markdown]
# ## Method: the code
#
# The chapter's method is one file, `medlab/papers/ltnet/method.py`: the network, label transfer, the
# backward pass, the cycle and the losses in the abstract's order. It is unit-tested
# (`tests/test_ltnet.py`: warping against shifts, the composition of fields, the Jacobian of known fields,
# every loss term by hand, gradients through the cycle).

# %%
plots.show_source(lt.method)

# %% [markdown]
# ## Training
#
# The grid: LT-Net and the one-way baseline at every seed; the identity (the atlas label as it is), a 3D
# U-Net trained on the atlas alone with standard augmentation, a fully supervised 3D U-Net trained on the
# training targets with their true labels, at the `side_seeds`; and the ablation (each cycle term
# removed in turn) at the `ablation_seeds`, in the paper profile (the demo's budget does not hold it).
# Every network trains with Adam and a one-cycle schedule and is scored after its last step; the
# development Dice after every epoch is logged for the curves only. Records go to
# `results/<profile>/ltnet/`, checkpoints to `runs/`, so rerunning after an interruption resumes.

# %%
records = experiment.run_grid(lt, config, profile=profile, device=device, data_dir=data_dir)
frame = results.to_frame(records)

# %%
fig = lt.curves_figure(records)

# %% [markdown]
# ## Evaluation
#
# Every test target is segmented (label transfer for the registrations, the network's argmax for the
# U-Nets) and scored against its true labels: Dice and HD95 (MONAI) per structure, averaged over the
# structures, and, for the registrations, the share of voxels where the forward field folds (a
# non-positive Jacobian determinant). Mean ± std over seeds.

# %%
lt.metrics_table(frame)

# %% [markdown]
# Dice per structure (%), mean over seeds, and the same with every seed as a point:

# %%
lt.structures_table(frame, data.structures)

# %%
fig = lt.structures_figure(frame, data.structures)

# %% [markdown]
# Atlas, target, the atlas warped to the target by each registration (labels overlaid) and the deformation
# grid of its forward field, axial slices, the runs of the first seed:

# %%
fig = lt.warp_figure(records, data, config.seeds[0])

# %% [markdown]
# The cycle: the size of the forward and backward fields, the cycle's residual $|u_B + u_F \circ
# (\mathrm{id} + u_B)|$ and the atlas reconstructed through the round trip. The one-way network is asked
# for a backward field too, though it never trained with one.

# %%
fig = lt.cycle_figure(records, data, config.seeds[0])

# %% [markdown]
# Every cycle term is satisfied by a field that does not move: with $u_F = 0$ the warped atlas is the
# atlas, the backward network is shown the atlas twice, and a network near the identity answers $u_B
# \approx 0$, so the reconstructed image and label are the atlas's own and the correspondence residual
# vanishes. Only the similarity term pulls the forward field away from zero; the cycle charges for every
# displacement the backward pass does not undo, which the one-way network never pays. Whether that charge
# kept LT-Net's fields short is measured here, over the test targets at the first seed: the mean length
# of the forward and backward fields, the cycle's residual, and the Jacobian of the forward field.

# %%
fields = lt.field_summary(records, data, config.seeds[0])
fields

# %%
if {lt.METHOD_LABELS["ltnet"], lt.METHOD_LABELS["oneway"]} <= set(fields.index):
    length = fields["mean |forward| (voxels)"]
    display(Markdown(
        f"LT-Net's forward fields are {length[lt.METHOD_LABELS['ltnet']] / length[lt.METHOD_LABELS['oneway']]:.0%} "
        f"as long as the one-way network's at seed {config.seeds[0]} ({length[lt.METHOD_LABELS['ltnet']]:.2f} "
        f"against {length[lt.METHOD_LABELS['oneway']]:.2f} voxels)."
    ))

# %% [markdown]
# ## What the runs show
#
# The chapter's declared comparisons (`lt.COMPARISONS`), decided by the book's evidence standard from the
# records of this execution and written to `results/<profile>/ltnet/comparisons.json`: paired by seed,
# with the 95% t-interval of the mean difference. The floor of mean Dice is 0 and its ceiling 1; the main
# comparison has one more gate: the one-way registration must beat the identity, the Dice of the atlas
# label left where it is, which is what a registration that learned nothing scores.

# %%
verdicts = report.chapter_verdicts(lt, frame, profile)
report.verdicts_table(verdicts)

# %%
display(Markdown(report.verdicts_markdown(verdicts, lt.METHOD_LABELS)))

# %%
fig = report.differences_figure(lt.COMPARISONS, frame, lt.METHOD_LABELS)

# %% [markdown]
# Every method against LT-Net on the other measures (mean ± std of the paired differences over seeds):

# %%
display(Markdown(lt.findings(frame)))

# %% [markdown]
# ## Performance
#
# Volumes per second for a training step of LT-Net (forward and backward passes) against a one-way step,
# and for label transfer at test time (`medlab/papers/ltnet/throughput.py`); the records are what `medlab
# bench` reports.

# %%
throughput = lt.record_throughput(config, data, profile=profile, device=device)
pd.DataFrame({r["variant"]: r["metrics"] for r in throughput}).T.round(2)

# %% [markdown]
# **Try it.** `medlab run ltnet -p overrides '{"field_cycle_weight": 1.0}'`, `-p overrides
# '{"deformation": 2.5}'` (harder targets), or `--profile paper -p data_dir /path/to/neurite-oasis` on a
# GPU.
#
# ## Reproduction notes
#
# **The paper's numbers.** Not quoted: none could be read. The abstract reports that LT-Net beats deep
# one-shot segmentation methods and a classical multi-atlas method. The `paper` profile runs the grid on
# OASIS with 35 structures at 80 x 96 x 112; its records appear on the benchmarks page when they exist.
# The demo shows the method end to end on small synthetic brains, not whether the paper's results hold.
#
# **Deviation ledger.**
#
# | What | The paper | This chapter | Why |
# |---|---|---|---|
# | Data | not known (brain MR; the introduction cites atlas-based brain segmentation) | demo: synthetic deformations of the MNI152 template, 6 structures, 24 x 32 x 24 voxels (about 6.5 mm); paper profile: OASIS-1 (neurite-oasis), 35 structures | offline build and CPU budget; OASIS is the public set prepared for exactly this use |
# | Network $G$ | not known | MONAI's VoxelMorph U-Net (8-16-16 encoder, 16-16-8 decoder, one 8-channel convolution before the field), last layer N(0, 1e-5); the same weights for both directions | the standard registration backbone; one network for both directions is the simplest reading of "learning reversible correspondence" |
# | Field | not known | a displacement field in voxels, no integration (not diffeomorphic) | leaves folding measurable: the correspondence cycle is the paper's answer to it |
# | Similarity | not known | local normalised cross-correlation, 5-voxel window (MONAI), weight 1 | VoxelMorph's choice for MR |
# | Smoothness | not known | mean squared gradient (MONAI `DiffusionLoss`), weight 1, averaged over both fields | VoxelMorph's regulariser |
# | Image cycle | named by the abstract | $\|\hat x_a - x_a\|_1$, weight 1 | the plainest intensity term; the atlas and its reconstruction share a contrast |
# | Label cycle | named by the abstract ("anatomy") | $1 -$ soft Dice over the foreground structures, one-hot labels warped trilinearly, weight 1 | differentiable, and on the structures the task scores |
# | Correspondence cycle | named by the abstract | $\|u_B + u_F \circ (\mathrm{id}+u_B)\|^2$, weight 0.1 | the displacement of the round trip; squared voxels are larger than the other terms |
# | Baselines | deep one-shot methods and multi-atlas segmentation | one-way registration (VoxelMorph, same network); a 3D U-Net trained on the atlas with augmentation (affine, elastic, gamma, bias, noise); a fully supervised 3D U-Net (the upper reference); the identity | the baselines the issue asks for; no multi-atlas method with one atlas |
# | Schedule | not known | Adam, one-cycle to 3e-3 then cosine to 0, 6 epochs of 48 targets one at a time (288 steps); U-Nets 200 steps of 2 volumes at 3e-3 | the CPU budget; 1e-2 diverged on the development seed |
# | Evaluation | Dice per structure (near-certain) | Dice and HD95 per structure (MONAI), mean over structures; folding share; 40 test targets; 5 seeds for the main methods, 3 for the baselines and for the ablation (the ablation in the paper profile only: an LT-Net run costs about 230 s on 2 CPU cores, and the full grid measured about 30 minutes) | the evidence standard's precision |
# | Floor of the main comparison | — | Dice 0, with a gate that the one-way baseline beats the identity | a comparison's floor is a constant, valid at every profile; the identity's Dice depends on the data, so it is a gate measured on the same test targets |
# | Development | — | made on the development seed (`data_seed + 1000`), never on the test targets. A first design (32 x 40 x 32 voxels, deformations of 1.5 voxels, Adam one-cycle to 1e-3, 128 steps of 2 targets) did not learn: one-way registration 0.468 mean Dice against 0.461 for the identity, LT-Net 0.461, on that seed's 40 targets. At 16 x 24 x 16, a constant learning rate of 1e-2 diverged within 100 steps and 3e-3 raised the development Dice from 0.29 (identity) to 0.36 in 200 steps, still rising. So the demo runs smaller volumes (24 x 32 x 24, deformations of 1 voxel: identity 0.516 on the development targets), one target per step at 3e-3 for 288 steps; after 100 of them the one-way network stood at 0.525. The full design could not be timed on an idle machine before this chapter was written: its cost is estimated from these runs | the evidence standard; the machine was shared |
