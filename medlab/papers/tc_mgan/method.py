"""TC-MGAN (Xin et al., "Multi-modality generative adversarial networks with tumor consistency loss for
brain MR image synthesis", ISBI 2020, arXiv:2005.00925), in the paper's order:

* the generator ``G(T2, c)``: one pix2pix U-Net for the three target modalities, conditioned on the
  one-hot target code ``c`` broadcast to three input channels (:class:`UNetGenerator`, :func:`condition`);
* the critic ``D(x, T2)``: a patch critic on the candidate image and the T2 input with an auxiliary
  modality classifier (StarGAN's), :class:`Critic`;
* the WGAN-GP critic loss with the classification term (:func:`critic_loss`, :func:`gradient_penalty`);
* the generator loss: adversarial, classification, L1 reconstruction and the tumour-consistency term
  (:func:`generator_loss`), the Dice loss of a segmentor ``S(x, c)`` (:class:`Segmentor`) applied to the
  synthetic image;
* the segmentor's own loss, mixing synthetic and real images (:func:`segmentor_loss`);
* the pix2pix baseline's discriminator and losses (:class:`PatchDiscriminator`, :func:`pix2pix_d_loss`, :func:`pix2pix_g_loss`).

Sums and means follow the official code's (sum over the critic's patches and over pixels, mean over the
batch); the loss weights are arguments (the code does not define them; see the chapter's ledger).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TARGETS = ("flair", "t1ce", "t1")  # the code's order of the one-hot target code


def condition(t2: torch.Tensor, code: torch.Tensor, classes: int = len(TARGETS)) -> torch.Tensor:
    """The generator's input: the T2 slice ``(B, 1, H, W)`` and the one-hot code of ``code`` ``(B,)``
    broadcast to ``classes`` constant channels, ``(B, 1 + classes, H, W)``."""
    onehot = F.one_hot(code, classes).to(t2.dtype)[:, :, None, None].expand(-1, -1, *t2.shape[-2:])
    return torch.cat([t2, onehot], 1)


def _init_normal(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class _Level(nn.Module):
    """One level of the pix2pix U-Net: down, the inner levels, up, and the skip concatenation."""

    def __init__(self, outer: int, inner: int, submodule: nn.Module | None, in_channels: int | None = None,
                 out_channels: int | None = None, outermost: bool = False):
        super().__init__()
        down = nn.Conv2d(in_channels or outer, inner, 4, 2, 1, bias=False)
        up_in = inner if submodule is None else 2 * inner
        if outermost:
            self.body = nn.Sequential(down, submodule, nn.ReLU(True), nn.ConvTranspose2d(up_in, out_channels, 4, 2, 1), nn.Tanh())
        elif submodule is None:  # innermost: 1 x 1 bottleneck, no normalisation
            self.body = nn.Sequential(nn.LeakyReLU(0.2, True), down, nn.ReLU(True),
                                      nn.ConvTranspose2d(up_in, outer, 4, 2, 1, bias=False), nn.InstanceNorm2d(outer))
        else:
            self.body = nn.Sequential(nn.LeakyReLU(0.2, True), down, nn.InstanceNorm2d(inner), submodule, nn.ReLU(True),
                                      nn.ConvTranspose2d(up_in, outer, 4, 2, 1, bias=False), nn.InstanceNorm2d(outer))
        self.outermost = outermost

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) if self.outermost else torch.cat([x, self.body(x)], 1)


class UNetGenerator(nn.Module):
    """The pix2pix U-Net generator: ``downs`` stride-2 4 x 4 convolutions (LeakyReLU 0.2, instance norm
    without affine parameters) to a 1 x 1 bottleneck when ``2**downs`` is the image side, transposed
    convolutions back with skip connections, Tanh output; widths ``width * (1, 2, 4, 8, 8, ...)``; weights
    N(0, 0.02). The code's: ``in_channels=4`` (T2 + code), ``downs=7`` for 128 x 128, ``width=64``."""

    def __init__(self, in_channels: int = 4, out_channels: int = 1, downs: int = 6, width: int = 64):
        super().__init__()
        if downs < 2:
            raise ValueError(f"downs must be >= 2, got {downs}")
        widths = [width * min(2**i, 8) for i in range(downs)]
        level: nn.Module | None = None
        for i in range(downs - 1, 0, -1):
            level = _Level(widths[i - 1], widths[i], level)
        self.net = _Level(widths[0], widths[0], level, in_channels, out_channels, outermost=True)
        self.downs = downs
        self.apply(_init_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2**self.downs or x.shape[-2] % 2**self.downs:
            raise ValueError(f"the image side must be divisible by 2**downs = {2**self.downs}, got {tuple(x.shape[-2:])}")
        return self.net(x)


class Critic(nn.Module):
    """The conditional critic ``D(x, T2)`` (StarGAN-like): stride-2 4 x 4 convolutions with LeakyReLU
    (slope 0.01) and no normalisation, widths doubling from ``width``, down to a 4 x 4 map; then
    ``out_src`` (3 x 3 convolution) gives a 4 x 4 patch map of realness scores and ``out_cls`` (a
    convolution over the whole 4 x 4 map) the modality logits. Kaiming initialisation."""

    def __init__(self, image_size: int = 64, width: int = 64, classes: int = len(TARGETS), in_channels: int = 2):
        super().__init__()
        layers = int(round(math.log2(image_size))) - 2
        if 2 ** (layers + 2) != image_size or layers < 1:
            raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
        blocks, c = [], in_channels
        for i in range(layers):
            blocks += [nn.Conv2d(c, width * 2**i, 4, 2, 1), nn.LeakyReLU(0.01)]
            c = width * 2**i
        self.trunk = nn.Sequential(*blocks)
        self.out_src = nn.Conv2d(c, 1, 3, 1, 1, bias=False)
        self.out_cls = nn.Conv2d(c, classes, 4, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor, t2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(torch.cat([x, t2], 1))
        return self.out_src(h), self.out_cls(h).flatten(1)


class Segmentor(nn.Module):
    """The tumour-consistency segmentor ``S(x, c)``: a U-Net on the image and its one-hot modality code
    (``in_channels = 1 + 3``), an encoder of stride-2 3 x 3 convolutions with batch norm and ReLU
    (``widths``, the code's 64/128/256/512), a decoder of stride-2 transposed convolutions with the
    encoder's maps concatenated, and a sigmoid: the tumour probability at full resolution. Kaiming init.
    With ``in_channels=4`` and no code it is the downstream segmentor (the code's ``unet.Unet(4)``)."""

    def __init__(self, in_channels: int = 1 + len(TARGETS), widths: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        self.down = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.down.append(nn.Sequential(nn.Conv2d(c, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(True)))
            c = w
        self.up = nn.ModuleList()
        skips = [in_channels, *widths[:-1]]
        for w, skip in zip(reversed(widths), reversed(skips)):
            out = max(skip, widths[0] // 2)
            self.up.append(nn.Sequential(nn.ConvTranspose2d(c, out, 3, 2, 1, output_padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(True)))
            c = out + skip
        self.head = nn.Conv2d(c, 1, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        maps = [x]
        for block in self.down:
            maps.append(block(maps[-1]))
        h = maps.pop()
        for block in self.up:
            h = torch.cat([block(h), maps.pop()], 1)
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


def dice_loss(probs: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - (2 |A n B| + s) / (|A| + |B| + s)`` per sample (soft, ``probs`` in [0, 1]), averaged."""
    p, t = probs.flatten(1).float(), target.flatten(1).float()
    return (1 - (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)).mean()


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): ``E[(||grad_x D_src(x_hat, T2)||_2 - 1)^2]`` at
    ``x_hat = a real + (1 - a) fake``, ``a ~ U(0, 1)`` per sample; ``D_src`` summed over its patches."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    src, _ = critic(x_hat, t2)
    (grad,) = torch.autograd.grad(src.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def classification_loss(logits: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """The auxiliary classifier's loss: binary cross-entropy of the logits against the one-hot code,
    summed over classes and averaged over the batch (the code's ``BCEWithLogits(sum) / B``)."""
    onehot = F.one_hot(code, logits.shape[1]).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, onehot, reduction="sum") / logits.shape[0]


def critic_loss(critic: Critic, real: torch.Tensor, fake: torch.Tensor, t2: torch.Tensor, code: torch.Tensor, *,
                cls_weight: float, gp_weight: float) -> dict[str, torch.Tensor]:
    """``L_D = -E[sum D_src(real)] + E[sum D_src(fake)] + l_cls L_cls(D_cls(real), c) + l_gp GP``
    (``gp_weight=0`` drops the penalty, for the weight-clipping ablation)."""
    src_real, cls_real = critic(real, t2)
    src_fake, _ = critic(fake.detach(), t2)
    adv = -src_real.flatten(1).sum(1).mean() + src_fake.flatten(1).sum(1).mean()
    cls = classification_loss(cls_real, code) if cls_weight else adv.new_zeros(())
    gp = gradient_penalty(critic, real, fake, t2) if gp_weight else adv.new_zeros(())
    return {"loss": adv + cls_weight * cls + gp_weight * gp, "d_adv": adv, "d_cls": cls, "d_gp": gp}


def generator_loss(src_fake: torch.Tensor, cls_fake: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                   code: torch.Tensor, seg_probs: torch.Tensor | None, tumour: torch.Tensor, *, cls_weight: float,
                   rec_weight: float, seg_weight: float) -> dict[str, torch.Tensor]:
    """``L_G = -E[sum D_src(G)] + l_cls L_cls(D_cls(G), c) + l_rec E[sum |real - G|] + l_seg Dice(S(G, c), y)``;
    the last term is the tumour-consistency loss (``seg_probs`` None or ``seg_weight=0``: MGAN)."""
    adv = -src_fake.flatten(1).sum(1).mean()
    cls = classification_loss(cls_fake, code) if cls_weight else adv.new_zeros(())
    rec = (real - fake).abs().flatten(1).sum(1).mean()
    seg = dice_loss(seg_probs, tumour) if seg_probs is not None and seg_weight else adv.new_zeros(())
    loss = adv + cls_weight * cls + rec_weight * rec + seg_weight * seg
    return {"loss": loss, "g_adv": adv, "g_cls": cls, "g_rec": rec, "g_seg": seg}


def segmentor_loss(probs_fake: torch.Tensor, probs_real: torch.Tensor, tumour: torch.Tensor,
                   fake_share: float = 0.7) -> torch.Tensor:
    """The segmentor's update after G's: ``0.7 Dice(S(G.detach(), c), y) + 0.3 Dice(S(real, c), y)``."""
    return fake_share * dice_loss(probs_fake, tumour) + (1 - fake_share) * dice_loss(probs_real, tumour)


# ---------------------------------------------------------------------------------------------
# The pix2pix baseline (Isola et al., CVPR 2017): one generator per target modality


class PatchDiscriminator(nn.Module):
    """pix2pix's conditional PatchGAN on ``(T2, x)``: 4 x 4 convolutions, ``layers`` of stride 2 then one
    of stride 1 (batch norm after the first), LeakyReLU 0.2, a one-channel map of patch logits."""

    def __init__(self, in_channels: int = 2, width: int = 64, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = width
        for i in range(1, layers + 1):
            out = width * min(2**i, 8)
            blocks += [nn.Conv2d(c, out, 4, 2 if i < layers else 1, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, True)]
            c = out
        blocks.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*blocks)
        self.apply(_init_normal)

    def forward(self, x: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([t2, x], 1))


def pix2pix_d_loss(disc: PatchDiscriminator, real: torch.Tensor, fake: torch.Tensor, t2: torch.Tensor) -> torch.Tensor:
    """pix2pix's discriminator loss: BCE on real (1) and synthetic (0) patches, halved."""
    logits_real, logits_fake = disc(real, t2), disc(fake.detach(), t2)
    return 0.5 * (F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
                  + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake)))


def pix2pix_g_loss(disc: PatchDiscriminator, real: torch.Tensor, fake: torch.Tensor, t2: torch.Tensor, *,
                   l1_weight: float) -> dict[str, torch.Tensor]:
    """pix2pix's generator loss: ``BCE(D(T2, G), 1) + l1 mean|real - G|``."""
    logits = disc(fake, t2)
    adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    rec = (real - fake).abs().mean()
    return {"loss": adv + l1_weight * rec, "g_adv": adv, "g_rec": rec}
