"""The template chapter's runs: data, one run, the grid."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from medlab import data as datasets
from medlab import engine, metrics, runtime
from medlab.engine import RunContext
from medlab.experiment import Job, RunOutput, product, run_identity, run_once

from .config import SLUG, Settings
from .method import TinyConvNet, smoothed_cross_entropy

_DATA: dict[tuple, dict[str, Any]] = {}


def load_data(config: Settings, data_dir: str | Path | None = None) -> dict[str, Any]:
    """ISIC 2018 from ``data_dir``, or its synthetic look-alike, once per process."""
    key = (config.image_size, config.n_train, config.n_test, config.data_seed, data_dir)
    if key not in _DATA:
        sizes = {"train": config.n_train, "test": config.n_test}
        options = {"image_size": config.image_size}
        splits = {
            s: datasets.load("isic2018", s, data_dir=data_dir, **options, **({} if data_dir else {"n": n, "seed": config.data_seed}))
            for s, n in sizes.items()
        }
        _DATA[key] = {**splits, "info": {s: d.info for s, d in splits.items()} | {"kind": splits["train"].info["kind"]}}
    return _DATA[key]


def train(config: Settings, data: dict[str, Any], job: Job, run: RunContext) -> RunOutput:
    """Train the tiny network with ``job.method``'s loss and score it on the test split."""
    runtime.seed_everything(job.seed)
    classes = len(data["train"].classes)
    model = TinyConvNet(classes, config.width)
    epsilon = config.epsilon if job.method == "smoothing" else 0.0

    def loss_fn(m: TinyConvNet, batch) -> dict[str, torch.Tensor]:
        images, labels = batch
        logits = m(images).float()
        loss = smoothed_cross_entropy(logits, labels, epsilon) if epsilon else F.cross_entropy(logits, labels)
        return {"loss": loss}

    fit = engine.fit(
        model, data["train"], run=run, loss_fn=loss_fn, optimizer=torch.optim.Adam(model.parameters(), lr=config.lr),
        epochs=config.epochs, batch_size=config.batch_size,
    )
    probs = engine.predict(
        model, data["test"], forward=lambda m, b: torch.softmax(m(b[0]).float(), 1), device=run.device,
        num_workers=run.num_workers,
    )
    scores = metrics.classification_metrics(data["test"].targets, probs, classes)
    scores["n_eval"] = float(len(probs))
    return RunOutput(metrics=scores, fit=fit)


def grid(config: Settings) -> list[Job]:
    return product("comparison", config.seeds, method=config.methods)


def run_job(
    job: Job, *, config: Settings, profile: str, device: str, data_dir: str | None = None, progress: bool | None = None
) -> dict[str, Any]:
    data = load_data(config, data_dir)
    return run_once(
        chapter=SLUG, profile=profile, job=job, params=run_identity(config, method=job.method, data_dir=data_dir),
        dataset=data["info"], device=torch.device(device), train=lambda run: train(config, data, job, run),
        progress=progress, num_workers=config.num_workers,
    )


def describe(job: Job, record: Mapping[str, Any]) -> str:
    return f"{job}: accuracy {record['metrics']['accuracy']:.3f}"
