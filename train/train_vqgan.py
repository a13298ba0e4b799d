"""Train a VQGAN -- or a condition-stage VQ model on segmentation, depth or edge maps -- on a folder of images.

    python train/train_vqgan.py --preset cpu --data photos/ --out runs/vq      # a model a 2-core CPU trains
    python train/train_vqgan.py --preset gpu --data photos/ --out runs/vq      # the paper's f16 model, 256 px
    torchrun --nproc_per_node 4 train/train_vqgan.py --data photos/ --out runs/vq      # DDP, one GPU each
    python train/train_vqgan.py --data sflckr/images --kind segmentation data.n_labels=182 --out runs/seg
    python train/train_vqgan.py --config run.yaml loss.disc_start=5000 model.n_embed=512 --resume
    python train/train_vqgan.py --data photos/ --out runs/dec --size 128 init_from=checkpoints/vqgan \
        train_only=decoder loss.discriminator=projected loss.diffaug=color,translation,cutout loss.disc_start=0

Every default is in `TrainConfig` below; `--preset` (cpu, gpu, tiny: tests), `--config` (a yaml of the same
fields) and `key=value` overrides are merged over it in that order, then the flags. An existing run folder is
never restarted: `--resume` continues it, `--force` starts over. Ctrl-C (or SIGTERM) saves a checkpoint at the
current step and exits; `--resume` continues from there. Logs: log.jsonl and <out>/tensorboard/.
Loss: L1 + perceptual + patch-GAN (losses.py); the release weights (`<out>/model`, `tc.load_model`) are written
with every checkpoint, and once more as `<out>/model-before-gan` on the step before the GAN terms switch on.
`init_from=` starts from a released first stage (its shape replaces `model`); `train_only=decoder` then trains
only the decoder (and post_quant_conv) with the encoder, quant_conv and codebook frozen, so every image keeps
its codes and transformers trained on them stay valid: a sharper decoder for codes we already have.
Steps: setup, data, models, optimizers, loop (generator step, discriminator step), save.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import taming_core as tc
from init_from import TRAIN_ONLY, frozen_parts, generator_groups, init_config, released_stage


def default_model() -> tc.VQGANConfig:
    # The paper's f16 VQGAN with K = 1024 (the original imagenet_vqgan.yaml). beta weighs the commitment
    # term as in the paper's Eq. 4; model.beta_on=codebook is the original code's legacy placement.
    # Codebook options: model.l2_normalize=true, model.quantizer=ema, model.dead_code_threshold=0.01.
    return tc.VQGANConfig(ddconfig=tc.AutoencoderConfig(ch=128, ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2,
                                                         attn_resolutions=[16], resolution=256, z_channels=256),
                          n_embed=1024, embed_dim=256, beta_on="encoder")


@dataclass
class TrainConfig:
    data: tc.DataConfig = field(default_factory=tc.DataConfig)
    model: tc.VQGANConfig = field(default_factory=default_model)
    loss: tc.VQGANLossConfig = field(default_factory=tc.VQGANLossConfig)
    out: str = "runs/vqgan"
    steps: int = 100_000
    batch_size: int = 8  # per process
    base_lr: float = 4.5e-6  # lr = base_lr * batch_size * world_size, as the original main.py
    # The discriminator's rate as a multiple of the generator's (1 = the original; a fine-tuned decoder against a
    # discriminator trained from scratch wants a larger one: the two time-scale rule, Heusel et al. 2017)
    disc_lr_scale: float = 1.0
    # "constant" (the original) | "cosine": linear warmup over warmup_steps, then cosine decay to
    # min_lr_ratio * lr at the last step (both networks)
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.05
    betas: tuple[float, float] = (0.5, 0.9)
    seed: int = 23
    num_workers: int = 2
    log_every: int = 50  # losses and codebook usage to <out>/log.jsonl (and the progress bar)
    image_every: int = 1000  # reconstruction grid <out>/images/step-*.png
    save_every: int = 1000  # resume checkpoint + release weights
    keep_last: int = 3
    # "auto": bf16 autocast on CUDA and on CPUs with bf16 units (AVX-512 bf16 / AMX), else fp32 (precision.py)
    precision: str = "auto"
    channels_last: bool = False  # NHWC memory layout for the networks and batches
    max_minutes: float = 0.0  # > 0: stop (and save) after this much training wall time; --resume continues
    # Held-out images (a fixed share, none below 1) whose centre crops give val_loss (L1 or CE + perceptual)
    # every eval_every steps; the weights of the lowest so far are kept as <out>/model-best (with keep_best)
    val_fraction: float = 0.05
    eval_every: int = 1000
    keep_best: bool = True
    ema: float = 0.0  # > 0: keep an EMA of the weights with this decay (e.g. 0.999); train/release.py --ema
    grad_accum: int = 1  # batches per optimiser step (effective batch: batch_size * grad_accum * processes)
    tensorboard: bool = True  # event files under <out>/tensorboard/ besides log.jsonl
    # A released first stage (folder or file for tc.load_model) to start from; its config replaces `model`.
    init_from: Optional[str] = None
    # "all" | "decoder": encoder, quant_conv and codebook frozen (needs init_from), codes unchanged
    train_only: str = "all"
    # With init_from: add per-pixel noise inputs to the donor's decoder (model.ddconfig.noise; strengths
    # start at 0, so the first step decodes as the donor does)
    decoder_noise: bool = False
    # The noise strengths' learning rate as a multiple of the decoder's (they start at 0 and must grow to matter
    # within a fine-tune at a small learning rate)
    noise_lr_scale: float = 1.0


def preset_tiny() -> dict:
    """Seconds per run on a CPU: 16x16 crops, a 2-level autoencoder, the GAN on from step 2."""
    return {"model": {"n_embed": 32, "embed_dim": 8,
                      "ddconfig": {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
                                   "resolution": 16, "z_channels": 8}},
            "data": {"size": 16}, "loss": {"disc_start": 2, "disc_ramp": 2, "disc_layers": 2, "disc_ndf": 16},
            "steps": 6, "batch_size": 2, "base_lr": 1e-4, "num_workers": 0, "log_every": 1, "image_every": 3,
            "save_every": 3, "tensorboard": False}  # (TensorBoard's import alone costs a test a second)


def preset_cpu() -> dict:
    """A first stage a 2-core CPU trains usefully in hours: the bundled checkpoints/vqgan's shape (f8: 128 px ->
    16x16 codes, K = 1024 unit-length codes of 16 dims, widths 64-128, no attention), 8 crops of 128 px per
    step, cosine schedule, the patch-GAN over the last 30%; log every 5 steps, sample images every 50."""
    return {"model": {"n_embed": 1024, "embed_dim": 16, "l2_normalize": True, "dead_code_threshold": 0.3,
                      "ddconfig": {"ch": 64, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 1, "attn_resolutions": [],
                                   "z_channels": 64}},
            "data": {"size": 128}, "loss": {"disc_start": 3500, "disc_ramp": 500, "disc_weight": 0.5},
            "steps": 5000, "batch_size": 8, "base_lr": 2e-5, "lr_schedule": "cosine", "warmup_steps": 100,
            "num_workers": 2, "log_every": 5, "image_every": 50, "eval_every": 250, "save_every": 250}


def preset_gpu() -> dict:
    """The paper's first stage (f16, K = 1024, widths 128-512, attention at 16x16: the original
    imagenet_vqgan.yaml) on 256 px crops, the GAN from step 30k, as the original's configs."""
    return {"model": OmegaConf.to_container(OmegaConf.structured(default_model())), "data": {"size": 256},
            "loss": {"disc_start": 30_000}, "steps": 100_000, "batch_size": 8, "base_lr": 4.5e-6,
            "num_workers": 8, "log_every": 50, "image_every": 1000, "eval_every": 1000, "save_every": 1000}


