"""A GPT decode step as plain tensor ops: GPT.forward's sums over a KV cache, without the module calls.

Shape legend: B batch (rows, 2B with guidance), T new tokens (a few), P tokens already in the cache, E width,
nh heads, hs head size, V vocab, N = B * T rows of a product.

A decode step feeds one or a few new tokens. On a CPU its time goes mostly to dispatching some 25 small ops per
layer through nn.Module calls: the bundled 4 x 256 GPT's step took 2.0-2.5 ms through GPT.forward, of which
its kernels ~0.7 ms. `attach(gpt)` (prepare_for_sampling, on a CPU) registers a DecodeStep for a prepared GPT:
each product is a closure over its layer's sampling weights (`rows_fn` of LowBitLinear, PackedLinear and
StackedQKV; F.linear for a plain nn.Linear), and the glue of GPT.forward, Block.forward and
CausalSelfAttention.forward is written out once. The closures are taken again at the first step of every KV
cache, so weights replaced or edited between images are seen (the rule of packed.py's CacheCheck).
`sampling.next_logits` takes this path for inference calls of at most MAX_TOKENS tokens outside autocast; the
logits are those of GPT.forward, bit for bit (tests/test_decode_step.py).
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .gpt import GPT, KVCache

MAX_TOKENS = 16  # calls with more new tokens (a prefill) are compute-bound: GPT.forward, where dispatch is cheap

Product = Callable[[torch.Tensor], torch.Tensor]  # x (N, in) -> (N, out)

_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # GPT -> its DecodeStep (none on a copy)


def product_of(linear: nn.Module) -> Product:
    """A linear layer's product for decode-step rows: its `rows_fn()` (the sampling layers), else F.linear."""
    rows_fn = getattr(linear, "rows_fn", None)
    if rows_fn is not None:
        return rows_fn()
    w, b = linear.weight, linear.bias
    return lambda x: F.linear(x, w, b)


