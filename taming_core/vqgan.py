"""VQGAN first stage: x -> E(x) -> quant_conv -> q(.) -> z_q -> post_quant_conv -> G -> x_hat (paper Sec. 3.2).

Shape legend: B batch, C channels, H,W image, h,w latent grid (H/f, W/f), D code dim (embed_dim), K codes.
The same class serves condition stages (segmentation one-hot maps, depth, edges): only `in_channels`,
`out_ch` and the optional `colorize` buffer differ.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .autoencoder import AutoencoderConfig, Decoder, Encoder
from .quantizer import EMAVectorQuantizer, GumbelQuantizer, Quantized, VectorQuantizer, load_used


@dataclass
class VQGANConfig:
    ddconfig: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    n_embed: int = 1024  # K
    embed_dim: int = 256  # D
    quantizer: str = "vq"  # "vq" | "gumbel" | "ema"
    beta: float = 0.25
    beta_on: str = "codebook"  # the original's legacy placement; "encoder" is the paper's Eq. 4
    remap: Optional[Any] = None  # path to a .npy of used codes (resolved by the loader), or a list
    unknown_index: Any = "random"
    l2_normalize: bool = False
    dead_code_threshold: float = 0.0
    kl_weight: float = 5e-4  # gumbel only
    temperature: float = 1.0  # gumbel only
    ema_decay: float = 0.99  # ema only
    colorize_nlabels: Optional[int] = None  # segmentation stages: random projection buffer for previews
    image_key: str = "image"  # what the stage encodes: image, segmentation, depth, edges


class VQGAN(nn.Module):
    """Vector-quantised autoencoder with the original key names (`encoder`, `decoder`, `quantize`,
    `quant_conv`, `post_quant_conv`, optional `colorize`)."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        if isinstance(cfg.remap, (str, Path)):  # store the codes themselves, so saved configs stand alone
            cfg = replace(cfg, remap=load_used(cfg.remap).tolist())
        self.config = cfg
        dd = cfg.ddconfig
        self.encoder = Encoder(dd)
        self.decoder = Decoder(dd)
        if cfg.quantizer == "vq":
            self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim, cfg.beta, cfg.beta_on, cfg.remap,
                                            cfg.unknown_index, cfg.l2_normalize, cfg.dead_code_threshold)
        elif cfg.quantizer == "gumbel":
            # As the original: proj takes z_channels inputs but is fed quant_conv's embed_dim channels.
            if cfg.embed_dim != dd.z_channels:
                raise ValueError(f"a Gumbel VQGAN needs embed_dim == z_channels, got {cfg.embed_dim} "
                                 f"and {dd.z_channels}")
            self.quantize = GumbelQuantizer(dd.z_channels, cfg.embed_dim, cfg.n_embed, kl_weight=cfg.kl_weight,
                                            temp_init=cfg.temperature, remap=cfg.remap,
                                            unknown_index=cfg.unknown_index)
        elif cfg.quantizer == "ema":
            self.quantize = EMAVectorQuantizer(cfg.n_embed, cfg.embed_dim, cfg.beta, cfg.ema_decay,
                                               remap=cfg.remap, unknown_index=cfg.unknown_index)
        else:
            raise ValueError(f"unknown quantizer {cfg.quantizer!r}: use 'vq', 'gumbel' or 'ema'")
        self.quant_conv = nn.Conv2d(dd.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, dd.z_channels, 1)
        if cfg.colorize_nlabels is not None:
            self.register_buffer("colorize", torch.randn(3, cfg.colorize_nlabels, 1, 1))

    @property
    def downsample_factor(self) -> int:
        return self.config.ddconfig.downsample_factor

    @property
    def n_codes(self) -> int:
        """Number of distinct token values this stage produces."""
        return self.quantize.n_codes

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse, with the reason, what the encoder would silently misread."""
        dd, f = self.config.ddconfig, self.downsample_factor
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"images must be float tensors in [-1, 1], got {x.dtype} "
                            "(for uint8 images use x.float() / 127.5 - 1)")
        if x.ndim != 4 or x.shape[1] != dd.in_channels:
            raise ValueError(f"expected (B, {dd.in_channels}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % f or w % f:
            raise ValueError(f"image sides must be multiples of the downsampling factor {f}, got {h}x{w}; "
                             f"crop or pad to {h // f * f}x{w // f * f} or {-(-h // f) * f}x{-(-w // f) * f}")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1.001 or hi > 1.001 or lo != lo or hi != hi:
            raise ValueError(f"image values must lie in [-1, 1], got range [{lo:.4g}, {hi:.4g}]")

    def encode(self, x: torch.Tensor) -> Quantized:
        """x (B, C_in, H, W) in [-1, 1] -> Quantized(z_q (B, D, h, w), indices (B, h, w), loss ())."""
        self.check_input(x)
        return self.quantize(self.quant_conv(self.encoder(x)))

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q (B, D, h, w) -> (B, C_out, H, W)."""
        if z_q.ndim != 4 or z_q.shape[1] != self.config.embed_dim:
            raise ValueError(f"expected codes of shape (B, {self.config.embed_dim}, h, w), got {tuple(z_q.shape)}")
        return self.decoder(self.post_quant_conv(z_q))

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, h, w) int64 -> (B, C_out, H, W) (what the original `decode_code` was meant to do)."""
        if indices.ndim != 3:
            raise ValueError(f"expected indices of shape (B, h, w), got {tuple(indices.shape)}")
        return self.decode(self.quantize.lookup(indices))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Quantized]:
        """Reconstruction for training: (x_hat (B, C_out, H, W), Quantized)."""
        q = self.encode(x)
        return self.decode(q.z_q), q

    def last_layer(self) -> torch.Tensor:
        """Weight of G's last conv, where the adaptive GAN weight compares gradients (paper Eq. 7)."""
        return self.decoder.conv_out.weight

    def to_rgb(self, x: torch.Tensor) -> torch.Tensor:
        """A many-channel map (B, n_labels, H, W) -> (B, 3, H, W) in [-1, 1] through the `colorize` projection."""
        x = torch.nn.functional.conv2d(x, weight=self.colorize)
        return 2.0 * (x - x.min()) / (x.max() - x.min()) - 1.0


def to_image(x: torch.Tensor) -> np.ndarray | list[np.ndarray]:
    """Images in [-1, 1] -> uint8 pixels, the inverse of `x.float() / 127.5 - 1`: (C, H, W) -> (H, W, 3) array;
    (B, C, H, W) -> a list of B such arrays. One channel (C = 1) is repeated to grey RGB; values outside [-1, 1]
    are clipped."""
    if x.ndim not in (3, 4) or x.shape[-3] not in (1, 3):
        raise ValueError(f"expected images (C, H, W) or (B, C, H, W) with C = 1 or 3, got {tuple(x.shape)}")
    u8 = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    u8 = u8.movedim(-3, -1).cpu().numpy()  # (..., H, W, C)
    if u8.shape[-1] == 1:  # (..., H, W, 1) grey
        u8 = np.repeat(u8, 3, axis=-1)  # (..., H, W, 3)
    return list(u8) if u8.ndim == 4 else u8