PRESETS = {"tiny": preset_tiny, "cpu": preset_cpu, "gpu": preset_gpu}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. loss.disc_start=5000")
    ap.add_argument("--data", help="folder of training images (recursive: jpg, png, webp)")
    ap.add_argument("--out", help="run folder: checkpoints/, model/, images/, log.jsonl, config.yaml")
    ap.add_argument("--size", type=int, help="crop side (also the model's training resolution)")
    ap.add_argument("--steps", type=int, help="total optimisation steps")
    ap.add_argument("--batch-size", type=int, help="batch size per process")
    ap.add_argument("--kind", choices=["image", "segmentation", "depth", "edges"],
                    help="what the model encodes (maps are read from data.maps)")
    ap.add_argument("--disc-start", type=int, help="step at which the discriminator switches on")
    ap.add_argument("--config", help="yaml with TrainConfig fields")
    ap.add_argument("--preset", choices=sorted(PRESETS),
                    help="named settings: cpu (a model a 2-core CPU trains), gpu (the paper's), tiny (tests)")
    ap.add_argument("--resume", nargs="?", const="latest",
                    help="continue a run: a checkpoint file, a run folder, or nothing (latest in --out)")
    ap.add_argument("--force", action="store_true", help="start over in an --out that holds a run (its "
                    "checkpoints, weights and log are removed)")
    return tc.resume_flag_fixed(ap.parse_intermixed_args(argv))  # overrides may stand between flags


