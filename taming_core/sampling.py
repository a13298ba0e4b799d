"""Autoregressive sampling from the transformer as pure functions (paper Sec. 3.2 and 3.3).

Shape legend: B batch, L_c condition tokens, P prefix (given image tokens), S sampled tokens, V vocab,
H, W token grid (rows, columns), (wh, ww) window, Lw = wh * ww tokens in a window.

- `sample`: prefill of the condition (and prefix) once, then one token per step from the KV cache.
- `sample_sliding_window`: grids larger than the training grid (paper Sec. 3.3, Fig. 3). Every token is
  predicted from a wh x ww window of the condition grid and the image tokens of that window before it, as the
  original `scripts/make_samples.py`; here each window placement keeps a KV cache that is extended as tokens
  arrive, so only the causal prefix that matters is computed and logits only at the sampled position.
- `quantize_gpt`: a copy of the model with int8 or bf16 GPT weights, for fewer bytes per decoded token.
Streaming (progress events, previews) is in `streaming.py`, on the step generators defined here.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .gpt import GPT, CausalSelfAttention, KVCache, LowBitLinear
from .net2net import Net2Net

Picker = Callable[[torch.Tensor], torch.Tensor]  # logits (B, V) -> tokens (B, 1)


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """logits (B, V) -> logits with -inf outside the top-k and the nucleus of mass top_p.

    top-k keeps every logit tied with the k-th, as the original `top_k_logits`; top-p keeps the smallest
    set of most likely tokens whose probability reaches top_p (always at least one).
    """
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = F.softmax(sorted_logits, dim=-1).cumsum(-1)
        remove = torch.zeros_like(cum, dtype=torch.bool)
        remove[..., 1:] = cum[..., :-1] > top_p  # drop a token once the mass before it exceeds top_p
        logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
    return logits


def pick_token(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
               top_p: float | None = None, greedy: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> tokens (B, 1): argmax when greedy, else one multinomial draw per row."""
    if greedy:
        return logits.argmax(-1, keepdim=True)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature} (use greedy=True for argmax)")
    logits = filter_logits(logits / temperature, top_k, top_p)
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)


def _picker(temperature: float, top_k: int | None, top_p: float | None, greedy: bool,
            generator: torch.Generator | None) -> Picker:
    if not greedy and temperature <= 0:  # refuse before any work is done
        raise ValueError(f"temperature must be > 0, got {temperature} (use greedy=True for argmax)")
    return partial(pick_token, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                   generator=generator)


def _gpt(model: Net2Net | GPT) -> GPT:
    gpt = model.transformer if isinstance(model, Net2Net) else model
    if not isinstance(gpt, GPT):
        raise TypeError(f"expected a Net2Net model or a GPT, got {type(model).__name__}")
    if gpt.training:
        raise ValueError("sampling needs the model in eval mode: call model.eval() first")
    return gpt


def _new_cache(gpt: GPT, batch_size: int, max_len: int, dtype: torch.dtype | None) -> KVCache:
    """A cache in the autocast dtype when one is given (the keys and values are produced in it), in bf16 for
    low-bit weights (quantize_gpt: fewer bytes per token for the cache too), else in the weights' dtype."""
    if dtype is None and gpt.blocks[0].attn.qkv is not None:
        dtype = torch.bfloat16
    return KVCache(gpt.config, batch_size, max_len, gpt.pos_emb.device, dtype or gpt.pos_emb.dtype)


def _logits(gpt: GPT, idx: torch.Tensor, cache: KVCache, dtype: torch.dtype | None) -> torch.Tensor:
    """Append idx (B, T) to the cache -> fp32 logits (B, V) at the last position.

    Autocast is entered around each call, never held across a generator's yield: it is thread-local state
    and would otherwise leak into the consumer's code between two tokens.
    """
    if dtype is None:
        return gpt(idx, cache, last_only=True)[:, -1].float()
    with torch.autocast(idx.device.type, dtype=dtype):
        return gpt(idx, cache, last_only=True)[:, -1].float()


