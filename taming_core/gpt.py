"""GPT over code indices (paper Sec. 3.2, Eq. 8-10), with a key/value cache.

Shape legend: B batch, T tokens in this call, P tokens already in the cache, E width (n_embd), nh heads,
hs = E / nh head size, V vocab, n_layer layers.
Aligned conditioning (net2net.py, cond_mode="aligned") adds a second table `cond_emb` (cond_vocab_size rows, a key the
original does not have): condition ids cond (B, T) of the same positions as the tokens are embedded and added.
With `cond_layers` > 0, `cond_features` first runs the embedded condition grid through dilated 3x3 convolutions
(`cond_conv.{i}`), so the feature added at a position also tells the condition below and to the right of it,
which the causal GPT never sees otherwise; those features (B, T, E) are passed as `cond` instead of ids.
Key names follow the original minGPT (`tok_emb`, `pos_emb`, `blocks.{l}.attn.{key,query,value,proj,mask}`,
`blocks.{l}.mlp.{0,2}`, `ln_f`, `head`), including the persistent causal `mask` buffer.
Plain PyTorch modules: cpu_fastpath.py prepares a model for sampling on a CPU (packed weight copies, query/key/
value in one product, int8 / bf16 weights) by swapping layers, the keys unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
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
    # Rows of the condition embedding `cond_emb` added per position (aligned conditioning); 0: no such table
    # (every original model and prefix-mode model)
    cond_vocab_size: int = 0
    # Aligned conditioning: residual 3x3 convolutions over the embedded condition grid, dilations 1, 2, 4, ..
    # (4 layers see 31x31 cells); 0: each position gets its own condition's embedding alone
    cond_layers: int = 0


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
        # Query, key and value in one product E -> 3E, set for sampling by cpu_fastpath.py (a stacked copy of
        # the three weights, or their low-bit form); None: the three layers above.
        self.qkv: nn.Module | None = None

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        """x (B, T, E) -> (B, T, E); with a cache, x takes positions [cache.length, cache.length + T)."""
        B, T, E = x.shape
        nh, hs = self.n_head, E // self.n_head
        if self.qkv is not None:
            q, k, v = self.qkv(x).view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4)  # 3 x (B, nh, T, hs)
        else:
            q, k, v = (f(x).view(B, T, nh, hs).transpose(1, 2) for f in (self.query, self.key, self.value))
        start = 0
        if cache is not None:
            q = q.to(cache.k.dtype)  # a bf16 cache (low-bit weights on a GPU) attends in bf16; k, v cast on writing
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
        y = self.proj(y.transpose(1, 2).reshape(B, T, E).to(x.dtype))  # (B, T, E)
        return self.resid_drop(y) if self.training else y  # dropout is the identity outside training: no call


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
        fc, _, proj, drop = self.mlp  # the Sequential written out, F.gelu for its GELU: fewer calls per token
        y = proj(F.gelu(fc(self.ln2(x))))  # (B, T, 4E) inside
        return x + (drop(y) if self.training else y)


class GPT(nn.Module):
    """Decoder-only transformer p(s_i | s_<i) over a shared vocabulary of condition and image tokens."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.block_size, cfg.n_embd))
        if cfg.cond_vocab_size > 0:
            self.cond_emb = nn.Embedding(cfg.cond_vocab_size, cfg.n_embd)
        if cfg.cond_layers > 0:
            if cfg.cond_vocab_size == 0:
                raise ValueError("cond_layers > 0 needs a condition table (cond_vocab_size > 0)")
            self.cond_conv = nn.ModuleList(nn.Conv2d(cfg.n_embd, cfg.n_embd, 3, padding=2 ** i, dilation=2 ** i)
                                           for i in range(cfg.cond_layers))
        self.drop = nn.Dropout(cfg.embd_pdrop)
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        for conv in getattr(self, "cond_conv", ()):  # zero: a new stack starts as the embedding alone
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

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

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        """idx (B, T) int64 -> logits (B, T, V), or (B, 1, V) with `last_only`.

        With a cache, the T tokens take positions [cache.length, cache.length + T), attend to the cached
        positions and causally to each other, and are appended to the cache. cond (B, T) int64: condition ids
        of the same positions, embedded by `cond_emb` and added to the token embeddings (aligned conditioning;
        needs config.cond_vocab_size > 0), or their features (B, T, E) from `cond_features` (needed when
        config.cond_layers > 0).
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        if cache is not None and start + T > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions, {start + T} needed")
        if idx.numel():
            lo, hi = idx.aminmax()  # one device sync per call, not two
            if bool((lo < 0) | (hi >= self.config.vocab_size)):
                raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got range "
                                 f"[{int(lo)}, {int(hi)}]")
        x = self.tok_emb(idx) + self.pos_emb[:, start:start + T]  # (B, T, E)
        if cond is not None:
            x = x + self._cond_embedding(cond, idx.shape).to(x.dtype)  # (B, T, E)
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        if cache is not None:
            cache.length = start + T
        if last_only:
            x = x[:, -1:]
        return self.head(self.ln_f(x))  # (B, T, V)

    def _cond_embedding(self, cond: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """cond (B, T) condition ids or (B, T, E) features -> (B, T, E), checked against the token shape."""
        if self.config.cond_vocab_size == 0:
            raise ValueError("this GPT has no condition embedding (cond_vocab_size = 0): it takes no `cond`")
        if cond.is_floating_point():
            if cond.shape != (*shape, self.config.n_embd):
                raise ValueError(f"condition features must be (B, T, E) = {(*shape, self.config.n_embd)}, got "
                                 f"{tuple(cond.shape)}")
            return cond
        if self.config.cond_layers > 0:
            raise ValueError("this GPT convolves its condition grid (cond_layers > 0): pass cond_features(grid), "
                             "not ids")
        if cond.shape != shape:
            raise ValueError(f"cond must match the tokens {tuple(shape)}, got {tuple(cond.shape)}")
        return self.cond_emb(self._check_cond_ids(cond))

    def _check_cond_ids(self, cond: torch.Tensor) -> torch.Tensor:
        n = self.config.cond_vocab_size
        if cond.numel():
            lo, hi = cond.aminmax()
            if bool((lo < 0) | (hi >= n)):
                raise ValueError(f"condition ids must lie in [0, {n}), got range [{int(lo)}, {int(hi)}]")
        return cond

    def cond_features(self, cond: torch.Tensor) -> torch.Tensor:
        """Condition grid cond (B, h, w) int64 ids -> features (B, h * w, E) in raster order, for `cond`.

        Each layer adds conv_i(gelu(x)) (3x3, dilation 2^i, zero padding at the grid's edges) to the embedded
        grid x (B, E, h, w). Without cond_layers this is the embedding of each cell alone.
        """
        if self.config.cond_vocab_size == 0:
            raise ValueError("this GPT has no condition embedding (cond_vocab_size = 0)")
        if cond.ndim != 3 or cond.is_floating_point():
            raise ValueError(f"expected a condition grid (B, h, w) of ids, got {tuple(cond.shape)} {cond.dtype}")
        x = self.cond_emb(self._check_cond_ids(cond)).permute(0, 3, 1, 2)  # (B, E, h, w)
        for conv in getattr(self, "cond_conv", ()):
            x = x + conv(F.gelu(x))
        return x.flatten(2).transpose(1, 2)  # (B, h * w, E)
