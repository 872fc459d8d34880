# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 0. Template: label smoothing
#
# **Paper.** Szegedy et al., *Rethinking the Inception Architecture for Computer Vision*, CVPR 2016
# (label smoothing, Section 7). A template, not a chapter of the book: copy it with
# `medlab/papers/template/` to start a chapter (the book page "Adding a chapter" lists every file).

# %% tags=["remove-cell"]
# Colab (or any Python without medlab): install the book's package first.
import importlib.util
import os
import subprocess
import sys

PACKAGE = os.environ.get("MEDLAB_PACKAGE", "medlab @ git+https://github.com/medlab-book/medlab")
if importlib.util.find_spec("medlab") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", PACKAGE], check=True)

# %% tags=["parameters"]
import os

profile = os.environ.get("MEDLAB_PROFILE", "demo")  # smoke | demo | paper
data_dir = None  # ISIC 2018 Task 3 in its official layout; None = synthetic data
device = None  # None = automatic (cuda > mps > cpu)
seeds = None  # e.g. "0,1,2"; None = the profile's
overrides = {}  # any other setting, e.g. {"epsilon": 0.2}

# %%
from IPython.display import Markdown, display

from medlab import experiment, plots, results
from medlab.papers import template

run = experiment.setup(template, profile, device=device, data_dir=data_dir, seeds=seeds, **overrides)
profile, config, device = run.profile, run.config, run.device

# %% [markdown]
# ## Method: the code

# %%
plots.show_source(template.method)

# %% [markdown]
# ## Training and evaluation

# %%
records = experiment.run_grid(template, config, profile=profile, device=device, data_dir=data_dir)
frame = results.to_frame(records)
results.summarize(frame, ["accuracy"], by=("params.method",), percent=["accuracy"])

# %%
display(Markdown(template.findings(frame)))
