"""Samplers (issue 3): cached sampling, the sliding window (exact and fast), streaming, low-bit weights."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import taming_core as tc
from taming_core.packed import PackedLinear, StackedQKV
from conftest import reference_case, tiny_net2net_config


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0, block_size: int = 128, **gpt) -> tc.Net2Net:
    """A tiny Net2Net (f=2 first stage, 32-token vocabulary) with peaked logits, so greedy choices are robust."""
    torch.manual_seed(seed)
    model = tc.build_model(tiny_net2net_config(block_size=block_size, **gpt)).eval()
    with torch.no_grad():
        model.transformer.pos_emb.normal_(0, 0.5)
        model.transformer.head.weight.normal_(0, 0.5)
    return model


def tokens(*shape, seed=0, vocab=32) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def gen(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def recompute_window(model, c_grid, plan, prefix=None, start=0) -> torch.Tensor:
    """The original sliding-window algorithm (a full forward of the window per token, greedy), on `plan`."""
    gpt, (wh, ww) = model.transformer, plan.window
    B, H, W = c_grid.shape
    grid = torch.zeros_like(c_grid) if prefix is None else prefix.clone()
    for n in range(start, H * W):
        i, j = divmod(n, W)
        t, left = plan.top[i], plan.left[j]
        seq = torch.cat([c_grid[:, t:t + wh, left:left + ww].reshape(B, -1),
                         grid[:, t:t + wh, left:left + ww].reshape(B, -1)], 1)
        logits = gpt(seq[:, :-1])[:, -wh * ww:]  # (B, Lw, V)
        grid[:, i, j] = logits[:, (i - t) * ww + (j - left)].argmax(-1)
    return grid


# ----------------------------------------------------------------------------------------------------------
# Plain cached sampling


def test_kv_cached_sampling_equals_recompute():
    model = tiny_model()
    c, prefix = tokens(2, 16), tokens(2, 5, seed=1)
    out = tc.sample(model, c, 20, prefix=prefix, greedy=True)
    seq = torch.cat([c, prefix], 1)
    with torch.no_grad():
        for _ in range(20):  # the original sampler: the whole sequence every step
            seq = torch.cat([seq, model.transformer(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq[:, 16:])


def test_filtering_top_k_top_p():
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, -1.0]])
    kept = torch.isfinite(tc.filter_logits(logits, top_k=2))
    assert kept.tolist() == [[True, False, True, True, False]]  # ties with the k-th stay, as the original
    probs = torch.softmax(logits, -1)[0]  # 0.53, 0.07, 0.19, 0.19, 0.01
    kept = torch.isfinite(tc.filter_logits(logits, top_p=0.6))
    assert kept.sum() == 2 and kept[0, 0] and probs[0] < 0.6  # the smallest set whose mass reaches 0.6
    assert torch.isfinite(tc.filter_logits(logits, top_p=1e-6)).sum() == 1  # always at least one
    model, c = tiny_model(), tokens(2, 16)
    greedy = tc.sample(model, c, 12, greedy=True)
    assert torch.equal(tc.sample(model, c, 12, top_k=1, generator=gen()), greedy)
    assert torch.equal(tc.sample(model, c, 12, top_p=1e-6, generator=gen()), greedy)


def test_seeded_runs_are_reproducible():
    model, c = tiny_model(), tokens(2, 16)
    a = tc.sample(model, c, 30, top_k=8, generator=gen(5))
    assert torch.equal(a, tc.sample(model, c, 30, top_k=8, generator=gen(5)))
    assert not torch.equal(a, tc.sample(model, c, 30, top_k=8, generator=gen(6)))
    c_grid = tokens(2, 10, 12)
    kw = dict(window=(4, 4), top_k=8, temperature=1.5)
    for mode in ("exact", "fast"):
        a = tc.sample_sliding_window(model, c_grid, mode=mode, generator=gen(5), **kw)
        assert torch.equal(a, tc.sample_sliding_window(model, c_grid, mode=mode, generator=gen(5), **kw))
        streamed = list(tc.stream(model, c_grid, mode=mode, generator=gen(5), **kw))[-1].tokens
        assert torch.equal(a, streamed)  # the streaming form draws the same tokens


def test_autocast_dtype_runs_on_cpu():
    model, c = tiny_model(), tokens(2, 16)
    out = tc.sample(model, c, 8, greedy=True, dtype=torch.bfloat16)
    assert out.shape == (2, 8) and out.dtype == torch.int64 and int(out.max()) < 32


# ----------------------------------------------------------------------------------------------------------
# Sliding window


@pytest.mark.parametrize("H,W", [(24, 20), (16, 16), (17, 31), (40, 16)])
def test_exact_window_plan_is_the_original_placement(H, W):
    def local(i, n, half=8, size=16):  # the original's formula
        return i if i <= half else size - (n - i) if n - i < half else half
    plan = tc.window_plan((H, W))
    assert [i - t for i, t in enumerate(plan.top)] == [local(i, H) for i in range(H)]
    assert [j - t for j, t in enumerate(plan.left)] == [local(j, W) for j in range(W)]


def test_fast_plan_holds_the_window_for_a_stride():
    plan = tc.window_plan((32, 32), mode="fast")  # stride (8, 8): bands [0, 12), [12, 20), [20, 28), [28, 32)
    assert sorted(set(plan.top)) == [0, 8, 16] and plan.top[11] == 0 and plan.top[12] == plan.top[19] == 8
    assert tc.window_plan((32, 32), mode="fast", stride=(1, 1)) == tc.window_plan((32, 32))
    with pytest.raises(ValueError, match="stride"):
        tc.window_plan((32, 32), mode="fast", stride=(17, 1))
    with pytest.raises(ValueError, match="fast"):
        tc.window_plan((32, 32), mode="exact", stride=(4, 4))


def test_exact_greedy_reproduces_the_original_sliding_window():
    folder, e = reference_case("cond_transformer_seg")
    model = tc.load_model(folder)
    c_grid = torch.from_numpy(e["big_c_indices"]).view(2, 24, 20)
    plan = tc.window_plan((24, 20))
    np.testing.assert_array_equal(np.arange(24) - np.array(plan.top), e["window_local_i"])
    np.testing.assert_array_equal(np.arange(20) - np.array(plan.left), e["window_local_j"])
    grid = tc.sample_sliding_window(model, c_grid, greedy=True)  # both examples in one batch
    np.testing.assert_array_equal(grid.numpy(), e["window_indices"])


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_sliding_window_equals_plain_sampling_when_the_grid_fits_one_window(mode):
    model = tiny_model()
    c_grid = tokens(2, 6, 6)
    plain = tc.sample(model, c_grid.view(2, 36), 36, top_k=10, generator=gen(3)).view(2, 6, 6)
    window = tc.sample_sliding_window(model, c_grid, window=(6, 6), mode=mode, top_k=10, generator=gen(3))
    assert torch.equal(window, plain)
    small = tc.sample_sliding_window(model, c_grid[:, :5, :4], window=(6, 6), mode=mode, top_k=10,
                                     generator=gen(3))  # smaller than the window: plain sampling
    assert torch.equal(small, tc.sample(model, c_grid[:, :5, :4].reshape(2, 20), 20, top_k=10,
                                        generator=gen(3)).view(2, 5, 4))


@pytest.mark.parametrize("mode,stride", [("exact", None), ("fast", None), ("fast", (2, 3)), ("fast", (4, 4))])
def test_cached_window_equals_recomputing_each_window(mode, stride):
    model = tiny_model(1)
    c_grid, prefix = tokens(2, 9, 11, seed=2), tokens(2, 9, 11, seed=3)
    plan = tc.window_plan((9, 11), (4, 4), mode, stride)
    ours = tc.sample_sliding_window(model, c_grid, window=(4, 4), mode=mode, stride=stride, greedy=True)
    assert torch.equal(ours, recompute_window(model, c_grid, plan))
    start = 2 * 11 + 7  # completion: not a multiple of W, where the original skipped columns < 7 of later rows
    done = tc.sample_sliding_window(model, c_grid, window=(4, 4), mode=mode, stride=stride, greedy=True,
                                    prefix=prefix, start=start)
    assert torch.equal(done.view(2, -1)[:, :start], prefix.view(2, -1)[:, :start])
    assert torch.equal(done, recompute_window(model, c_grid, plan, prefix, start))


def test_sliding_window_rejects_bad_input():
    model = tiny_model()
    with pytest.raises(ValueError, match="smaller than the window"):
        tc.sample_sliding_window(model, tokens(1, 3, 12), window=(4, 4))
    with pytest.raises(ValueError, match="prefix"):
        tc.sample_sliding_window(model, tokens(1, 8, 8), window=(4, 4), start=5)
    with pytest.raises(ValueError, match="block_size"):
        tc.sample_sliding_window(model, tokens(1, 16, 16), window=(12, 12))
    cfg = tiny_net2net_config()
    cfg["permuter"] = {"name": "alternate", "H": 8, "W": 8}
    with pytest.raises(ValueError, match="raster order"):
        tc.sample_sliding_window(tc.build_model(cfg).eval(), tokens(1, 8, 8), window=(4, 4))


# ----------------------------------------------------------------------------------------------------------
# Streaming


@pytest.mark.parametrize("windowed", [False, True])
def test_stream_previews_before_the_end_on_a_16x16_grid(windowed):
    model = tiny_model(block_size=512)
    c = tokens(1, 16, 16) if windowed else tokens(1, 256)
    kw = dict(window=(8, 8)) if windowed else dict(grid=(16, 16))
    events = list(tc.stream(model, c, generator=gen(), fill=torch.ones(1, 3, 4, 4), **kw))
    assert len(events) == 256 and [e.done for e in events] == list(range(1, 257))
    previews = [e for e in events if e.preview is not None]
    assert previews[0].done < 256 and previews[-1] is events[-1] and events[-1].finished
    first = previews[0]
    assert first.preview.shape == (1, 3, 32, 32)  # f = 2
    rows = first.preview_rows
    assert 0 < rows < 16 and torch.all(first.preview[:, :, 2 * rows:] == tc.streaming.FADE)  # faded fill
    final = model.decode_indices(events[-1].tokens.view(1, -1), grid=(16, 16))
    torch.testing.assert_close(events[-1].preview, final)
    assert events[-1].tokens_per_s > 0 and events[-1].position == (15, 15)


@pytest.mark.parametrize("windowed", [False, True])
def test_collected_stream_events_keep_their_own_tokens(windowed):
    """Each event's tokens are a copy: after list(stream), event k still shows the first k tokens and the
    unsampled fill, not the finished grid (the identity permuter's raster view is live)."""
    model = tiny_model()
    assert model.permuter.is_identity
    c = tokens(1, 8, 8) if windowed else tokens(1, 16)
    events = list(tc.stream(model, c, window=(4, 4), generator=gen(1)))
    final = events[-1].tokens.view(-1)
    assert final[1:].ne(0).any()  # else the check below could not tell a copy from a live view
    for e in events:
        flat = e.tokens.view(-1)
        assert torch.equal(flat[:e.done], final[:e.done]) and not flat[e.done:].any(), e.done


@pytest.mark.parametrize("windowed", [False, True])
def test_closing_the_stream_stops_within_one_token(windowed):
    model = tiny_model()
    calls = []
    model.transformer.register_forward_hook(lambda *_: calls.append(1))
    c = tokens(1, 8, 8) if windowed else tokens(1, 16)
    events = tc.stream(model, c, window=(4, 4), greedy=True)
    for _ in range(5):
        next(events)
    before = len(calls)
    events.close()  # the app's Stop button
    assert before <= 5  # one forward per token (the first one is the prefill)
    assert len(calls) == before
    with pytest.raises(StopIteration):
        next(events)


# ----------------------------------------------------------------------------------------------------------
# Fewer bytes per token


def test_a_bf16_prefill_of_int8_weights_stays_close():
    model = tiny_model()
    plain, fast = tc.quantize_gpt(model, torch.int8), tc.quantize_gpt(model, torch.int8, torch.bfloat16)
    assert fast.transformer.head.prefill_dtype == torch.bfloat16
    seq = tokens(2, 40)  # 40 rows: the prefill path (more than LowBitLinear.DECODE_ROWS)
    with torch.no_grad():
        ref, low = model.transformer(seq), fast.transformer(seq)
        mid = plain.transformer(seq)
    assert low.dtype == torch.float32 and not torch.equal(low, mid)  # bf16 products, not the fp32 ones
    assert (low - ref).abs().max() / ref.abs().max() < 0.03
    assert (low.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


@pytest.mark.parametrize("dtype", [torch.int8, torch.bfloat16])
def test_quantized_gpt_is_a_close_copy(dtype):
    model = tiny_model()
    low = tc.quantize_gpt(model, dtype)
    assert low.first_stage_model is model.first_stage_model  # frozen stages are shared, not copied
    assert type(model.transformer.blocks[0].attn.query) is torch.nn.Linear  # the original is untouched
    z, c = tokens(2, 20), tokens(2, 16, seed=1)
    with torch.no_grad():
        ref, out = model(z, c), low(z, c)
    err = (out - ref).abs().max() / ref.abs().max()
    assert err < (0.03 if dtype == torch.int8 else 0.02)
    agree = (out.argmax(-1) == ref.argmax(-1)).float().mean()
    assert agree > 0.9
    seq = torch.cat([c, z], 1)  # token by token through the cache: the int8 matrix-vector kernel path
    cache = low.transformer.new_cache(2)
    with torch.no_grad():
        low.transformer(seq[:, :16], cache)
        stepped = torch.cat([low.transformer(seq[:, t:t + 1], cache) for t in range(16, 36)], 1)
        full = model.transformer(seq)[:, 16:36]
    assert (stepped - full).abs().max() / full.abs().max() < 0.03
    assert tc.sample(low, c, 10, greedy=True).shape == (2, 10)


def test_stream_decodes_in_the_given_dtype_with_the_same_tokens():
    model = tiny_model(block_size=512)
    c = tokens(1, 256)
    plain = list(tc.stream(model, c, grid=(16, 16), generator=gen(3)))
    low = list(tc.stream(model, c, grid=(16, 16), generator=gen(3), decode_dtype=torch.bfloat16))
    assert torch.equal(plain[-1].tokens, low[-1].tokens)  # decoding never changes what is sampled
    assert low[-1].preview.dtype == torch.float32
    err = (low[-1].preview - plain[-1].preview).abs()
    assert 0 < err.max() < 0.1 and err.mean() < 0.02  # bf16 (not fp32) arithmetic, close to it


def test_sampling_precision_picks_the_measured_fastest_path():
    auto = tc.sampling_precision("auto", "cpu")
    assert auto.weights == "int8" and auto.weight_dtype == torch.int8
    assert auto.decode_dtype == (torch.bfloat16 if tc.cpu_has_bf16() else None)
    cuda = tc.sampling_precision("auto", "cuda")  # fp32: bf16 weights measured 13x slower per step on an H200
    assert cuda == tc.SamplingPrecision() and tc.sampling_precision("bf16", "cuda").weight_dtype == torch.bfloat16
    assert tc.sampling_precision("fp32", "cpu") == tc.SamplingPrecision()
    assert tc.sampling_precision("int8", "cpu").weights == "int8"
    assert auto.prefill_dtype == (torch.bfloat16 if tc.cpu_has_bf16() else torch.float32)
    assert tc.sampling_precision("int8", "cpu").prefill_dtype == torch.float32  # forced int8: plain prefill
    with pytest.raises(ValueError, match="int8 weights need a CPU"):
        tc.sampling_precision("int8", "cuda")
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, int8"):
        tc.sampling_precision("fp16", "cpu")


def test_bf16_weights_use_a_packed_copy_that_matches_the_plain_product_and_survives_copies():
    model = tiny_model()
    low = tc.quantize_gpt(model, torch.bfloat16)
    layer = low.transformer.blocks[0].mlp[0]  # with a bias
    x = torch.randn(3, 5, layer.weight.shape[1])
    with torch.no_grad():
        y = layer(x)
    plain = F.linear(x.reshape(15, -1).bfloat16(), layer.weight).float() + layer.bias
    assert torch.allclose(y.reshape(15, -1), plain, rtol=0, atol=1e-5 * plain.abs().max().item())
    packed = layer.sampling_copy()
    if tc.cpu_has_bf16() and torch.backends.mkldnn.is_available():
        assert packed is not None and packed.is_mkldnn  # packed once, reused
        assert layer.sampling_copy() is packed
    else:
        assert packed is None  # plain F.linear there
    again = copy.deepcopy(low)  # the opaque packed tensor is dropped, not copied, and rebuilt on demand
    with torch.no_grad():
        assert torch.equal(again.transformer.blocks[0].mlp[0](x), y)
    c = tokens(2, 16)
    assert torch.equal(tc.sample(again, c, 6, greedy=True), tc.sample(low, c, 6, greedy=True))
    other = tc.quantize_gpt(tiny_model(seed=1), torch.bfloat16).transformer.blocks[0].mlp[0]
    layer.load_state_dict(other.state_dict())  # new values in place, same addresses: the packed copy follows
    with torch.no_grad():
        assert torch.equal(layer(x), other(x))
        layer.weight.mul_(0.5)  # an in-place edit outside load_state_dict (a version change)
        half = layer(x)
    assert torch.allclose(half - layer.bias, (other(x) - other.bias) * 0.5, atol=1e-2)


def test_sampling_multiplies_by_a_packed_fp32_copy_that_follows_the_weights():
    """A model prepared for fp32 sampling on a CPU multiplies by oneDNN-packed copies of its weights in calls
    without gradients; the plain model and calls with gradients use the weights themselves; both give the same
    logits, and the copy follows weight edits."""
    model = tiny_model()
    plain = copy.deepcopy(model)
    gpt = tc.prepare_for_sampling(model).transformer
    fc = gpt.blocks[0].mlp[0]
    assert isinstance(fc, PackedLinear) and isinstance(gpt.blocks[0].attn.qkv, StackedQKV)
    seq = tokens(2, 40)  # a prefill of 40 rows, then single rows
    with torch.no_grad():
        ref = plain.transformer(seq)  # plain products
        cache = gpt.new_cache(2)
        cached = torch.cat([gpt(seq[:, :39], cache), gpt(seq[:, 39:], cache)], dim=1)
    assert torch.allclose(cached, ref, rtol=0, atol=1e-5 * ref.abs().max().item())
    if torch.backends.mkldnn.is_available():  # packed once, reused
        assert fc.copy.value is not None and fc.copy.value.is_mkldnn
        assert gpt.blocks[0].attn.qkv.copy.value[2].is_mkldnn and gpt.head.copy.value.is_mkldnn
    x = torch.randn(3, fc.in_features)
    with torch.no_grad():
        assert torch.allclose(fc(x), F.linear(x, fc.weight, fc.bias), rtol=0, atol=1e-5)
        packed = fc.copy.value
        fc(x)
        assert fc.copy.value is packed
        fc.weight.mul_(0.5)  # an in-place edit: the copy is rebuilt
        assert torch.allclose(fc(x), F.linear(x, fc.weight, fc.bias), rtol=0, atol=1e-5)
        other = tiny_model(seed=1).transformer.blocks[0].mlp[0]
        fc.load_state_dict(other.state_dict())  # values copied in place, same address
        assert torch.allclose(fc(x), other(x), rtol=0, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast keeps its own (bf16) products
            assert fc(x).dtype == torch.bfloat16
    y = fc(x.requires_grad_())  # with gradients: the plain product, which trains
    y.sum().backward()
    assert fc.weight.grad is not None
    y = gpt.blocks[0].attn.qkv(x[None])  # the stacked product too: gradients reach query, key and value
    y.sum().backward()
    assert all(m.weight.grad is not None for m in gpt.blocks[0].attn.qkv.parts)
    again = copy.deepcopy(model)  # the opaque packed copies are dropped, not copied, and rebuilt on demand
    c = tokens(2, 16)
    assert torch.equal(tc.sample(again, c, 6, greedy=True), tc.sample(model, c, 6, greedy=True))
    checked = again.transformer.head.checked  # the copy's layers share their own cache check
    assert checked is not gpt.head.checked and checked is again.transformer.blocks[1].attn.qkv.checked


def test_prepare_for_sampling_packs_what_sampling_multiplies_by_and_changes_no_token_or_key():
    model = tiny_model()
    c = tokens(2, 16)
    before = tc.sample(copy.deepcopy(model), c, 8, greedy=True)
    keys = list(model.state_dict())
    assert tc.prepare_for_sampling(model) is model  # fp32 on a CPU: in place
    assert list(model.state_dict()) == keys  # the original's key names, in order
    gpt = model.transformer
    attn = gpt.blocks[0].attn
    if torch.backends.mkldnn.is_available():
        assert attn.qkv.copy.value[2].is_mkldnn and gpt.head.copy.value.is_mkldnn
        assert all(m.copy.value.is_mkldnn for m in gpt.blocks[1].mlp if isinstance(m, PackedLinear))
    assert all(type(m) is torch.nn.Linear for m in (attn.query, attn.key, attn.value))  # the stacked copy serves them
    assert torch.equal(tc.sample(model, c, 8, greedy=True), before)
    assert tc.prepare_for_sampling(model, "fp32") is model  # again: nothing more to do
    low = tc.quantize_gpt(model, torch.int8)  # low-bit layers keep their own format
    assert tc.prepare_for_sampling(low) is low and isinstance(low.transformer.head, tc.LowBitLinear)
    plan = tc.sampling_precision("int8", "cpu")
    for precision in ("int8", plan):  # a plan's name or the plan itself: a low-bit copy
        copied = tc.prepare_for_sampling(model, precision)
        assert copied is not model and isinstance(copied.transformer.blocks[0].attn.qkv, tc.LowBitLinear)
    loaded = tiny_model()
    loaded.load_state_dict(model.state_dict(), strict=True)  # a prepared model's state dict loads strictly


@pytest.mark.parametrize("sampler", ["plain", "window", "stream"])
def test_a_prepared_model_samples_the_plain_models_tokens(sampler):
    model = tiny_model(block_size=512)
    prepared = tc.prepare_for_sampling(copy.deepcopy(model))
    c = tokens(2, 16, 16) if sampler == "window" else tokens(2, 16)

    def run(m):
        if sampler == "plain":
            return tc.sample(m, c, 64, greedy=True)
        if sampler == "window":
            return tc.sample_sliding_window(m, c, window=(8, 8), mode="fast", greedy=True)
        return list(tc.stream(m, c, grid=(8, 8), greedy=True))[-1].tokens
    assert torch.equal(run(prepared), run(model))


def test_a_new_cache_checks_the_weight_copies_that_later_steps_trust():
    """Weights edited in place between two sampling runs: the next cache's first call rebuilds the stacked and
    packed copies, so its logits follow the new weights (steps of one cache reuse them unchecked)."""
    model = tiny_model()
    gpt = tc.prepare_for_sampling(model).transformer
    seq = tokens(2, 24)
    with torch.no_grad():
        cache = gpt.new_cache(2)
        gpt(seq[:, :20], cache)  # copies made and checked
        assert gpt.head.checked.cache() is cache and not gpt.head.checked.now  # trusted in this cache's calls
        for block in gpt.blocks:  # in place: same addresses, new versions
            block.attn.key.weight.mul_(1.5)
            block.mlp[0].weight.mul_(0.5)
        gpt.head.weight.add_(0.1)
        with torch.enable_grad():
            ref = gpt(seq).detach()  # with gradients: the plain weights
        fresh = gpt.new_cache(2)
        cached = torch.cat([gpt(seq[:, :20], fresh), gpt(seq[:, 20:23], fresh), gpt(seq[:, 23:], fresh)], dim=1)
    assert torch.allclose(cached, ref, rtol=0, atol=1e-5 * ref.abs().max().item())


def test_copies_are_trusted_only_by_caches_whose_first_call_checked_them_and_train_drops_them():
    """A cache first filled with gradients on is not checked, so its later calls keep checking (no stale copies);
    empty inputs pass through the packed path; train() frees the copies (the weights are about to change)."""
    gpt = tc.prepare_for_sampling(tiny_model()).transformer
    seq = tokens(1, 12)
    with torch.no_grad():
        gpt(seq, gpt.new_cache(1))  # copies made
        for p in gpt.parameters():
            p.mul_(0.9)  # in place: the copies above are stale now
    ref = gpt(seq).detach()  # with gradients: the plain weights
    cache = gpt.new_cache(1)
    gpt(seq[:, :8], cache)  # first call with gradients: nothing checked, so nothing trusted later
    assert gpt.head.checked.cache() is not cache
    with torch.no_grad():
        steps = torch.cat([gpt(seq[:, 8:10], cache), gpt(seq[:, 10:], cache)], dim=1)
        assert torch.allclose(steps, ref[:, 8:], rtol=0, atol=1e-5 * ref.abs().max().item())
        empty = gpt.new_cache(1)
        assert gpt(seq[:, :0], empty).shape == (1, 0, gpt.config.vocab_size)  # no rows, no crash
        assert gpt.head(torch.zeros(0, 3, gpt.config.n_embd)).shape == (0, 3, gpt.config.vocab_size)
    gpt.eval()
    assert gpt.head.copy.value is not None  # eval keeps them
    gpt.train()
    assert gpt.head.copy.value is None and gpt.blocks[0].attn.qkv.copy.value is None
    gpt.eval()