class DecodeStep:
    """GPT.forward(idx, cache, last_only=True, cond) for a few tokens, in inference, as one function."""

    def __init__(self, gpt: GPT):
        if any(block.attn.qkv is None for block in gpt.blocks):
            raise ValueError("a decode step needs query, key and value as one product (prepare_for_sampling)")
        self.gpt = weakref.ref(gpt)  # the registry keys on the GPT: no strong reference back to it
        self.cache: weakref.ref | None = None  # the KV cache the closures were last taken for
        self.layers: list[tuple] = []
        self.head: Product | None = None

    def refresh(self, gpt: GPT) -> None:
        """The products' closures, taken now from the layers' current weights."""
        self.layers = [(b.ln1.weight, b.ln1.bias, b.ln1.eps, product_of(b.attn.qkv), product_of(b.attn.proj),
                        b.ln2.weight, b.ln2.bias, b.ln2.eps, product_of(b.mlp[0]), product_of(b.mlp[2]))
                       for b in gpt.blocks]
        self.head = product_of(gpt.head)

    def _check(self, gpt: GPT, idx: torch.Tensor, cache: KVCache) -> None:
        """Token ids in range; the products' closures taken again for a new cache (the weights may have changed)."""
        lo, hi = idx.aminmax()
        if bool((lo < 0) | (hi >= gpt.config.vocab_size)):
            raise ValueError(f"token ids must lie in [0, {gpt.config.vocab_size}), got range [{int(lo)}, {int(hi)}]")
        if self.cache is None or self.cache() is not cache:
            self.refresh(gpt)
            self.cache = weakref.ref(cache)

    def __call__(self, idx: torch.Tensor, cache: KVCache, cond: torch.Tensor | None = None) -> torch.Tensor:
        """idx (B, T) -> logits (B, V) of the token after them, the T tokens appended to the cache at positions
        [cache.length, cache.length + T); cond (B, T[, E]) as GPT.forward's."""
        gpt = self.gpt()
        B, T = idx.shape
        start, end = cache.length, cache.length + idx.shape[1]
        cfg = gpt.config
        if end > cfg.block_size or end > cache.max_len:
            return gpt(idx, cache, last_only=True, cond=cond)[:, -1]  # GPT.forward says what is wrong
        self._check(gpt, idx, cache)
        E, nh = cfg.n_embd, cfg.n_head
        hs = E // nh
        x = F.embedding(idx, gpt.tok_emb.weight) + gpt.pos_emb[:, start:end]  # (B, T, E)
        if cond is not None:
            x = x + gpt._cond_embedding(cond, idx.shape).to(x.dtype)
        x = x.view(B * T, E)  # (N, E): the products' rows
        mask = None
        if T > 1 and (start > 0 or cfg.n_unmasked > 0):
            mask = gpt.blocks[0].attn.mask[:, :, start:end, :end].bool()  # (1, 1, T, P+T), as the attention's
        for layer, (w1, b1, eps1, qkv, proj, w2, b2, eps2, fc, out) in enumerate(self.layers):
            q, k, v = qkv(F.layer_norm(x, (E,), w1, b1, eps1)).view(B, T, 3, nh, hs).permute(2, 0, 3, 1, 4)
            q = q.to(cache.k.dtype)  # 3 x (B, nh, T, hs)
            cache.k[layer, :, :, start:end] = k
            cache.v[layer, :, :, start:end] = v
            keys, values = cache.k[layer, :, :, :end], cache.v[layer, :, :, :end]  # (B, nh, P+T, hs)
            if T == 1:
                y = F.scaled_dot_product_attention(q, keys, values)
            elif mask is None:
                y = F.scaled_dot_product_attention(q, keys, values, is_causal=True)
            else:
                y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            x = x + proj(y.transpose(1, 2).reshape(B * T, E).to(x.dtype))
            x = x + out(F.gelu(fc(F.layer_norm(x, (E,), w2, b2, eps2))))
        cache.length = end
        last = x.view(B, T, E)[:, -1]  # (B, E)
        ln = gpt.ln_f
        return self.head(F.layer_norm(last, (E,), ln.weight, ln.bias, ln.eps))  # (B, V)

    def at(self, idx: torch.Tensor, positions: torch.Tensor, cache: KVCache,
           cond: torch.Tensor | None = None) -> torch.Tensor:
        """One token per row at its own position (rows of requests that started at different times):
        idx (B, 1), positions (B,) int64 -> logits (B, V); each row's key and value written at its position,
        each row attending to its positions 0 .. p only. The cache's length becomes the largest p + 1. All rows
        at one position: exactly __call__. cond (B, 1[, E]) as GPT.forward's."""
        first = int(positions[0])
        if bool((positions == first).all()):
            cache.length = first
            return self(idx, cache, cond)
        gpt = self.gpt()
        cfg = gpt.config
        B = idx.shape[0]
        end = int(positions.max()) + 1
        if end > cfg.block_size or end > cache.max_len or int(positions.min()) < 0:
            raise ValueError(f"positions must lie in [0, {min(cfg.block_size, cache.max_len)}), got "
                             f"{positions.tolist()}")
        self._check(gpt, idx, cache)
        E, nh = cfg.n_embd, cfg.n_head
        hs = E // nh
        x = F.embedding(idx, gpt.tok_emb.weight) + gpt.pos_emb[0, positions][:, None]  # (B, 1, E)
        if cond is not None:
            x = x + gpt._cond_embedding(cond, idx.shape).to(x.dtype)
        x = x.view(B, E)
        rows = torch.arange(B, device=idx.device)
        mask = (torch.arange(end, device=idx.device) <= positions[:, None]).view(B, 1, 1, end)  # (B, 1, 1, P+1)
        for layer, (w1, b1, eps1, qkv, proj, w2, b2, eps2, fc, out) in enumerate(self.layers):
            q, k, v = qkv(F.layer_norm(x, (E,), w1, b1, eps1)).view(B, 1, 3, nh, hs).permute(2, 0, 3, 1, 4)
            cache.k[layer][rows, :, positions] = k[:, :, 0].to(cache.k.dtype)  # (B, nh, hs) at each row's position
            cache.v[layer][rows, :, positions] = v[:, :, 0].to(cache.v.dtype)
            y = F.scaled_dot_product_attention(q.to(cache.k.dtype), cache.k[layer, :, :, :end],
                                               cache.v[layer, :, :, :end], attn_mask=mask)  # (B, nh, 1, hs)
            x = x + proj(y.transpose(1, 2).reshape(B, E).to(x.dtype))
            x = x + out(F.gelu(fc(F.layer_norm(x, (E,), w2, b2, eps2))))
        cache.length = end
        ln = gpt.ln_f
        return self.head(F.layer_norm(x, (E,), ln.weight, ln.bias, ln.eps))  # (B, V)


def attach(gpt: GPT) -> DecodeStep | None:
    """Register a DecodeStep for `gpt` (prepared for sampling: query, key and value in one product); None, and
    nothing registered, for a GPT whose attention layers still have three products."""
    if any(block.attn.qkv is None for block in gpt.blocks):
        return None
    step = _STEPS[gpt] = DecodeStep(gpt)
    return step


def detach(gpt: GPT) -> None:
    """Drop the GPT's DecodeStep: its calls go through GPT.forward again."""
    _STEPS.pop(gpt, None)


def decode_step_of(gpt: GPT, tokens: torch.Tensor) -> DecodeStep | None:
    """The DecodeStep to take for `tokens` (B, T): registered, at most MAX_TOKENS tokens, inference outside
    autocast on the GPT's CPU weights; else None (GPT.forward)."""
    step = _STEPS.get(gpt)
    if (step is None or tokens.shape[1] > MAX_TOKENS or tokens.shape[1] == 0 or torch.is_grad_enabled()
            or gpt.training or not tokens.is_cpu or torch.is_autocast_enabled("cpu")):
        return None
    return step
