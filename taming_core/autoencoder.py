"""Convolutional encoder E and decoder G of the VQGAN (paper Sec. 3.2, Fig. 2).

Shape legend: B batch, C channels, H,W image, h,w latent grid, D code dim (z_channels here).
The layer layout and the state-dict names (`down.{i}.block.{j}`, `mid.attn_1`, ...) follow the original
CompVis implementation so its checkpoints load strictly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class AutoencoderConfig:
    """The original `ddconfig`: one config drives both the encoder and the decoder."""

    ch: int = 128
    ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])
    num_res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=lambda: [16])
    dropout: float = 0.0
    resamp_with_conv: bool = True
    in_channels: int = 3
    out_ch: int = 3
    resolution: int = 256
    z_channels: int = 256
    # The original class defaults to True (conv_out gives 2*z channels); every VQ config sets False.
    double_z: bool = False
    # Not in the original: per-pixel noise inputs in the decoder above the code grid (NoiseInjection).
    noise: bool = False

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def normalize(channels: int) -> nn.GroupNorm:
    # The original uses 32 groups with eps 1e-6 (not PyTorch's 1e-5); channels must be multiples of 32.
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm-swish-conv twice, plus a 1x1 `nin_shortcut` when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all h*w positions, 1x1 convs `q`, `k`, `v`, `proj_out`."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        y = self.norm(x)
        q, k, v = (rearrange(f(y), "b c h w -> b 1 (h w) c") for f in (self.q, self.k, self.v))
        # softmax(q k^T / sqrt(C)) v, as the original; the fused kernel never builds the (hw)^2 matrix in memory.
        out = F.scaled_dot_product_attention(q, k, v)  # (B, 1, h*w, C)
        out = rearrange(out, "b 1 (h w) c -> b c h w", h=h, w=w)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Stride-2 3x3 conv. The original pads asymmetrically (right and bottom by one, zeros), so a side
    of H becomes floor(H/2)."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_conv:
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, 2, 2)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.with_conv = with_conv
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.with_conv else x


class NoiseInjection(nn.Module):
    """x + strength[c] * n with n ~ N(0, 1) per pixel, shared by the channels (StyleGAN's noise inputs).

    A decoder given only the codes can draw texture only as a function of each code, so an adversarial loss
    teaches it a texture that repeats on the code grid; noise is a source of detail that is not tied to that
    grid. `strength` starts at 0: a decoder with noise behaves as the one without until it is trained. In train
    mode every call draws new noise; in eval mode the noise is one fixed field (seed 0, tiled from a 256 x 256
    block), so a decode is deterministic and a preview's rows match the final image's.
    """

    FIELD = 256

    def __init__(self, channels: int):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        if self.training:
            n = torch.randn(B, 1, H, W, device=x.device, dtype=x.dtype)
        else:
            n = fixed_noise(H, W).to(x)  # (1, 1, H, W)
        return x + self.strength.view(1, -1, 1, 1).to(x.dtype) * n


def fixed_noise(height: int, width: int) -> torch.Tensor:
    """(1, 1, height, width): the eval-mode noise field, the same for every image (top-left aligned)."""
    block = torch.randn(NoiseInjection.FIELD, NoiseInjection.FIELD, generator=torch.Generator().manual_seed(0))
    reps = (-(-height // NoiseInjection.FIELD), -(-width // NoiseInjection.FIELD))
    return block.repeat(*reps)[:height, :width].view(1, 1, height, width)


class MidBlock(nn.Module):
    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution level: `block[j]` ResnetBlocks, each followed by `attn[j]` where attention is on."""

    def __init__(self, in_ch: int, out_ch: int, n_blocks: int, use_attn: bool, dropout: float):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        for j in range(n_blocks):
            self.block.append(ResnetBlock(in_ch if j == 0 else out_ch, out_ch, dropout))
            if use_attn:
                self.attn.append(AttnBlock(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            x = block(x)
            if len(self.attn) > 0:
                x = self.attn[j](x)
        return x


class Encoder(nn.Module):
    """E: (B, in_channels, H, W) -> (B, z_channels, H/f, W/f), f = 2^(len(ch_mult)-1)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        in_mult = (1, *cfg.ch_mult)
        res = cfg.resolution  # attention placement depends on the config resolution only
        self.down = nn.ModuleList()
        for i, mult in enumerate(cfg.ch_mult):
            level = Level(cfg.ch * in_mult[i], cfg.ch * mult, cfg.num_res_blocks,
                          res in cfg.attn_resolutions, cfg.dropout)
            if i != len(cfg.ch_mult) - 1:
                level.downsample = Downsample(cfg.ch * mult, cfg.resamp_with_conv)
                res //= 2
            self.down.append(level)
        width = cfg.ch * cfg.ch_mult[-1]
        self.mid = MidBlock(width, cfg.dropout)
        self.norm_out = normalize(width)
        self.conv_out = nn.Conv2d(width, 2 * cfg.z_channels if cfg.double_z else cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """G: (B, z_channels, h, w) -> (B, out_ch, h*f, w*f). Outputs are unbounded (no tanh), roughly [-1, 1].

    `up[0]` is the highest-resolution level (the original inserts levels at the front); the forward pass
    runs from `up[L-1]` down to `up[0]`. Each level has num_res_blocks + 1 blocks. With `noise`, each level
    above the code grid starts with a NoiseInjection (`up.{i}.noise.strength`).
    """

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        n_levels = len(cfg.ch_mult)
        width = cfg.ch * cfg.ch_mult[-1]
        res = cfg.resolution // 2 ** (n_levels - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, width, 3, padding=1)
        self.mid = MidBlock(width, cfg.dropout)
        levels = []
        for i in reversed(range(n_levels)):
            out = cfg.ch * cfg.ch_mult[i]
            level = Level(width, out, cfg.num_res_blocks + 1, res in cfg.attn_resolutions, cfg.dropout)
            width = out
            if i != 0:
                level.upsample = Upsample(width, cfg.resamp_with_conv)
                res *= 2
            if cfg.noise and i != n_levels - 1:  # the levels above the code grid
                level.noise = NoiseInjection(cfg.ch * cfg.ch_mult[i + 1])
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = normalize(width)
        self.conv_out = nn.Conv2d(width, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            if hasattr(level, "noise"):
                h = level.noise(h)
            h = level(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))