@torch.no_grad()
def _plain_steps(gpt: GPT, seq: torch.Tensor, out: torch.Tensor, pick: Picker,
                 dtype: torch.dtype | None) -> Iterator[int]:
    """Prefill seq (B, L_c + P), then write out (B, S) one token at a time; yields each step after writing it.

    The yield comes before the next forward, so closing the generator stops all work at once.
    """
    steps = out.shape[1]
    cache = _new_cache(gpt, seq.shape[0], seq.shape[1] + steps - 1, dtype)  # the last token is never fed
    logits = _logits(gpt, seq, cache, dtype)
    for step in range(steps):
        out[:, step] = pick(logits)[:, 0]
        yield step
        if step < steps - 1:
            logits = _logits(gpt, out[:, step:step + 1], cache, dtype)


def _check_context(gpt: GPT, c: torch.Tensor, prefix: torch.Tensor | None, steps: int) -> torch.Tensor:
    """c (B, L_c), prefix (B, P) -> the prefill sequence (B, L_c + P) on the model's device."""
    device = gpt.pos_emb.device
    c = c.to(device)
    prefix = c.new_zeros(c.shape[0], 0) if prefix is None else prefix.to(device)
    if c.ndim != 2 or prefix.ndim != 2 or prefix.shape[0] != c.shape[0]:
        raise ValueError(f"expected c (B, L_c) and prefix (B, P), got {tuple(c.shape)}, {tuple(prefix.shape)}")
    seq = torch.cat([c, prefix], dim=1)  # (B, L_c + P)
    if seq.shape[1] == 0:
        raise ValueError("sampling needs at least one condition or prefix token to start from")
    if seq.shape[1] + steps - 1 > gpt.config.block_size:
        raise ValueError(f"{seq.shape[1]} context + {steps} steps exceed block_size {gpt.config.block_size}: "
                         "use sample_sliding_window for larger grids")
    return seq


@torch.no_grad()
def sample(model: Net2Net | GPT, c: torch.Tensor, steps: int, prefix: torch.Tensor | None = None,
           temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           greedy: bool = False, generator: torch.Generator | None = None,
           dtype: torch.dtype | None = None) -> torch.Tensor:
    """Sample `steps` image tokens after condition c (B, L_c) and optional prefix (B, P) -> (B, P + steps).

    The condition and prefix are run once (prefill); then each step feeds only the newest token and reads
    keys and values of earlier positions from the cache. One multinomial draw on (B, V) per step, from
    `generator` (or the global RNG), so seeded runs repeat. `dtype` (torch.bfloat16 / torch.float16) runs the
    GPT under autocast with the cache in that dtype, meant for CUDA; None keeps the weights' dtype (fp32).
    """
    gpt = _gpt(model)
    pick = _picker(temperature, top_k, top_p, greedy, generator)
    seq = _check_context(gpt, c, prefix, steps)
    prefix = seq[:, c.shape[1]:]  # (B, P)
    if steps <= 0:
        return prefix
    out = seq.new_empty(seq.shape[0], steps)  # (B, S)
    for _ in _plain_steps(gpt, seq, out, pick, dtype):
        pass
    return torch.cat([prefix, out], dim=1)  # (B, P + S)


# ----------------------------------------------------------------------------------------------------------
# Sliding window


@dataclass(frozen=True)
class WindowPlan:
    """Where the window sits for every token of an H x W grid.

    Token (i, j) is predicted from the condition tokens of rows [top[i], top[i] + wh) x columns
    [left[j], left[j] + ww) followed by the image tokens of that window that come before (i, j) in raster
    order: all window columns of rows top[i] .. i - 1, and columns left[j] .. j - 1 of row i.
    """
    window: tuple[int, int]
    top: list[int]  # (H,)
    left: list[int]  # (W,)


def _origins(n: int, size: int, stride: int, offset: int) -> list[int]:
    """Window start along one axis for each index 0..n-1.

    Indices are grouped in bands: [0, offset + stride), then every `stride` indices; a band starting at s
    puts the window at s - offset (clamped into the grid), so the band's indices sit at window positions
    offset .. offset + stride - 1 (the first band at 0 .. offset + stride - 1, the last may sit lower).
    """
    starts = []
    for i in range(n):
        band = 0 if i < offset + stride else offset + (i - offset) // stride * stride
        starts.append(max(0, min(band - offset, n - size)))
    return starts


