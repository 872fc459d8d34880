"""Chapter 6 throughput: volumes per second for training (an LT-Net step, forward and backward passes,
against a one-way step) and for inference (label transfer), written as records ``medlab bench`` reports."""

from __future__ import annotations

import time
from typing import Any

import torch

from medlab import engine, results, runtime

from .config import SLUG, Settings
from .method import RegistrationNet, Weights, onehot, segment
from .runs import ChapterData, registration_step, weights_of


def _per_s(step, volumes: int, device: torch.device, repeats: int) -> float:
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return repeats * volumes / (time.perf_counter() - tic)


def measure_throughput(config: Settings, data: ChapterData, device: torch.device, batch: int = 2, repeats: int = 3) -> dict[str, dict[str, float]]:
    """Volumes/s of a training step of LT-Net and of the one-way baseline (``device_volumes_per_s``,
    under the training's autocast) and of label transfer at test time; ``plain`` is the one-way step
    (LT-Net's ``speedup`` below 1 is the cost of its backward pass)."""
    runtime.seed_everything(0)
    model = RegistrationNet(tuple(config.channels)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    atlas = (data.atlas[0].to(device), onehot(data.atlas[1][None], data.num_classes).to(device))
    targets = data.unlabeled[0][:batch].to(device)

    def train_step(weights: Weights):
        def step():
            with engine.autocast_for(device):
                loss = registration_step(model, targets, atlas, weights, config.lncc_kernel)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    n = len(targets)
    ltnet = _per_s(train_step(weights_of("ltnet", config)), n, device, repeats)
    oneway = _per_s(train_step(weights_of("oneway", config)), n, device, repeats)
    model.eval()
    with torch.no_grad(), engine.autocast_for(device):
        infer = _per_s(lambda: segment(model, *atlas, targets), n, device, repeats)
    return {
        "training step (LT-Net vs one-way)": {"device_volumes_per_s": ltnet, "plain_volumes_per_s": oneway, "speedup": ltnet / oneway},
        "inference (label transfer)": {"device_volumes_per_s": infer, "plain_volumes_per_s": oneway, "speedup": infer / oneway},
    }


def record_throughput(config: Settings, data: ChapterData, *, profile: str, device: torch.device) -> list[dict[str, Any]]:
    """Measure :func:`measure_throughput` and write one results record per measurement (experiment
    ``throughput``), which ``medlab bench`` reports."""
    out = []
    params = {"channels": list(config.channels), "shape": list(config.shape), "threads": torch.get_num_threads()}
    for variant, measured in measure_throughput(config, data, device).items():
        path = results.write_record(
            chapter=SLUG, profile=profile, experiment="throughput", variant=variant, seed=0, metrics=measured,
            params=params, dataset=data.info["test"], environment=runtime.environment_record(device),
        )
        out.append(results.read_record(path))
    return out
