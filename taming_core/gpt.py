"""GPT over code indices (paper Sec. 3.2, Eq. 8-10), with a key/value cache.

Shape legend: B batch, T tokens in this call, P tokens already in the cache, E width (n_embd), nh heads,
hs = E / nh head size, V vocab, n_layer layers.
Key names follow the original minGPT (`tok_emb`, `pos_emb`, `blocks.{l}.attn.{key,query,value,proj,mask}`,
`blocks.{l}.mlp.{0,2}`, `ln_f`, `head`), including the persistent causal `mask` buffer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class GPTConfig:
    vocab_size: int = 1024
    block_size: int = 512
    n_layer: int = 12
    n_head: int = 8
    n_embd: int = 256
    embd_pdrop: float = 0.0
    resid_pdrop: float = 0.0
    attn_pdrop: float = 0.0
    n_unmasked: int = 0  # the first n_unmasked tokens attend to each other bidirectionally


class KVCache:
    """Keys and values of every layer for positions [0, length), preallocated for `max_len` positions.

    Shrinking `length` rolls the cache back (the slots past it are overwritten by the next call).
    """

    def __init__(self, cfg: GPTConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        hs = cfg.n_embd // cfg.n_head
        shape = (cfg.n_layer, batch_size, cfg.n_head, max_len, hs)
        self.k = torch.empty(shape, device=device, dtype=dtype)  # (n_layer, B, nh, max_len, hs)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[3]


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head = cfg.n_head
        self.key = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.query = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.value = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.attn_drop = cfg.attn_pdrop
        self.resid_drop = nn.Dropout(cfg.resid_pdrop)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        mask = torch.tril(torch.ones(cfg.block_size, cfg.block_size))
        if cfg.n_unmasked > 0:
            mask[: cfg.n_unmasked, : cfg.n_unmasked] = 1
        # Persistent as in the original (its checkpoints carry it); our own format derives it from the config.
        self.register_buffer("mask", mask.view(1, 1, cfg.block_size, cfg.block_size))
        self.n_unmasked = cfg.n_unmasked

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        T = x.shape[1]
        q, k, v = (rearrange(f(x), "b t (nh hs) -> b nh t hs", nh=self.n_head)
                   for f in (self.query, self.key, self.value))  # (B, nh, T, hs)
        start = 0
        if cache is not None:
            start = cache.length
            cache.k[layer, :, :, start:start + T] = k
            cache.v[layer, :, :, start:start + T] = v
            k = cache.k[layer, :, :, : start + T]  # (B, nh, P+T, hs)
            v = cache.v[layer, :, :, : start + T]
        drop = self.attn_drop if self.training else 0.0
        if T == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # one new token sees everything
        elif start == 0 and self.n_unmasked == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        else:
            mask = self.mask[:, :, start:start + T, : start + T].bool()  # (1, 1, T, P+T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = rearrange(y, "b nh t hs -> b t (nh hs)")
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, 4 * cfg.n_embd),
            nn.GELU(),  # exact erf form, as the original
            nn.Linear(4 * cfg.n_embd, cfg.n_embd),
            nn.Dropout(cfg.resid_pdrop),
        )

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """Decoder-only transformer p(s_i | s_<i) over a shared vocabulary of condition and image tokens."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.block_size, cfg.n_embd))
        self.drop = nn.Dropout(cfg.embd_pdrop)
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        p = self.pos_emb
        return KVCache(self.config, batch_size, max_len or self.config.block_size, p.device, p.dtype)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        """idx (B, T) int64 -> logits (B, T, V), or (B, 1, V) with `last_only`.

        With a cache, the T tokens take positions [cache.length, cache.length + T), attend to the cached
        positions and causally to each other, and are appended to the cache.
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        if cache is not None and start + T > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions, {start + T} needed")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got range "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        x = self.drop(self.tok_emb(idx) + self.pos_emb[:, start:start + T])  # (B, T, E)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.length = start + T
        if last_only:
            x = x[:, -1:]
        return self.head(self.ln_f(x))  # (B, T, V)
