"""Streaming sampling: a generator of progress events with partial images, for watching an image appear.

Shape legend: B batch, h, w token grid (rows, columns), L = h * w tokens, f first-stage downsampling factor,
(H, W) = (h * f, w * f) image.

`stream` runs `sample` (a condition sequence c (B, L_c)) or `sample_sliding_window` (a condition grid
(B, h, w)) one token at a time and yields a `StreamEvent` after every token. Every so often the event carries a
preview: the finished token rows decoded by the first stage, the rows below shown as a neutral fill or a
faded condition image. The preview cadence adapts to the measured decode time so that previews take at most
`preview_budget` (default 20%) of the time. Closing the generator (or leaving a `for` loop over it)
stops all work at once: nothing runs between two events except the consumer's own code.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from .net2net import Net2Net
from .sampling import Picker, check_guidance, gpt_of, make_picker, plain_sampler
from .sliding_window import window_sampler
from .threads import intra_op_threads

FADE = 0.35  # a condition image under the unsampled rows is pulled this far from mid-grey (0) toward itself


@dataclass
class StreamEvent:
    """Progress after one sampled token."""
    tokens: torch.Tensor  # (B, h, w) int64 raster grid so far, this event's own copy; unsampled: 0 or prefix
    position: tuple[int, int]  # (row, column) of the newest token
    done: int  # tokens sampled so far
    total: int  # tokens this run samples
    tokens_per_s: float  # tokens (per batch row) per second of sampling, preview time excluded
    preview: torch.Tensor | None  # (B, 3, H, W) in [-1, 1] when a preview was decoded for this event
    preview_rows: int  # token rows decoded into the latest preview; the rows below are fill
    preview_s: float  # seconds spent decoding previews so far

    @property
    def finished(self) -> bool:
        return self.done == self.total


def finished_rows(known: torch.Tensor) -> int:
    """known (h, w) bool raster mask -> number of leading rows whose tokens are all sampled."""
    return int(known.all(dim=1).int().cumprod(dim=0).sum())


@dataclass
class PreviewClock:
    """When to decode a preview: previews may take `budget` of the time so far (sampling + previews), the next
    one counted at the cost of the last (the first is taken blind, as soon as a row is finished; an overshoot
    delays the ones after it); the last token's image is always decoded (the result)."""

    budget: float = 0.2
    sampling_s: float = 0.0  # the caller adds its sampling time
    preview_s: float = 0.0
    last_cost_s: float = 0.0
    last_rows: int = 0

    def affordable(self) -> bool:
        """Whether a preview now, at the cost of the last, keeps previews within the budget."""
        return (self.preview_s + self.last_cost_s) * (1 - self.budget) <= self.budget * self.sampling_s

    def due(self, rows: int, last: bool) -> bool:
        """Whether to decode now, with `rows` token rows finished; `last`: the final token."""
        return last or (rows > self.last_rows and self.affordable())

    def decoded(self, rows: int, seconds: float) -> None:
        self.last_cost_s, self.last_rows = seconds, rows
        self.preview_s += seconds


def preview_image(model: Net2Net, tokens: torch.Tensor, rows: int, fill: torch.Tensor | None,
                  decode_dtype: torch.dtype | None = None) -> torch.Tensor:
    """tokens (B, h, w), the first `rows` finished -> image (B, 3, H, W): decoded rows above the fill."""
    device = tokens.device.type
    with torch.autocast(device, dtype=decode_dtype) if decode_dtype is not None else nullcontext():
        decoded = model.first_stage_model.decode_indices(tokens[:, :rows]).float()  # (B, 3, rows * f, W)
    B, h, w = tokens.shape
    f = decoded.shape[-2] // rows
    size = (h * f, decoded.shape[-1])
    if fill is None:
        canvas = decoded.new_zeros(B, decoded.shape[1], *size)  # mid-grey
    else:
        canvas = FADE * F.interpolate(fill.to(decoded), size=size, mode="nearest").expand(B, -1, -1, -1)
    canvas[:, :, : rows * f] = decoded
    return canvas