def window_plan(grid: tuple[int, int], window: tuple[int, int] = (16, 16), mode: str = "exact",
                stride: tuple[int, int] | None = None) -> WindowPlan:
    """The window placement of every token of a grid (H, W) -> WindowPlan (context of each token).

    - "exact": the original's placement: local row = i if i <= wh/2; wh - (H - i) if H - i < wh/2; else wh/2,
      the same for columns. A middle token sees wh/2 image rows above it and the condition wh/2 rows above to
      wh/2 - 1 below; the window moves with every token except near the borders.
    - "fast": the window is held for a band of stride (sh, sw) tokens (default half the window) and moved by
      the stride, so consecutive tokens share a placement and its KV cache. With oh = (wh - sh + 1) // 2, the
      k-th row of a middle band (k < sh) sees oh + k image rows above and the condition from oh + k rows above
      to wh - 1 - oh - k below; columns likewise with ow. stride (1, 1) is exactly "exact".
    """
    H, W = grid
    wh, ww = window
    if mode == "exact":
        if stride not in (None, (1, 1)):
            raise ValueError(f"mode='exact' moves the window with every token; a stride {stride} needs "
                             "mode='fast'")
        sh, sw = 1, 1
    elif mode == "fast":
        sh, sw = stride if stride is not None else (max(1, wh // 2), max(1, ww // 2))
        if not (1 <= sh <= wh and 1 <= sw <= ww):
            raise ValueError(f"stride {stride} must lie between (1, 1) and the window {window}")
    else:
        raise ValueError(f"unknown mode {mode!r}; choose 'exact' or 'fast'")
    if H < wh or W < ww:
        raise ValueError(f"grid {grid} is smaller than the window {window}")
    return WindowPlan(window, _origins(H, wh, sh, (wh - sh + 1) // 2), _origins(W, ww, sw, (ww - sw + 1) // 2))


@torch.no_grad()
def _window_steps(gpt: GPT, c_grid: torch.Tensor, grid: torch.Tensor, start: int, plan: WindowPlan,
                  pick: Picker, dtype: torch.dtype | None) -> Iterator[int]:
    """Fill grid (B, H, W) in raster order from position `start`; yields each raster position after writing it.

    One KV cache per window placement (top, left), created with the condition window and the window's
    tokens before the first position that uses it, extended with the tokens sampled since its last use, and
    freed after its last use. Tokens are written once and never change, so a cache stays exact.
    """
    B, H, W = grid.shape
    wh, ww = plan.window
    Lw = wh * ww
    positions = range(start, H * W)
    last_use, context = {}, {}  # per placement: last raster position, tokens fed before predicting it
    for n in positions:
        i, j = divmod(n, W)
        key = (plan.top[i], plan.left[j])
        last_use[key] = n
        context[key] = Lw + (i - key[0]) * ww + (j - key[1])
    caches: dict[tuple[int, int], KVCache] = {}
    for n in positions:
        i, j = divmod(n, W)
        top, left = key = plan.top[i], plan.left[j]
        upto = (i - top) * ww + (j - left)  # window tokens before (i, j) in the window's raster order
        window_tokens = grid[:, top:top + wh, left:left + ww].reshape(B, Lw)  # (B, Lw)
        cache = caches.get(key)
        if cache is None:
            cache = caches[key] = _new_cache(gpt, B, context[key], dtype)
            cond = c_grid[:, top:top + wh, left:left + ww].reshape(B, Lw)  # (B, Lw)
            fed = torch.cat([cond, window_tokens[:, :upto]], dim=1)  # (B, Lw + upto)
        else:
            fed = window_tokens[:, cache.length - Lw:upto]  # (B, new tokens since the last use)
        logits = _logits(gpt, fed, cache, dtype)
        grid[:, i, j] = pick(logits)[:, 0]
        if last_use[key] == n:
            del caches[key]
        yield n


def _window_job(model: Net2Net | GPT, c_grid: torch.Tensor, window: tuple[int, int], mode: str,
                stride: tuple[int, int] | None, prefix: torch.Tensor | None, start: int, pick: Picker,
                dtype: torch.dtype | None) -> tuple[torch.Tensor, Iterator[int]]:
    """Checks and setup shared by sample_sliding_window and stream -> (grid (B, H, W), its step generator)."""
    gpt = _gpt(model)
    if isinstance(model, Net2Net) and not model.permuter.is_identity:
        raise ValueError(f"sliding-window sampling needs raster order; this model uses the "
                         f"{model.permuter.name!r} permuter (the original ignored permuters here)")
    if c_grid.ndim != 3:
        raise ValueError(f"expected the condition grid (B, H, W), got {tuple(c_grid.shape)}")
    B, H, W = c_grid.shape
    c_grid = c_grid.to(gpt.pos_emb.device)
    if not 0 <= start <= H * W:
        raise ValueError(f"start must lie in [0, {H * W}], got {start}")
    if prefix is None:
        if start > 0:
            raise ValueError(f"start={start} keeps tokens of a prefix grid (B, H, W): pass prefix")
        grid = torch.zeros_like(c_grid)
    elif prefix.shape != c_grid.shape:
        raise ValueError(f"prefix must match the condition grid {tuple(c_grid.shape)}, got "
                         f"{tuple(prefix.shape)}")
    else:
        grid = prefix.to(c_grid.device, torch.long).clone()
    wh, ww = window
    if H <= wh and W <= ww and (H, W) != (wh, ww):  # fits one (smaller) window: plain sampling over the grid
        seq = _check_context(gpt, c_grid.reshape(B, H * W), grid.view(B, H * W)[:, :start], H * W - start)
        return grid, (start + s for s in _plain_steps(gpt, seq, grid.view(B, H * W)[:, start:], pick, dtype))
    plan = window_plan((H, W), window, mode, stride)
    if 2 * wh * ww - 1 > gpt.config.block_size:
        raise ValueError(f"a {wh}x{ww} window needs {2 * wh * ww - 1} positions; block_size is "
                         f"{gpt.config.block_size}")
    return grid, _window_steps(gpt, c_grid, grid, start, plan, pick, dtype)


@torch.no_grad()
def sample_sliding_window(model: Net2Net | GPT, c_grid: torch.Tensor, *, window: tuple[int, int] = (16, 16),
                          mode: str = "exact", greedy: bool = False, temperature: float = 1.0,
                          top_k: int | None = None, top_p: float | None = None,
                          generator: torch.Generator | None = None, prefix: torch.Tensor | None = None,
                          start: int = 0, stride: tuple[int, int] | None = None,
                          dtype: torch.dtype | None = None) -> torch.Tensor:
    """Sample an image token grid (B, H, W) for a condition grid c_grid (B, H, W) of any size >= the window.

    Each token sees the context described by `window_plan(grid, window, mode, stride)`; mode="exact"
    reproduces the original sliding-window sampler token for token (for any batch size, which the original
    could not run). prefix (B, H, W): its tokens before raster position `start` are kept (image completion;
    every later token is sampled, unlike the original, which skipped columns < start % W in every later row).
    A grid that fits inside a smaller window falls back to plain cached sampling over the whole grid; the
    condition uses the image grid's layout (a VQ condition of the same size, as in the original).
    """
    pick = _picker(temperature, top_k, top_p, greedy, generator)
    grid, steps = _window_job(model, c_grid, window, mode, stride, prefix, start, pick, dtype)
    for _ in steps:
        pass
    return grid


# ----------------------------------------------------------------------------------------------------------
# Fewer bytes per token


def quantize_gpt(model: Net2Net | GPT, dtype: torch.dtype = torch.int8) -> Net2Net | GPT:
    """A copy of model whose GPT matrices (attention, MLP, head) are LowBitLinear in int8 or bf16.

    For CPU decoding, which reads every weight once per token: int8 reads 1/4 of the fp32 bytes, and the
    samplers keep its keys and values in bf16 (half the cache bytes; attention runs in bf16). Embeddings,
    LayerNorms and the residual stream stay fp32; a Net2Net copy shares its (frozen) first and condition
    stages with the original. The effect on tokens and log-likelihood is measured in
    bench/sampling.py. Inference only: the copy is not a checkpoint format.
    """
    _gpt(model)  # a GPT in eval mode
    shared = {}
    if isinstance(model, Net2Net):
        shared = {id(m): m for name, m in model.named_children() if name != "transformer"}
    clone = copy.deepcopy(model, shared)
    for module in list(_gpt(clone).modules()):
        if isinstance(module, CausalSelfAttention):  # one stacked low-bit product for query, key, value
            parts = (module.query, module.key, module.value)
            weight = torch.cat([m.weight for m in parts])  # (3E, E)
            module.qkv = LowBitLinear(weight, torch.cat([m.bias for m in parts]), dtype)
            del module.query, module.key, module.value
            module._stacked = None
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, LowBitLinear(child.weight, child.bias, dtype))
    return clone