def layers_of(args: argparse.Namespace, saved: dict | None = None) -> list:
    return [saved, PRESETS[args.preset]() if args.preset else None, args.config, args.overrides]


def run_out(args: argparse.Namespace) -> str:
    """The --out of the run to resume (flags, overrides, --config or preset), before the checkpoint is read."""
    return tc.merge_run_config(TrainConfig, layers_of(args), {"out": args.out}).out


def build_config(args: argparse.Namespace, saved: dict | None = None) -> TrainConfig:
    """Defaults <- saved run config (resume) <- preset <- --config <- overrides <- flags; every check."""
    if saved is not None and "val_fraction" not in saved:  # a run from before the split trains on every image
        saved = {**saved, "val_fraction": 0.0}
    layers = layers_of(args, saved)
    flags = {"data.root": args.data, "out": args.out, "data.size": args.size, "steps": args.steps,
             "batch_size": args.batch_size, "data.kind": args.kind, "loss.disc_start": args.disc_start}
    cfg = tc.merge_run_config(TrainConfig, layers, flags)
    tc.absolute_paths(cfg, ("data.root", "data.maps", "out", "init_from", "loss.lpips_weights",
                            "loss.perceptual_weights"))
    tc.check_run_numbers(cfg, positive=("steps", "batch_size", "log_every", "image_every", "save_every",
                                        "eval_every", "grad_accum", "data.size"), non_negative=("keep_last",))
    if not 0 <= cfg.val_fraction < 1 or not 0 <= cfg.ema < 1:
        raise tc.ConfigError(f"val_fraction and ema must lie in [0, 1), got {cfg.val_fraction} and {cfg.ema}")
    if cfg.lr_schedule not in ("constant", "cosine"):
        raise tc.ConfigError(f"lr_schedule must be 'constant' or 'cosine', got {cfg.lr_schedule!r}")
    if cfg.disc_lr_scale <= 0 or cfg.noise_lr_scale <= 0:
        raise tc.ConfigError(f"disc_lr_scale and noise_lr_scale must be > 0, got {cfg.disc_lr_scale} and "
                             f"{cfg.noise_lr_scale}")
    if cfg.train_only not in TRAIN_ONLY:
        raise tc.ConfigError(f"train_only must be one of {TRAIN_ONLY}, got {cfg.train_only!r}")
    if cfg.train_only == "decoder" and not cfg.init_from:
        raise tc.ConfigError("train_only=decoder keeps the encoder and codebook as they are: it needs "
                             "init_from=<a released first stage>")
    if cfg.decoder_noise and not cfg.init_from:
        raise tc.ConfigError("decoder_noise adds noise inputs to a released decoder (init_from=); for a new "
                             "model set model.ddconfig.noise=true")
    if cfg.init_from:
        cfg.model = init_config(cfg.init_from)
        cfg.model.ddconfig.noise = cfg.model.ddconfig.noise or cfg.decoder_noise
    try:  # the loss options, before any data or model is touched
        tc.VQGANLoss.check_config(cfg.loss)
    except ValueError as e:
        raise tc.ConfigError(str(e)) from None
    # The model follows the data: resolution = crop side; channels and loss from the kind of map.
    m, kind = cfg.model, cfg.data.kind
    if not cfg.init_from:  # a donor keeps its resolution: with attention it decides where the layers sit
        m.ddconfig.resolution = cfg.data.size
    m.image_key = kind
    channels = {"image": 3, "depth": 1, "edges": 1, "segmentation": cfg.data.n_labels}[kind]
    if kind == "segmentation":
        if not cfg.data.n_labels:
            raise tc.ConfigError("segmentation needs the number of labels: data.n_labels=182 (for example)")
        m.colorize_nlabels = cfg.data.n_labels
        if cfg.loss.reconstruction == "l1":
            cfg.loss.reconstruction = "bce"  # as the original VQSegmentationModel (BCELossWithQuant)
    cfg.data.with_image = kind == "image" or (kind == "edges" and cfg.data.edges == "canny")
    m.ddconfig.in_channels = m.ddconfig.out_ch = channels
    check_shapes(cfg)
    if cfg.lr_schedule == "cosine" and cfg.warmup_steps >= cfg.steps:
        print(f"warning: warmup_steps={cfg.warmup_steps} is not below --steps {cfg.steps}: the rate never "
              "reaches its peak")
    return cfg


