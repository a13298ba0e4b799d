"""Autoregressive sampling from the transformer as pure functions (paper Sec. 3.2 and 3.3).

Shape legend: B batch, L_c condition tokens, P prefix (given image tokens), S sampled tokens, V vocab,
H, W token grid (rows, columns), (wh, ww) window, Lw = wh * ww tokens in a window.

- `sample`: prefill of the condition (and prefix) once, then one token per step from the KV cache. Both
  conditioning modes of net2net.py: a prefix c (B, L_c), or aligned, c (B, L) added per position.
- Classifier-free guidance (`guidance` != 1, models with a null condition): the conditional and the null
  branch run as one batch of 2B rows through the same cache; logits = null + guidance * (cond - null).
- `sample_sliding_window` (grids larger than the training grid) is in `sliding_window.py`, on the helpers here.
- `quantize_gpt`: a copy of the model with int8 or bf16 GPT weights, for fewer bytes per decoded token.
Streaming (progress events, previews) is in `streaming.py`, on the step generators defined here.
"""
from __future__ import annotations

import copy
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
    low-bit weights on a GPU (quantize_gpt: fewer bytes per token for the cache too), else in the weights'
    dtype. A CPU keeps fp32 keys and values for low-bit weights too: torch 2.13's CPU attention for one new
    token is 5-8x slower over a bf16 cache than over an fp32 one (8 heads x 384 positions: 134 vs 18 us at
    batch 1, 533 vs 70 us at batch 4), which outweighs the halved cache bytes."""
    if dtype is None and gpt.blocks[0].attn.qkv is not None and gpt.pos_emb.device.type != "cpu":
        dtype = torch.bfloat16
    return KVCache(gpt.config, batch_size, max_len, gpt.pos_emb.device, dtype or gpt.pos_emb.dtype)


def _logits(gpt: GPT, idx: torch.Tensor, cache: KVCache, dtype: torch.dtype | None,
            cond: torch.Tensor | None = None) -> torch.Tensor:
    """Append idx (B, T) (and its condition ids cond (B, T), aligned mode) to the cache -> fp32 logits (B, V)
    at the last position.

    Autocast is entered around each call, never held across a generator's yield: it is thread-local state
    and would otherwise leak into the consumer's code between two tokens.
    """
    if dtype is None:
        return gpt(idx, cache, last_only=True, cond=cond)[:, -1].float()
    with torch.autocast(idx.device.type, dtype=dtype):
        return gpt(idx, cache, last_only=True, cond=cond)[:, -1].float()


def _guide(logits: torch.Tensor, guidance: float | None) -> torch.Tensor:
    """Classifier-free guidance: logits (2B, V), conditional rows then null rows -> null + g (cond - null)
    (B, V); guidance None: the logits (B, V) unchanged."""
    if guidance is None:
        return logits
    cond, null = logits.chunk(2)  # (B, V) each
    return null + guidance * (cond - null)


@torch.no_grad()
def _plain_steps(gpt: GPT, seq: torch.Tensor, out: torch.Tensor, pick: Picker, dtype: torch.dtype | None,
                 cond: torch.Tensor | None = None, guidance: float | None = None) -> Iterator[int]:
    """Prefill seq (B', T0), then write out (B, S) one token at a time; yields each step after writing it.

    cond (B', T0 + S - 1): condition ids of every fed position (aligned mode), or None. With `guidance`,
    B' = 2B (conditional rows, then null rows): each sampled token is fed to both halves.
    The yield comes before the next forward, so closing the generator stops all work at once.
    """
    steps, n0 = out.shape[1], seq.shape[1]
    cache = _new_cache(gpt, seq.shape[0], n0 + steps - 1, dtype)  # the last token is never fed
    logits = _logits(gpt, seq, cache, dtype, None if cond is None else cond[:, :n0])
    for step in range(steps):
        out[:, step] = pick(_guide(logits, guidance))[:, 0]
        yield step
        if step < steps - 1:
            new = out[:, step:step + 1]  # (B, 1)
            new = new if guidance is None else new.repeat(2, 1)  # (B', 1)
            at = n0 + step  # the position this token takes
            logits = _logits(gpt, new, cache, dtype, None if cond is None else cond[:, at:at + 1])


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


def _never_null(model: Net2Net | GPT, pick: Picker) -> Picker:
    """A prefix-mode model's null condition token is an id of the GPT vocabulary but never an image token:
    the picker is wrapped to give it no probability (aligned models keep it in their own table)."""
    if not isinstance(model, Net2Net) or model.aligned or model.config.null_token is None:
        return pick
    null = model.config.null_token

    def never_null(logits: torch.Tensor) -> torch.Tensor:  # logits (B, V), fresh each step: edited in place
        logits[:, null] = -float("inf")
        return pick(logits)
    return never_null


def _plain_job(model: Net2Net | GPT, c: torch.Tensor, prefix: torch.Tensor, out: torch.Tensor, pick: Picker,
               dtype: torch.dtype | None, guidance: float,
               grid: tuple[int, int] | None = None) -> Iterator[int]:
    """Checks and setup shared by sample and stream: c (B, L_c), prefix (B, P) on the model's device, out
    (B, S) written in place -> the step generator, in either conditioning mode, with or without guidance.
    grid (h, w): the token grid of an aligned c (default the training grid; models with cond_layers need it)."""
    gpt = _gpt(model)
    steps = out.shape[1]
    aligned = isinstance(model, Net2Net) and model.aligned
    pick = _never_null(model, pick)
    if guidance == 1.0 and not aligned:
        return _plain_steps(gpt, _check_context(gpt, c, prefix, steps), out, pick, dtype)
    if not isinstance(model, Net2Net):
        raise TypeError("guidance and aligned conditioning need a Net2Net model, not a bare GPT")
    if c.ndim != 2 or prefix.ndim != 2 or prefix.shape[0] != c.shape[0]:
        raise ValueError(f"expected c (B, L_c) and prefix (B, P), got {tuple(c.shape)}, {tuple(prefix.shape)}")
    rows = c if guidance == 1.0 else torch.cat([c, model.null_condition(c)])  # (B', L_c): cond, then null
    prefix = prefix if guidance == 1.0 else prefix.repeat(2, 1)  # (B', P)
    seq, cond = model.sequence(prefix, rows)  # (B', T0), (B', T0) aligned / None prefix
    if aligned:  # positions 0 .. P + S - 1 are fed; each needs the condition of the token it predicts
        if c.shape[1] < prefix.shape[1] + steps:
            raise ValueError(f"aligned conditioning: {prefix.shape[1]} prefix + {steps} steps need as many "
                             f"condition tokens, c has {c.shape[1]}")
        cond = model.condition_input(rows, grid)[:, :prefix.shape[1] + steps]  # (B', T0 + S - 1[, E])
    if seq.shape[1] + steps - 1 > gpt.config.block_size:
        raise ValueError(f"{seq.shape[1]} context + {steps} steps exceed block_size {gpt.config.block_size}")
    return _plain_steps(gpt, seq, out, pick, dtype, cond, None if guidance == 1.0 else guidance)


def _check_guidance(guidance: float) -> float:
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
    `generator` (or the global RNG), so seeded runs repeat. `dtype` (torch.bfloat16 / torch.float16) runs the
    GPT under autocast with the cache in that dtype, meant for CUDA; None keeps the weights' dtype (fp32).
    Aligned models (cond_mode "aligned") take c (B, L) from `encode_cond`, one token per image position.
    guidance: classifier-free guidance scale (1 = off, exactly the plain sampler); != 1 needs a model with a
    null condition and runs both branches as one batch of 2B. grid (h, w): the token grid c lies on, for
    aligned models that convolve their condition (transformer.cond_layers > 0); default the training grid.
    """
    gpt = _gpt(model)
    pick = _picker(temperature, top_k, top_p, greedy, generator)
    guidance = _check_guidance(guidance)
    device = gpt.pos_emb.device
    c = c.to(device)
    prefix = c.new_zeros(c.shape[0], 0) if prefix is None else prefix.to(device)  # (B, P)
    out = c.new_empty(c.shape[0], max(steps, 0))  # (B, S)
    job = _plain_job(model, c, prefix, out, pick, dtype, guidance, grid)  # checks the context, even for 0 steps
    if steps <= 0:
        return prefix
    for _ in job:
        pass
    return torch.cat([prefix, out], dim=1)  # (B, P + S)


# ----------------------------------------------------------------------------------------------------------
# Fewer bytes per token


def quantize_gpt(model: Net2Net | GPT, dtype: torch.dtype = torch.int8,
                 prefill_dtype: torch.dtype = torch.float32) -> Net2Net | GPT:
    """A copy of model whose GPT matrices (attention, MLP, head) are LowBitLinear in int8 or bf16.

    For CPU decoding, which reads every weight once per token: int8 reads 1/4 of the fp32 bytes (the samplers
    keep keys and values in bf16 on a GPU, in fp32 on a CPU: see _new_cache). Embeddings,
    LayerNorms and the residual stream stay fp32; a Net2Net copy shares its (frozen) first and condition
    stages with the original. The effect on tokens and log-likelihood is measured in
    bench/sampling.py. Inference only: the copy is not a checkpoint format. prefill_dtype: the dtype of
    the products of many rows at once (a prefill), torch.bfloat16 on CPUs with bf16 units (sampling_precision).
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
            module.qkv = LowBitLinear(weight, torch.cat([m.bias for m in parts]), dtype, prefill_dtype)
            del module.query, module.key, module.value
            module._stacked = None
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, LowBitLinear(child.weight, child.bias, dtype, prefill_dtype))
    return clone
