"""Configs shaped like the original releases build with random weights, with the original key listings
(../shared/notes/reference-keys.txt) as their state_dict keys and shapes (training-only loss.* aside)."""
import re
from collections import defaultdict

import pytest
import torch
from omegaconf import OmegaConf

import taming_core as tc
from conftest import ORIGINAL_CONFIGS, SHARED, tiny_net2net_config, tiny_vqgan_config

LISTING = SHARED / "notes" / "reference-keys.txt"
SECTIONS = {  # title prefix in the listing -> our copy of the config
    "configs/imagenet_vqgan.yaml": "imagenet_vqgan.yaml",
    "configs/sflckr_cond_stage.yaml": "sflckr_cond_stage.yaml",
    "Released S-FLCKR transformer": "sflckr_transformer.yaml",
    "configs/drin_transformer.yaml": "drin_transformer.yaml",
    "configs/faceshq_transformer.yaml": "faceshq_transformer.yaml",
    "configs/imagenetdepth_vqgan.yaml": "imagenetdepth_vqgan.yaml",
}


def parse_listing() -> dict[str, dict]:
    """title -> {"keys": {key: shape}, "prefixes": {prefix: (n_keys, n_elements)}}."""
    if not LISTING.is_file():
        pytest.skip(f"{LISTING} not found")
    sections, current, lines = {}, None, LISTING.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("====") and i + 1 < len(lines):
            current = {"keys": {}, "prefixes": {}}
            sections[lines[i + 1].strip()] = current
        elif current is not None:
            m = re.match(r"^(\S+) \[([\d, ]*)\] \w+$", line)
            if m:
                current["keys"][m[1]] = tuple(int(s) for s in m[2].split(",") if s.strip())
            m = re.match(r"^\s+(\S+)\.\*\s+(\d+) keys\s+(\d+) elements$", line)
            if m:
                current["prefixes"][m[1]] = (int(m[2]), int(m[3]))
    return sections


def find_section(sections: dict, prefix: str) -> dict:
    return next(v for k, v in sections.items() if k.startswith(prefix))


@pytest.mark.parametrize("title,config", SECTIONS.items(), ids=list(SECTIONS.values()))
def test_release_shaped_config_matches_listing(title, config):
    section = find_section(parse_listing(), title)
    with torch.device("meta"):  # shapes only: no memory, no time
        model = tc.build_model(ORIGINAL_CONFIGS / config)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if section["keys"]:
        expected = {k: s for k, s in section["keys"].items() if not k.startswith("loss.")}
        assert ours == expected
    grouped = defaultdict(lambda: [0, 0])
    for k, shape in ours.items():
        prefix = next(p for p in section["prefixes"] if k == p or k.startswith(p + "."))
        grouped[prefix][0] += 1
        grouped[prefix][1] += int(torch.Size(shape).numel())
    expected = {p: v for p, v in section["prefixes"].items() if not p.startswith("loss.")}
    assert {p: tuple(v) for p, v in grouped.items()} == expected
    # the size limit counts from the config alone exactly what the model holds (parameters and buffers)
    n = sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())
    tc.resolve_config(ORIGINAL_CONFIGS / config, max_params=n)
    with pytest.raises(tc.ConfigError, match="parameters and buffers"):
        tc.resolve_config(ORIGINAL_CONFIGS / config, max_params=n - 1)


@pytest.mark.parametrize("overrides", [
    {"quantizer": "gumbel"}, {"quantizer": "ema", "colorize_nlabels": 5}, {"remap": [1, 3, 5]},
    {"ddconfig": {"ch": 64, "ch_mult": [1, 1, 2], "num_res_blocks": 0, "attn_resolutions": [16, 4],
                  "in_channels": 1, "out_ch": 2, "resolution": 16, "z_channels": 4, "double_z": True,
                  "resamp_with_conv": False}},
], ids=["gumbel", "ema", "remap", "layout"])
def test_size_limit_counts_exactly(overrides):
    cfg = tiny_vqgan_config(**overrides)
    if overrides.get("quantizer") == "gumbel":
        cfg["embed_dim"] = cfg["ddconfig"]["z_channels"]
    with torch.device("meta"):
        model = tc.build_model(cfg)
    n = sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())
    tc.resolve_config(cfg, max_params=n)
    with pytest.raises(tc.ConfigError, match="parameters and buffers"):
        tc.resolve_config(cfg, max_params=n - 1)


