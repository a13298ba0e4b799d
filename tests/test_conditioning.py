"""Aligned conditioning and classifier-free guidance (issue 13): config round trip, causality, cached sampling."""
import pytest
import torch

import taming_core as tc
from conftest import tiny_net2net_config
from taming_core.conditioners import LabelGrid

pytestmark = pytest.mark.usefixtures("one_thread")

L = 64  # the tiny first stage: 16 px, f = 2 -> an 8 x 8 grid


def tiny_model(mode: str = "aligned", null: bool = True, permuter: str = "identity", seed: int = 0) -> tc.Net2Net:
    """A tiny segmentation Net2Net (32 image codes, 32 condition codes) with peaked logits and a condition
    embedding strong enough that the condition changes the greedy choices. mode "conv": aligned, with two
    condition convolutions (transformer.cond_layers) of random weights."""
    conv = mode == "conv"
    mode = "aligned" if conv else mode
    cfg = tiny_net2net_config(block_size=L if mode == "aligned" else 2 * L)
    cfg.update(cond_mode=mode, permuter={"name": permuter, "H": 8, "W": 8})
    if mode == "aligned":
        cfg["transformer"]["cond_vocab_size"] = 32 + null
        cfg["transformer"]["cond_layers"] = 2 if conv else 0
        cfg["null_token"] = 32 if null else None
    else:
        cfg["transformer"]["vocab_size"] = 32 + null
        cfg["null_token"] = 32 if null else None
    torch.manual_seed(seed)
    model = tc.build_model(cfg).eval()
    with torch.no_grad():
        gpt = model.transformer
        gpt.pos_emb.normal_(0, 0.5)
        gpt.head.weight.normal_(0, 0.5)
        (gpt.cond_emb if mode == "aligned" else gpt.tok_emb).weight.normal_(0, 1.0)
        for layer in getattr(gpt, "cond_conv", ()):
            layer.weight.normal_(0, 0.1)
    return model


def tokens(*shape, seed=0, vocab=32) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def greedy_recompute(model, c, steps, prefix=None, guidance=None) -> torch.Tensor:
    """Greedy sampling by full forwards of the whole sequence each step (no cache); with `guidance`, the
    conditional and the null branch are two separate forwards, combined as null + g (cond - null)."""
    z = c.new_zeros(c.shape[0], 0) if prefix is None else prefix.clone()
    for _ in range(steps):
        probe = torch.cat([z, z.new_zeros(z.shape[0], 1)], 1)  # the next token's slot (its value is unused)
        branches = [c] if guidance is None else [c, model.null_condition(c)]
        logits = []
        for ci in branches:
            seq, _ = model.sequence(probe[:, :-1], ci)
            cond = model.condition_input(ci)[:, :seq.shape[1]] if model.aligned else None
            logits.append(model.transformer(seq, cond=cond)[:, -1])  # (B, V)
        out = logits[0] if guidance is None else logits[1] + guidance * (logits[0] - logits[1])
        if not model.aligned and model.config.null_token is not None:
            out[:, model.config.null_token] = -float("inf")  # the null condition is never an image token
        z = torch.cat([z, out.argmax(-1, keepdim=True)], 1)
    return z


def test_cond_mode_round_trips_and_is_validated(tmp_path):
    model = tiny_model("aligned")
    tc.save_model(model, tmp_path / "m")
    back = tc.load_model(tmp_path / "m")
    assert back.config.cond_mode == "aligned" and back.config.null_token == 32
    assert back.config.transformer.cond_vocab_size == 33
    assert "transformer.cond_emb.weight" in back.state_dict()
    z, c = tokens(2, L), tokens(2, L, seed=1)
    with torch.no_grad():
        assert torch.equal(back(z, c), model(z, c))
    plain = tc.build_model(tiny_net2net_config())  # prefix is the default: no new key, no null condition
    assert plain.config.cond_mode == "prefix" and plain.config.null_token is None
    assert not any("cond_emb" in k for k in plain.state_dict())
    with pytest.raises(tc.ConfigError, match="cond_mode"):
        tc.build_model({**tiny_net2net_config(), "cond_mode": "sideways"})
    with pytest.raises(ValueError, match="spatial"):
        cfg = tiny_net2net_config(kind="class", cond_vocab_size=10)
        tc.build_model({**cfg, "cond_mode": "aligned"})
    with pytest.raises(ValueError, match="cond_vocab_size"):
        tc.build_model({**tiny_net2net_config(), "cond_mode": "aligned"})  # aligned needs its table


