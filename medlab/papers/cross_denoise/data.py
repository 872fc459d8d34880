"""Chapter 4 data: the source and target splits (synthetic, or REFUGE and Drishti-GS checked against the
settings), the corrupted training masks, and the training set of one run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from medlab import data as datasets
from medlab import runtime

from .config import MIXED, NOISE_KINDS, Settings
from .method import key_location_weights


@dataclass
class ChapterData:
    """The chapter's four splits, stacked once: source images with clean masks (training masks are
    corrupted per run), source test, unlabelled target training images, target test."""

    source_train: tuple[torch.Tensor, torch.Tensor]
    source_test: tuple[torch.Tensor, torch.Tensor]
    target_train: tuple[torch.Tensor, torch.Tensor]
    target_test: tuple[torch.Tensor, torch.Tensor]
    info: dict[str, Any]


_DATA_CACHE: dict[tuple, ChapterData] = {}


def stack(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``(image, mask)`` of ``dataset`` as two tensors, (N, 3, S, S) float and (N, S, S) int64."""
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items]).long()


SPLITS = {  # part of ChapterData: (dataset, split, the Settings field that sizes it, the folder parameter)
    "source_train": ("refuge", "train", "n_source_train", "data_dir"),
    "source_test": ("refuge", "val", "n_source_test", "data_dir"),
    "target_train": ("drishti_gs", "train", "n_target_train", "target_data_dir"),
    "target_test": ("drishti_gs", "test", "n_target_test", "target_data_dir"),
}


def load_split(config: Settings, part: str, folder: str | Path | None) -> Dataset:
    """One part of the chapter's data: the synthetic look-alike of its size, or the real split in
    ``folder``, checked against the settings before any pixel is decoded: a split with fewer images
    than the settings ask for is an error naming the folder, the split and the setting; a larger one
    gives a subset of that size, drawn with ``data_seed``."""
    name, split, setting, parameter = SPLITS[part]
    n = getattr(config, setting)
    if folder is None:
        return datasets.load(name, split, image_size=config.image_size, n=n, seed=config.data_seed)
    options = {"val_fraction": 0.0} if name == "drishti_gs" else {}  # every Training image (unlabelled)
    dataset = datasets.load(name, split, data_dir=folder, image_size=config.image_size, **options)
    if len(dataset) < n:
        title = getattr(dataset, "title", name)
        raise ValueError(
            f"the {title} {split} split under {folder} holds {len(dataset)} image(s), fewer than the {n} that "
            f"{setting}={n} asks for: set {setting} to at most {len(dataset)} (e.g. overrides={{'{setting}': "
            f"{len(dataset)}}}) or point {parameter} at the complete dataset"
        )
    if len(dataset) > n:
        chosen = np.sort(np.random.default_rng(config.data_seed).choice(len(dataset), size=n, replace=False))
        dataset = Subset(dataset, chosen.tolist())
    return dataset


def load_data(config: Settings, data_dir: str | Path | None = None, target_data_dir: str | Path | None = None) -> ChapterData:
    """Source REFUGE (``data_dir``: training images as source training set, validation images as
    source test) and target Drishti-GS (``target_data_dir``: its Training images unlabelled, its Test
    images); the synthetic look-alikes of each where the folder is None. Every split is checked
    against the settings first (:func:`load_split`), so a mismatch fails before any image is decoded.
    Loaded once per process."""
    folders = {"data_dir": data_dir, "target_data_dir": target_data_dir}
    key = (
        config.image_size, config.n_source_train, config.n_source_test, config.n_target_train, config.n_target_test,
        config.data_seed, *(None if d is None else str(Path(d).expanduser().resolve()) for d in folders.values()),
    )
    if key not in _DATA_CACHE:
        splits = {part: load_split(config, part, folders[spec[3]]) for part, spec in SPLITS.items()}
        stacked, info = {}, {}
        for part, dataset in splits.items():
            name, split, _, parameter = SPLITS[part]
            stacked[part] = stack(dataset)
            kind = "synthetic" if folders[parameter] is None else "real"
            info[part] = {"kind": kind, "dataset": name, "split": split, "images": len(dataset)}
        info["kind"] = "real" if data_dir is not None or target_data_dir is not None else "synthetic"
        _DATA_CACHE[key] = ChapterData(info=info, **stacked)
    return _DATA_CACHE[key]


def check_data(config: Settings, data_dir: str | Path | None = None, target_data_dir: str | Path | None = None) -> None:
    """Check both domains against the settings and load them once, so that a bad folder or a split
    smaller than the settings ask for fails before any training starts."""
    load_data(config, data_dir, target_data_dir)


def noise_seed(seed: int, rate: float, kind: str) -> int:
    """The seed of a run's corrupted masks: the same for every method at one seed, rate and kind."""
    return int(runtime.stable_hash({"seed": seed, "rate": rate, "kind": kind}, 8), 16)


def corrupted_masks(clean: torch.Tensor, rate: float, kind: str, seed: int, strength: float = 1.0):
    """The training masks of a run: ``rate`` of them corrupted with ``kind`` (or :data:`MIXED`).
    Returns ``(noisy, corrupted, kinds)`` as :func:`medlab.data.mask_noise.corrupt_masks`."""
    from medlab.data.mask_noise import corrupt_masks

    if kind != MIXED and kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; expected {MIXED!r} or one of {', '.join(NOISE_KINDS)}")
    kinds = NOISE_KINDS if kind == MIXED else (kind,)
    noisy, corrupted, drawn = corrupt_masks(
        clean.numpy().astype(np.uint8), rate, kinds, seed=noise_seed(seed, rate, kind), strength=strength
    )
    return torch.from_numpy(noisy.astype(np.int64)), torch.from_numpy(np.asarray(corrupted, dtype=bool)), list(drawn)


class NoisyTrainingSet(Dataset):
    """Source images with their noisy masks and key-location weights, each paired with a target image
    (unlabelled: its mask is kept only to report how good the pseudo-labels are, never to train).
    A sample is a dict: ``index``, ``image``, ``noisy_mask``, ``key_weights``, ``target_image``,
    ``target_mask``."""

    def __init__(self, images: torch.Tensor, noisy_masks: torch.Tensor, key_weights: torch.Tensor, target: Dataset, seed: int):
        self.images, self.noisy_masks, self.key_weights, self.target = images, noisy_masks, key_weights, target
        self.pairing = np.random.default_rng(seed).permutation(max(len(images), len(target))) % len(target)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        target_image, target_mask = self.target[int(self.pairing[index])]
        return {
            "index": index,
            "image": self.images[index],
            "noisy_mask": self.noisy_masks[index],
            "key_weights": self.key_weights[index],
            "target_image": target_image,
            "target_mask": target_mask,
        }


def training_set(config: Settings, data: ChapterData, rate: float, kind: str, seed: int):
    """The noisy training set of one run and what was done to it: ``(dataset, noisy, corrupted, kinds)``."""
    images, clean = data.source_train
    noisy, corrupted, kinds = corrupted_masks(clean, rate, kind, seed, config.noise_strength)
    weights = torch.from_numpy(
        np.stack([key_location_weights(m, config.boundary_band, config.boundary_floor) for m in noisy.numpy()])
    )
    dataset = NoisyTrainingSet(images, noisy, weights, TensorDataset(*data.target_train), seed)
    return dataset, noisy, corrupted, kinds
