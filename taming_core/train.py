"""Training-only parts: data, losses, discriminator, perceptual distances, evaluation, resumable runs.

`import taming_core` does not load this module (the app never needs it); the names below are also reachable
as `taming_core.<name>`, which imports this module on first use.
"""
from .data import DataConfig, DataError, ImageFolder, ResumableSampler, list_images, save_grid
from .discriminator import NLayerDiscriminator
from .evaluation import (InceptionFeatures, ReconstructionReport, bits_per_token, edge_fscore,
                         evaluate_reconstructions, folder_features, frechet_distance, kernel_inception_distance,
                         psnr, specks, ssim, usage_from_counts)
from .losses import (DiscriminatorLoss, GeneratorLoss, VQGANLoss, VQGANLossConfig, adaptive_weight,
                     disc_factor_at, hinge_d_loss, segmentation_loss, vanilla_d_loss)
from .lpips import LPIPS, load_lpips
from .perceptual import MobileNetV2Features, PerceptualDistance, load_mobilenet_v2
from .schedule import warmup_cosine
from .resume import (RUN_ERRORS, gather_rng_states, latest_checkpoint, list_checkpoints, load_checkpoint,
                     merge_run_config, resolve_resume, run_main, save_checkpoint, set_rng_state)

__all__ = [
    "DataConfig", "DataError", "ImageFolder", "ResumableSampler", "list_images", "save_grid",
    "NLayerDiscriminator", "InceptionFeatures", "ReconstructionReport", "bits_per_token", "edge_fscore",
    "evaluate_reconstructions", "folder_features", "frechet_distance", "kernel_inception_distance", "psnr", "ssim",
    "specks", "usage_from_counts",
    "DiscriminatorLoss", "GeneratorLoss", "VQGANLoss", "VQGANLossConfig", "adaptive_weight", "disc_factor_at",
    "hinge_d_loss", "segmentation_loss", "vanilla_d_loss", "MobileNetV2Features", "PerceptualDistance",
    "load_mobilenet_v2", "gather_rng_states", "latest_checkpoint", "list_checkpoints", "load_checkpoint",
    "resolve_resume", "save_checkpoint", "set_rng_state", "merge_run_config", "LPIPS", "load_lpips",
    "run_main", "RUN_ERRORS", "warmup_cosine",
]
