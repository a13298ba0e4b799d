"""Train a VQGAN -- or a condition-stage VQ model on segmentation, depth or edge maps -- on a folder of images.

    python train/train_vqgan.py --data photos/ --out runs/vq --size 256 --steps 100000
    torchrun --nproc_per_node 4 train/train_vqgan.py --data photos/ --out runs/vq      # DDP, one GPU each
    python train/train_vqgan.py --data sflckr/images --kind segmentation data.n_labels=182 --out runs/seg
    python train/train_vqgan.py --config run.yaml loss.disc_start=5000 model.n_embed=512 --resume
    python train/train_vqgan.py --data photos/ --out runs/dec --size 128 init_from=checkpoints/vqgan \
        train_only=decoder loss.discriminator=projected loss.diffaug=color,translation,cutout loss.disc_start=0

Every default is in `TrainConfig` below; `--preset tiny` (tests), `--config` (a yaml of the same fields) and
`key=value` overrides are merged over it in that order, then the flags. Loss: L1 + perceptual + patch-GAN
(losses.py); the release weights (`<out>/model`, `tc.load_model`) are written with every checkpoint, and once more
as `<out>/model-before-gan` on the step before the GAN terms switch on.
`init_from=` starts from a released first stage (its shape replaces `model`); `train_only=decoder` then trains
only the decoder (and post_quant_conv) with the encoder, quant_conv and codebook frozen, so every image keeps
its codes and transformers trained on them stay valid: a sharper decoder for codes we already have.
Steps: setup, data, models, optimizers, loop (generator step, discriminator step), save.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import time
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
    # A released first stage (folder or file for tc.load_model) to start from; its config replaces `model`.
    init_from: Optional[str] = None
    # "all" | "decoder": encoder, quant_conv and codebook frozen (needs init_from), codes unchanged
    train_only: str = "all"


def preset_tiny() -> dict:
    """Seconds per run on a CPU: 16x16 crops, a 2-level autoencoder, the GAN on from step 2."""
    return {"model": {"n_embed": 32, "embed_dim": 8,
                      "ddconfig": {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
                                   "resolution": 16, "z_channels": 8}},
            "data": {"size": 16}, "loss": {"disc_start": 2, "disc_ramp": 2, "disc_layers": 2, "disc_ndf": 16},
            "steps": 6, "batch_size": 2, "base_lr": 1e-4, "num_workers": 0, "log_every": 1, "image_every": 3,
            "save_every": 3}


PRESETS = {"tiny": preset_tiny}


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
    ap.add_argument("--preset", choices=sorted(PRESETS), help="named settings (tiny: tests)")
    ap.add_argument("--resume", nargs="?", const="latest",
                    help="continue a run: a checkpoint file, a run folder, or nothing (latest in --out)")
    return ap.parse_intermixed_args(argv)  # key=value overrides may stand between flags


def build_config(args: argparse.Namespace, saved: dict | None = None) -> TrainConfig:
    """Defaults <- saved run config (resume) <- preset <- --config <- overrides <- flags."""
    layers = [saved, PRESETS[args.preset]() if args.preset else None, args.config, args.overrides]
    flags = {"data.root": args.data, "out": args.out, "data.size": args.size, "steps": args.steps,
             "batch_size": args.batch_size, "data.kind": args.kind, "loss.disc_start": args.disc_start}
    cfg = tc.merge_run_config(TrainConfig, layers, flags)
    if cfg.lr_schedule not in ("constant", "cosine"):
        raise tc.ConfigError(f"lr_schedule must be 'constant' or 'cosine', got {cfg.lr_schedule!r}")
    if cfg.disc_lr_scale <= 0:
        raise tc.ConfigError(f"disc_lr_scale must be > 0, got {cfg.disc_lr_scale}")
    if cfg.train_only not in TRAIN_ONLY:
        raise tc.ConfigError(f"train_only must be one of {TRAIN_ONLY}, got {cfg.train_only!r}")
    if cfg.train_only == "decoder" and not cfg.init_from:
        raise tc.ConfigError("train_only=decoder keeps the encoder and codebook as they are: it needs "
                             "init_from=<a released first stage>")
    if cfg.init_from:
        cfg.model = init_config(cfg.init_from)
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
            raise SystemExit("segmentation needs the number of labels: data.n_labels=182 (for example)")
        m.colorize_nlabels = cfg.data.n_labels
        if cfg.loss.reconstruction == "l1":
            cfg.loss.reconstruction = "bce"  # as the original VQSegmentationModel (BCELossWithQuant)
    cfg.data.with_image = kind == "image" or (kind == "edges" and cfg.data.edges == "canny")
    m.ddconfig.in_channels = m.ddconfig.out_ch = channels
    return cfg


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


def main(argv=None) -> Path:
    args = parse_args(argv)
    # ---- setup: processes, devices, config ----------------------------------------------------------------
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
    ckpt, resumed_from = None, None
    if args.resume:
        resumed_from = tc.resolve_resume(args.resume, build_config(args).out)  # build_config: to know --out
        ckpt = tc.load_checkpoint(resumed_from, required=("step", "config", "model", "disc", "opt_g", "opt_d"))
        if main_process:
            print(f"resuming from step {ckpt['step']}, {resumed_from}")
    cfg = build_config(args, ckpt["config"] if ckpt else None)
    out = Path(cfg.out)
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.structured(cfg), out / "config.yaml")
    torch.manual_seed(cfg.seed + rank)
    precision = tc.resolve_precision(cfg.precision, device)
    autocast = tc.autocast_for(precision, device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    kind, n_labels = cfg.data.kind, cfg.data.n_labels
    policy = tc.parse_policy(cfg.loss.diffaug)
    augment = (lambda t: tc.diff_augment(t, policy)) if policy else (lambda t: t)  # noqa: E731

    # ---- data ---------------------------------------------------------------------------------------------
    dataset = tc.ImageFolder(cfg.data)  # unreadable files are dropped (and counted) here
    start = ckpt["step"] if ckpt else 0
    sampler = tc.ResumableSampler(len(dataset), cfg.seed, rank, world, start=start * cfg.batch_size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler,
                                         num_workers=cfg.num_workers, pin_memory=cuda,
                                         persistent_workers=cfg.num_workers > 0)
    fixed = torch.utils.data.default_collate([dataset[i] for i in range(min(8, len(dataset)))])  # centre crops

    # ---- models -------------------------------------------------------------------------------------------
    vqgan = tc.VQGAN(cfg.model).to(device, memory_format=memory_format)
    loss_fn = tc.VQGANLoss(cfg.loss).to(device, memory_format=memory_format)
    disc = tc.build_discriminator(cfg.loss.discriminator, cfg.model.ddconfig.out_ch, cfg.loss.disc_ndf,
                                  cfg.loss.disc_layers).to(device, memory_format=memory_format)
    if loss_fn.uses_discriminator and disc.patch_grid(cfg.data.size) < 1:
        fix = "lower loss.disc_layers or raise --size" if cfg.loss.discriminator == "patch" else "raise --size"
        raise SystemExit(f"the {cfg.loss.discriminator} discriminator needs crops larger than {cfg.data.size}: {fix}")
    if ckpt:
        vqgan.load_state_dict(ckpt["model"])
        disc.load_state_dict(ckpt["disc"])
        if ckpt["usage"].numel():
            vqgan.quantize.usage.copy_(ckpt["usage"])  # running code usage of the dead-code restart
        loss_fn.load_resume_state(ckpt.get("loss", {}))
    elif cfg.init_from:
        tc.load_state_dict_strict(vqgan, released_stage(cfg.init_from).state_dict())
    frozen = frozen_parts(vqgan, cfg.train_only)
    for part in frozen:
        part.requires_grad_(False)

    def train_mode() -> None:
        vqgan.train()
        for part in frozen:
            part.eval()
    vq_ddp = DDP(vqgan, device_ids=[local_rank] if cuda else None) if distributed else vqgan
    disc_ddp = DDP(disc, device_ids=[local_rank] if cuda else None) if distributed else disc

    # ---- optimizers ---------------------------------------------------------------------------------------
    lr = cfg.base_lr * cfg.batch_size * world
    opt_g = torch.optim.Adam([p for p in vqgan.parameters() if p.requires_grad], lr=lr, betas=tuple(cfg.betas))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr * cfg.disc_lr_scale, betas=tuple(cfg.betas))
    if ckpt:
        opt_g.load_state_dict(ckpt["opt_g"])
        opt_d.load_state_dict(ckpt["opt_d"])
    if main_process:
        n_params = sum(p.numel() for p in vqgan.parameters()) / 1e6
        n_train = sum(p.numel() for p in vqgan.parameters() if p.requires_grad) / 1e6
        unreadable = f" ({len(dataset.unreadable)} unreadable skipped)" if dataset.unreadable else ""
        trained = f" ({n_train:.1f}M trained: {cfg.train_only})" if cfg.train_only != "all" else ""
        print(f"{len(dataset)} images{unreadable}, {n_params:.1f}M parameters{trained}, lr {lr:.2e}, {world} "
              f"process(es) on {device.type} ({precision}), steps {start}..{cfg.steps}")

    def save(step: int) -> None:
        rngs = tc.gather_rng_states()  # collective: every rank
        if main_process:
            state = {"step": step, "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
                     "model": vqgan.state_dict(), "usage": vqgan.quantize.usage if hasattr(vqgan.quantize, "usage")
                     else torch.zeros(0), "disc": disc.state_dict(), "opt_g": opt_g.state_dict(),
                     "opt_d": opt_d.state_dict(), "loss": loss_fn.state_dict_for_resume(), "rng": rngs}
            tc.save_checkpoint(state, out, step, cfg.keep_last)
            tc.save_model(vqgan, out / "model")

    # ---- loop ---------------------------------------------------------------------------------------------
    train_mode(), disc.train()
    counts = torch.zeros(vqgan.n_codes, device=device)  # code histogram of the log interval
    sums: dict[str, torch.Tensor] = {}  # summed over the log interval, on the device (no sync per step)
    n_sums = 0
    bar = tqdm(total=cfg.steps, initial=start, disable=not main_process, dynamic_ncols=True)
    batches = iter(loader)  # draws a worker seed from the RNG: restore the saved states after it
    if ckpt and len(ckpt["rng"]) == world:
        tc.set_rng_state(ckpt["rng"][rank])
    elif ckpt and main_process:
        print(f"resuming with {world} processes instead of {len(ckpt['rng'])}: RNG streams start afresh")
    def out_of_time(mine: bool) -> bool:  # every rank stops at the same step (save() is collective)
        flag = torch.tensor(float(mine), device=device)
        if distributed:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag)

    step = start
    t_start = t_log = time.perf_counter()
    while step < cfg.steps:
        if cfg.max_minutes > 0 and out_of_time(time.perf_counter() - t_start > 60 * cfg.max_minutes):
            if main_process:
                print(f"stopping at step {step}: max_minutes={cfg.max_minutes} reached (--resume continues)")
            save(step)
            break
        x, target = model_input(next(batches), kind, n_labels, device)
        x = x.contiguous(memory_format=memory_format)
        for group in opt_g.param_groups:
            group["lr"] = lr_at(step, cfg, lr)
        for group in opt_d.param_groups:
            group["lr"] = lr_at(step, cfg, lr) * cfg.disc_lr_scale
        gan_on = loss_fn.uses_discriminator and tc.disc_factor_at(step, cfg.loss) > 0
        # generator step: D is only evaluated (its parameters get no gradient from this step). A discriminator
        # with BatchNorm (the patch one) sees real and reconstructed images in one batch here as in its own
        # step, so its statistics -- and hence the function G is trained against -- are the same in both steps.
        # Every image D sees goes through the same DiffAugment policy (loss.diffaug), in both steps.
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
        opt_g.zero_grad(set_to_none=True)
        g.total.backward()
        opt_g.step()
        if gan_on:
            opt_d.zero_grad(set_to_none=True)
            d.total.backward()
            opt_d.step()
        step += 1
        if main_process and loss_fn.uses_discriminator and step == cfg.loss.disc_start:
            tc.save_model(vqgan, out / "model-before-gan")  # the GAN phase starts next: keep what came before

        # ---- logging, images, checkpoints ----
        counts += torch.bincount(q.indices.flatten(), minlength=vqgan.n_codes)
        scalars = {"loss": g.total, "rec": g.reconstruction, "perc": g.perceptual, "vq": g.codebook,
                   "g": g.gan, "lambda": g.adaptive_weight, "d": d_total, "d_real": d_real, "d_fake": d_fake}
        for k, v in scalars.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float()
        n_sums += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            packed = torch.stack([sums[k] for k in scalars]) / n_sums
            if distributed:
                dist.all_reduce(packed)
                dist.all_reduce(counts)
            logs = {k: float(v) / world for k, v in zip(scalars, packed)}
            usage = tc.usage_from_counts(counts)
            now = time.perf_counter()
            logs.update(step=step, disc_factor=g.disc_factor, codes_used=usage.fraction_used,
                        perplexity=usage.perplexity, dead_codes=usage.dead_codes,
                        lr=opt_g.param_groups[0]["lr"], sec_per_step=(now - t_log) / n_sums)
            t_log = now
            if main_process:
                bar.set_postfix({k: f"{logs[k]:.3g}" for k in ("rec", "perc", "g", "d", "codes_used")})
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps(logs) + "\n")
            counts.zero_()
            sums.clear()
            n_sums = 0
        if main_process and (step % cfg.image_every == 0 or step == cfg.steps):
            vqgan.eval()
            with torch.no_grad(), autocast:
                fx, _ = model_input(fixed, kind, n_labels, device)
                rec, _ = vqgan(fx)
            tc.save_grid(preview(vqgan, fx, rec.float(), kind), out / "images" / f"step-{step:08d}.png",
                         nrow=len(fx))
            train_mode()
        if step % cfg.save_every == 0 or step == cfg.steps:
            save(step)
    bar.close()
    if len(dataset.skipped) and main_process:
        print(f"skipped {len(dataset.skipped)} unreadable file(s) in this process")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    if main_process:
        print(f"done: {out / 'model'} (load with taming_core.load_model)")
    return out / "model"


if __name__ == "__main__":
    tc.run_main(main)  # a bad config, checkpoint or data folder: one line "error: ...", exit status 2
