"""Net2Net: a frozen VQGAN first stage + a conditioner + a permuter + the GPT (paper Sec. 3.2, Eq. 8-10).

Shape legend: B batch, H,W image, h,w latent grid, L = h*w image tokens, L_c condition tokens, V vocab.
The transformer models p(s | c) = prod_i p(s_i | s_<i, c) over the sequence (c, s); logits[:, i] predicts
s_i from c and s_<i. Modules use the original names (`first_stage_model`, `cond_stage_model`,
`permuter`, `transformer`) so original checkpoints load strictly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .conditioners import (ClassLabel, ConditionerConfig, CoordCondition, KINDS, Unconditional,
                           VQCondition)
from .gpt import GPT, GPTConfig
from .permuter import Permuter, PermuterConfig
from .vqgan import VQGAN, VQGANConfig


@dataclass
class Net2NetConfig:
    first_stage: VQGANConfig = field(default_factory=VQGANConfig)
    cond_stage: ConditionerConfig = field(default_factory=ConditionerConfig)
    permuter: PermuterConfig = field(default_factory=PermuterConfig)
    transformer: GPTConfig = field(default_factory=GPTConfig)
    first_stage_key: str = "image"
    cond_stage_key: str = "segmentation"
    pkeep: float = 1.0  # training: keep each input token with this probability, else a random one


class Net2Net(nn.Module):
    def __init__(self, cfg: Net2NetConfig):
        super().__init__()
        self.config = cfg
        self.first_stage_model = VQGAN(cfg.first_stage)
        cc = cfg.cond_stage
        if cc.kind not in KINDS:
            raise ValueError(f"unknown condition kind {cc.kind!r}; choose one of {', '.join(KINDS)}")
        if cc.kind in ("segmentation", "depth", "edges"):
            if cc.vq is None:
                raise ValueError(f"a {cc.kind} condition needs a condition-stage VQGAN config (cond_stage.vq)")
            self.cond_stage_model = VQGAN(cc.vq)
            self.conditioner = VQCondition(self.cond_stage_model, cc.kind, cc.n_labels, cc.label_offset,
                                           cc.downsample_size)
        elif cc.kind == "first_stage":
            self.cond_stage_model = self.first_stage_model  # both key prefixes name the same tensors
            self.conditioner = VQCondition(self.first_stage_model, cc.kind, downsample_size=cc.downsample_size)
        elif cc.kind == "class":
            self.conditioner = ClassLabel(cc.n_classes)
        elif cc.kind == "coord":
            self.conditioner = CoordCondition(cc.n_embed, cc.down_factor)
        else:
            self.conditioner = Unconditional(cc.sos_token, lambda: self.transformer.pos_emb.device)
        self.permuter = Permuter(cfg.permuter)
        self.transformer = GPT(cfg.transformer)
        for p in self.first_stage_model.parameters():
            p.requires_grad_(False)
        if hasattr(self, "cond_stage_model"):
            for p in self.cond_stage_model.parameters():
                p.requires_grad_(False)
        self.train(self.training)  # the stages are frozen in eval mode from the start

    def train(self, mode: bool = True):
        """Only the transformer trains; the stages stay frozen in eval mode, as in the original."""
        super().train(mode)
        self.first_stage_model.eval()
        if hasattr(self, "cond_stage_model"):
            self.cond_stage_model.eval()
        return self

    @property
    def grid(self) -> tuple[int, int]:
        """Training latent grid (h, w) of the first stage."""
        fs = self.config.first_stage.ddconfig
        side = fs.resolution // fs.downsample_factor
        return side, side

    @torch.no_grad()
    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) in [-1, 1] -> image tokens z (B, L) in transformer order."""
        indices = self.first_stage_model.encode(x).indices  # (B, h, w)
        return self.permuter(indices.flatten(1))  # (B, L)

    @torch.no_grad()
    def encode_cond(self, cond=None) -> torch.Tensor:
        """Condition -> tokens c (B, L_c): one-hot (B, n_labels, H, W) or label ids (B, H, W) int64
        (segmentation), (B, 1, H, W) in [-1, 1] (depth, edges), (B,) int64 (class), None (unconditional)."""
        if cond is not None and self.config.cond_stage.kind == "none" and not isinstance(cond, int):
            cond = len(cond)
        elif cond is None and self.config.cond_stage.kind != "none":
            raise ValueError(f"this model is conditioned on {self.config.cond_stage.kind}: pass a condition")
        return self.conditioner.encode(cond)

    def forward(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """z (B, L), c (B, L_c) -> logits (B, L, V); logits[:, i] predicts z[:, i] from c and z[:, :i]."""
        if z.ndim != 2 or c.ndim != 2 or z.shape[0] != c.shape[0]:
            raise ValueError(f"expected z (B, L) and c (B, L_c), got {tuple(z.shape)} and {tuple(c.shape)}")
        seq = torch.cat([c, z], dim=1)[:, :-1]  # (B, L_c + L - 1)
        logits = self.transformer(seq)  # (B, L_c + L - 1, V)
        return logits[:, c.shape[1] - 1:]  # (B, L, V)

    @torch.no_grad()
    def decode_indices(self, z: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """z (B, L) tokens in transformer order -> image (B, 3, H, W); grid = (h, w), default the training grid."""
        h, w = grid if grid is not None else self.grid
        if z.ndim != 2 or z.shape[1] != h * w:
            raise ValueError(f"expected tokens (B, {h * w}) for a {h}x{w} grid, got {tuple(z.shape)}")
        raster = self.permuter(z, reverse=True)  # (B, L)
        return self.first_stage_model.decode_indices(raster.view(-1, h, w))
