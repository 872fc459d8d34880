"""The split names the registry offers and the seed of each synthetic split."""

from __future__ import annotations

SPLITS = ("train", "val", "test", "unlabeled")  # "unlabeled": images for self-supervised pretraining
SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2, "unlabeled": 3}


def split_seed(seed: int, split: str) -> int:
    """The generator seed of ``split`` of a synthetic dataset drawn with ``seed``: ``10 * seed`` plus
    0 (train), 1 (val), 2 (test) or 3 (unlabeled), so that the splits are distinct and reproducible."""
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return seed * 10 + SPLIT_OFFSETS[split]


def require_n(n: int | None, message: str) -> int:
    """``n``; a synthetic split cannot be drawn without it, so None raises ValueError(``message``)."""
    if n is None:
        raise ValueError(message)
    return n
