"""Continuous batching: requests that join a running batch of plain cached sampling between two steps.

Shape legend: r rows of a request (r' = 2r with guidance: conditional rows, then null rows), B' rows of the
batch (all requests' r'), L_c condition tokens, S tokens each request samples, V vocab, E width.

A server that batches only requests that arrive together makes a request that arrives a moment after a batch
started wait for that whole batch. `JoinedBatch` lets it join at the next step instead: `join` runs the
request's prefill alone (its condition, as `sample` does) and draws its first token from it, then its keys and
values join the batch's KV cache as new rows; every `step` feeds each request's newest token at that
request's own position (DecodeStep.at: rows at different positions attend to their own prefix only) and draws
each request's next token with its own picker and guidance; `leave` drops a request's rows (finished,
stopped). Requests share the model and the token grid (the model's own: grids larger than it take the sliding
window, which is not joined here). A request alone, or requests that joined together, draw the tokens `sample`
draws for them, up to the rounding of products over another batch size; rows at different positions attend
through a mask, which rounds differently again (the same distribution; a seed may give another image).
Needs a DecodeStep (prepare_for_sampling on a CPU): `can_join(model)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .decode_step import DecodeStep, decode_step_of
from .gpt import KVCache
from .net2net import Net2Net
from .sampling import Picker, exclude_null_token, gpt_of, guided, new_sampling_cache, next_logits
from .streaming import finished_rows


def can_join(model: Net2Net) -> bool:
    """Whether requests can join a running batch of this model (a CPU model prepared for sampling)."""
    gpt = gpt_of(model)
    with torch.no_grad():
        return decode_step_of(gpt, torch.zeros(1, 1, dtype=torch.long, device=gpt.pos_emb.device)) is not None


@dataclass(eq=False)
class Member:
    """One request in a JoinedBatch: its tokens so far (rows, S) in sampling order, `done` of them drawn."""

    rows: int
    pick: Picker
    guidance: float | None  # None: unguided (its rows have no null branch)
    tokens: torch.Tensor  # (r, S)
    cond: torch.Tensor | None  # aligned: (r', n0 + S - 1[, E]) per fed position; prefix mode None
    done: int = 1  # the first token is drawn at joining
    extra: dict = field(default_factory=dict)  # the caller's own state (e.g. its job)

    @property
    def total(self) -> int:
        return self.tokens.shape[1]

    @property
    def finished(self) -> bool:
        return self.done == self.total

    @property
    def cache_rows(self) -> int:
        return self.rows * (1 if self.guidance is None else 2)


class JoinedBatch:
    """Plain cached sampling of the model's own grid for requests that join and leave between steps."""

    def __init__(self, model: Net2Net, dtype: torch.dtype | None = None):
        self.model, self.gpt, self.dtype = model, gpt_of(model), dtype
        self.members: list[Member] = []
        self.cache: KVCache | None = None  # rows of the members in order, each member's r' rows together
        self.n0 = 0  # the prefill's length (the same for every member: same model and grid)

    def join(self, c: torch.Tensor, pick: Picker, guidance: float = 1.0) -> Member:
        """A request of condition rows c (r, L_c), its picker (its own draws) and guidance (1 = off) joins:
        its prefill runs now and its first token is drawn -> its Member."""
        model, gpt = self.model, self.gpt
        h, w = model.grid
        steps = h * w
        pick = exclude_null_token(model, pick)
        guided_rows = guidance != 1.0
        c = c.to(gpt.pos_emb.device)
        c_rows = torch.cat([c, model.null_condition(c)]) if guided_rows else c  # (r', L_c)
        prefix = c.new_zeros(c_rows.shape[0], 0)
        seq, cond = model.sequence(prefix, c_rows)  # (r', n0)
        n0 = seq.shape[1]
        if model.aligned:
            cond = model.condition_input(c_rows, (h, w))[:, :n0 + steps - 1]  # (r', n0 + S - 1[, E])
        if self.members and n0 != self.n0:
            raise ValueError(f"a request of {n0} context tokens cannot join requests of {self.n0}")
        if n0 + steps - 1 > gpt.config.block_size:
            raise ValueError(f"{n0} context + {steps} steps exceed block_size {gpt.config.block_size}")
        cache = new_sampling_cache(gpt, seq.shape[0], n0 + steps - 1, self.dtype)
        with torch.no_grad():
            logits = next_logits(gpt, seq, cache, self.dtype, None if cond is None else cond[:, :n0])
        g = guidance if guided_rows else None
        tokens = c.new_zeros(c.shape[0], steps)
        tokens[:, 0] = pick(guided(logits, g))[:, 0]
        member = Member(c.shape[0], pick, g, tokens, cond if model.aligned else None)
        if self.cache is None:
            self.cache, self.n0 = cache, n0
        else:  # its rows after the others'
            self.cache.k = torch.cat([self.cache.k, cache.k], dim=1)
            self.cache.v = torch.cat([self.cache.v, cache.v], dim=1)
        self.members.append(member)
        return member

    def leave(self, member: Member) -> None:
        """Drop a member's rows from the batch (finished, or no longer wanted)."""
        start = 0
        for m in self.members:
            if m is member:
                break
            start += m.cache_rows
        else:
            raise ValueError("not a member of this batch")
        self.members.remove(member)
        if not self.members:
            self.cache = None
            return
        keep = torch.cat([torch.arange(start), torch.arange(start + member.cache_rows, self.cache.k.shape[1])])
        self.cache.k = self.cache.k[:, keep.to(self.cache.k.device)]
        self.cache.v = self.cache.v[:, keep.to(self.cache.v.device)]

    def raster(self, member: Member) -> tuple[torch.Tensor, int]:
        """A member's tokens as its own raster grid (r, h, w) (unsampled: 0) and the number of leading token rows
        it has finished."""
        h, w = self.model.grid
        permuter = self.model.permuter
        grid = permuter(member.tokens, reverse=True).reshape(member.rows, h, w).clone()
        if permuter.is_identity:
            return grid, member.done // w
        known = torch.zeros(h * w, dtype=torch.bool)
        known[permuter.forward_shuffle_idx[:member.done].cpu()] = True
        return grid, finished_rows(known.view(h, w))

    @torch.no_grad()
    def step(self) -> list[Member]:
        """Draw the next token of every unfinished member -> the members that drew one. Finished members keep
        their rows (and are fed nothing new) until they leave."""
        step: DecodeStep = decode_step_of(self.gpt, torch.zeros(1, 1, dtype=torch.long))
        if step is None:
            raise RuntimeError("joining needs a CPU model prepared for sampling (tc.prepare_for_sampling)")
        live = [m for m in self.members if not m.finished]
        if not live:
            return []
        feeds, positions, conds = [], [], []
        for m in self.members:
            # a finished member feeds its last token again at its last position: its rows' outputs are unused
            at = min(m.done, m.total - 1)
            new = m.tokens[:, at - 1:at]  # (r, 1)
            feeds.append(new if m.guidance is None else new.repeat(2, 1))
            pos = self.n0 + at - 1  # the position the newest token takes
            positions.append(torch.full((m.cache_rows,), pos, dtype=torch.long))
            if m.cond is not None:
                conds.append(m.cond[:, pos:pos + 1])
        idx = torch.cat(feeds).to(self.gpt.pos_emb.device)  # (B', 1)
        positions = torch.cat(positions).to(idx.device)  # (B',)
        cond = torch.cat(conds) if conds else None
        logits = step.at(idx, positions, self.cache, cond).float()  # (B', V)
        start = 0
        for m in self.members:
            rows = logits[start:start + m.cache_rows]
            start += m.cache_rows
            if not m.finished:
                m.tokens[:, m.done] = m.pick(guided(rows, m.guidance))[:, 0]
                m.done += 1
        return live
