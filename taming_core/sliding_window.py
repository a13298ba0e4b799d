"""The sliding-window sampler: images larger than the training grid (paper Sec. 3.3, Fig. 3).

Shape legend: B batch, V vocab, H, W token grid (rows, columns), (wh, ww) window, Lw = wh * ww tokens in a
window.

Every token is predicted from a wh x ww window of the condition grid and the image tokens of that window
before it, as the original `scripts/make_samples.py`; here each window placement keeps a KV cache that is
extended as tokens arrive, so only the causal prefix that matters is computed and logits only at the sampled
position. Both conditioning modes of net2net.py (the condition window is aligned with the image window) and
classifier-free guidance work as in `sampling.sample`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from .gpt import GPT, KVCache
from .net2net import Net2Net
from .sampling import (Picker, check_guidance, exclude_null_token, gpt_of, guidance_off, guided, make_picker,
                       new_sampling_cache, next_logits, plain_sampler)


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
def _window_steps(gpt: GPT, c_grid: torch.Tensor, tokens: torch.Tensor, start: int, plan: WindowPlan,
                  pick: Picker, autocast_dtype: torch.dtype | None, sos: int | None = None,
                  guidance: float | None = None, cond_of=None) -> Iterator[int]:
    """Fill tokens (B, H, W) in raster order from position `start`; yields each raster position after writing
    it.

    One KV cache per window placement (top, left), created with the window's lead (prefix mode: the condition
    window, Lw tokens; aligned mode, sos given: the start token) and the window's tokens before the first
    position that uses it, extended with the tokens sampled since its last use, and freed after its last use.
    Tokens are written once and never change, so a cache stays exact. Aligned mode adds the condition window
    per position (position p of a window predicts its token p and gets its condition). c_grid (B', H, W):
    B' = 2B with `guidance` (conditional rows, then null rows; the sampled tokens feed both halves).
    cond_of (aligned mode): Net2Net.condition_input, which turns a window's condition tokens (B', Lw) into
    what the GPT adds per position (ids, or features of the window's condition grid), once per placement.
    """
    B, H, W = tokens.shape
    batch = c_grid.shape[0]  # B', B or 2B with guidance
    wh, ww = plan.window
    Lw = wh * ww
    lead = Lw if sos is None else 1  # positions before a window's first image token
    order = range(start, H * W)
    last_use, context = {}, {}  # per placement: last raster position, tokens fed before predicting it
    for n in order:
        i, j = divmod(n, W)
        key = (plan.top[i], plan.left[j])
        last_use[key] = n
        context[key] = lead + (i - key[0]) * ww + (j - key[1])
    caches: dict[tuple[int, int], KVCache] = {}
    conds: dict[tuple[int, int], torch.Tensor] = {}  # aligned mode: per placement, (B', Lw) or (B', Lw, E)
    for n in order:
        i, j = divmod(n, W)
        top, left = key = plan.top[i], plan.left[j]
        upto = (i - top) * ww + (j - left)  # window tokens before (i, j) in the window's raster order
        window_tokens = tokens[:, top:top + wh, left:left + ww].reshape(B, Lw)  # (B, Lw)
        window_tokens = window_tokens if guidance is None else window_tokens.repeat(2, 1)  # (B', Lw)
        cache = caches.get(key)
        new_cache = cache is None
        if new_cache:
            cache = caches[key] = new_sampling_cache(gpt, batch, context[key], autocast_dtype)
        # prefix mode needs the condition window once, aligned mode at every step (kept per placement)
        cond_window = c_grid[:, top:top + wh, left:left + ww].reshape(batch, Lw) if new_cache else None
        # (B', Lw)
        if new_cache and sos is not None:
            conds[key] = cond_of(cond_window, (wh, ww))  # (B', Lw[, E])
        if new_cache:
            head = cond_window if sos is None else window_tokens.new_full((batch, 1), sos)  # (B', lead)
            fed = torch.cat([head, window_tokens[:, :upto]], dim=1)  # (B', lead + upto)
        else:
            fed = window_tokens[:, cache.length - lead:upto]  # (B', new tokens since the last use)
        cond = None if sos is None else conds[key][:, cache.length:lead + upto]  # (B', fed[, E]), aligned
        logits = next_logits(gpt, fed, cache, autocast_dtype, cond)
        tokens[:, i, j] = pick(guided(logits, guidance))[:, 0]
        if last_use[key] == n:
            del caches[key]
            conds.pop(key, None)
        yield n


def window_sampler(model: Net2Net | GPT, c_grid: torch.Tensor, window: tuple[int, int], mode: str,
                   stride: tuple[int, int] | None, prefix: torch.Tensor | None, start: int, pick: Picker,
                   autocast_dtype: torch.dtype | None,
                   guidance: float | torch.Tensor = 1.0) -> tuple[torch.Tensor, Iterator[int]]:
    """Checks and setup shared by sample_sliding_window and stream -> (tokens (B, H, W), an iterator that
    samples one token of them per next() and yields its raster position). guidance: checked (check_guidance),
    a number or one scale per row."""
    gpt = gpt_of(model)
    off = guidance_off(guidance)
    if isinstance(model, Net2Net) and not model.permuter.is_identity:
        raise ValueError(f"sliding-window sampling needs raster order; this model uses the "
                         f"{model.permuter.name!r} permuter (the original ignored permuters here)")
    if not off and not isinstance(model, Net2Net):
        raise TypeError("guidance needs a Net2Net model (its null condition), not a bare GPT")
    if c_grid.ndim != 3:
        raise ValueError(f"expected the condition grid (B, H, W), got {tuple(c_grid.shape)}")
    B, H, W = c_grid.shape
    c_grid = c_grid.to(gpt.pos_emb.device)
    if not 0 <= start <= H * W:
        raise ValueError(f"start must lie in [0, {H * W}], got {start}")
    if prefix is None:
        if start > 0:
            raise ValueError(f"start={start} keeps tokens of a prefix grid (B, H, W): pass prefix")
        tokens = torch.zeros_like(c_grid)
    elif prefix.shape != c_grid.shape:
        raise ValueError(f"prefix must match the condition grid {tuple(c_grid.shape)}, got "
                         f"{tuple(prefix.shape)}")
    else:
        tokens = prefix.to(c_grid.device, torch.long).clone()
    wh, ww = window
    if H <= wh and W <= ww and (H, W) != (wh, ww):  # fits one (smaller) window: plain sampling over the grid
        flat = tokens.view(B, H * W)
        progress = plain_sampler(model, c_grid.reshape(B, H * W), flat[:, :start], flat[:, start:], pick,
                                 autocast_dtype, guidance, (H, W))
        return tokens, (start + step for step in progress)
    pick = exclude_null_token(model, pick)  # (plain_sampler above applies it itself)
    plan = window_plan((H, W), window, mode, stride)
    aligned = isinstance(model, Net2Net) and model.aligned
    needed = wh * ww if aligned else 2 * wh * ww - 1  # aligned: sos + Lw - 1 tokens, condition added
    if needed > gpt.config.block_size:
        raise ValueError(f"a {wh}x{ww} window needs {needed} positions; block_size is {gpt.config.block_size}")
    if not off:
        c_grid = torch.cat([c_grid, model.null_condition(c_grid)])  # (2B, H, W): conditional, then null rows
    sos = model.config.cond_stage.sos_token if aligned else None
    cond_of = model.condition_input if aligned else None
    return tokens, _window_steps(gpt, c_grid, tokens, start, plan, pick, autocast_dtype, sos,
                                 None if off else guidance, cond_of)


@torch.no_grad()
def sample_sliding_window(model: Net2Net | GPT, c_grid: torch.Tensor, *, window: tuple[int, int] = (16, 16),
                          mode: str = "exact", greedy: bool = False, temperature: float = 1.0,
                          top_k: int | None = None, top_p: float | None = None,
                          generator: torch.Generator | None = None, prefix: torch.Tensor | None = None,
                          start: int = 0, stride: tuple[int, int] | None = None,
                          dtype: torch.dtype | None = None, guidance: float = 1.0) -> torch.Tensor:
    """Sample an image token grid (B, H, W) for a condition grid c_grid (B, H, W) of any size >= the window.

    Each token sees the context described by `window_plan(grid, window, mode, stride)`; mode="exact"
    reproduces the original sliding-window sampler token for token (for any batch size, which the original
    could not run). prefix (B, H, W): its tokens before raster position `start` are kept (image completion;
    every later token is sampled, unlike the original, which skipped columns < start % W in every later row).
    A grid that fits inside a smaller window falls back to plain cached sampling over the whole grid; the
    condition uses the image grid's layout (a VQ condition of the same size, as in the original).
    Aligned models (cond_mode "aligned"): each window's condition tokens are added at the positions of the
    window's image tokens, the window starting with the start token. guidance: classifier-free guidance
    (1 = off), both branches in one batch of 2B. dtype: autocast dtype of the GPT's forward and of the KV
    caches, as in `sample` (None: the weights' dtype).
    """
    pick = make_picker(temperature, top_k, top_p, greedy, generator)
    tokens, progress = window_sampler(model, c_grid, window, mode, stride, prefix, start, pick, dtype,
                                      check_guidance(guidance))
    for _ in progress:
        pass
    return tokens
