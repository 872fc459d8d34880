"""Helpers the readers share: examples in error messages, checking ``data_dir``, indexing, to tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torchvision.transforms import v2


def examples(items: Iterable, limit: int = 5) -> str:
    """The first ``limit`` of ``items`` (sorted) for an error message, with the total when there are more."""
    items = sorted(items)
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f" ... ({len(items)} in all)" if len(items) > limit else "")


def found(folder: Path, limit: int = 10) -> str:
    """What ``folder`` holds (names, folders ending in ``/``), for an error message."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "nothing"
    return str(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def check_data_dir(root: str | Path, expected: str, docs: str) -> Path:
    """``root`` (``~`` expanded) when it is a folder; FileNotFoundError when it does not exist,
    NotADirectoryError (saying ``expected``) when it is a file; ``docs`` says where to read more."""
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data_dir {root} does not exist; {docs}")
    if not root.is_dir():
        raise NotADirectoryError(f"data_dir {root} is a file, expected {expected}")
    return root


def check_image_size(image_size, minimum: int = 1) -> int:
    """``image_size`` as an int; ValueError unless it is an integer of at least ``minimum``."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < minimum:
        raise ValueError(f"image_size must be an integer of at least {minimum}, got {image_size!r}")
    return int(image_size)


def item_index(index: int, n: int) -> int:
    """``index`` in ``[0, n)`` (negative indices count from the end); IndexError when out of range."""
    if not -n <= index < n:
        raise IndexError(f"index {index} out of range for {n} item(s)")
    return int(index) % n


def to_float(item: np.ndarray) -> torch.Tensor:
    """A uint8 (H, W, C) array as a float32 (C, H, W) tensor in [0, 1] (torchvision's uint8 scaling)."""
    tensor = torch.from_numpy(np.ascontiguousarray(item.transpose(2, 0, 1)))
    return v2.functional.to_dtype(tensor, torch.float32, scale=True)