def test_scene_transformer_is_refused_clearly():
    stage = OmegaConf.to_container(OmegaConf.load(ORIGINAL_CONFIGS / "imagenet_vqgan.yaml"))["model"]
    cfg = {"model": {"target": "taming.models.cond_transformer.Net2NetTransformer", "params": {
        "cond_stage_config": {"target": "taming.modules.misc.dummy_cond_stage.DummyCondStage",
                              "params": {"conditional_key": "objects_bbox"}},
        "first_stage_config": stage,
        "transformer_config": {"target": "taming.modules.transformer.mingpt.GPT", "params": {}}}}}
    with pytest.raises(tc.ConfigError, match="DummyCondStage"):
        tc.build_model(cfg)


def drawn_configs(n: int = 24, seed: int = 0) -> list[dict]:
    """Random small configs over the fields that change the layer layout: quantizer, attention, blocks,
    double_z, colorize, remap, condition kind and mode, condition convolutions, permuter."""
    import random
    rng = random.Random(seed)
    configs = []
    for _ in range(n):
        dd = {"ch": rng.choice([32, 64]), "ch_mult": rng.choice([[1], [1, 2], [1, 2, 2]]),
              "num_res_blocks": rng.choice([0, 1, 2]), "attn_resolutions": rng.choice([[], [8], [16, 8]]),
              "in_channels": 3, "out_ch": 3, "resolution": 16, "z_channels": 8, "double_z": rng.random() < 0.3,
              "resamp_with_conv": rng.random() < 0.8}
        quantizer = rng.choice(["vq", "gumbel", "ema"])
        stage = {"n_embed": 32, "embed_dim": 8, "ddconfig": dd, "quantizer": quantizer,
                 "remap": rng.choice([None, [1, 3, 5, 7]])}
        if rng.random() < 0.3:
            configs.append({"model": "vqgan", **stage, "colorize_nlabels": rng.choice([None, 5])})
            continue
        kind = rng.choice(["segmentation", "depth", "edges", "class", "none", "first_stage"])
        cfg = tiny_net2net_config(kind if kind != "first_stage" else "none")
        cfg["first_stage"] = stage
        if kind == "first_stage":
            cfg["cond_stage"] = {"kind": "first_stage"}
        if kind in ("segmentation", "depth", "edges") and rng.random() < 0.6:
            cfg.update(cond_mode="aligned")
            cfg["transformer"].update(cond_vocab_size=32, cond_layers=rng.choice([0, 1, 2, 4]))
        if rng.random() < 0.3 and not cfg["transformer"].get("cond_layers"):  # they need the raster order
            cfg["permuter"] = {"name": "subsample", "H": 4, "W": 4}
        configs.append(cfg)
    return configs


@pytest.mark.parametrize("cfg", drawn_configs(), ids=lambda c: f"{c['model']}-{c.get('cond_stage', {}).get('kind')}"
                         f"-layers{c.get('transformer', {}).get('cond_layers', 0)}")
def test_the_size_check_counts_what_the_built_model_holds(cfg):
    from taming_core.config_checks import model_size
    kind, typed = tc.resolve_config(cfg)
    model = tc.build_model(cfg)
    held = {id(t): t for t in (*model.parameters(), *model.buffers())}  # a shared stage once
    assert model_size(kind, typed) == sum(t.numel() for t in held.values())
    with pytest.raises(tc.ConfigError, match="parameters and buffers"):
        tc.build_model(cfg, max_params=sum(t.numel() for t in held.values()) - 1)
