"""Starting a first stage from a released one (`train_vqgan.py init_from=...`): its config and weights, the parts
`train_only=decoder` keeps fixed (the codes stay as they were), and the optimiser groups of what trains."""
from __future__ import annotations

import functools

import torch
from omegaconf import OmegaConf

import taming_core as tc

TRAIN_ONLY = ("all", "decoder")


@functools.lru_cache(maxsize=1)
def released_stage(path: str) -> tc.VQGAN:
    """The first stage at `path`, read once for its config and its weights."""
    return tc.load_model(path)


def init_config(path: str) -> tc.VQGANConfig:
    """The VQGANConfig of the released first stage at `path` (its weights are loaded into the model later)."""
    model = released_stage(path)
    if not isinstance(model, tc.VQGAN):
        raise tc.ConfigError(f"init_from={path} is a {type(model).__name__}, not a first stage (VQGAN)")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(tc.VQGANConfig), vars(model.config)))


def frozen_parts(vqgan: tc.VQGAN, train_only: str) -> list[torch.nn.Module]:
    """The submodules that `train_only` keeps fixed (no gradients, always in eval mode: no dead-code restart)."""
    return [vqgan.encoder, vqgan.quant_conv, vqgan.quantize] if train_only == "decoder" else []


def generator_groups(vqgan: tc.VQGAN, noise_lr_scale: float) -> list[dict]:
    """The trained parameters of the autoencoder as optimiser groups: the decoder's noise strengths (if any)
    apart, at noise_lr_scale times the learning rate; each group's "lr_scale" says its multiple."""
    trained = [(n, p) for n, p in vqgan.named_parameters() if p.requires_grad]
    noise = [p for n, p in trained if n.endswith(".noise.strength")]
    groups = [{"params": [p for n, p in trained if not n.endswith(".noise.strength")], "lr_scale": 1.0}]
    return groups + ([{"params": noise, "lr_scale": noise_lr_scale}] if noise else [])
