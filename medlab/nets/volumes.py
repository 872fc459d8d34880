"""3D convolutional networks for volumes (N, C, D, H, W): a VGG-style encoder, a classifier head and
a U-Net decoder that reuses the encoder's stages as skip connections.

One encoder serves both downstream tasks of chapter 3, so a self-supervised encoder can initialise a
classifier and a segmentation network alike. Built from ``torch.nn`` layers.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int, convs: int = 2) -> nn.Sequential:
    """``convs`` x (3x3x3 convolution, batch norm, ReLU)."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv3d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class VolumeEncoder(nn.Module):
    """A 3D VGG-style encoder: stages of two convolutions, halved in resolution by max pooling between
    stages. ``forward`` returns every stage's output (finest first), the skips of a U-Net;
    :meth:`features` the last stage averaged over space (a vector per volume)."""

    def __init__(self, in_channels: int, widths: Sequence[int] = (8, 16, 32)):
        super().__init__()
        if in_channels < 1 or not widths or min(widths) < 1:
            raise ValueError(f"need in_channels >= 1 and positive widths, got {in_channels} and {tuple(widths)}")
        self.in_channels = in_channels
        self.widths = tuple(int(w) for w in widths)
        self.stages = nn.ModuleList(
            conv_block(c_in, c_out) for c_in, c_out in zip((in_channels, *self.widths[:-1]), self.widths)
        )
        self.pool = nn.MaxPool3d(2)

    @property
    def out_features(self) -> int:
        return self.widths[-1]

    @property
    def reduction(self) -> int:
        """How many times smaller the last stage is than the input (inputs must be divisible by it)."""
        return 2 ** (len(self.widths) - 1)

    def forward(self, volumes: torch.Tensor) -> list[torch.Tensor]:
        if volumes.ndim != 5 or volumes.shape[1] != self.in_channels:
            raise ValueError(
                f"expected volumes of shape (N, {self.in_channels}, D, H, W), got {tuple(volumes.shape)}"
            )
        odd = [s for s in volumes.shape[2:] if s % self.reduction]
        if odd:
            raise ValueError(f"volume sides {tuple(volumes.shape[2:])} must be divisible by {self.reduction}")
        outputs = []
        x = volumes
        for index, stage in enumerate(self.stages):
            if index:
                x = self.pool(x)
            x = stage(x)
            outputs.append(x)
        return outputs

    def features(self, volumes: torch.Tensor) -> torch.Tensor:
        return self(volumes)[-1].mean(dim=(2, 3, 4))


class VolumeClassifier(nn.Module):
    """An encoder, global average and max pooling (the max keeps a small, local finding such as a
    bleed from being averaged away), dropout and a linear layer: class logits per volume."""

    def __init__(self, encoder: VolumeEncoder, num_classes: int, dropout: float = 0.2):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * encoder.out_features, num_classes))

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        last = self.encoder(volumes)[-1].flatten(2)
        return self.head(torch.cat([last.mean(2), last.amax(2)], dim=1))


class UNet3d(nn.Module):
    """A 3D U-Net (Cicek et al., MICCAI 2016) around a :class:`VolumeEncoder`: each decoder stage
    upsamples by a transposed convolution, concatenates the encoder stage of the same resolution and
    applies two convolutions; a 1x1x1 convolution gives per-voxel class logits."""

    def __init__(self, encoder: VolumeEncoder, num_classes: int):
        super().__init__()
        self.encoder = encoder
        widths = encoder.widths
        self.up = nn.ModuleList(
            nn.ConvTranspose3d(widths[i], widths[i - 1], kernel_size=2, stride=2) for i in range(len(widths) - 1, 0, -1)
        )
        self.decode = nn.ModuleList(conv_block(2 * widths[i - 1], widths[i - 1]) for i in range(len(widths) - 1, 0, -1))
        self.out = nn.Conv3d(widths[0], num_classes, kernel_size=1)

    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        skips = self.encoder(volumes)
        x = skips[-1]
        for up, decode, skip in zip(self.up, self.decode, reversed(skips[:-1])):
            x = decode(torch.cat([up(x), skip], dim=1))
        return self.out(x)
