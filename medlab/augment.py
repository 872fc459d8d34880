"""Batch augmentations that run on the device, inside the training step (no per-sample host work)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


def random_affine_crop(
    images: torch.Tensor,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    degrees: float = 10.0,
    flip_p: float = 0.5,
) -> torch.Tensor:
    """``RandomResizedCrop`` + ``RandomRotation`` + ``RandomHorizontalFlip`` for a whole batch, with
    independent parameters per image, as one affine resampling (``grid_sample``) on the device.

    A crop covers a fraction ``scale`` of the image area with aspect ratio in ``ratio`` (log-uniform),
    at a random position inside the image, and is resized back to the input size. Pixels rotated in
    from outside the image are filled with the nearest border value.
    """
    if images.dim() != 4:
        raise ValueError(f"expected a batch of images (N, C, H, W), got shape {tuple(images.shape)}")
    n, device = images.shape[0], images.device
    area = torch.empty(n, device=device).uniform_(*scale)
    log_ratio = torch.empty(n, device=device).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_ratio)
    # crop width and height as fractions of the image side (clamped to fit, as torchvision falls back)
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = (torch.rand(n, device=device) * 2 - 1) * (1 - width)
    centre_y = (torch.rand(n, device=device) * 2 - 1) * (1 - height)
    angle = torch.empty(n, device=device).uniform_(-degrees, degrees) * (math.pi / 180)
    flip = torch.where(torch.rand(n, device=device) < flip_p, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # output grid (in [-1, 1]) -> input coordinates: rotate, scale to the crop, move to its centre
    theta = torch.stack(
        [
            torch.stack([cos * width * flip, -sin * height, centre_x], dim=1),
            torch.stack([sin * width * flip, cos * height, centre_y], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return _keep_format(out, images)


def intensity_jitter(images: torch.Tensor, brightness: float = 0.4, contrast: float = 0.4) -> torch.Tensor:
    """``ColorJitter``'s brightness and contrast for grey-level images, per image, on the device.

    Brightness multiplies by a factor in ``[1 - b, 1 + b]``; contrast blends with the image's mean by
    a factor in ``[1 - c, 1 + c]`` (torchvision's definitions); the result is clipped to [0, 1].
    """
    n = images.shape[0]
    shape = (n,) + (1,) * (images.dim() - 1)
    b = torch.empty(shape, device=images.device, dtype=images.dtype).uniform_(1 - brightness, 1 + brightness)
    c = torch.empty(shape, device=images.device, dtype=images.dtype).uniform_(1 - contrast, 1 + contrast)
    out = (images * b).clamp(0, 1)
    mean = out.mean(dim=tuple(range(1, images.dim())), keepdim=True)
    return ((out - mean) * c + mean).clamp(0, 1)


def cutout(images: torch.Tensor, holes: int, length: int, fill: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Cutout (DeVries & Taylor, 2017): ``holes`` squares of side ``length`` per image, centred at
    random pixels (clipped at the border), set to ``fill``. Built as one mask on the device."""
    if holes <= 0 or length <= 0:
        return images
    n, _, h, w = images.shape
    device = images.device
    cy = torch.randint(0, h, (n, holes, 1, 1), device=device)
    cx = torch.randint(0, w, (n, holes, 1, 1), device=device)
    ys = torch.arange(h, device=device).view(1, 1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, 1, w)
    half = length // 2
    inside = ((ys >= cy - half) & (ys < cy - half + length)) & ((xs >= cx - half) & (xs < cx - half + length))
    mask = inside.any(dim=1, keepdim=True)
    fill = torch.as_tensor(fill, dtype=images.dtype, device=device)
    return _keep_format(torch.where(mask, fill.view(1, -1, 1, 1) if fill.dim() else fill, images), images)


def _keep_format(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last):
        return out.contiguous(memory_format=torch.channels_last)
    return out
