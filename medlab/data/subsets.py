"""Labeled subsets for label-efficiency experiments: which samples a run may use, and repeating a small
subset so that every run gets the same number of optimisation steps per epoch."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from torch.utils.data import Dataset


def random_subset(n: int, count: int, seed: int) -> np.ndarray:
    """``count`` of the indices ``0..n-1`` (sorted), drawn by ``seed``; the same seed gives the same draw,
    and a larger count keeps the smaller count's indices (the draws are nested)."""
    if not 1 <= count <= n:
        raise ValueError(f"cannot draw {count} of {n} samples: count must be in [1, {n}]")
    return np.sort(np.random.default_rng(10_007 + seed).permutation(n)[:count])


class RepeatedSubset(Dataset):
    """``indices`` of ``dataset``, repeated so that one epoch holds at least ``min_length`` samples
    (a 1% subset still gets enough steps per epoch; every sample appears equally often)."""

    def __init__(self, dataset: Dataset, indices: Sequence[int], min_length: int = 0):
        if len(indices) == 0:
            raise ValueError("an empty subset")
        self.dataset, self.indices = dataset, np.asarray(indices)
        self.repeats = max(1, math.ceil(min_length / len(self.indices)))

    def __len__(self) -> int:
        return len(self.indices) * self.repeats

    def __getitem__(self, index: int):
        return self.dataset[int(self.indices[index % len(self.indices)])]
