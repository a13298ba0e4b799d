"""Net2Net: a frozen VQGAN first stage + a conditioner + a permuter + the GPT (paper Sec. 3.2, Eq. 8-10).

Shape legend: B batch, H,W image, h,w latent grid, L = h*w image tokens, L_c condition tokens, V vocab.
The transformer models p(s | c) = prod_i p(s_i | s_<i, c); logits[:, i] predicts s_i from c and s_<i.
Two ways to give it c (`cond_mode`):
- "prefix" (the original, default): the sequence (c, s), L_c condition tokens before the L image tokens, in
  the shared vocabulary; the GPT has to find which condition token lies under which image token.
- "aligned" (ControlAR's "conditional decoding", Li et al. 2024, arXiv 2410.02705; a deliberate addition):
  spatial conditions only, on the image grid (L_c = L). The sequence is (sos, s_0 .. s_{L-2}) and input
  position i, which predicts s_i, gets cond_emb(c_i) added to its token embedding (gpt.py): the condition of
  the predicted grid cell sits at the step that predicts it. c is permuted with the image tokens' order.
  With transformer.cond_layers > 0 the ids become features of their neighbourhood first (`condition_input`:
  convolutions over the condition grid, so a step also knows the condition below and right of it).
Classifier-free guidance: a model trained with condition dropout has a `null_token`, the condition id that
stands for "no condition" (prefix: L_c copies of it, in the GPT vocabulary; aligned: in the condition
vocabulary). Modules use the original names (`first_stage_model`, `cond_stage_model`, `permuter`,
`transformer`) so original checkpoints load strictly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from .conditioners import (ClassLabel, ConditionerConfig, CoordCondition, KINDS, LabelGrid, Unconditional,
                           VQCondition)
from .gpt import GPT, GPTConfig
from .permuter import Permuter, PermuterConfig
from .vqgan import VQGAN, VQGANConfig

COND_MODES = ("prefix", "aligned")
SPATIAL = ("segmentation", "depth", "edges")  # kinds whose tokens lie on a grid (aligned mode)


@dataclass
class Net2NetConfig:
    first_stage: VQGANConfig = field(default_factory=VQGANConfig)
    cond_stage: ConditionerConfig = field(default_factory=ConditionerConfig)
    permuter: PermuterConfig = field(default_factory=PermuterConfig)
    transformer: GPTConfig = field(default_factory=GPTConfig)
    first_stage_key: str = "image"
    cond_stage_key: str = "segmentation"
    pkeep: float = 1.0  # training: keep each input token with this probability, else a random one
    cond_mode: str = "prefix"  # one of COND_MODES: condition tokens before the image, or added per position
    # Condition id of the learned null condition (classifier-free guidance; trained with condition dropout):
    # prefix mode an id of the GPT vocabulary, aligned mode of the condition vocabulary. None: no guidance.
    null_token: Optional[int] = None


class Net2Net(nn.Module):
    def __init__(self, cfg: Net2NetConfig):
        super().__init__()
        self.config = cfg
        self._check_cond_mode(cfg)
        self.first_stage_model = VQGAN(cfg.first_stage)
        cc = cfg.cond_stage
        if cc.kind not in KINDS:
            raise ValueError(f"unknown condition kind {cc.kind!r}; choose one of {', '.join(KINDS)}")
        if cc.kind == "segmentation" and cc.grid_factor > 0:
            if cc.vq is not None or not cc.n_labels:
                raise ValueError("a label-grid segmentation condition (grid_factor > 0) takes n_labels, not vq")
            self.conditioner = LabelGrid(cc.n_labels, cc.label_offset, cc.grid_factor, cc.grid_detail)
            ids = self.conditioner.n_ids
            aligned = cfg.cond_mode == "aligned"
            table = cfg.transformer.cond_vocab_size if aligned else cfg.transformer.vocab_size
            name = "cond_vocab_size" if aligned else "vocab_size"
            if table < ids:
                raise ValueError(f"the label grid makes {ids} condition ids; transformer.{name} is {table}")
            if cfg.null_token is not None and cfg.null_token < ids:
                raise ValueError(f"null_token {cfg.null_token} is one of the label grid's {ids} condition ids; "
                                 f"the null condition needs its own id ({ids})")
        elif cc.kind in SPATIAL:
            if cc.vq is None:
                raise ValueError(f"the {cc.kind} condition needs a condition-stage VQGAN config (cond_stage.vq)")
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

    @staticmethod
    def _check_cond_mode(cfg: Net2NetConfig) -> None:
        gpt = cfg.transformer
        if cfg.cond_mode not in COND_MODES:
            raise ValueError(f"unknown cond_mode {cfg.cond_mode!r}; choose one of {', '.join(COND_MODES)}")
        aligned = cfg.cond_mode == "aligned"
        if aligned and cfg.cond_stage.kind not in SPATIAL:
            raise ValueError(f"cond_mode 'aligned' needs a spatial condition ({', '.join(SPATIAL)}), "
                             f"not {cfg.cond_stage.kind!r}")
        if aligned != (gpt.cond_vocab_size > 0):
            raise ValueError(f"cond_mode {cfg.cond_mode!r} with transformer.cond_vocab_size = "
                             f"{gpt.cond_vocab_size}: aligned mode needs a condition table, prefix mode none")
        if gpt.cond_layers > 0 and cfg.permuter.name != "identity":
            raise ValueError(f"transformer.cond_layers convolves the condition grid in raster order; it needs the "
                             f"identity permuter, not {cfg.permuter.name!r}")
        if cfg.cond_stage.kind == "class" and cfg.cond_stage.n_classes > gpt.vocab_size:
            raise ValueError(f"cond_stage.n_classes {cfg.cond_stage.n_classes} exceeds transformer.vocab_size "
                             f"{gpt.vocab_size}: class ids are tokens of the GPT's vocabulary")
        n = gpt.cond_vocab_size if aligned else gpt.vocab_size
        if cfg.null_token is not None and not 0 <= cfg.null_token < n:
            raise ValueError(f"null_token {cfg.null_token} lies outside the {n} condition ids of {cfg.cond_mode} "
                             "mode")

    @property
    def aligned(self) -> bool:
        """True when the condition is added per position (cond_mode "aligned"), False for a prefix."""
        return self.config.cond_mode == "aligned"

    def null_condition(self, c: torch.Tensor) -> torch.Tensor:
        """c (B, L_c) -> the learned null condition of the same shape (classifier-free guidance)."""
        if self.config.null_token is None:
            raise ValueError("this model was trained without a null condition (null_token is None): guidance "
                             "needs one (train with cond_drop > 0); use guidance=1")
        return torch.full_like(c, self.config.null_token)

    def sequence(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens z (B, P), condition c (B, L_c) -> the GPT input (B, T) and its per-position condition ids
        (B, T) or None: prefix (c, z), T = L_c + P; aligned (sos, z), T = 1 + P, with c[:, :T] added."""
        if not self.aligned:
            return torch.cat([c, z], dim=1), None  # (B, L_c + P)
        if c.shape[1] < z.shape[1] + 1:
            raise ValueError(f"aligned conditioning needs one condition token per image token: {c.shape[1]} "
                             f"for {z.shape[1] + 1} positions")
        sos = z.new_full((z.shape[0], 1), self.config.cond_stage.sos_token)
        seq = torch.cat([sos, z], dim=1)  # (B, 1 + P)
        return seq, c[:, :seq.shape[1]]

    def condition_input(self, c: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Aligned mode: condition tokens c (B, L) of a grid (h, w) (default the training grid) -> what the GPT
        adds per position: the ids themselves (B, L), or with transformer.cond_layers their features (B, L, E)."""
        if self.config.transformer.cond_layers == 0:
            return c
        h, w = grid if grid is not None else self.grid
        if c.ndim != 2 or c.shape[1] != h * w:
            raise ValueError(f"this model convolves its condition grid: c must hold the {h}x{w} grid's {h * w} "
                             f"tokens (pass grid= for another size), got {tuple(c.shape)}")
        return self.transformer.cond_features(c.reshape(-1, h, w))  # (B, L, E), raster = token order

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
        (segmentation), (B, 1, H, W) in [-1, 1] (depth, edges), (B,) int64 (class), None (unconditional).
        Aligned mode: the tokens are put in the image tokens' order (the permuter), c[:, i] under z[:, i]."""
        if cond is not None and self.config.cond_stage.kind == "none" and not isinstance(cond, int):
            cond = len(cond)
        elif cond is None and self.config.cond_stage.kind != "none":
            raise ValueError(f"this model is conditioned on {self.config.cond_stage.kind}: pass a condition")
        c = self.conditioner.encode(cond)  # (B, L_c)
        if not self.aligned:
            return c
        return self.permuter(c)  # (B, L) in token order (the permuter checks L against its grid)

    def forward(self, z: torch.Tensor, c: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """z (B, L), c (B, L_c) -> logits (B, L, V); logits[:, i] predicts z[:, i] from c and z[:, :i]
        (aligned mode: from c[:, :i + 1] and z[:, :i], L_c = L; with transformer.cond_layers from the whole
        condition grid (h, w) = grid, default the training grid)."""
        if z.ndim != 2 or c.ndim != 2 or z.shape[0] != c.shape[0]:
            raise ValueError(f"expected z (B, L) and c (B, L_c), got {tuple(z.shape)} and {tuple(c.shape)}")
        if self.aligned and c.shape[1] != z.shape[1]:
            raise ValueError(f"aligned conditioning: c must have one token per image token, got "
                             f"{tuple(c.shape)} for z {tuple(z.shape)}")
        seq, _ = self.sequence(z[:, :-1], c)  # (B, T), T = L_c + L - 1 (prefix) or L (aligned)
        cond = self.condition_input(c, grid) if self.aligned else None  # (B, L) ids or (B, L, E) features
        logits = self.transformer(seq, cond=cond)  # (B, T, V)
        return logits[:, seq.shape[1] - z.shape[1]:]  # (B, L, V)

    @torch.no_grad()
    def decode_indices(self, z: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """z (B, L) tokens in transformer order -> image (B, 3, H, W); grid = (h, w), default the training grid."""
        h, w = grid if grid is not None else self.grid
        if z.ndim != 2 or z.shape[1] != h * w:
            raise ValueError(f"expected tokens (B, {h * w}) for a {h}x{w} grid, got {tuple(z.shape)}")
        raster = self.permuter(z, reverse=True)  # (B, L)
        return self.first_stage_model.decode_indices(raster.view(-1, h, w))
