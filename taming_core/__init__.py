"""taming_core: VQGAN + transformer (Esser, Rombach, Ommer 2020), loading the original checkpoints.

Shape legend: B batch, C channels, H,W image, h,w latent grid, D code dim, K codebook size, L = h*w tokens,
L_c condition tokens, T context, E width, nh heads, hs head size, V vocab.
"""
import importlib
import importlib.util

from .autoencoder import AutoencoderConfig, Decoder, Encoder
from .calibration import MATMULS, MatmulChoice, choose_matmul
from .checkpoint import (ConfigError, build_model, config_from_original, config_to_dict, load_model,
                         load_state_dict_strict, resolve_config, save_model)
from .conditioners import ConditionerConfig, Conditioner
from .cpu_fastpath import LowBitLinear, drop_sampling_copies, prepare_for_sampling, quantize_gpt
from .gpt import GPT, GPTConfig, KVCache
from .host import host_info, host_line
from .net2net import Net2Net, Net2NetConfig
from .permuter import Permuter, PermuterConfig
from .precision import (PRECISIONS, SAMPLING_PRECISIONS, SamplingPrecision, autocast_for, cpu_has_bf16,
                        resolve_precision, sampling_precision)
from .quantizer import (CodebookUsage, EMAVectorQuantizer, GumbelQuantizer, Quantized, VectorQuantizer,
                        codebook_usage)
from .safe_unpickle import CheckpointError, UnsafeCheckpointError, load_plain, safe_load
from .segmenter import Segmenter, SegmenterConfig
from .sampling import filter_logits, make_picker, pick_token, sample, split_picker
from .sliding_window import WindowPlan, sample_sliding_window, window_plan
from .streaming import StreamEvent, stream
from .threads import ThreadPolicy, parse_threads
from .vqgan import VQGAN, VQGANConfig, to_image

# What users call. Internals (Encoder, Decoder, the quantizer classes, KVCache, LowBitLinear, Conditioner,
# Permuter, load_state_dict_strict, safe_load, filter_logits, pick_token, resolve_config, ...) stay importable
# from their modules (and as `tc.<name>`, for existing code), but are not part of this list.
__all__ = [
    # loading, building, saving; errors
    "load_model", "build_model", "save_model", "ConfigError", "CheckpointError", "UnsafeCheckpointError",
    # models and their configs
    "VQGAN", "VQGANConfig", "AutoencoderConfig", "Quantized", "CodebookUsage", "codebook_usage",
    "Net2Net", "Net2NetConfig", "GPT", "GPTConfig", "ConditionerConfig", "PermuterConfig",
    "Segmenter", "SegmenterConfig",
    # sampling
    "sample", "stream", "StreamEvent", "sample_sliding_window", "window_plan", "WindowPlan", "make_picker", "split_picker",
    "prepare_for_sampling", "drop_sampling_copies", "quantize_gpt", "sampling_precision", "SamplingPrecision", "SAMPLING_PRECISIONS",
    # the products sampling uses on this host (calibration.py)
    "MATMULS", "MatmulChoice", "choose_matmul",
    # intra-op threads per part of a generation (threads.py)
    "ThreadPolicy", "parse_threads",
    # training precision
    "PRECISIONS", "resolve_precision", "autocast_for", "cpu_has_bf16",
    # pixels
    "to_image",
    # the host figures were measured on
    "host_info", "host_line",
]

# Training-only parts (data, losses, discriminator, perceptual distances, evaluation, resume) live in
# taming_core.train; `tc.<name>` imports that module on first use, so `import taming_core` stays light.
def __getattr__(name: str):
    # a submodule (`from . import labels`) is for the import system to load, not a training name
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is None:
        train = importlib.import_module(f"{__name__}.train")
        if name in train.__all__:
            return getattr(train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(importlib.import_module(f"{__name__}.train").__all__))


# Condition maps from plain images and segmentation label names/colours (app, data, evaluation).
from . import condition_maps, labels  # noqa: E402

__all__ += ["condition_maps", "labels"]
