"""Autoregressive sampling from the transformer as pure functions (paper Sec. 3.2 and 3.3).

Shape legend: B batch, L_c condition tokens, P prefix (given image tokens), S sampled tokens, V vocab,
H, W token grid (rows, columns), (wh, ww) window, Lw = wh * ww tokens in a window.

- `sample`: prefill of the condition (and prefix) once, then one token per step from the KV cache. Both
  conditioning modes of net2net.py: a prefix c (B, L_c), or aligned, c (B, L) added per position.
- Classifier-free guidance (`guidance` != 1, models with a null condition): the conditional and the null
  branch run as one batch of 2B rows through the same cache; logits = null + guidance * (cond - null).
- The steps every sampler shares, used by `sliding_window.py` (grids larger than the training grid) and
  `streaming.py` (progress events, previews): `make_picker` (the token choice), `new_sampling_cache`,
  `next_logits` (the prefill and each decode step: tokens in, the next token's logits out), `guided`,
  `plain_sampler` (an iterator that samples one token per next()).
Names: `grid` is always a token grid's size (h, w), `steps` a number of tokens to sample, and the public
keyword `dtype` the autocast dtype of the GPT's forward (`autocast_dtype` inside). Faster products for
sampling on a CPU (packed, int8 or bf16 weights) are applied by `cpu_fastpath.prepare_for_sampling`.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from .decode_step import decode_step_of
from .gpt import GPT, KVCache
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


def make_picker(temperature: float, top_k: int | None, top_p: float | None, greedy: bool,
                generator: torch.Generator | None) -> Picker:
    """The token choice of a sampler as one function (pick_token with these settings), checked up front."""
    if not greedy and temperature <= 0:  # refuse before any work is done
        raise ValueError(f"temperature must be > 0, got {temperature} (use greedy=True for argmax)")
    return partial(pick_token, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                   generator=generator)


def gpt_of(model: Net2Net | GPT) -> GPT:
    """The GPT of a Net2Net (or the GPT itself), checked to be in eval mode."""
    gpt = model.transformer if isinstance(model, Net2Net) else model
    if not isinstance(gpt, GPT):
        raise TypeError(f"expected a Net2Net model or a GPT, got {type(model).__name__}")
    if gpt.training:
        raise ValueError("sampling needs the model in eval mode: call model.eval() first")
    return gpt


def new_sampling_cache(gpt: GPT, batch_size: int, max_len: int, autocast_dtype: torch.dtype | None) -> KVCache:
    """A KV cache in the autocast dtype when one is given (the keys and values are produced in it), in bf16 for
    low-bit weights on a GPU (quantize_gpt: fewer bytes per token for the cache too), else in the weights'
    dtype. A CPU keeps fp32 keys and values for low-bit weights too: its attention for one new token is several
    times slower over a bf16 cache than over an fp32 one (torch 2.13), which outweighs the halved bytes."""
    dtype = autocast_dtype
    low_bit = gpt.head.weight.dtype != gpt.pos_emb.dtype  # quantize_gpt's int8 / bf16 matrices
    if dtype is None and low_bit and gpt.pos_emb.device.type != "cpu":
        dtype = torch.bfloat16
    return KVCache(gpt.config, batch_size, max_len, gpt.pos_emb.device, dtype or gpt.pos_emb.dtype)


def next_logits(gpt: GPT, tokens: torch.Tensor, cache: KVCache, autocast_dtype: torch.dtype | None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
    """Append tokens (B, T) (and their condition cond (B, T[, E]), aligned mode) to the cache -> fp32 logits
    (B, V) of the token after them: the prefill (the whole context) and each decode step (the newest tokens).

    Autocast is entered around each call, never held across a generator's yield: it is thread-local state
    and would otherwise leak into the consumer's code between two tokens.
    """
    if autocast_dtype is None:
        step = decode_step_of(gpt, tokens)  # a few tokens on a prepared CPU GPT: without module calls
        if step is not None:
            return step(tokens, cache, cond).float()
        return gpt(tokens, cache, last_only=True, cond=cond)[:, -1].float()
    with torch.autocast(tokens.device.type, dtype=autocast_dtype):
        return gpt(tokens, cache, last_only=True, cond=cond)[:, -1].float()


def guided(logits: torch.Tensor, guidance: float | torch.Tensor | None) -> torch.Tensor:
    """Classifier-free guidance: logits (2B, V), conditional rows then null rows -> null + g (cond - null)
    (B, V); g a number or one scale per row (B,), a row whose scale is 1 keeps its conditional logits exactly;
    guidance None: the logits (B, V) unchanged."""
    if guidance is None:
        return logits
    conditional, null = logits.chunk(2)  # (B, V) each
    if not isinstance(guidance, torch.Tensor):
        return null + guidance * (conditional - null)
    g = guidance.to(logits).view(-1, 1)  # (B, 1)
    return torch.where(g == 1, conditional, null + g * (conditional - null))


def guidance_off(guidance: float | torch.Tensor) -> bool:
    """Whether a checked guidance (check_guidance) leaves every row unguided."""
    return not isinstance(guidance, torch.Tensor) and guidance == 1.0


def split_picker(parts: list[tuple[int, Picker]]) -> Picker:
    """One picker for a batch whose consecutive row groups have their own settings: parts [(rows, picker)],
    in row order. Each group's picker sees only its rows (B_i, V), so a group with its own generator draws
    exactly what it would draw sampled alone from the same logits (batching across requests)."""
    bounds = [0]
    for rows, _ in parts:
        bounds.append(bounds[-1] + rows)

    def pick(logits: torch.Tensor) -> torch.Tensor:  # (B, V) -> (B, 1)
        if logits.shape[0] != bounds[-1]:
            raise ValueError(f"split_picker covers {bounds[-1]} rows, got logits for {logits.shape[0]}")
        return torch.cat([p(logits[a:b]) for (_, p), a, b in zip(parts, bounds, bounds[1:])])
    return pick


@torch.no_grad()
def _cached_steps(gpt: GPT, seq: torch.Tensor, out: torch.Tensor, pick: Picker, autocast_dtype: torch.dtype | None,
                  cond: torch.Tensor | None = None, guidance: float | None = None) -> Iterator[int]:
    """Prefill seq (B', T0), then write out (B, S) one token at a time; yields each step after writing it.

    cond (B', T0 + S - 1): condition ids of every fed position (aligned mode), or None. With `guidance`,
    B' = 2B (conditional rows, then null rows): each sampled token is fed to both halves.
    The yield comes before the next forward, so closing the generator stops all work at once.
    """
    n_steps, n0 = out.shape[1], seq.shape[1]
    cache = new_sampling_cache(gpt, seq.shape[0], n0 + n_steps - 1, autocast_dtype)  # the last token is never fed
    logits = next_logits(gpt, seq, cache, autocast_dtype, None if cond is None else cond[:, :n0])
    for step in range(n_steps):
        out[:, step] = pick(guided(logits, guidance))[:, 0]
        yield step
        if step < n_steps - 1:
            new = out[:, step:step + 1]  # (B, 1)
            new = new if guidance is None else new.repeat(2, 1)  # (B', 1)
            at = n0 + step  # the position this token takes
            logits = next_logits(gpt, new, cache, autocast_dtype, None if cond is None else cond[:, at:at + 1])


def _check_context(gpt: GPT, c: torch.Tensor, prefix: torch.Tensor | None, n_steps: int) -> torch.Tensor:
    """c (B, L_c), prefix (B, P) -> the prefill sequence (B, L_c + P) on the model's device."""
    device = gpt.pos_emb.device
    c = c.to(device)
    prefix = c.new_zeros(c.shape[0], 0) if prefix is None else prefix.to(device)
    if c.ndim != 2 or prefix.ndim != 2 or prefix.shape[0] != c.shape[0]:
        raise ValueError(f"expected c (B, L_c) and prefix (B, P), got {tuple(c.shape)}, {tuple(prefix.shape)}")
    seq = torch.cat([c, prefix], dim=1)  # (B, L_c + P)
    if seq.shape[1] == 0:
        raise ValueError("sampling needs at least one condition or prefix token to start from")
    if seq.shape[1] + n_steps - 1 > gpt.config.block_size:
        raise ValueError(f"{seq.shape[1]} context + {n_steps} steps exceed block_size {gpt.config.block_size}: "
                         "use sample_sliding_window for larger grids")
    return seq


def exclude_null_token(model: Net2Net | GPT, pick: Picker) -> Picker:
    """A prefix-mode model's null condition token is an id of the GPT vocabulary but never an image token:
    the picker is wrapped to give it no probability (aligned models keep it in their own table)."""
    if not isinstance(model, Net2Net) or model.aligned or model.config.null_token is None:
        return pick
    null = model.config.null_token

    def never_null(logits: torch.Tensor) -> torch.Tensor:  # logits (B, V), fresh each step: edited in place
        logits[:, null] = -float("inf")
        return pick(logits)
    return never_null


def plain_sampler(model: Net2Net | GPT, c: torch.Tensor, prefix: torch.Tensor, out: torch.Tensor, pick: Picker,
                  autocast_dtype: torch.dtype | None, guidance: float,
                  grid: tuple[int, int] | None = None) -> Iterator[int]:
    """Checks and setup shared by sample and stream: c (B, L_c), prefix (B, P) on the model's device, out
    (B, S) written in place -> an iterator that samples one token per next() and yields its step (0 .. S - 1),
    in either conditioning mode, with or without guidance (1 = off).
    grid (h, w): the token grid of an aligned c (default the training grid; models with cond_layers need it)."""
    gpt = gpt_of(model)
    n_steps = out.shape[1]
    aligned = isinstance(model, Net2Net) and model.aligned
    pick = exclude_null_token(model, pick)
    off = guidance_off(guidance)
    if off and not aligned:
        return _cached_steps(gpt, _check_context(gpt, c, prefix, n_steps), out, pick, autocast_dtype)
    if not isinstance(model, Net2Net):
        raise TypeError("guidance and aligned conditioning need a Net2Net model, not a bare GPT")
    if c.ndim != 2 or prefix.ndim != 2 or prefix.shape[0] != c.shape[0]:
        raise ValueError(f"expected c (B, L_c) and prefix (B, P), got {tuple(c.shape)}, {tuple(prefix.shape)}")
    c_rows = c if off else torch.cat([c, model.null_condition(c)])  # (B', L_c): cond, then null
    prefix = prefix if off else prefix.repeat(2, 1)  # (B', P)
    seq, cond = model.sequence(prefix, c_rows)  # (B', T0), (B', T0) aligned / None prefix
    if aligned:  # positions 0 .. P + S - 1 are fed; each needs the condition of the token it predicts
        if c.shape[1] < prefix.shape[1] + n_steps:
            raise ValueError(f"aligned conditioning: {prefix.shape[1]} prefix + {n_steps} steps need as many "
                             f"condition tokens, c has {c.shape[1]}")
        cond = model.condition_input(c_rows, grid)[:, :prefix.shape[1] + n_steps]  # (B', T0 + S - 1[, E])
    if seq.shape[1] + n_steps - 1 > gpt.config.block_size:
        raise ValueError(f"{seq.shape[1]} context + {n_steps} steps exceed block_size {gpt.config.block_size}")
    return _cached_steps(gpt, seq, out, pick, autocast_dtype, cond, None if off else guidance)


def check_guidance(guidance: float | torch.Tensor) -> float | torch.Tensor:
    """guidance -> float, or a float tensor (B,) of one scale per row; refused unless finite and >= 0. Per-row
    scales that are all 1 become 1.0 (off)."""
    if isinstance(guidance, torch.Tensor) and guidance.numel() != 1:
        g = guidance.detach().float().flatten()
        if not bool(torch.isfinite(g).all()) or bool((g < 0).any()):
            raise ValueError(f"guidance must be finite numbers >= 0 (1 = off), got {g.tolist()}")
        return 1.0 if bool((g == 1).all()) else g
    guidance = float(guidance)
    if not guidance >= 0 or guidance == float("inf"):
        raise ValueError(f"guidance must be a finite number >= 0 (1 = off), got {guidance}")
    return guidance


@torch.no_grad()
def sample(model: Net2Net | GPT, c: torch.Tensor, steps: int, prefix: torch.Tensor | None = None,
           temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           greedy: bool = False, generator: torch.Generator | None = None,
           dtype: torch.dtype | None = None, guidance: float = 1.0,
           grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Sample `steps` image tokens after condition c (B, L_c) and optional prefix (B, P) -> (B, P + steps).

    The condition and prefix are run once (prefill); then each step feeds only the newest token and reads
    keys and values of earlier positions from the cache. One multinomial draw on (B, V) per step, from
    `generator` (or the global RNG), so seeded runs repeat. `dtype`: the autocast dtype of the GPT's forward
    (torch.bfloat16 / torch.float16, meant for CUDA), the KV cache kept in it too; None: no autocast, the
    weights' dtype (the weights themselves are never cast here: see quantize_gpt for that).
    Aligned models (cond_mode "aligned") take c (B, L) from `encode_cond`, one token per image position.
    guidance: classifier-free guidance scale (1 = off, exactly the plain sampler); != 1 needs a model with a
    null condition and runs both branches as one batch of 2B. grid (h, w): the token grid c lies on, for
    aligned models that convolve their condition (transformer.cond_layers > 0); default the training grid.
    """
    gpt = gpt_of(model)
    pick = make_picker(temperature, top_k, top_p, greedy, generator)
    guidance = check_guidance(guidance)
    device = gpt.pos_emb.device
    c = c.to(device)
    prefix = c.new_zeros(c.shape[0], 0) if prefix is None else prefix.to(device)  # (B, P)
    out = c.new_empty(c.shape[0], max(steps, 0))  # (B, S)
    progress = plain_sampler(model, c, prefix, out, pick, dtype, guidance, grid)  # checks, even for 0 steps
    if steps <= 0:
        return prefix
    for _ in progress:
        pass
    return torch.cat([prefix, out], dim=1)  # (B, P + S)
