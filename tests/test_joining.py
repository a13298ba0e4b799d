"""Continuous batching (taming_core/joining.py): requests that join a running batch between steps draw the
tokens they draw alone."""
import pytest
import torch

import taming_core as tc
from taming_core.joining import JoinedBatch, can_join
from test_conditioning import tiny_model as tiny_conditioned

pytestmark = pytest.mark.usefixtures("one_thread")


def greedy(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1, keepdim=True)


def seeded(seed: int):
    return tc.make_picker(1.0, None, None, False, torch.Generator().manual_seed(seed))


def model(mode: str = "aligned") -> tc.Net2Net:
    return tc.prepare_for_sampling(tiny_conditioned(mode), "int8")


def conditions(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 32, (n, 64), generator=torch.Generator().manual_seed(seed))


def alone(m: tc.Net2Net, c: torch.Tensor, seed: int, guidance: float) -> torch.Tensor:
    return tc.sample(m, c, 64, generator=torch.Generator().manual_seed(seed), guidance=guidance)


@pytest.mark.parametrize("mode", ["prefix", "aligned", "conv"])
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_a_request_alone_draws_what_sample_draws(mode, guidance):
    m = model(mode)
    assert can_join(m) and not can_join(tiny_conditioned(mode))  # a model not prepared on a CPU cannot
    batch = JoinedBatch(m)
    c = conditions(2)
    member = batch.join(c, seeded(5), guidance)
    while not member.finished:
        batch.step()
    assert torch.equal(member.tokens, alone(m, c, 5, guidance))


@pytest.mark.parametrize("mode", ["prefix", "conv"])
def test_requests_joining_later_and_leaving_early_draw_what_they_draw_alone(mode):
    """A starts; B joins after 10 steps (its rows at other positions than A's), C after 25 with guidance; B is
    dropped at step 30 (Stop), A finishes and keeps its rows until it leaves; greedy draws on a model with peaked
    logits, so that the rounding of another batch shape moves no choice."""
    m = model(mode)
    batch = JoinedBatch(m)
    cs = [conditions(1, seed=i) for i in range(3)]
    a = batch.join(cs[0], greedy)
    b = c = None
    for n in range(1, 120):
        if n == 10:
            b = batch.join(cs[1], greedy)
        if n == 25:
            c = batch.join(cs[2], greedy, guidance=3.0)
        if n == 30:
            batch.leave(b)
        drawn = batch.step()
        assert a in drawn or a.finished
        if a.finished and a in batch.members and n == 70:
            batch.leave(a)
        if c.finished if c is not None else False:
            break
    assert a.finished and c.finished and b.done == 21
    for member, cond, g in ((a, cs[0], 1.0), (c, cs[2], 3.0)):
        expected = tc.sample(m, cond, 64, greedy=True, guidance=g)
        assert torch.equal(member.tokens, expected)
    assert torch.equal(b.tokens[:, :21], tc.sample(m, cs[1], 64, greedy=True)[:, :21])
    with pytest.raises(ValueError, match="not a member"):
        batch.leave(b)


def test_members_that_join_together_draw_with_their_own_pickers():
    m = model("aligned")
    batch = JoinedBatch(m)
    cs = conditions(3, seed=4)
    members = [batch.join(cs[i:i + 1], seeded(i), g) for i, g in enumerate((1.0, 3.0, 1.0))]
    while not all(x.finished for x in members):
        batch.step()
    for i, (x, g) in enumerate(zip(members, (1.0, 3.0, 1.0))):
        assert torch.equal(x.tokens, alone(m, cs[i:i + 1], i, g))
