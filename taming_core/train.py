"""Training-only parts: data, losses, discriminator, perceptual distances, HED edges, evaluation, resumable runs.

`import taming_core` does not load this module (the app never needs it); the names below are also reachable
as `taming_core.<name>`, which imports this module on first use.
"""
from .data import (DataConfig, DataError, ImageFolder, ResumableSampler, WithRandomCrops, list_images,
                   pil_to_rgb, save_grid)
from .diffaug import diff_augment, parse_policy
from .discriminator import NLayerDiscriminator, ProjectedDiscriminator, build_discriminator, split_batch
from .hed import HED, hed_edges, load_hed
from .evaluation import (InceptionFeatures, ReconstructionReport, bits_per_token, confusion_matrix, edge_fscore,
                         evaluate_reconstructions, folder_features, frechet_distance, kernel_inception_distance,
                         psnr, segmentation_scores, sharpness, sharpness_ratio, specks, ssim,
                         usage_from_counts)
from .losses import (DiscriminatorLoss, GeneratorLoss, VQGANLoss, VQGANLossConfig, adaptive_weight,
                     disc_factor_at, hinge_d_loss, segmentation_loss, vanilla_d_loss)
from .lpips import LPIPS, load_lpips
from .mobilenet import MobileNetV2Features, load_mobilenet_v2
from .perceptual import PerceptualDistance
from .schedule import warmup_cosine
from .resume import (RUN_ERRORS, check_run_numbers, gather_rng_states, latest_checkpoint, list_checkpoints,
                     load_checkpoint, load_resume_part, merge_run_config, resolve_resume, resume_flag_fixed,
                     run_main, save_checkpoint, set_rng_state)
from .run_dir import (RunDirError, RunLock, SaveError, absolute_paths, best_so_far, save_best, writing)
from .run_dir import claim as claim_run_dir, save_config as save_run_config
from .run_log import RunLog
from .interrupt import StopRequest, agree, ignore_sigint
from .ema import EMA
from .codes_cache import (cache_key, cached_codes, check_stage_ids, encode_images, small_ints, stage_ids,
                          weights_sha256)

__all__ = [
    "DataConfig", "DataError", "ImageFolder", "ResumableSampler", "WithRandomCrops", "list_images", "save_grid",
    "pil_to_rgb",
    "NLayerDiscriminator", "ProjectedDiscriminator", "build_discriminator", "split_batch", "diff_augment",
    "parse_policy", "HED", "hed_edges", "load_hed", "InceptionFeatures", "ReconstructionReport",
    "bits_per_token", "confusion_matrix",
    "edge_fscore", "segmentation_scores",
    "evaluate_reconstructions", "folder_features", "frechet_distance", "kernel_inception_distance", "psnr", "ssim",
    "specks", "sharpness", "sharpness_ratio", "usage_from_counts",
    "DiscriminatorLoss", "GeneratorLoss", "VQGANLoss", "VQGANLossConfig", "adaptive_weight", "disc_factor_at",
    "hinge_d_loss", "segmentation_loss", "vanilla_d_loss", "MobileNetV2Features", "PerceptualDistance",
    "load_mobilenet_v2", "gather_rng_states", "latest_checkpoint", "list_checkpoints", "load_checkpoint",
    "resolve_resume", "save_checkpoint", "set_rng_state", "merge_run_config", "LPIPS", "load_lpips",
    "run_main", "RUN_ERRORS", "warmup_cosine",
    "check_run_numbers", "load_resume_part", "resume_flag_fixed", "RunDirError", "RunLock", "SaveError",
    "absolute_paths", "best_so_far", "save_best", "writing", "claim_run_dir", "save_run_config", "RunLog",
    "StopRequest", "agree", "ignore_sigint", "EMA", "cache_key", "cached_codes", "check_stage_ids",
    "encode_images", "small_ints", "stage_ids", "weights_sha256",
]