def test_aligned_condition_is_permuted_with_the_image_tokens():
    model = tiny_model("aligned", permuter="subsample")
    seg = torch.randint(0, 5, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    raster = model.conditioner.encode(seg)  # (B, L) raster order
    assert torch.equal(model.encode_cond(seg), model.permuter(raster))
    assert not torch.equal(model.encode_cond(seg), raster)


@pytest.mark.parametrize("j", [0, 5, 63])
def test_aligned_causality(j):
    """Changing the condition of the token at position j changes the logits predicting tokens >= j only."""
    model = tiny_model("aligned")
    z, c = tokens(2, L), tokens(2, L, seed=1)
    c2 = c.clone()
    c2[:, j] = (c2[:, j] + 1) % 32
    with torch.no_grad():
        a, b = model(z, c), model(z, c2)  # (B, L, V)
    assert torch.equal(a[:, :j], b[:, :j])
    assert not torch.allclose(a[:, j], b[:, j])  # the step predicting z_j sees its own condition
    z2 = z.clone()
    z2[:, j] = (z2[:, j] + 1) % 32
    with torch.no_grad():
        d = model(z2, c)
    assert torch.equal(a[:, :j + 1], d[:, :j + 1])  # token j is not an input of the logits predicting it


def test_condition_convolutions_see_below_and_right_and_keep_tokens_causal(tmp_path):
    """cond_layers: the step predicting token (4, 3) learns of the condition two rows below it; the tokens
    stay causal; the weights round-trip; a fresh (zero) stack is the plain aligned model."""
    model = tiny_model("conv")
    z, c = tokens(2, L), tokens(2, L, seed=1)
    c2 = c.clone()
    c2[:, 6 * 8 + 3] = (c2[:, 6 * 8 + 3] + 1) % 32  # the cell (6, 3)
    with torch.no_grad():
        a, b = model(z, c), model(z, c2)  # (B, L, V)
    assert not torch.allclose(a[:, 4 * 8 + 3], b[:, 4 * 8 + 3])  # (4, 3), two rows above, sees it
    assert torch.equal(a[:, :8], b[:, :8])  # row 0 lies outside the stack's reach (dilations 1, 2: 7x7)
    z2 = z.clone()
    z2[:, 20] = (z2[:, 20] + 1) % 32
    with torch.no_grad():
        assert torch.equal(a[:, :21], model(z2, c)[:, :21])
    tc.save_model(model, tmp_path / "m")
    back = tc.load_model(tmp_path / "m")
    assert back.config.transformer.cond_layers == 2 and "transformer.cond_conv.1.weight" in back.state_dict()
    with torch.no_grad():
        assert torch.equal(back(z, c), a)

    cfg = tiny_net2net_config(block_size=L)
    cfg.update(cond_mode="aligned", permuter={"name": "identity", "H": 8, "W": 8}, null_token=32)
    cfg["transformer"].update(cond_vocab_size=33, cond_layers=3)
    fresh = tc.build_model(cfg).eval()
    plain = tiny_model("aligned")
    fresh.transformer.load_state_dict(plain.transformer.state_dict(), strict=False)
    with torch.no_grad():
        assert torch.equal(fresh(z, c), plain(z, c))


def test_condition_convolutions_refuse_ids_other_orders_and_sizes():
    model = tiny_model("conv")
    c = tokens(2, L, seed=1)
    seq, cond = model.sequence(tokens(2, 4), c)
    with pytest.raises(ValueError, match="cond_features"):
        model.transformer(seq, cond=cond)  # ids where features are due
    with pytest.raises(ValueError, match="pass grid="):
        tc.sample(model, c[:, :48], 10)  # not the 8x8 training grid: say which grid
    out = tc.sample(model, c[:, :48], 48, grid=(6, 8), greedy=True)
    assert out.shape == (2, 48)
    cfg = tiny_net2net_config(block_size=L)
    cfg.update(cond_mode="aligned", permuter={"name": "subsample", "H": 8, "W": 8})
    cfg["transformer"].update(cond_vocab_size=32, cond_layers=1)
    with pytest.raises(ValueError, match="identity permuter"):
        tc.build_model(cfg)
    with pytest.raises(ValueError, match="condition table"):
        tc.GPT(tc.GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=1, n_embd=8, cond_layers=1))


