"""Chapter 5 throughput: dense prediction (Eq. 5) of every pixel of the test crops, fully convolutional
against patch by patch, in pixels per second, written as a record that ``medlab bench`` reports."""

from __future__ import annotations

import time
from typing import Any

import torch

from medlab import engine, results, runtime

from .config import SLUG, Settings
from .method import TRUNKS, CrossoverNet, extract_patches, pad_for_patches
from .runs import ChapterData


def patchwise_logits(model: CrossoverNet, images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """The plain way to predict every pixel of ``images`` (N, 1, H, W): gather both arms of every pixel
    and run the patch network on them, ``chunk`` patches at a time (the same logits as
    :meth:`~.method.CrossoverNet.dense_logits`, computed once per patch instead of once per image)."""
    n, _, h, w = images.shape
    spec = model.spec
    padded = pad_for_patches(images, spec.length)
    grid = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(h), torch.arange(w), indexing="ij"), -1).reshape(-1, 3).to(images.device)
    out = []
    for start in range(0, len(grid), chunk):
        index, rows, cols = grid[start : start + chunk].unbind(1)
        patches = {a: extract_patches(padded, index, rows, cols, spec.length, spec.width, a, spec.length) for a in model.arms}
        out.append(model(patches)[0])
    return torch.cat(out).reshape(n, h, w, -1).permute(0, 3, 1, 2)


def _pixels_per_s(predict, images: torch.Tensor, device: torch.device, sync: bool, repeats: int) -> float:
    predict(images[:1])  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    for _ in range(repeats):
        logits = predict(images)
        if sync:
            logits.cpu()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return repeats * images[:, 0].numel() / (time.perf_counter() - tic)


@torch.no_grad()
def measure_dense_throughput(config: Settings, data: ChapterData, device: torch.device, images: int = 8, plain_images: int = 1) -> dict[str, float]:
    """Pixels/s of Crossover-Net's dense prediction on test crops.

    * ``device``: :meth:`~.method.CrossoverNet.dense_logits`, fully convolutional, mixed precision on
      CUDA, ``images`` crops per call;
    * ``plain``: :func:`patchwise_logits`, both arms of every pixel gathered and classified, fp32,
      the logits brought to the host after every call (``plain_images`` crops).
    """
    runtime.seed_everything(0)
    model = CrossoverNet(TRUNKS[config.trunk]).to(device).eval()
    test = data.test[0].to(device)
    measured = {}
    with engine.autocast_for(device):
        measured["device_pixels_per_s"] = _pixels_per_s(model.dense_logits, test[:images], device, False, 3)
    measured["plain_pixels_per_s"] = _pixels_per_s(lambda x: patchwise_logits(model, x), test[:plain_images], device, True, 1)
    measured["speedup"] = measured["device_pixels_per_s"] / measured["plain_pixels_per_s"]
    return measured


def record_throughput(config: Settings, data: ChapterData, *, profile: str, device: torch.device) -> dict[str, Any]:
    """Measure :func:`measure_dense_throughput` and write it as a results record (experiment
    ``throughput``), which ``medlab bench`` reports."""
    measured = measure_dense_throughput(config, data, device)
    params = {"method": "crossover", "trunk": config.trunk, "image_size": config.image_size, "threads": torch.get_num_threads()}
    path = results.write_record(
        chapter=SLUG, profile=profile, experiment="throughput", variant="dense prediction (both arms, every pixel)",
        seed=0, metrics=measured, params=params, dataset=data.info["test"], environment=runtime.environment_record(device),
    )
    return results.read_record(path)