@torch.no_grad()
def stream(model: Net2Net, c: torch.Tensor, *, grid: tuple[int, int] | None = None,
           window: tuple[int, int] = (16, 16), mode: str = "exact", stride: tuple[int, int] | None = None,
           prefix: torch.Tensor | None = None, start: int = 0, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
           generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
           fill: torch.Tensor | None = None, preview_budget: float = 0.2,
           guidance: float | torch.Tensor = 1.0, decode_dtype: torch.dtype | None = None,
           pick: Picker | None = None, decode_threads: int | None = None) -> Iterator[StreamEvent]:
    """Sample token by token, yielding a StreamEvent after each; the same tokens as the batch samplers.

    c (B, L_c): plain cached sampling of a grid (h, w) = `grid` (default the model's training grid), as
    `sample`; prefix (B, h, w) and `start` (counted in the model's token order) give an image completion.
    Aligned models (cond_mode "aligned") take c (B, L) from `encode_cond` here.
    c (B, h, w): a condition grid, sampled as `sample_sliding_window` with window / mode / stride.
    fill: an image (1 or B, 3, H', W') in [-1, 1] shown faded under the rows not yet sampled (for instance the
    condition painted by the user), resized to the preview; None shows mid-grey.
    guidance: classifier-free guidance scale (1 = off), on both paths, as in the batch samplers; a tensor (B,)
    gives each row its own scale.
    decode_threads: torch's intra-op threads for the previews' and the result's decodes (convolutions gain from
    threads that a GPT step's small products lose to: bench/threads.py), the caller's restored after each;
    None: as set.
    pick: the token choice for all rows (logits (B, V) -> tokens (B, 1)), e.g. split_picker for rows of several
    requests, each with its own settings and generator; it replaces temperature, top_k, top_p, greedy and
    generator.
    dtype: autocast dtype of the GPT's forward (and its KV caches), as in `sample`; None: the weights' dtype.
    preview_budget: the share of the time (sampling + previews) that previews may take. The last event
    (done == total) always carries the full decoded image, outside the budget: it is the result.
    decode_dtype: autocast dtype of the previews' and the result's decodes (torch.bfloat16 on CUDA or on
    CPUs with bf16 units, see sampling_precision); None decodes in fp32.
    """
    if not 0 < preview_budget <= 1:
        raise ValueError(f"preview_budget is a fraction of the time in (0, 1], got {preview_budget}")
    gpt = gpt_of(model)
    if not isinstance(model, Net2Net):
        raise TypeError("stream needs a Net2Net model (its first stage decodes the previews)")
    pick = pick or make_picker(temperature, top_k, top_p, greedy, generator)
    guidance = check_guidance(guidance)
    if c.ndim == 3:  # condition grid: sliding window (or plain sampling when it fits a smaller window)
        tokens, progress = window_sampler(model, c, window, mode, stride, prefix, start, pick, dtype, guidance)
        B, h, w = tokens.shape
        order = None  # raster order

        def raster() -> torch.Tensor:  # (B, h, w), a view of the tokens being written
            return tokens
    else:
        h, w = grid if grid is not None else model.grid
        B, L = c.shape[0], h * w
        flat = c.new_zeros(B, L) if prefix is None else model.permuter(prefix.reshape(B, L))  # token order
        c, flat = c.to(gpt.pos_emb.device), flat.to(gpt.pos_emb.device)
        progress = (start + step for step in plain_sampler(model, c, flat[:, :start], flat[:, start:], pick, dtype,
                                                           guidance, (h, w)))
        order = None if model.permuter.is_identity else model.permuter.forward_shuffle_idx.tolist()

        def raster() -> torch.Tensor:  # (B, h, w); a view of `flat` for the identity permuter
            return model.permuter(flat, reverse=True).reshape(B, h, w)

    total = h * w - start
    known = torch.zeros(h * w, dtype=torch.bool)  # raster mask of the tokens already there
    known[list(range(start)) if order is None else order[:start]] = True
    clock = PreviewClock(preview_budget)
    for done in range(1, total + 1):
        t0 = time.perf_counter()
        n = next(progress)  # the position just written, in sampling order
        clock.sampling_s += time.perf_counter() - t0
        pos = n if order is None else order[n]
        known[pos] = True
        snapshot = raster().clone()  # the event's own tokens: later steps write on, events stay as they were
        rows, preview = finished_rows(known.view(h, w)), None
        if clock.due(rows, done == total):
            t0 = time.perf_counter()
            with intra_op_threads(decode_threads):
                preview = preview_image(model, snapshot, h if done == total else rows, fill, decode_dtype)
            clock.decoded(rows, time.perf_counter() - t0)
        speed = done / max(clock.sampling_s, 1e-9)
        yield StreamEvent(snapshot, divmod(pos, w), done, total, speed, preview, clock.last_rows, clock.preview_s)
