"""Batching across requests (issue 28): rows of several requests, each with its own condition, seed, sampling
settings and guidance, sampled as one batch give each request the tokens it gets sampled alone."""
import pytest
import torch

import taming_core as tc
from test_conditioning import tiny_model, tokens

pytestmark = pytest.mark.usefixtures("one_thread")

# (rows, seed, temperature, top_k, top_p, guidance) of three requests
REQUESTS = [(1, 0, 1.0, None, None, 1.0), (2, 7, 0.7, 5, None, 3.0), (1, 3, 1.3, None, 0.9, 0.0)]


def alone(model, c, rows, seed, temperature, top_k, top_p, guidance, **kw) -> torch.Tensor:
    events = tc.stream(model, c.repeat(rows, *[1] * (c.dim() - 1)), temperature=temperature, top_k=top_k,
                       top_p=top_p, generator=torch.Generator().manual_seed(seed), guidance=guidance, **kw)
    return list(events)[-1].tokens


@pytest.mark.parametrize("mode,windowed", [("aligned", False), ("prefix", False), ("aligned", True),
                                           ("prefix", True)])
def test_a_batch_of_requests_samples_what_each_request_samples_alone(mode, windowed):
    model = tiny_model(mode, null=True)
    shape = (1, 12, 12) if windowed else (1, 64)
    kw = dict(window=(8, 8), mode="fast") if windowed else {}
    conds = [tokens(*shape, seed=10 + i) for i in range(len(REQUESTS))]
    expected = [alone(model, c, *r, **kw) for c, r in zip(conds, REQUESTS)]
    c = torch.cat([c.repeat(r[0], *[1] * (c.dim() - 1)) for c, r in zip(conds, REQUESTS)])
    pick = tc.split_picker([(r[0], tc.make_picker(r[2], r[3], r[4], False, torch.Generator().manual_seed(r[1])))
                            for r in REQUESTS])
    guidance = torch.tensor([r[5] for r in REQUESTS for _ in range(r[0])])
    batch = list(tc.stream(model, c, pick=pick, guidance=guidance, **kw))[-1].tokens
    assert torch.equal(batch, torch.cat(expected))
    assert not torch.equal(expected[1][0], expected[1][1])  # a request's rows are its own draws


def test_per_row_guidance_is_checked_and_all_ones_is_off():
    assert tc.sampling.check_guidance(torch.ones(3)) == 1.0
    with pytest.raises(ValueError, match="guidance must be finite numbers >= 0"):
        tc.sampling.check_guidance(torch.tensor([1.0, -1.0]))
    pick = tc.split_picker([(1, lambda x: x.argmax(-1, keepdim=True)), (2, lambda x: x.argmin(-1, keepdim=True))])
    logits = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert pick(logits).flatten().tolist() == [1, 0, 1]
    with pytest.raises(ValueError, match="covers 3 rows"):
        pick(logits[:2])
