"""Batch augmentations that run on the device, inside the training step (no per-sample host work)."""

from __future__ import annotations

import torch


def random_dihedral(images: torch.Tensor) -> torch.Tensor:
    """Apply an independent random element of the dihedral group D4 (the 4 rotations by 90 degrees,
    each optionally mirrored) to every image of a square ``(N, C, H, W)`` batch.

    Suits images without a canonical orientation, such as dermoscopy.
    """
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"expected a batch of square images (N, C, H, W), got shape {tuple(images.shape)}")
    n = images.shape[0]
    flip = torch.rand(n, 1, 1, 1, device=images.device) < 0.5
    out = torch.where(flip, images.flip(-1), images)
    turns = torch.randint(0, 4, (n,), device=images.device)
    rotated = out
    for k in (1, 2, 3):
        rotated = torch.where((turns == k).view(n, 1, 1, 1), torch.rot90(out, k, dims=(-2, -1)), rotated)
    if images.is_contiguous(memory_format=torch.channels_last):
        return rotated.contiguous(memory_format=torch.channels_last)
    return rotated