@pytest.mark.parametrize("mode", ["aligned", "conv"])
def test_aligned_kv_cache_equals_recompute_and_stream(mode):
    model = tiny_model(mode)
    c, prefix = tokens(2, L, seed=1), tokens(2, 7, seed=2)
    out = tc.sample(model, c, L - 7, prefix=prefix, greedy=True)
    assert torch.equal(out, greedy_recompute(model, c, L - 7, prefix))
    whole = tc.sample(model, c, L, greedy=True)
    assert torch.equal(whole, greedy_recompute(model, c, L))
    assert not torch.equal(whole, tc.sample(model, tokens(2, L, seed=5), L, greedy=True))  # c matters
    last = list(tc.stream(model, c, greedy=True))[-1]
    assert last.finished and torch.equal(last.tokens.view(2, L), whole)
    with pytest.raises(ValueError, match="condition tokens"):
        tc.sample(model, c[:, :10], L, greedy=True)


@pytest.mark.parametrize("mode", ["aligned", "prefix"])
def test_guidance_one_is_the_plain_sampler(mode):
    model = tiny_model(mode)
    c = tokens(2, L, seed=1)
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    plain = tc.sample(model, c, 20, top_k=8, generator=gen())
    assert torch.equal(tc.sample(model, c, 20, top_k=8, generator=gen(), guidance=1.0), plain)
    streamed = list(tc.stream(model, c, top_k=8, generator=gen(), guidance=1))[-1].tokens.view(2, L)
    assert torch.equal(streamed[:, :20], plain)
    if model.config.null_token is not None:  # and it is what guidance 1 means: null + 1 (cond - null) = cond
        assert torch.equal(tc.sample(model, c, 20, greedy=True, guidance=1.0),
                           greedy_recompute(model, c, 20, guidance=1.0))


@pytest.mark.parametrize("mode", ["aligned", "prefix", "conv"])
def test_guidance_batched_equals_two_separate_forwards(mode):
    model = tiny_model(mode)
    c, prefix = tokens(2, L, seed=1), tokens(2, 3, seed=2)
    steps = 24
    expected = greedy_recompute(model, c, steps, prefix, guidance=3.0)
    guided = tc.sample(model, c, steps, prefix=prefix, greedy=True, guidance=3.0)
    assert torch.equal(guided, expected)
    assert not torch.equal(guided, tc.sample(model, c, steps, prefix=prefix, greedy=True))
    # guidance 0 is the null branch alone: the condition no longer matters
    a = tc.sample(model, c, steps, greedy=True, guidance=0.0)
    assert torch.equal(a, tc.sample(model, tokens(2, L, seed=9), steps, greedy=True, guidance=0.0))
    streamed = list(tc.stream(model, c, greedy=True, guidance=3.0))[-1].tokens.view(2, L)
    assert torch.equal(streamed, tc.sample(model, c, L, greedy=True, guidance=3.0))


