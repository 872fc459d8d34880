"""Chapter 4 throughput: the chapter's training step against a plain loop of the same method, one run."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from medlab import engine, results, runtime

from .config import METHODS, SLUG, Settings
from .method import key_location_weights
from .data import ChapterData, NoisyTrainingSet, training_set
from .runs import make_peers, training_step


class HostWeights(Dataset):
    """The plain pipeline: the key-location weights of Eq. (3) computed per sample on the host, in the
    DataLoader, every time the sample is drawn."""

    def __init__(self, dataset: NoisyTrainingSet, band: float, floor: float):
        self.dataset, self.band, self.floor = dataset, band, floor

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        item["key_weights"] = torch.from_numpy(key_location_weights(item["noisy_mask"].numpy(), self.band, self.floor))
        return item


def measure_training_throughput(
    config: Settings, data: ChapterData, device: torch.device, steps: int = 8, warmup: int = 2, method: str = "cross_denoise"
) -> dict[str, float]:
    """Training images/s (source images, each step also sees as many target images) of ``method``.

    * ``device``: what :func:`~.runs.train` does: key-location weights computed once per run,
      channels-last and mixed precision on CUDA, no host synchronisation inside the loop.
    * ``plain``: fp32, weights computed per sample on the host in the DataLoader, the loss read back
      (``.item()``) after every step.
    """
    spec = METHODS[method]
    dataset = training_set(config, data, config.main_rate, config.main_kind, 0)[0]
    batch = config.batch_size
    measured: dict[str, float] = {}
    for mode in ("device", "plain"):
        runtime.seed_everything(0)
        optimised = mode == "device"
        channels_last = optimised and device.type == "cuda"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        model = make_peers(config, method, len(dataset)).to(device)
        model.steps_done = config.selection_epochs * (len(dataset) // batch)  # past the warm-up: every term on
        if channels_last:
            engine.to_channels_last(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
        source = dataset if optimised else HostWeights(dataset, config.boundary_band, config.boundary_floor)
        loader = DataLoader(
            source, batch_size=batch, shuffle=True, drop_last=True, num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
        )

        def step(item, optimised=optimised, channels_last=channels_last, model=model, optimizer=optimizer):
            item = engine.to_device(item, device, channels_last)
            with engine.autocast_for(device, optimised):
                out = training_step(model, item, config, spec, config.main_rate, len(dataset) // batch)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            if not optimised:
                out["loss"].item()

        measured[f"{mode}_images_per_s"] = batch * engine.timed_steps(loader, step, device=device, steps=steps, warmup=warmup)
        if device.type == "cuda":
            measured[f"{mode}_peak_memory_mb"] = engine.peak_memory_mb(device)
    measured["speedup"] = measured["device_images_per_s"] / measured["plain_images_per_s"]
    return measured


def record_throughput(config: Settings, data: ChapterData, *, profile: str, device: torch.device, steps: int = 8) -> dict[str, Any]:
    """Measure :func:`measure_training_throughput` and write it as a results record (experiment
    ``throughput``), which ``medlab bench`` reports."""
    measured = measure_training_throughput(config, data, device, steps=steps)
    params = {
        "method": "cross_denoise", "steps": steps, "batch_size": config.batch_size, "image_size": config.image_size,
        "widths": list(config.widths), "threads": torch.get_num_threads(),
    }
    path = results.write_record(
        chapter=SLUG, profile=profile, experiment="throughput", variant="cross-denoising training (two peers)",
        seed=0, metrics=measured, params=params, dataset=data.info["source_train"],
        environment=runtime.environment_record(device),
    )
    return results.read_record(path)
