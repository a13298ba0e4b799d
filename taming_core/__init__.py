"""taming_core: VQGAN + transformer (Esser, Rombach, Ommer 2020), loading the original checkpoints.

Shape legend: B batch, C channels, H,W image, h,w latent grid, D code dim, K codebook size, L = h*w tokens,
L_c condition tokens, T context, E width, nh heads, hs head size, V vocab.
"""
from .autoencoder import AutoencoderConfig, Decoder, Encoder
from .checkpoint import (ConfigError, build_model, config_from_original, config_to_dict, load_model,
                         load_state_dict_strict, resolve_config, save_model)
from .conditioners import ConditionerConfig, Conditioner
from .gpt import GPT, GPTConfig, KVCache, LowBitLinear
from .net2net import Net2Net, Net2NetConfig
from .permuter import Permuter, PermuterConfig
from .quantizer import (CodebookUsage, EMAVectorQuantizer, GumbelQuantizer, Quantized, VectorQuantizer,
                        codebook_usage)
from .safe_unpickle import CheckpointError, UnsafeCheckpointError, safe_load
from .sampling import (WindowPlan, filter_logits, pick_token, quantize_gpt, sample, sample_sliding_window,
                       window_plan)
from .streaming import StreamEvent, stream
from .vqgan import VQGAN, VQGANConfig

__all__ = [
    "AutoencoderConfig", "Encoder", "Decoder", "VQGAN", "VQGANConfig", "Quantized", "VectorQuantizer",
    "GumbelQuantizer", "EMAVectorQuantizer", "CodebookUsage", "codebook_usage", "GPT", "GPTConfig", "KVCache",
    "Conditioner", "ConditionerConfig", "Permuter", "PermuterConfig", "Net2Net", "Net2NetConfig",
    "build_model", "load_model", "save_model", "resolve_config", "config_from_original", "config_to_dict",
    "load_state_dict_strict", "ConfigError", "CheckpointError", "UnsafeCheckpointError", "safe_load",
    "sample", "filter_logits", "pick_token", "sample_sliding_window", "window_plan", "WindowPlan", "stream",
    "StreamEvent", "quantize_gpt", "LowBitLinear",
]

# Training-only parts (issue 4): data, losses, discriminator, perceptual distance, evaluation, resume.
from .data import DataConfig, DataError, ImageFolder, ResumableSampler, list_images, save_grid
from .discriminator import NLayerDiscriminator
from .evaluation import (InceptionFeatures, ReconstructionReport, bits_per_token, edge_fscore,
                         evaluate_reconstructions, folder_features, frechet_distance, kernel_inception_distance,
                         psnr, ssim, usage_from_counts)
from .losses import (DiscriminatorLoss, GeneratorLoss, VQGANLoss, VQGANLossConfig, adaptive_weight,
                     disc_factor_at, hinge_d_loss, segmentation_loss, vanilla_d_loss)
from .lpips import LPIPS, load_lpips
from .perceptual import MobileNetV2Features, PerceptualDistance, load_mobilenet_v2
from .resume import (gather_rng_states, latest_checkpoint, list_checkpoints, load_checkpoint, merge_run_config,
                     resolve_resume, save_checkpoint, set_rng_state)

__all__ += [
    "DataConfig", "DataError", "ImageFolder", "ResumableSampler", "list_images", "save_grid",
    "NLayerDiscriminator", "InceptionFeatures", "ReconstructionReport", "bits_per_token", "edge_fscore",
    "evaluate_reconstructions", "folder_features", "frechet_distance", "kernel_inception_distance", "psnr", "ssim", "usage_from_counts",
    "DiscriminatorLoss", "GeneratorLoss", "VQGANLoss", "VQGANLossConfig", "adaptive_weight", "disc_factor_at",
    "hinge_d_loss", "segmentation_loss", "vanilla_d_loss", "MobileNetV2Features", "PerceptualDistance",
    "load_mobilenet_v2", "gather_rng_states", "latest_checkpoint", "list_checkpoints", "load_checkpoint",
    "resolve_resume", "save_checkpoint", "set_rng_state", "merge_run_config", "LPIPS", "load_lpips",
]

# Condition maps from plain images and segmentation label names/colours (app, data, evaluation).
from . import condition_maps, labels  # noqa: E402

__all__ += ["condition_maps", "labels"]
