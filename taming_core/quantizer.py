"""Codebook Z and the quantizers q(.) of the VQGAN (paper Eq. 2-4).

Shape legend: B batch, D code dim, h,w latent grid, K codebook size, N = B*h*w flattened positions.
Every quantizer takes z (B, D, h, w) and returns `Quantized(z_q (B, D, h, w), indices (B, h, w), loss ())`.
Indices are always (B, h, w) int64 here; the original returns them flat, (B*h*w,).

Three quantizers with the original key names:
- `VectorQuantizer` (original `VectorQuantizer2`): nearest code, straight-through gradients, optional `remap`.
- `GumbelQuantizer` (original `GumbelQuantize`): a 1x1 conv `proj` gives logits over the codes.
- `EMAVectorQuantizer`: codebook updated by exponential moving averages (the original's version cannot be
  built: it raises a NameError in __init__; the keys here follow its intended names).
Our options: l2-normalised codes, dead-code restart from recent encoder outputs, usage statistics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class Quantized:
    z_q: torch.Tensor  # (B, D, h, w) codebook vectors (straight-through in training)
    indices: torch.Tensor  # (B, h, w) int64 code indices (positions in `used` when the quantizer remaps)
    loss: torch.Tensor  # () codebook + commitment loss (Gumbel: KL to the uniform prior)


@dataclass
class CodebookUsage:
    fraction_used: float  # share of the K codes chosen at least once
    perplexity: float  # exp(entropy) of the code histogram; K when the codes are used uniformly
    dead_codes: int  # codes never chosen


def codebook_usage(indices: torch.Tensor, n_codes: int) -> CodebookUsage:
    """Usage statistics of a batch (or a whole data set) of code indices of any shape."""
    counts = torch.bincount(indices.reshape(-1).cpu(), minlength=n_codes).double()
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    used = int((counts > 0).sum())
    return CodebookUsage(used / n_codes, math.exp(entropy), n_codes - used)


class BetaOn(str, Enum):
    """Where the weight beta goes in the VQ loss ||sg[E(x)] - z_q||^2 + beta ||sg[z_q] - E(x)||^2.

    ENCODER is the paper's Eq. 4 (beta on the commitment term). CODEBOOK is the original code's `legacy=True`
    placement, which every released VQModel used: weight 1 on the commitment term, beta on the codebook term.
    The forward value is (1 + beta) * mse either way; only the gradients differ.
    """

    CODEBOOK = "codebook"
    ENCODER = "encoder"


class UnknownIndex(str, Enum):
    RANDOM = "random"  # the original: a code outside `used` maps to a random position (non-deterministic)
    EXTRA = "extra"  # one extra position len(used) stands for every unknown code


def load_used(remap) -> torch.Tensor:
    """The `remap` option: a .npy path (resolved by the loader) or an array of used code indices."""
    if isinstance(remap, (str, Path)):
        path = Path(remap)
        if not path.is_file():
            raise FileNotFoundError(f"remap file {path} not found (a .npy array of used code indices)")
        remap = np.load(path, allow_pickle=False)
    return torch.as_tensor(np.asarray(remap), device="cpu").long()  # CPU even under a meta-device build


class RemapMixin:
    """Restricts a codebook to the codes in the buffer `used` (original `remap`, key `quantize.used`):
    tokens are positions in `used`. Codes outside it map to a random position (`unknown_index="random"`,
    the original, non-deterministic), to one extra position len(used) ("extra"), or to a fixed int."""

    def _init_remap(self, remap, unknown_index) -> None:
        self.unknown_index = unknown_index if isinstance(unknown_index, int) else UnknownIndex(unknown_index)
        if remap is not None:
            self.register_buffer("used", load_used(remap))
        else:
            self.used = None

    @property
    def n_codes(self) -> int:
        """Number of distinct index values (K, or the positions in `used` when remapping)."""
        if self.used is None:
            return self.n_e
        return len(self.used) + (1 if self.unknown_index == UnknownIndex.EXTRA else 0)

    def _to_positions(self, indices: torch.Tensor) -> torch.Tensor:
        if self.used is None:
            return indices
        match = indices[..., None] == self.used  # (..., len(used))
        positions = match.long().argmax(-1)
        if self.unknown_index == UnknownIndex.EXTRA:
            fill = torch.full_like(positions, len(self.used))
        elif self.unknown_index == UnknownIndex.RANDOM:
            fill = torch.randint_like(positions, 0, self.n_codes)
        else:
            fill = torch.full_like(positions, int(self.unknown_index))
        return torch.where(match.any(-1), positions, fill)

    def _to_codes(self, positions: torch.Tensor) -> torch.Tensor:
        check_indices(positions, self.n_codes)
        positions = positions.long()
        if self.used is None:
            return positions
        # the extra slot decodes as code used[0], as the original
        return self.used[positions.masked_fill(positions >= len(self.used), 0)]


def check_indices(indices: torch.Tensor, n_codes: int) -> None:
    if indices.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"code indices must be an integer tensor, got {indices.dtype}")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= n_codes):
        raise ValueError(f"code indices must lie in [0, {n_codes}), got range "
                         f"[{int(indices.min())}, {int(indices.max())}]")


def _maybe_all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


class VectorQuantizer(RemapMixin, nn.Module):
    """Nearest-neighbour quantizer z_q = argmin_k ||z_ij - e_k|| with straight-through gradients (Eq. 2-4).

    Args: n_e = K codes of dimension e_dim = D; beta and `beta_on` (see BetaOn); remap/unknown_index as the
    original; `l2_normalize` compares and returns unit-length vectors (cosine distance);
    `dead_code_threshold` > 0 restarts, in training, every code whose running usage (an EMA of the
    per-batch counts with decay `usage_decay`) falls below it, from random encoder outputs of the batch.
    """

    def __init__(self, n_e: int, e_dim: int, beta: float = 0.25, beta_on: str = "codebook",
                 remap=None, unknown_index: str | int = "random", l2_normalize: bool = False,
                 dead_code_threshold: float = 0.0, usage_decay: float = 0.99):
        super().__init__()
        self.n_e, self.e_dim, self.beta = n_e, e_dim, beta
        self.beta_on = BetaOn(beta_on)
        self.l2_normalize = l2_normalize
        self.dead_code_threshold = dead_code_threshold
        self.usage_decay = usage_decay
        self.embedding = nn.Embedding(n_e, e_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_e, 1.0 / n_e)
        self._init_remap(remap, unknown_index)
        # Training statistics only: not part of the state dict, so original checkpoints load strictly.
        self.register_buffer("usage", torch.ones(n_e), persistent=False)

    def codebook(self) -> torch.Tensor:
        w = self.embedding.weight  # (K, D)
        return F.normalize(w, dim=1) if self.l2_normalize else w

    def nearest(self, z_flat: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N,) index of the nearest code; ties go to the lowest index, as torch.argmin.
        Distances are computed in float32 even under bf16/fp16 autocast, so code choices do not jitter."""
        with torch.autocast(z_flat.device.type, enabled=False):
            z, e = z_flat.float(), self.codebook().float()
            d = z.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * z @ e.t()  # (N, K)
        return d.argmin(1)

    def forward(self, z: torch.Tensor) -> Quantized:
        b, _, h, w = z.shape
        z = rearrange(z, "b d h w -> b h w d")
        if self.l2_normalize:
            z = F.normalize(z, dim=-1)
        z_flat = z.reshape(-1, self.e_dim)  # (N, D)
        with torch.no_grad():
            idx = self.nearest(z_flat)  # (N,)
        if self.training and self.dead_code_threshold > 0:
            self._track_and_restart(idx, z_flat.detach())
        z_q = F.embedding(idx, self.codebook()).view(z.shape)  # (B, h, w, D)
        commit = F.mse_loss(z_q.detach(), z)  # pulls the encoder output to its code
        codebook = F.mse_loss(z_q, z.detach())  # pulls the code to the encoder output
        if self.beta_on == BetaOn.CODEBOOK:
            loss = commit + self.beta * codebook
        else:
            loss = self.beta * commit + codebook
        z_q = z + (z_q - z).detach()  # straight-through estimator
        indices = self._to_positions(idx.view(b, h, w))
        return Quantized(rearrange(z_q, "b h w d -> b d h w").contiguous(), indices, loss)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, h, w) indices -> (B, D, h, w) codebook vectors (original `get_codebook_entry`)."""
        z_q = F.embedding(self._to_codes(indices), self.codebook())  # (B, h, w, D)
        return rearrange(z_q, "b h w d -> b d h w").contiguous()

    @torch.no_grad()
    def _track_and_restart(self, idx: torch.Tensor, z_flat: torch.Tensor) -> None:
        counts = _maybe_all_reduce(torch.bincount(idx, minlength=self.n_e).float())
        self.usage.mul_(self.usage_decay).add_(counts, alpha=1 - self.usage_decay)
        dead = self.usage < self.dead_code_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        pick = torch.randint(0, z_flat.shape[0], (n_dead,), device=z_flat.device)
        fresh = z_flat[pick]
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(fresh, src=0)  # every rank restarts with the same vectors
        self.embedding.weight.data[dead] = fresh.to(self.embedding.weight.dtype)
        self.usage[dead] = 1.0


class GumbelQuantizer(RemapMixin, nn.Module):
    """Gumbel-softmax quantizer: logits = proj(z) over K codes, z_q = one_hot @ embed (original GumbelQuantize).

    In training it samples with Gumbel noise at `temperature`. In eval mode encoding is deterministic
    here: argmax of the logits (over the used codes when remapping). The original adds Gumbel noise even
    in eval mode, so its encodings are random draws; ours is the most likely one.
    Loss: kl_weight * sum_k q_k log(q_k K), q = softmax(logits), the original's form (KL to the uniform prior
    over the K codes). With `remap` the softmax runs over the used codes' logits only while K stays n_embed,
    as the original computes it (so the minimum is log(K / len(used)), not 0).
    """

    def __init__(self, num_hiddens: int, embedding_dim: int, n_embed: int, straight_through: bool = True,
                 kl_weight: float = 5e-4, temp_init: float = 1.0, remap=None,
                 unknown_index: str | int = "random"):
        super().__init__()
        self.n_e, self.e_dim = n_embed, embedding_dim
        self.straight_through = straight_through
        self.kl_weight = kl_weight
        self.temperature = temp_init
        self.proj = nn.Conv2d(num_hiddens, n_embed, 1)
        self.embed = nn.Embedding(n_embed, embedding_dim)
        self._init_remap(remap, unknown_index)

    def forward(self, z: torch.Tensor) -> Quantized:
        logits = self.proj(z)  # (B, K, h, w)
        if self.used is not None:
            full = logits
            logits = logits[:, self.used]  # (B, len(used), h, w)
        if self.training:
            one_hot = F.gumbel_softmax(logits, tau=self.temperature, dim=1, hard=self.straight_through)
        else:
            one_hot = F.one_hot(logits.argmax(1), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
        indices = one_hot.argmax(1)  # (B, h, w), positions in `used` when remapping
        if self.used is not None:  # back to all K codes, the unused ones zero
            scattered = torch.zeros_like(full)
            scattered[:, self.used] = one_hot
            one_hot = scattered  # (B, K, h, w)
        z_q = torch.einsum("bkhw,kd->bdhw", one_hot, self.embed.weight)
        q = F.softmax(logits, dim=1)  # (B, K or len(used), h, w)
        loss = self.kl_weight * torch.sum(q * torch.log(q * self.n_e + 1e-10), dim=1).mean()
        return Quantized(z_q, indices, loss)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return rearrange(self.embed(self._to_codes(indices)), "b h w d -> b d h w").contiguous()


class EmbeddingEMA(nn.Module):
    """Codebook `weight` (K, D) kept as embed_avg / cluster_size, both moving averages (no gradients)."""

    def __init__(self, n_e: int, e_dim: int, decay: float, eps: float):
        super().__init__()
        self.decay, self.eps = decay, eps
        weight = torch.randn(n_e, e_dim)
        self.register_buffer("weight", weight)
        self.register_buffer("cluster_size", torch.zeros(n_e))
        self.register_buffer("embed_avg", weight.clone())

    @torch.no_grad()
    def update(self, z_flat: torch.Tensor, idx: torch.Tensor) -> None:
        one_hot = F.one_hot(idx, self.weight.shape[0]).to(z_flat.dtype)  # (N, K)
        counts = _maybe_all_reduce(one_hot.sum(0))  # (K,)
        sums = _maybe_all_reduce(one_hot.t() @ z_flat)  # (K, D)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_avg.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        # Laplace smoothing keeps codes that lost all their vectors from dividing by zero.
        smoothed = (self.cluster_size + self.eps) / (n + len(self.cluster_size) * self.eps) * n
        self.weight.copy_(self.embed_avg / smoothed[:, None])


class EMAVectorQuantizer(RemapMixin, nn.Module):
    """Nearest-code quantizer whose codebook follows EMA cluster means (VQ-VAE-2 style); loss is
    beta * ||sg[z_q] - z||^2 (commitment only: the codebook receives no gradient)."""

    def __init__(self, n_embed: int, embedding_dim: int, beta: float = 0.25, decay: float = 0.99,
                 eps: float = 1e-5, remap=None, unknown_index: str | int = "random"):
        super().__init__()
        self.n_e, self.e_dim, self.beta = n_embed, embedding_dim, beta
        self.embedding = EmbeddingEMA(n_embed, embedding_dim, decay, eps)
        self._init_remap(remap, unknown_index)

    lookup = VectorQuantizer.lookup

    def codebook(self) -> torch.Tensor:
        return self.embedding.weight

    def forward(self, z: torch.Tensor) -> Quantized:
        b, _, h, w = z.shape
        z = rearrange(z, "b d h w -> b h w d")
        z_flat = z.reshape(-1, self.e_dim)  # (N, D)
        with torch.no_grad():
            idx = VectorQuantizer.nearest(self, z_flat)
            if self.training:
                self.embedding.update(z_flat.detach().float(), idx)
        z_q = F.embedding(idx, self.embedding.weight).view(z.shape)  # (B, h, w, D)
        loss = self.beta * F.mse_loss(z_q.detach(), z)
        z_q = z + (z_q - z).detach()
        indices = self._to_positions(idx.view(b, h, w))
        return Quantized(rearrange(z_q, "b h w d -> b d h w").contiguous(), indices, loss)