def check_shapes(cfg: TrainConfig) -> None:
    """The model config and the crop side, before any data or weights are touched."""
    try:
        tc.config_checks.check_config("vqgan", cfg.model)
    except tc.ConfigError as e:
        raise tc.ConfigError(f"model: {e}") from None
    factor = 2 ** (len(cfg.model.ddconfig.ch_mult) - 1)
    if cfg.data.size % factor:
        raise tc.ConfigError(f"--size {cfg.data.size} is not a multiple of the model's downsampling factor "
                             f"{factor}: use {max(factor, cfg.data.size // factor * factor)} or "
                             f"{-(-cfg.data.size // factor) * factor}")
    uses_disc = cfg.loss.reconstruction == "l1" and cfg.loss.disc_factor > 0  # VQGANLoss.uses_discriminator
    if uses_disc and disc_grid(cfg) < 1:
        fix = "lower loss.disc_layers or raise --size" if cfg.loss.discriminator == "patch" else "raise --size"
        raise tc.ConfigError(f"the {cfg.loss.discriminator} discriminator needs crops larger than "
                             f"{cfg.data.size}: {fix}")


def disc_grid(cfg: TrainConfig) -> int:
    """Side of the discriminator's (coarsest) logit grid on one crop, without building its weights."""
    if cfg.loss.discriminator == "projected":
        return cfg.data.size // 32  # feature stride 16 at its deepest tap, halved by the head (discriminator.py)
    with torch.device("meta"):
        return tc.NLayerDiscriminator(cfg.model.ddconfig.out_ch, cfg.loss.disc_ndf,
                                      cfg.loss.disc_layers).patch_grid(cfg.data.size)


def lr_at(step: int, cfg: TrainConfig, peak: float) -> float:
    """The learning rate of `step`: constant (the original), or linear warmup then cosine decay."""
    if cfg.lr_schedule == "constant":
        return peak
    return tc.warmup_cosine(step, peak, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)


