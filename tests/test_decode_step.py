"""The decode step without module calls (taming_core/decode_step.py) gives GPT.forward's logits bit for bit."""
import copy

import pytest
import torch

import taming_core as tc
from taming_core import decode_step
from taming_core.decode_step import DecodeStep, attach, decode_step_of, detach
from taming_core.sampling import new_sampling_cache, next_logits
from test_conditioning import tiny_model as tiny_conditioned
from test_sampling import tiny_model, tokens

pytestmark = pytest.mark.usefixtures("one_thread")

PRECISIONS = ["fp32", "fp32-plain", "int8", "bf16"]


def prepared(model: tc.Net2Net, precision: str) -> tc.Net2Net:
    if precision == "fp32-plain":
        return tc.prepare_for_sampling(model, "fp32", matmul="plain")
    return tc.prepare_for_sampling(model, precision)


@torch.no_grad()
def steps_both_ways(gpt: tc.GPT, seq: torch.Tensor, cond: torch.Tensor | None, chunks: list[int]):
    """Logits of the GPT fed seq (B, L) in chunks, once through DecodeStep and once through GPT.forward."""
    step = decode_step_of(gpt, seq[:, :1])
    assert isinstance(step, DecodeStep)
    out = []
    for fused in (True, False):
        cache = new_sampling_cache(gpt, seq.shape[0], seq.shape[1], None)
        at, logits = 0, []
        for n in chunks:
            part = None if cond is None else cond[:, at:at + n]
            if fused:
                logits.append(step(seq[:, at:at + n], cache, part))
            else:
                logits.append(gpt(seq[:, at:at + n], cache, last_only=True, cond=part)[:, -1].float())
            at += n
        assert cache.length == at
        out.append(torch.stack(logits))
    return out


@pytest.mark.parametrize("precision", PRECISIONS)
def test_decode_steps_give_the_forward_logits_bit_for_bit(precision):
    """One token at a time, several at once (the window sampler's catch-up: a causal mask over the cache), at the
    start of a cache (causal) and batch sizes whose int8 rows cross the matrix-vector limit."""
    gpt = prepared(tiny_model(block_size=128), precision).transformer
    for batch, chunks in ((1, [1] * 12), (2, [5, 1, 3, 1, 1]), (3, [1, 7, 2]), (10, [2, 1, 2])):
        seq = tokens(batch, sum(chunks))
        fused, forward = steps_both_ways(gpt, seq, None, chunks)
        assert torch.equal(fused, forward), (precision, batch, chunks)


@pytest.mark.parametrize("mode", ["aligned", "conv"])
def test_aligned_conditions_are_added_as_in_forward(mode):
    """Aligned models add the condition ids' embedding (or the convolved features) at each fed position."""
    model = tc.prepare_for_sampling(tiny_conditioned(mode), "int8")
    gpt = model.transformer
    seq = tokens(2, 10)
    grid = tokens(2, 8, 8)
    cond = grid.view(2, -1)[:, :10] if mode == "aligned" else gpt.cond_features(grid)[:, :10]
    fused, forward = steps_both_ways(gpt, seq, cond, [1, 3, 1, 5])
    assert torch.equal(fused, forward)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_samplers_draw_the_same_tokens_with_and_without_it(precision):
    model = prepared(tiny_model(block_size=512), precision)
    gpt = model.transformer
    c, grid = tokens(2, 16), tokens(2, 16, 16)

    def run():
        g = torch.Generator().manual_seed(3)
        plain = tc.sample(model, c, 40, top_k=8, generator=g)
        window = tc.sample_sliding_window(model, grid, window=(8, 8), mode="fast", top_k=8, generator=g)
        return plain, window
    fused = run()
    detach(gpt)
    assert decode_step_of(gpt, c[:, :1]) is None
    forward = run()
    attach(gpt)
    assert all(torch.equal(a, b) for a, b in zip(fused, forward))


@torch.no_grad()
def test_weights_edited_between_caches_are_seen():
    """The products' closures are taken again for every new cache: an in-place edit after one image changes
    the next image's logits exactly as GPT.forward's."""
    gpt = tc.prepare_for_sampling(tiny_model()).transformer
    seq = tokens(2, 6)
    steps_both_ways(gpt, seq, None, [1] * 6)
    for block in gpt.blocks:
        block.attn.value.weight.mul_(1.5)  # through the stacked copy
        block.mlp[2].weight.mul_(0.5)  # a packed layer
    gpt.head.weight.add_(0.1)
    fused, forward = steps_both_ways(gpt, seq, None, [1] * 6)
    assert torch.equal(fused, forward)
    with torch.enable_grad():
        plain = gpt(seq).detach()[:, -1]  # the plain weights
    assert torch.allclose(fused[-1], plain, rtol=0, atol=1e-5 * plain.abs().max().item())


def test_it_is_used_only_where_it_holds():
    """Registered by prepare_for_sampling on a CPU, for inference calls of a few tokens outside autocast; a copy
    of the model and gradient calls take GPT.forward; bad tokens and a full cache say what is wrong."""
    model = tiny_model()
    assert decode_step_of(model.transformer, tokens(1, 1)) is None  # not prepared
    gpt = tc.prepare_for_sampling(model).transformer
    few, many = tokens(2, 1), tokens(2, decode_step.MAX_TOKENS + 1)
    with torch.no_grad():
        assert decode_step_of(gpt, few) is not None and decode_step_of(gpt, many) is None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert decode_step_of(gpt, few) is None
    assert decode_step_of(gpt, few) is None  # gradients on
    again = copy.deepcopy(model)
    with torch.no_grad():
        assert decode_step_of(again.transformer, few) is None  # a copy samples through forward, correctly
        cache = new_sampling_cache(gpt, 2, 4, None)
        with pytest.raises(ValueError, match="token ids must lie in"):
            next_logits(gpt, torch.tensor([[0], [99]]), cache, None)
        next_logits(gpt, tokens(2, 4), cache, None)
        with pytest.raises(ValueError, match="KV cache holds 4 positions"):
            next_logits(gpt, few, cache, None)
