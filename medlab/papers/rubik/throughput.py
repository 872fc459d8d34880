"""Chapter 3 throughput: the pretraining step with puzzles made on the device against a plain loop of
the same model with puzzles made on the host, measured in one run and written as a record that
``medlab bench`` reports."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from medlab import engine, results, runtime
from medlab.nets.volumes import VolumeEncoder
from medlab.runtime import environment_record

from .config import PRETRAINING, SLUG, ProxyTask, Settings
from .method import CUBES, SiameseOctad, permutation_set
from .runs import TaskData, puzzle, puzzle_losses


class HostPuzzles(Dataset):
    """Every volume cut, rearranged and rotated on the host, one at a time in the DataLoader (the
    usual per-sample pipeline), with the same random layout and labels as the device's puzzles."""

    def __init__(self, dataset: Dataset, permutations: torch.Tensor, config: Settings, task: ProxyTask):
        self.dataset, self.permutations, self.config, self.task = dataset, permutations, config, task

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        volume = self.dataset[index][0][None]
        proxy = puzzle(volume, self.permutations, self.task, self.config)
        return proxy["cubes"][0], proxy["classes"][0], proxy["rotations"][0]


def measure_pretraining_throughput(
    config: Settings, data: TaskData, device: torch.device, steps: int = 8, warmup: int = 2, method: str = "rubik"
) -> dict[str, float]:
    """Pretraining voxels/s (voxels of the cubes the network sees) of the chapter's step and of a
    plain loop of the same model, in one run.

    * ``device``: what :func:`~.runs.pretrain` does: puzzles made on the device for the whole batch,
      channels-last 3D and mixed precision on CUDA, no host synchronisation inside the loop.
    * ``plain``: fp32, channels-first, puzzles made per volume on the host in the DataLoader, and the
      loss read back (``.item()``) after every step.
    """
    task = PRETRAINING[method]
    batch = config.pretrain_batch_size
    if len(data.unlabeled) < batch:
        raise ValueError(f"{len(data.unlabeled)} volumes are fewer than one batch of {batch}")
    permutations = permutation_set(config.num_permutations)
    voxels_per_step = batch * CUBES * config.cube_size**3
    measured: dict[str, float] = {}
    for mode in ("device", "plain"):
        runtime.seed_everything(0)
        optimised = mode == "device"
        channels_last = optimised and device.type == "cuda"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        model = SiameseOctad(VolumeEncoder(data.in_channels, config.widths), permutations, config.hidden).to(device)
        if channels_last:
            engine.to_channels_last(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.pretrain_lr)
        source = data.unlabeled if optimised else HostPuzzles(data.unlabeled, permutations, config, task)
        loader = DataLoader(
            source, batch_size=batch, shuffle=True, drop_last=True, num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
        )

        def step(item, optimised=optimised, channels_last=channels_last, model=model, optimizer=optimizer):
            if optimised:
                volumes = engine.to_device(item[0], device, channels_last)
                with engine.autocast_for(device):
                    out = puzzle_losses(model, puzzle(volumes, model.permutations, task, config), task, config)
            else:
                cubes, classes, rotations = (x.to(device) for x in item)
                out = puzzle_losses(model, {"cubes": cubes, "classes": classes, "rotations": rotations}, task, config)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            if not optimised:
                out["loss"].item()

        rate = engine.timed_steps(loader, step, device=device, steps=steps, warmup=warmup)
        measured[f"{mode}_voxels_per_s"] = voxels_per_step * rate
        if device.type == "cuda":
            measured[f"{mode}_peak_memory_mb"] = engine.peak_memory_mb(device)
    measured["speedup"] = measured["device_voxels_per_s"] / measured["plain_voxels_per_s"]
    return measured


def record_throughput(config: Settings, data: TaskData, *, profile: str, device: torch.device, steps: int = 8) -> dict[str, Any]:
    """Measure :func:`measure_pretraining_throughput` and write it as a results record (experiment
    ``throughput``), which ``medlab bench`` reports."""
    measured = measure_pretraining_throughput(config, data, device, steps=steps)
    params = {
        "method": "rubik", "task": data.task, "steps": steps, "batch_size": config.pretrain_batch_size,
        "cube_size": config.cube_size, "in_channels": data.in_channels, "widths": list(config.widths),
        "threads": torch.get_num_threads(),
    }
    path = results.write_record(
        chapter=SLUG, profile=profile, experiment="throughput", variant=f"rubik pretraining ({data.task})", seed=0,
        metrics=measured, params=params, dataset=data.info["unlabeled"], environment=environment_record(device),
    )
    return results.read_record(path)
