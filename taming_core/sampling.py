"""Autoregressive sampling from the transformer as pure functions (paper Sec. 3.2 and 3.3).

Shape legend: B batch, L_c condition tokens, P prefix (given image tokens), S sampled tokens, V vocab.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .gpt import GPT
from .net2net import Net2Net


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


def _gpt(model: Net2Net | GPT) -> GPT:
    gpt = model.transformer if isinstance(model, Net2Net) else model
    if not isinstance(gpt, GPT):
        raise TypeError(f"expected a Net2Net model or a GPT, got {type(model).__name__}")
    if gpt.training:
        raise ValueError("sampling needs the model in eval mode: call model.eval() first")
    return gpt


@torch.no_grad()
def sample(model: Net2Net | GPT, c: torch.Tensor, steps: int, prefix: torch.Tensor | None = None,
           temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           greedy: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample `steps` image tokens after condition c (B, L_c) and optional prefix (B, P) -> (B, P + steps).

    The condition and prefix are run once (prefill); then each step feeds only the newest token and reads
    keys and values of earlier positions from the cache.
    """
    gpt = _gpt(model)
    device = gpt.pos_emb.device
    c = c.to(device)
    prefix = c.new_zeros(c.shape[0], 0) if prefix is None else prefix.to(device)
    if c.ndim != 2 or prefix.ndim != 2 or prefix.shape[0] != c.shape[0]:
        raise ValueError(f"expected c (B, L_c) and prefix (B, P), got {tuple(c.shape)}, {tuple(prefix.shape)}")
    seq = torch.cat([c, prefix], dim=1)  # (B, L_c + P)
    if seq.shape[1] == 0:
        raise ValueError("sampling needs at least one condition or prefix token to start from")
    if steps <= 0:
        return prefix
    needed = seq.shape[1] + steps - 1  # the last sampled token is never fed back
    if needed > gpt.config.block_size:
        raise ValueError(f"{seq.shape[1]} context + {steps} steps exceed block_size {gpt.config.block_size}: "
                         "use sample_sliding_window for larger grids")
    cache = gpt.new_cache(seq.shape[0], needed)
    logits = gpt(seq, cache, last_only=True)[:, -1]  # (B, V)
    tokens = [prefix]
    for step in range(steps):
        tok = pick_token(logits.float(), temperature, top_k, top_p, greedy, generator)  # (B, 1)
        tokens.append(tok)
        if step < steps - 1:
            logits = gpt(tok, cache)[:, -1]
    return torch.cat(tokens, dim=1)
