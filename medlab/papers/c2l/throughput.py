"""Chapter 2 throughput: the engine's pretraining step against a plain fp32 loop of the same model,
written as a results record (experiment ``throughput``) that ``medlab bench`` reports."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from medlab import engine, results, runtime
from medlab.augment import cutout

from .config import PRETRAINING, SLUG, Settings
from .method import MomentumContrast, augment_view, compare_views
from .runs import ChapterData, new_encoder


class HostViews(Dataset):
    """Two independently augmented views per image, made on the host per sample by torchvision (the
    usual DataLoader pipeline), with the same augmentations as :func:`~medlab.papers.c2l.method.augment_view`."""

    def __init__(self, dataset: Dataset, config: Settings, fill: float):
        from torchvision.transforms import v2

        size = config.image_size
        self.dataset, self.config, self.fill = dataset, config, fill
        self.transform = v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=(config.crop_scale, 1.0), antialias=True),
                v2.RandomRotation(config.rotation),
                v2.ColorJitter(brightness=config.jitter, contrast=config.jitter),
                v2.RandomHorizontalFlip(),
            ]
        )
        self.length = max(1, round(config.cutout_fraction * size))

    def __len__(self) -> int:
        return len(self.dataset)

    def view(self, image: torch.Tensor) -> torch.Tensor:
        out = self.transform(image).clamp(0, 1)
        return cutout(out[None], self.config.cutout_holes, self.length, fill=self.fill)[0]

    def __getitem__(self, index: int):
        image = self.dataset[index][0]
        return self.view(image), self.view(image)


def measure_pretraining_throughput(
    config: Settings, dataset: Dataset, device: torch.device, steps: int = 10, warmup: int = 2, method: str = "c2l"
) -> dict[str, float]:
    """Pretraining images/s of the chapter's step and of a plain loop of the same model, in one run.

    * ``device``: what pretraining does through the engine: views augmented on the device,
      channels-last and mixed precision on CUDA, no host synchronisation inside the loop.
    * ``plain``: fp32, channels-first, views augmented per sample on the host in the DataLoader, and
      the loss read back (``.item()``) after every step.
    """
    terms = PRETRAINING[method].terms
    batch = config.pretrain_batch_size
    if len(dataset) < batch:
        raise ValueError(f"{len(dataset)} images are fewer than one batch of {batch}")
    augment = dict(
        crop_scale=config.crop_scale, rotation=config.rotation, jitter=config.jitter,
        cutout_holes=config.cutout_holes, cutout_fraction=config.cutout_fraction,
    )
    compare = dict(temperature=config.temperature, mixup_alpha=config.mixup_alpha)
    measured: dict[str, float] = {}
    for mode in ("device", "plain"):
        runtime.seed_everything(0)
        optimised = mode == "device"
        channels_last = optimised and device.type == "cuda"
        model = MomentumContrast(new_encoder(config), queue_size=config.queue_size, bn_splits=config.bn_splits)
        model.to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.SGD(model.query.parameters(), lr=config.pretrain_lr, momentum=0.9)
        fill = model.query.fill_value
        source = dataset if optimised else HostViews(dataset, config, fill)
        loader = DataLoader(
            source, batch_size=batch, shuffle=True, drop_last=True, num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
        )

        def step(item, optimised=optimised, channels_last=channels_last, model=model, optimizer=optimizer, fill=fill):
            if optimised:
                images = engine.to_device(item[0], device, channels_last)
                with engine.autocast_for(device):
                    view_q = augment_view(images, fill=fill, **augment)
                    view_k = augment_view(images, fill=fill, **augment)
                    out = compare_views(model, view_q, view_k, terms, **compare)
            else:
                view_q, view_k = item[0].to(device), item[1].to(device)
                out = compare_views(model, view_q, view_k, terms, **compare)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            with torch.no_grad():
                model.momentum_update(config.momentum)
            if not optimised:
                out["loss"].item()

        per_s = engine.timed_steps(loader, step, device=device, steps=steps, warmup=warmup)
        measured[f"{mode}_images_per_s"] = batch * per_s
    measured["speedup"] = measured["device_images_per_s"] / measured["plain_images_per_s"]
    return measured


def record_throughput(
    config: Settings, chapter_data: ChapterData, *, profile: str, device: torch.device, steps: int = 10
) -> dict[str, Any]:
    """Measure :func:`measure_pretraining_throughput` and write it as a results record
    (experiment ``throughput``), which ``medlab bench`` reports."""
    measured = measure_pretraining_throughput(config, chapter_data.unlabeled, device, steps=steps)
    params = {
        "method": "c2l", "steps": steps, "batch_size": config.pretrain_batch_size, "image_size": config.image_size,
        "backbone": config.backbone, "width": config.width, "threads": torch.get_num_threads(),
    }
    path = results.write_record(
        chapter=SLUG, profile=profile, experiment="throughput", variant="c2l pretraining", seed=0,
        metrics=measured, params=params, dataset=chapter_data.info["unlabeled"],
        environment=runtime.environment_record(device),
    )
    return results.read_record(path)
