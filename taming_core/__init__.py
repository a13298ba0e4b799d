"""taming_core: VQGAN + transformer (Esser, Rombach, Ommer 2020), loading the original checkpoints.

Shape legend: B batch, C channels, H,W image, h,w latent grid, D code dim, K codebook size, L = h*w tokens,
L_c condition tokens, T context, E width, nh heads, hs head size, V vocab.
"""
from .autoencoder import AutoencoderConfig, Decoder, Encoder
from .checkpoint import (ConfigError, build_model, config_from_original, config_to_dict, load_model,
                         load_state_dict_strict, resolve_config, save_model)
from .conditioners import ConditionerConfig, Conditioner
from .gpt import GPT, GPTConfig, KVCache
from .net2net import Net2Net, Net2NetConfig
from .permuter import Permuter, PermuterConfig
from .quantizer import (CodebookUsage, EMAVectorQuantizer, GumbelQuantizer, Quantized, VectorQuantizer,
                        codebook_usage)
from .safe_unpickle import CheckpointError, UnsafeCheckpointError, safe_load
from .sampling import filter_logits, pick_token, sample
from .vqgan import VQGAN, VQGANConfig

__all__ = [
    "AutoencoderConfig", "Encoder", "Decoder", "VQGAN", "VQGANConfig", "Quantized", "VectorQuantizer",
    "GumbelQuantizer", "EMAVectorQuantizer", "CodebookUsage", "codebook_usage", "GPT", "GPTConfig", "KVCache",
    "Conditioner", "ConditionerConfig", "Permuter", "PermuterConfig", "Net2Net", "Net2NetConfig",
    "build_model", "load_model", "save_model", "resolve_config", "config_from_original", "config_to_dict",
    "load_state_dict_strict", "ConfigError", "CheckpointError", "UnsafeCheckpointError", "safe_load",
    "sample", "filter_logits", "pick_token",
]