@torch.no_grad()
def recompute_window(model, c_grid, plan, guidance=None) -> torch.Tensor:
    """The sliding window by full forwards (greedy): token (i, j) from its window's condition and the window's
    tokens before it, in either mode; with `guidance`, two separate forwards combined."""
    (wh, ww), (B, H, W) = plan.window, c_grid.shape
    grid = torch.zeros_like(c_grid)
    for n in range(H * W):
        i, j = divmod(n, W)
        t, left = plan.top[i], plan.left[j]
        upto = (i - t) * ww + (j - left)
        z = grid[:, t:t + wh, left:left + ww].reshape(B, -1)[:, :upto]
        cw = c_grid[:, t:t + wh, left:left + ww].reshape(B, -1)
        logits = []
        for ci in [cw] if guidance is None else [cw, model.null_condition(cw)]:
            seq, _ = model.sequence(z, ci)
            cond = model.condition_input(ci, (wh, ww))[:, :seq.shape[1]] if model.aligned else None
            logits.append(model.transformer(seq, cond=cond)[:, -1])
        out = logits[0] if guidance is None else logits[1] + guidance * (logits[0] - logits[1])
        if not model.aligned and model.config.null_token is not None:
            out[:, model.config.null_token] = -float("inf")
        grid[:, i, j] = out.argmax(-1)
    return grid


@pytest.mark.parametrize("mode", ["aligned", "prefix", "conv"])
def test_sliding_window_both_modes_with_guidance(mode):
    """Condition windows aligned with image windows: the cached window sampler equals full recompute, and a
    window covering the grid equals plain sampling."""
    model = tiny_model(mode)
    c = tokens(2, L, seed=1)
    for g in (1.0, 2.5):
        plain = tc.sample(model, c, L, greedy=True, guidance=g)
        assert torch.equal(tc.sample_sliding_window(model, c.view(2, 8, 8), window=(8, 8), greedy=True,
                                                    guidance=g).view(2, L), plain)
    window = (6, 6) if mode == "prefix" else (8, 8)  # prefix mode: 2 Lw - 1 <= block_size 128
    c_grid = tokens(2, 11, 10, seed=4)
    for plan_mode, g in (("exact", None), ("fast", 2.5)):
        plan = tc.window_plan((11, 10), window, plan_mode)
        got = tc.sample_sliding_window(model, c_grid, window=window, mode=plan_mode, greedy=True,
                                       guidance=g or 1.0)
        assert torch.equal(got, recompute_window(model, c_grid, plan, g))
        streamed = list(tc.stream(model, c_grid, window=window, mode=plan_mode, greedy=True, guidance=g or 1.0))
        assert torch.equal(streamed[-1].tokens, got)


def test_prefix_null_token_is_never_sampled():
    model = tiny_model("prefix")
    with torch.no_grad():
        model.transformer.head.weight[32] += 100.0  # the null id would win every step
    out = tc.sample(model, tokens(2, L, seed=1), 16, top_k=4, generator=torch.Generator().manual_seed(0))
    assert int(out.max()) < 32


def test_guidance_needs_a_null_condition():
    for mode in ("aligned", "prefix"):
        model = tiny_model(mode, null=False)
        c = tokens(1, L, seed=1)
        tc.sample(model, c, 4, greedy=True, guidance=1.0)  # off: fine
        with pytest.raises(ValueError, match="null condition"):
            tc.sample(model, c, 4, greedy=True, guidance=2.0)
    with pytest.raises(ValueError, match="guidance"):
        tc.sample(tiny_model("aligned"), c, 4, greedy=True, guidance=float("nan"))


