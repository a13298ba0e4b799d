"""Invariants of the modules on random configs: KV cache == recompute, causality, round trips, gradients."""
import numpy as np
import pytest
import torch

import taming_core as tc
from conftest import tiny_net2net_config, tiny_vqgan_config
from taming_core.permuter import NAMES


def random_gpt(seed: int) -> tc.GPT:
    g = np.random.RandomState(seed)
    n_head = int(g.choice([1, 2, 4]))
    cfg = tc.GPTConfig(vocab_size=int(g.randint(8, 64)), block_size=int(g.randint(20, 80)),
                       n_layer=int(g.randint(1, 4)), n_head=n_head, n_embd=n_head * int(g.choice([8, 16])))
    torch.manual_seed(seed)
    model = tc.GPT(cfg).eval()
    with torch.no_grad():  # larger position embeddings than the zero init, so positions matter
        model.pos_emb.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("seed", range(6))
def test_kv_cache_equals_recompute(seed):
    gpt = random_gpt(seed)
    cfg = gpt.config
    B, T = 1 + seed % 3, cfg.block_size - 3
    idx = torch.randint(0, cfg.vocab_size, (B, T))
    with torch.no_grad():
        full = gpt(idx)  # (B, T, V)
        cache = gpt.new_cache(B)
        split = [0, 5, 6, T // 2, T - 1, T]  # prefill, single tokens and multi-token extensions
        pieces = [gpt(idx[:, a:b], cache) for a, b in zip(split[:-1], split[1:])]
        torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)
        cache.length = 5  # roll back and extend again: same logits
        torch.testing.assert_close(gpt(idx[:, 5:9], cache), full[:, 5:9], atol=1e-5, rtol=1e-5)
    # greedy tokens: cached sampler vs recomputing the whole sequence each step
    c = idx[:, :4]
    tokens = tc.sample(gpt, c, 12, greedy=True)
    seq = c
    with torch.no_grad():
        for _ in range(12):
            seq = torch.cat([seq, gpt(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(tokens, seq[:, 4:])


def test_gpt_is_causal():
    gpt = random_gpt(3)
    idx = torch.randint(0, gpt.config.vocab_size, (2, 30))
    changed = idx.clone()
    changed[:, 17] = (changed[:, 17] + 1) % gpt.config.vocab_size
    with torch.no_grad():
        a, b = gpt(idx), gpt(changed)
    torch.testing.assert_close(a[:, :17], b[:, :17])
    assert not torch.allclose(a[:, 17:], b[:, 17:])


def test_net2net_logits_predict_next_token():
    model = tc.build_model(tiny_net2net_config()).eval()
    z = torch.randint(0, 32, (2, 64))
    c = torch.randint(0, 32, (2, 64))
    with torch.no_grad():
        logits = model(z, c)
        assert logits.shape == (2, 64, 32)
        changed = z.clone()
        changed[:, 10] = (changed[:, 10] + 1) % 32
        torch.testing.assert_close(model(changed, c)[:, :11], logits[:, :11])  # logits[:, i] sees z[:, :i]


def test_vqgan_round_trips_and_straight_through_gradients():
    torch.manual_seed(0)
    model = tc.build_model(tiny_vqgan_config())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    q = model.encode(x)
    assert q.z_q.shape == (2, 8, 8, 8) and q.indices.shape == (2, 8, 8)
    torch.testing.assert_close(model.quantize.lookup(q.indices), q.z_q.detach())
    torch.testing.assert_close(model.decode_indices(q.indices), model.decode(q.z_q).detach(), atol=1e-5, rtol=0)
    xrec, q = model(x)
    ((xrec - x).abs().mean() + q.loss).backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0  # through the straight-through estimator
    assert model.quantize.embedding.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_permuters_are_bijections(name):
    perm = tc.Permuter(tc.PermuterConfig(name, 8, 8))
    x = torch.arange(64).repeat(2, 1)
    y = perm(x)
    assert sorted(y[0].tolist()) == list(range(64))
    assert torch.equal(perm(y, reverse=True), x)


def test_net2net_decode_undoes_permutation():
    cfg = tiny_net2net_config()
    cfg["permuter"] = {"name": "zcurve", "H": 8, "W": 8}
    model = tc.build_model(cfg).eval()
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    z = model.encode_image(x)
    direct = model.first_stage_model.decode_indices(model.first_stage_model.encode(x).indices)
    torch.testing.assert_close(model.decode_indices(z), direct)


def test_gumbel_eval_encoding_is_deterministic_and_training_samples():
    cfg = tiny_vqgan_config(quantizer="gumbel")
    cfg["ddconfig"]["z_channels"] = 8
    model = tc.build_model(cfg).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    a, b = model.encode(x).indices, model.encode(x).indices
    assert torch.equal(a, b)
    logits = model.quantize.proj(model.quant_conv(model.encoder(x)))
    assert torch.equal(a, logits.argmax(1))
    torch.testing.assert_close(model.encode(x).z_q, model.quantize.lookup(a))


def test_ema_codebook_moves_towards_encoder_outputs():
    quant = tc.EMAVectorQuantizer(16, 4, decay=0.5).train()
    z = torch.randn(4, 4, 6, 6) + 5.0
    before = quant.embedding.weight.clone()
    for _ in range(5):
        q = quant(z)
    used = torch.unique(q.indices)
    moved = (quant.embedding.weight[used] - z.mean((0, 2, 3))).norm(dim=1)
    assert (moved < (before[used] - z.mean((0, 2, 3))).norm(dim=1)).all()


def test_dead_code_restart_and_usage_statistics():
    torch.manual_seed(0)
    quant = tc.VectorQuantizer(64, 4, dead_code_threshold=0.5, usage_decay=0.5).train()
    z = torch.randn(8, 4, 8, 8)
    usage0 = tc.codebook_usage(quant(z).indices, 64)
    for _ in range(10):
        quant(z)
    usage1 = tc.codebook_usage(quant.eval()(z).indices, 64)
    assert usage1.fraction_used > usage0.fraction_used
    uniform = tc.codebook_usage(torch.arange(64).repeat(3), 64)
    assert uniform.fraction_used == 1.0 and abs(uniform.perplexity - 64) < 1e-6 and uniform.dead_codes == 0


def test_l2_normalized_codes_are_unit_length():
    quant = tc.VectorQuantizer(16, 4, l2_normalize=True).eval()
    q = quant(torch.randn(2, 4, 3, 3) * 7)
    torch.testing.assert_close(q.z_q.norm(dim=1), torch.ones(2, 3, 3))


def test_remap_extra_slot_for_unknown_codes():
    quant = tc.VectorQuantizer(8, 2, remap=np.array([1, 4, 6]), unknown_index="extra").eval()
    assert quant.n_codes == 4
    quant.embedding.weight.data = torch.arange(16.0).view(8, 2)
    z = quant.embedding.weight[[1, 4, 0]].t().reshape(1, 2, 1, 3)  # codes 1, 4 and the unused 0
    assert quant(z).indices.tolist() == [[[0, 1, 3]]]
    torch.testing.assert_close(quant.lookup(torch.tensor([[[0, 1, 2]]])),
                               quant.embedding.weight[[1, 4, 6]].t().reshape(1, 2, 1, 3))


def test_gumbel_kl_with_remap_is_the_originals_over_the_used_codes():
    """GumbelQuantize.forward of the original slices the logits to the used codes before everything, KL
    included, and keeps n_embed as K: kl = sum_k q_k log(q_k K + 1e-10), q = softmax over the used logits."""
    torch.manual_seed(0)
    K, used = 8, np.array([1, 4, 6])
    quant = tc.GumbelQuantizer(4, 3, K, kl_weight=1.0, remap=used)
    z = torch.randn(2, 4, 3, 3) * 3
    with torch.no_grad():
        logits = quant.proj(z).double().numpy()  # (B, K, h, w)

    def kl(a: np.ndarray) -> float:
        q = np.exp(a - a.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        return float((q * np.log(q * K + 1e-10)).sum(1).mean())

    expected = kl(logits[:, used])
    assert abs(expected - kl(logits)) > 0.1  # over all K logits (the old behaviour) differs clearly
    for mode in (quant.train(), quant.eval()):  # the KL does not depend on the Gumbel draw
        assert mode(z).loss.item() == pytest.approx(expected, rel=1e-5)
    plain = tc.GumbelQuantizer(4, 3, K, kl_weight=1.0)
    plain.load_state_dict({k: v for k, v in quant.state_dict().items() if k != "used"})
    assert plain(z).loss.item() == pytest.approx(kl(logits), rel=1e-5)


def test_models_made_under_inference_mode_sample_and_reload():
    """Apps load under torch.inference_mode(); its tensors have no version counter, which the stacked
    query/key/value weights of the decoding path used to read."""
    with torch.inference_mode():
        torch.manual_seed(0)
        gpt = random_gpt(4)
        cfg = gpt.config
        idx = torch.randint(0, cfg.vocab_size, (2, cfg.block_size - 2))
        assert gpt.pos_emb.is_inference()
        full = gpt(idx)
        cache = gpt.new_cache(2)
        pieces = [gpt(idx[:, a:b], cache) for a, b in ((0, 5), (5, 6), (6, idx.shape[1]))]
        torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)
        tokens = tc.sample(gpt, idx[:, :4], 10, greedy=True)
        seq = idx[:, :4]
        for _ in range(10):
            seq = torch.cat([seq, gpt(seq)[:, -1].argmax(-1, keepdim=True)], 1)
        assert torch.equal(tokens, seq[:, 4:])
        # weights loaded in place after a first use: the stacked copy must not be stale
        other = random_gpt(4)
        with torch.no_grad():
            for p in other.parameters():
                p.add_(0.1)
        gpt.load_state_dict(other.state_dict())
        torch.testing.assert_close(gpt(idx), other(idx))
        net = tc.build_model(tiny_net2net_config(kind="class")).eval()
        c = torch.tensor([[1], [3]])
        images = net.decode_indices(tc.sample(net, c, 64, greedy=True))
        assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    with torch.no_grad():  # and outside inference mode (autograd cannot record inference tensors)
        torch.testing.assert_close(gpt(idx), other(idx))


def test_importing_the_library_loads_no_training_code():
    code = ("import sys, taming_core as tc; import runpy; runpy.run_path('app.py', run_name='app'); "
            "loaded = sorted(m for m in sys.modules if m.startswith('taming_core.')); print(loaded); "
            "training = {'taming_core.' + m for m in ('train', 'losses', 'data', 'evaluation', 'perceptual', "
            "'discriminator', 'lpips', 'resume')}; "
            "assert not training & set(loaded), loaded; assert 'taming_core.segmenter' in loaded, loaded; "
            "assert tc.ImageFolder.__module__ == 'taming_core.data'")
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