def model_input(batch: dict, kind: str, n_labels: int | None, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch -> (x, target): x (B, C, S, S) for the encoder; target = x, or label ids (B, S, S)."""
    if kind == "segmentation":
        labels = batch["segmentation"].to(device)  # (B, S, S)
        return F.one_hot(labels, n_labels).permute(0, 3, 1, 2).float(), labels  # (B, K, S, S)
    x = batch[kind].to(device)
    return x, x


def preview(model: tc.VQGAN, x: torch.Tensor, x_hat: torch.Tensor, kind: str) -> torch.Tensor:
    """Inputs above reconstructions, (2B, 3 or 1, S, S) in [-1, 1]; label maps through `colorize`."""
    if kind == "segmentation":
        k = x.shape[1]
        x_hat = F.one_hot(x_hat.argmax(1), k).permute(0, 3, 1, 2).float()
        return torch.cat([model.to_rgb(x), model.to_rgb(x_hat)])
    return torch.cat([x, x_hat.clamp(-1, 1)])


REQUIRED = ("step", "config", "model", "usage", "disc", "opt_g", "opt_d", "rng")


def check_resume(cfg: TrainConfig, ckpt: dict, path: Path) -> None:
    """The checkpoint fits this run's model (shapes compared on the meta device: nothing is allocated)."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "copying into a meta parameter is a no-op": only shapes are compared
        model = tc.VQGAN(cfg.model)
        tc.load_resume_part(model, ckpt["model"], "model", path)
        for part in frozen_parts(model, cfg.train_only):
            part.requires_grad_(False)
        opt_g = torch.optim.Adam(generator_groups(model, 1.0))
        tc.load_resume_part(opt_g, ckpt["opt_g"], "generator optimizer state", path)
        if cfg.loss.discriminator == "patch":  # (the projected one reads its backbone's weights when built)
            disc = tc.NLayerDiscriminator(cfg.model.ddconfig.out_ch, cfg.loss.disc_ndf, cfg.loss.disc_layers)
            tc.load_resume_part(disc, ckpt["disc"], "discriminator", path)
            tc.load_resume_part(torch.optim.Adam(disc.parameters()), ckpt["opt_d"], "discriminator optimizer "
                                "state", path)
    usage = ckpt["usage"]
    expected = tuple(model.quantize.usage.shape) if hasattr(model.quantize, "usage") else None
    if not isinstance(usage, torch.Tensor) or (usage.numel() and tuple(usage.shape) != expected):
        raise tc.CheckpointError(f"{path}: usage must be the codebook's usage counts "
                                 f"({expected or 'an empty tensor'}), got {type(usage).__name__}")


class Split(torch.utils.data.Dataset):
    """`dataset` through `indices`: key (i, seed) -> dataset[(indices[i], seed)] (the training images)."""

    def __init__(self, dataset: tc.ImageFolder, indices: torch.Tensor):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return self.dataset[(int(self.indices[key[0]]), key[1])]


def main(argv=None) -> Path:
    args = parse_args(argv)
    # ---- setup: config (every check before any data, weights or folder is touched), processes, run folder ---
    ckpt, resumed_from = None, None
    if args.resume:
        resumed_from = tc.resolve_resume(args.resume, run_out(args))
        ckpt = tc.load_checkpoint(resumed_from, required=REQUIRED)
    cfg = build_config(args, ckpt["config"] if ckpt else None)
    if ckpt:
        check_resume(cfg, ckpt, resumed_from)
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    cuda = torch.cuda.is_available()
    if distributed:
        dist.init_process_group("nccl" if cuda else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # fixed crop size: let cuDNN pick its fastest convolutions
    main_process = rank == 0
    out = Path(cfg.out)
    # the folder is locked for this run; a fresh start into a folder holding a run is refused, untouched
    lock = tc.claim_run_dir(out, resume=ckpt is not None, force=args.force) if main_process else None
    if ckpt and main_process:
        print(f"resuming from step {ckpt['step']}, {resumed_from}")
    torch.manual_seed(cfg.seed + rank)
    precision = tc.resolve_precision(cfg.precision, device)
    autocast = tc.autocast_for(precision, device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    kind, n_labels = cfg.data.kind, cfg.data.n_labels
    policy = tc.parse_policy(cfg.loss.diffaug)
    augment = (lambda t: tc.diff_augment(t, policy)) if policy else (lambda t: t)  # noqa: E731

    # ---- data ---------------------------------------------------------------------------------------------
    dataset = tc.ImageFolder(cfg.data)  # unreadable files are dropped (and counted) here
    n = len(dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    n_val = min(n - 1, round(n * cfg.val_fraction)) if n > 1 else 0  # a fixed split: the same on resume
    val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
    start = ckpt["step"] if ckpt else 0
    per_step = cfg.batch_size * cfg.grad_accum
    sampler = tc.ResumableSampler(len(train_idx), cfg.seed, rank, world, start=start * per_step)
    loader = torch.utils.data.DataLoader(Split(dataset, train_idx), batch_size=cfg.batch_size, sampler=sampler,
                                         num_workers=cfg.num_workers, pin_memory=cuda,
                                         persistent_workers=cfg.num_workers > 0, worker_init_fn=tc.ignore_sigint)
    shown = (val_idx if n_val else train_idx)[:8]  # centre crops; held-out images when there are some
    fixed = torch.utils.data.default_collate([dataset[int(i)] for i in shown])

    # ---- models -------------------------------------------------------------------------------------------
    vqgan = tc.VQGAN(cfg.model).to(device, memory_format=memory_format)
    loss_fn = tc.VQGANLoss(cfg.loss).to(device, memory_format=memory_format)
    disc = tc.build_discriminator(cfg.loss.discriminator, cfg.model.ddconfig.out_ch, cfg.loss.disc_ndf,
                                  cfg.loss.disc_layers).to(device, memory_format=memory_format)
    if ckpt:
        tc.load_resume_part(vqgan, ckpt["model"], "model", resumed_from)
        tc.load_resume_part(disc, ckpt["disc"], "discriminator", resumed_from)
        if ckpt["usage"].numel():
            vqgan.quantize.usage.copy_(ckpt["usage"])  # running code usage of the dead-code restart
        loss_fn.load_resume_state(ckpt.get("loss", {}))
    elif cfg.init_from:
        state = released_stage(cfg.init_from).state_dict()
        fresh = {k: v for k, v in vqgan.state_dict().items() if k.endswith(".noise.strength") and k not in state}
        tc.load_state_dict_strict(vqgan, {**state, **fresh})  # noise inputs the donor lacks start at 0
    frozen = frozen_parts(vqgan, cfg.train_only)
    for part in frozen:
        part.requires_grad_(False)
    ema = tc.EMA(vqgan, cfg.ema) if cfg.ema > 0 else None
    if ema and ckpt and "ema" in ckpt:
        tc.load_resume_part(ema, ckpt["ema"], "EMA", resumed_from)
    elif ema and ckpt and main_process:
        print("ema: the checkpoint has no EMA weights; the average starts from its weights")

    def train_mode() -> None:
        vqgan.train()
        for part in frozen:
            part.eval()
    vq_ddp = DDP(vqgan, device_ids=[local_rank] if cuda else None) if distributed else vqgan
    disc_ddp = DDP(disc, device_ids=[local_rank] if cuda else None) if distributed else disc

    # ---- optimizers ---------------------------------------------------------------------------------------
    lr = cfg.base_lr * per_step * world
    opt_g = torch.optim.Adam(generator_groups(vqgan, cfg.noise_lr_scale), lr=lr, betas=tuple(cfg.betas))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr * cfg.disc_lr_scale, betas=tuple(cfg.betas))
    if ckpt:
        tc.load_resume_part(opt_g, ckpt["opt_g"], "generator optimizer state", resumed_from)
        tc.load_resume_part(opt_d, ckpt["opt_d"], "discriminator optimizer state", resumed_from)
    if main_process:
        n_params = sum(p.numel() for p in vqgan.parameters()) / 1e6
        n_train = sum(p.numel() for p in vqgan.parameters() if p.requires_grad) / 1e6
        unreadable = f" ({len(dataset.unreadable)} unreadable skipped)" if dataset.unreadable else ""
        held = f", {n_val} held out" if n_val else ""
        trained = f" ({n_train:.1f}M trained: {cfg.train_only})" if cfg.train_only != "all" else ""
        print(f"{n} images{unreadable}{held}, {n_params:.1f}M parameters{trained}, lr {lr:.2e}, {world} "
              f"process(es) on {device.type} ({precision}), steps {start}..{cfg.steps}")
        with tc.writing(out / "config.yaml", out):
            tc.save_run_config(cfg, out)
    runlog = tc.RunLog(out, main_process, purge_step=start + 1 if ckpt else None, tensorboard=cfg.tensorboard)

    def save(step: int) -> None:
        rngs = tc.gather_rng_states()  # collective: every rank
        if main_process:
            state = {"step": step, "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
                     "model": vqgan.state_dict(), "usage": vqgan.quantize.usage if hasattr(vqgan.quantize, "usage")
                     else torch.zeros(0), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(),
                     "opt_d": opt_d.state_dict(), "loss": loss_fn.state_dict_for_resume(), "rng": rngs,
                     **({"ema": ema.state_dict()} if ema else {})}
            tc.save_checkpoint(state, out, step, cfg.keep_last)
            with tc.writing(out / "model", out):
                tc.save_model(vqgan, out / "model")

    @torch.no_grad()
    def validate() -> dict[str, float]:
        """Held-out centre crops: mean reconstruction and perceptual terms, val_loss = their weighted sum."""
        vqgan.eval()
        total = torch.zeros(2)
        for i in range(0, n_val, cfg.batch_size):
            batch = torch.utils.data.default_collate([dataset[int(j)] for j in val_idx[i:i + cfg.batch_size]])
            x, target = model_input(batch, kind, n_labels, device)
            with autocast:
                x_hat, q = vqgan(x.contiguous(memory_format=memory_format))
                g = loss_fn.generator(target, x_hat, q.loss, -1)  # step -1: before any GAN term
            total += len(x) * torch.stack([g.reconstruction, g.perceptual]).float().cpu()
        train_mode()
        rec, perc = (total / n_val).tolist()
        return {"val_loss": rec + cfg.loss.perceptual_weight * perc, "val_rec": rec, "val_perc": perc}

    # ---- loop ---------------------------------------------------------------------------------------------
    train_mode(), disc.train()
    counts = torch.zeros(vqgan.n_codes, device=device)  # code histogram of the log interval
    sums: dict[str, torch.Tensor] = {}  # summed over the log interval, on the device (no sync per step)
    n_sums = n_steps = 0
    bar = tqdm(total=cfg.steps, initial=start, disable=not main_process, dynamic_ncols=True)
    batches = iter(loader)  # draws a worker seed from the RNG: restore the saved states after it
    if ckpt and len(ckpt["rng"]) == world:
        tc.set_rng_state(ckpt["rng"][rank])
    elif ckpt and main_process:
        print(f"resuming with {world} processes instead of {len(ckpt['rng'])}: RNG streams start afresh")
    best_path = out / "model-best"
    best = tc.best_so_far(best_path, "val_loss")  # a resumed run keeps its best so far
    stop = tc.StopRequest().install()  # Ctrl-C / SIGTERM: finish the step, save, exit
    step = start
    t_start = t_log = time.perf_counter()
    while step < cfg.steps:
        if stop.due(step, time.perf_counter() - t_start, cfg.max_minutes, device, main_process):
            save(step)  # every rank stops at the same step
            break
        for group in opt_g.param_groups:
            group["lr"] = lr_at(step, cfg, lr) * group.get("lr_scale", 1.0)  # (not in older checkpoints)
        for group in opt_d.param_groups:
            group["lr"] = lr_at(step, cfg, lr) * cfg.disc_lr_scale
        gan_on = loss_fn.uses_discriminator and tc.disc_factor_at(step, cfg.loss) > 0
        opt_g.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)
        for _ in range(cfg.grad_accum):  # gradients of grad_accum batches, then one update of each network
            x, target = model_input(next(batches), kind, n_labels, device)
            x = x.contiguous(memory_format=memory_format)
            # generator step: D is only evaluated (its parameters get no gradient from this step). A
            # discriminator with BatchNorm (the patch one) sees real and reconstructed images in one batch here as
            # in its own step, so its statistics -- and hence the function G is trained against -- are the same in
            # both steps. Every image D sees goes through the same DiffAugment policy (loss.diffaug), in both.
            disc.requires_grad_(False)
            with autocast:
                x_hat, q = vq_ddp(x)  # (B, C, S, S), Quantized
                logits_fake = None
                if gan_on:  # plain module (not DDP): D's gradients are synchronised in its own step
                    if disc.batch_statistics:
                        logits_fake = tc.split_batch(disc(augment(torch.cat([x, x_hat]))))[1]
                    else:
                        logits_fake = disc(augment(x_hat))  # (B, 1, H_p, W_p), or a list over scales
                g = loss_fn.generator(target, x_hat, q.loss, step, logits_fake, vqgan.last_layer())
            # discriminator step on real and reconstructed images in one batch (one DDP forward per backward)
            disc.requires_grad_(True)
            d_total = d_real = d_fake = torch.zeros((), device=device)
            if gan_on:
                with autocast:
                    logits_real, logits_fake = tc.split_batch(disc_ddp(augment(torch.cat([x, x_hat.detach()]))))
                    d = loss_fn.discriminator(logits_real, logits_fake, step)
                d_total, d_real, d_fake = d.total, d.logits_real, d.logits_fake
            # stop on NaN/inf before any weight changes: the last checkpoint stays the last good state
            bad = (~torch.isfinite(torch.stack([g.total.detach(), d_total.detach()]))).any().float()
            if distributed:
                dist.all_reduce(bad)
            if bad > 0:
                raise SystemExit(f"non-finite loss at step {step} (generator {float(g.total):.4g}, discriminator "
                                 f"{float(d_total):.4g}); nothing of this step was applied. Last good checkpoint: "
                                 f"{tc.latest_checkpoint(out) or resumed_from}. Lower base_lr or raise "
                                 "loss.disc_start, then --resume.")
            (g.total / cfg.grad_accum).backward()
            if gan_on:
                (d.total / cfg.grad_accum).backward()
            counts += torch.bincount(q.indices.flatten(), minlength=vqgan.n_codes)
            scalars = {"loss": g.total, "rec": g.reconstruction, "perc": g.perceptual, "vq": g.codebook,
                       "g": g.gan, "lambda": g.adaptive_weight, "d": d_total, "d_real": d_real, "d_fake": d_fake}
            for k, v in scalars.items():
                sums[k] = sums.get(k, 0.0) + v.detach().float()
            n_sums += 1
        opt_g.step()
        if gan_on:
            opt_d.step()
        if ema:
            ema.update(vqgan)
        step += 1
        n_steps += 1
        if main_process and loss_fn.uses_discriminator and step == cfg.loss.disc_start:
            with tc.writing(out / "model-before-gan", out):  # the GAN phase starts next: keep what came before
                tc.save_model(vqgan, out / "model-before-gan")

        # ---- logging, images, validation, checkpoints ----
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            packed = torch.stack([sums[k] for k in scalars]) / n_sums
            if distributed:
                dist.all_reduce(packed)
                dist.all_reduce(counts)
            logs = {k: float(v) / world for k, v in zip(scalars, packed)}
            usage = tc.usage_from_counts(counts)
            now = time.perf_counter()
            logs.update(disc_factor=g.disc_factor, codes_used=usage.fraction_used, perplexity=usage.perplexity,
                        dead_codes=usage.dead_codes, lr=opt_g.param_groups[0]["lr"],
                        sec_per_step=(now - t_log) / n_steps)
            t_log = now
            if main_process:
                bar.set_postfix({k: f"{logs[k]:.3g}" for k in ("rec", "perc", "g", "d", "codes_used")})
                runlog.scalars(step, logs)
            counts.zero_()
            sums.clear()
            n_sums = n_steps = 0
        if main_process and (step % cfg.image_every == 0 or step == cfg.steps):
            vqgan.eval()
            with torch.no_grad(), autocast:
                fx, _ = model_input(fixed, kind, n_labels, device)
                rec, _ = vqgan(fx)
            grid = out / "images" / f"step-{step:08d}.png"
            with tc.writing(grid, out):
                tc.save_grid(preview(vqgan, fx, rec.float(), kind), grid, nrow=len(fx))
            runlog.image("reconstructions", step, grid)
            train_mode()
        if main_process and n_val and (step % cfg.eval_every == 0 or step == cfg.steps):
            val = validate()
            runlog.scalars(step, val)
            if cfg.keep_best and val["val_loss"] < best:
                best = val["val_loss"]
                tc.save_best(vqgan, best_path, out, step, val_loss=best)
        if step % cfg.save_every == 0 or step == cfg.steps:
            save(step)
    stop.restore()
    bar.close()
    runlog.close()
    if len(dataset.skipped) and main_process:
        print(f"skipped {len(dataset.skipped)} unreadable file(s) in this process")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    if lock:
        lock.release()
    if stop.requested:
        if main_process:
            print(f"{stop.requested}: stopped at step {step}, checkpoint {tc.latest_checkpoint(out)} saved; "
                  "--resume continues from there")
        raise SystemExit(stop.exit_status)
    if main_process:
        print(f"done: {out / 'model'} (load with taming_core.load_model)")
    return out / "model"


if __name__ == "__main__":
    tc.run_main(main)  # a bad config, checkpoint or data folder: one line "error: ...", exit status 2