def test_aligned_model_with_low_bit_weights_samples():
    model = tiny_model("aligned")
    c = tokens(2, L, seed=1)
    low = tc.quantize_gpt(model, torch.bfloat16)  # cond_emb stays an fp32 table, like the other embeddings
    out = tc.sample(low, c, 16, greedy=True, guidance=2.0)
    assert out.shape == (2, 16)
    seq, cond = model.sequence(out[:, :-1], c)  # the same inputs through both: bf16 weights, nearly fp32 logits
    a, b = model.transformer(seq, cond=cond).flatten(), low.transformer(seq, cond=cond).flatten()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.99 and not torch.equal(a, b)


def label_grid_model(seed: int = 0) -> tc.Net2Net:
    """A tiny aligned segmentation model over a label grid (5 labels, 2 x 2 cells: the first stage's f = 2)."""
    cfg = tiny_net2net_config(block_size=L)
    cfg["cond_stage"] = {"kind": "segmentation", "n_labels": 5, "grid_factor": 2}
    cfg.update(cond_mode="aligned", null_token=5)
    cfg["transformer"]["cond_vocab_size"] = 6
    torch.manual_seed(seed)
    model = tc.build_model(cfg).eval()
    with torch.no_grad():
        model.transformer.cond_emb.weight.normal_(0, 1.0)
        model.transformer.head.weight.normal_(0, 0.5)
    return model


def test_label_grid_takes_the_most_frequent_label_of_each_cell(tmp_path):
    """The label-grid condition (no VQ stage): the majority label of each f x f cell, ties to the lower id;
    ids or one-hot in; saved and loaded without a condition stage; sampled with guidance and in windows."""
    labels = torch.tensor([[[1, 1, 2, 3],
                            [1, 4, 3, 2],
                            [0, 0, 4, 4],
                            [0, 2, 4, 2]]])  # (1, 4, 4) label ids (offset 0: 5 labels)
    grid = LabelGrid(5, None, 2)
    assert grid.encode(labels).tolist() == [[1, 2, 0, 4]]  # cell 2: 2 and 3 tie -> 2; cell 4: 4 twice
    onehot = torch.nn.functional.one_hot(labels, 5).permute(0, 3, 1, 2).float()
    assert torch.equal(grid.encode(onehot), grid.encode(labels))
    with pytest.raises(ValueError, match="does not divide"):
        grid.encode(labels[:, :3])
    with pytest.raises(ValueError, match="unknown to this model"):
        grid.encode(labels + 5)

    model = label_grid_model()
    assert not hasattr(model, "cond_stage_model")
    tc.save_model(model, tmp_path / "m")
    back = tc.load_model(tmp_path / "m").eval()
    seg = torch.randint(0, 5, (2, 16, 16), generator=torch.Generator().manual_seed(1))
    c = back.encode_cond(seg)  # (2, 64): one id per image token
    assert c.shape == (2, L) and torch.equal(c, model.encode_cond(seg))
    guided = tc.sample(back, c, L, greedy=True, guidance=2.0)
    assert torch.equal(guided, tc.sample(model, c, L, greedy=True, guidance=2.0))
    other = back.encode_cond(seg.flip(0))
    assert not torch.equal(tc.sample(back, c, L, greedy=True), tc.sample(back, other, L, greedy=True))
    wide = torch.randint(0, 5, (1, 16, 32), generator=torch.Generator().manual_seed(2))
    out = tc.sample_sliding_window(back, back.encode_cond(wide).view(1, 8, 16), window=(8, 8), greedy=True)
    assert out.shape == (1, 8, 16)
    bad = tiny_net2net_config()
    bad["cond_stage"] = {"kind": "segmentation", "n_labels": 5, "grid_factor": 2, "vq": bad["cond_stage"]["vq"]}
    with pytest.raises(tc.ConfigError, match="label grid"):
        tc.build_model(bad)


@pytest.mark.parametrize("detail", [False, True])
def test_label_grids_count_ids_as_the_one_hot_map_would(detail):
    """Ids are counted per cell without the one-hot map (96 MB of int64 at 256x256 and 183 labels); the cells,
    ties to the lower id included, are those of the one-hot map's average pooling. COCO-Stuff ids shifted."""
    g = torch.Generator().manual_seed(0)
    raw = torch.randint(0, 4, (3, 32, 48), generator=g)  # few labels: many ties
    raw[1] = torch.tensor([0, 255, 181, 7])[torch.randint(0, 4, (32, 48), generator=g)]  # 255 = unlabelled
    grid = LabelGrid(183, None, 8, detail=detail)
    onehot = grid.labels_to_onehot(raw)
    assert torch.equal(grid.encode(raw), grid.encode(onehot))
    assert torch.equal(grid.label_ids(raw), onehot.argmax(1))
    with pytest.raises(ValueError, match="unknown to this model"):
        grid.encode(raw.clamp_max(200) + 20)


def test_a_detailed_label_grid_says_which_quarters_of_a_cell_share_its_label(tmp_path):
    """grid_detail: id = label * 16 + mask, bit q set when quarter q (raster order) reads as the cell's label."""
    labels = torch.zeros(1, 4, 8, dtype=torch.long)  # (1, 4, 8): two 4x4 cells of label 0
    labels[0, 2:, :2] = 3  # cell 1: its bottom-left quarter is label 3, the rest 0
    labels[0, :, 6:] = 2  # cell 2: its right half is label 2 ...
    labels[0, 0, 4] = 2  # ... plus one pixel: 9 of 16 pixels of 2, the cell reads as 2; its left half as 0
    grid = LabelGrid(5, None, 4, detail=True)
    assert grid.n_ids == 80
    assert grid.encode(labels).tolist() == [[0 * 16 + (1 + 2 + 8), 2 * 16 + (2 + 8)]]
    onehot = torch.nn.functional.one_hot(labels, 5).permute(0, 3, 1, 2).float()
    assert torch.equal(grid.encode(onehot), grid.encode(labels))
    assert torch.equal(grid.encode(labels) // 16, LabelGrid(5, None, 4).encode(labels))  # plain label kept
    with pytest.raises(ValueError, match="even cell size"):
        LabelGrid(5, None, 3, detail=True)

    cfg = tiny_net2net_config(block_size=L)
    cfg["cond_stage"] = {"kind": "segmentation", "n_labels": 5, "grid_factor": 2, "grid_detail": True}
    cfg.update(cond_mode="aligned", null_token=80)
    cfg["transformer"]["cond_vocab_size"] = 81
    model = tc.build_model(cfg).eval()
    tc.save_model(model, tmp_path / "m")
    back = tc.load_model(tmp_path / "m").eval()
    seg = torch.randint(0, 5, (2, 16, 16), generator=torch.Generator().manual_seed(1))
    c = back.encode_cond(seg)  # (2, 64)
    assert c.shape == (2, L) and int(c.max()) < 80 and (c % 16 != 15).any()
    assert tc.sample(back, c, 8, greedy=True, guidance=2.0).shape == (2, 8)
    small = {**cfg, "transformer": {**cfg["transformer"], "cond_vocab_size": 6}, "null_token": 5}
    with pytest.raises(ValueError, match="makes 80 condition ids"):
        tc.build_model(small)
    with pytest.raises(ValueError, match="null_token 5 is one of the label grid's 80 condition ids"):
        tc.build_model({**cfg, "null_token": 5})  # an old config's null id with grid_detail switched on
    prefix = {**cfg, "cond_mode": "prefix", "null_token": None,
              "transformer": {**cfg["transformer"], "cond_vocab_size": 0}}
    with pytest.raises(ValueError, match="transformer.vocab_size is 32"):
        tc.build_model(prefix)  # prefix mode: the ids share the GPT's vocabulary
    odd = {**cfg, "cond_stage": {**cfg["cond_stage"], "grid_factor": 3}}
    with pytest.raises(tc.ConfigError, match="even grid_factor"):
        tc.build_model(odd)
