"""Train the transformer of a Net2Net model on a folder of images, over a frozen VQGAN (and condition stage).

    python train/train_transformer.py --preset cpu --data photos/ --first-stage runs/vq/model --out runs/gpt
    python train/train_transformer.py --data imagenet_subset/ --cond class --first-stage runs/vq/model ...
    python train/train_transformer.py --data sflckr/images --cond segmentation --cond-stage runs/seg/model ...
    torchrun --nproc_per_node 4 train/train_transformer.py ...                      # DDP, one GPU each

Conditions: none, class (sub-folder names), segmentation (label PNGs, default folder ../segmentations),
depth (16-bit or float-in-RGBA PNGs, ../depth16 or ../depth), edges (OpenCV Canny of each image, given PNGs
with data.edges=given, or HED's soft maps (train/hed_edges.py) and Canny mixed per crop with data.edges=mixed).
cond_mode=aligned adds each spatial condition token to the step that predicts the image token at its grid
position (net2net.py); transformer.cond_layers=N first convolves the condition grid; cond_drop=0.1 replaces the
condition of a tenth of the examples by a learned null condition, for classifier-free guidance. The data set is
encoded to code indices once (centre crops, their mirror images when data.flip, and `crops` random crops of a
random zoom) and cached in <out>/codes.pt; training then reads tokens only; with `cache=FILE` and no --data it
trains from that file alone. The cache and every checkpoint record the sha256 of the stages' weights: codes or
a run of other stages are refused. Every default is in `TrainConfig`; `--preset` (cpu, gpu, tiny: tests),
`--config` yaml and key=value overrides merge over it, then the flags. A run folder is never restarted
(`--resume` continues, `--force` starts over); Ctrl-C saves and exits. Steps: setup, data (encode or load the
cache), model, optimizer, loop, save.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import taming_core as tc

CONDITIONS = {"none": "image", "class": "class", "segmentation": "segmentation", "depth": "depth",
              "edges": "edges"}  # condition -> data kind


@dataclass
class TrainConfig:
    # size 0: the first stage's. Images are only opened up front (check_files): encoding decodes each anyway
    data: tc.DataConfig = field(default_factory=lambda: tc.DataConfig(size=0, check_files="header"))
    condition: str = "none"  # one of CONDITIONS
    first_stage: str = ""  # VQGAN: our folder / .safetensors, or an original .ckpt (+ yaml)
    cond_stage: Optional[str] = None  # VQ model of the maps (segmentation, depth, edges)
    # segmentation without a condition stage: each cond_grid x cond_grid cell's most frequent label is its
    # condition token (conditioners.LabelGrid; with cond_mode=aligned use the first stage's factor). Needs
    # data.n_labels. 0: the VQ stage of --cond-stage.
    cond_grid: int = 0
    # with cond_grid: each id also says which quarters of its cell share the cell's label (LabelGrid detail;
    # 16 ids per label), i.e. where inside a token's cell a boundary of the map runs
    cond_grid_detail: bool = False
    transformer: tc.GPTConfig = field(default_factory=lambda: tc.GPTConfig(n_layer=12, n_head=8, n_embd=512))
    permuter: tc.PermuterConfig = field(default_factory=tc.PermuterConfig)  # H, W set to the latent grid
    pkeep: float = 1.0  # each input token is kept with this probability, else replaced by a random code
    cond_mode: str = "prefix"  # "prefix" (the original: condition tokens first) or "aligned" (spatial only)
    # Probability that an example's condition is replaced by the null condition (a reserved id): > 0 trains
    # the model for classifier-free guidance (tc.sample(..., guidance=g)); 0: no null condition
    cond_drop: float = 0.0
    # A trained Net2Net whose transformer starts this one (same GPT shape), e.g. a model over the same first
    # stage trained on more images with another condition: it brings the image prior and the alignment of
    # condition and image positions. None: random initialisation.
    init_from: Optional[str] = None
    # Which GPT parameters learn: "all", or "condition" (only the condition pathway, cond_emb and cond_conv;
    # the image prior stays as init_from left it, so a small data set cannot overfit it any further)
    train_only: str = "all"
    out: str = "runs/transformer"
    cache: Optional[str] = None  # codes cache file; default <out>/codes.pt
    # Random crops per image encoded besides the centre crop (and its mirror): each a random window of a
    # random zoom (data.scale_max) of the pair, flipped at random (data.flip); training draws among all
    # variants, validation reads the centre crop. Encoded once, like the centre crops.
    crops: int = 0
    # Keep the weights of the best validation loss as <out>/model-best (early stopping for small data sets)
    keep_best: bool = True
    steps: int = 100_000
    batch_size: int = 8  # per process
    lr: float = 4.5e-6 * 8  # peak learning rate (the original: 4.5e-6 * batch size)
    warmup_steps: int = 1000  # linear warmup, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01  # on Linear weights only (the original minGPT grouping)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    val_fraction: float = 0.05  # held-out images for the validation loss
    seed: int = 23
    num_workers: int = 2  # for encoding
    encode_batch_size: int = 16
    log_every: int = 50
    eval_every: int = 1000  # validation bits per token
    sample_every: int = 5000  # sample grid <out>/images/step-*.png
    n_samples: int = 4
    top_k: Optional[int] = 100
    save_every: int = 1000
    keep_last: int = 3
    # "auto": bf16 autocast on CUDA and on CPUs with bf16 units (AVX-512 bf16 / AMX), else fp32 (precision.py)
    precision: str = "auto"
    max_minutes: float = 0.0  # > 0: stop (and save) after this much training wall time; --resume continues
    ema: float = 0.0  # > 0: keep an EMA of the GPT's weights with this decay (e.g. 0.999); release.py --ema
    grad_accum: int = 1  # batches per optimiser step (effective batch: batch_size * grad_accum * processes)
    tensorboard: bool = True  # event files under <out>/tensorboard/ besides log.jsonl


def preset_tiny() -> dict:
    return {"transformer": {"n_layer": 2, "n_head": 2, "n_embd": 32}, "pkeep": 0.9, "steps": 6, "batch_size": 2,
            "lr": 1e-3, "warmup_steps": 2, "val_fraction": 0.34, "num_workers": 0, "encode_batch_size": 4,
            "log_every": 1, "eval_every": 3, "sample_every": 6, "n_samples": 2, "save_every": 3, "tensorboard": False}


def preset_cpu() -> dict:
    """A transformer a 2-core CPU trains in an hour or two: the bundled models' GPT (4 layers, 4 heads, width
    256, dropout 0.1, pkeep 0.9), 16 sequences per step; log every 10 steps, samples every 250."""
    return {"transformer": {"n_layer": 4, "n_head": 4, "n_embd": 256, "embd_pdrop": 0.1, "resid_pdrop": 0.1,
                            "attn_pdrop": 0.1},
            "pkeep": 0.9, "steps": 2000, "batch_size": 16, "lr": 3e-4, "warmup_steps": 50, "log_every": 10,
            "eval_every": 100, "sample_every": 250, "save_every": 250, "num_workers": 2, "encode_batch_size": 16}


def preset_gpu() -> dict:
    """The paper's transformer (the original S-FLCKR / D-RIN configs: 24 layers, 16 heads, width 1024)."""
    return {"transformer": {"n_layer": 24, "n_head": 16, "n_embd": 1024}, "steps": 100_000, "batch_size": 8,
            "lr": 4.5e-6 * 8, "warmup_steps": 1000, "log_every": 50, "eval_every": 1000, "sample_every": 5000,
            "save_every": 1000, "num_workers": 8, "encode_batch_size": 64}


PRESETS = {"tiny": preset_tiny, "cpu": preset_cpu, "gpu": preset_gpu}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. transformer.n_layer=24")
    ap.add_argument("--data", help="folder of training images (recursive: jpg, png, webp)")
    ap.add_argument("--out", help="run folder: checkpoints/, model/, images/, log.jsonl, codes.pt")
    ap.add_argument("--size", type=int, help="crop side (default: the first stage's training resolution)")
    ap.add_argument("--steps", type=int, help="total optimisation steps")
    ap.add_argument("--batch-size", type=int, help="batch size per process")
    ap.add_argument("--cond", choices=sorted(CONDITIONS), help="condition kind")
    ap.add_argument("--first-stage", help="trained VQGAN (train_vqgan.py's <out>/model)")
    ap.add_argument("--cond-stage", help="trained VQ model of the condition maps")
    ap.add_argument("--config", help="yaml with TrainConfig fields")
    ap.add_argument("--preset", choices=sorted(PRESETS),
                    help="named settings: cpu (a model a 2-core CPU trains), gpu (the paper's), tiny (tests)")
    ap.add_argument("--resume", nargs="?", const="latest",
                    help="continue a run: a checkpoint file, a run folder, or nothing (latest in --out)")
    ap.add_argument("--force", action="store_true", help="start over in an --out that holds a run (its "
                    "checkpoints, weights and log are removed; the codes cache stays)")
    return tc.resume_flag_fixed(ap.parse_intermixed_args(argv))  # overrides may stand between flags


def build_config(args: argparse.Namespace, saved: dict | None = None) -> TrainConfig:
    """Defaults <- saved run config (resume) <- preset <- --config <- overrides <- flags."""
    layers = [saved, PRESETS[args.preset]() if args.preset else None, args.config, args.overrides]
    flags = {"data.root": args.data, "out": args.out, "data.size": args.size, "steps": args.steps,
             "batch_size": args.batch_size, "condition": args.cond, "first_stage": args.first_stage,
             "cond_stage": args.cond_stage}
    cfg = tc.merge_run_config(TrainConfig, layers, flags)
    tc.absolute_paths(cfg, ("data.root", "data.maps", "out", "first_stage", "cond_stage", "init_from", "cache"))
    return cfg


@functools.lru_cache(maxsize=4)
def stage(path: str, kind: str = "image") -> tc.VQGAN:
    """The VQGAN at `path` (read once), refused in one line if it is another kind of model."""
    model = tc.load_model(path)
    if not isinstance(model, tc.VQGAN):
        hint = " (a transformer: pass the first stage it was trained on)" if isinstance(model, tc.Net2Net) else ""
        raise tc.ConfigError(f"{path} is a {type(model).__name__}{hint}, not a VQGAN")
    if model.config.image_key != kind:
        raise tc.ConfigError(f"{path} is a VQ model of {model.config.image_key} maps, not of {kind}" +
                             (" (a first stage encodes images)" if kind == "image" else ""))
    return model


def complete_config(cfg: TrainConfig) -> TrainConfig:
    """Fill what follows from the stages: crop side (the first stage's resolution), number of labels."""
    if cfg.condition not in CONDITIONS:
        raise SystemExit(f"unknown condition {cfg.condition!r}; choose one of {', '.join(CONDITIONS)}")
    if not cfg.first_stage:
        raise tc.ConfigError("pass the trained first stage: --first-stage runs/vq/model")
    tc.check_run_numbers(cfg, positive=("batch_size", "log_every", "eval_every", "sample_every", "save_every",
                                        "grad_accum", "encode_batch_size", "n_samples"),  # steps 0: codes only
                         non_negative=("steps", "keep_last", "crops", "warmup_steps", "data.size", "num_workers"))
    if not 0 <= cfg.ema < 1 or not 0 <= cfg.val_fraction < 1 or not 0 < cfg.pkeep <= 1:
        raise tc.ConfigError(f"ema and val_fraction must lie in [0, 1), pkeep in (0, 1]; got {cfg.ema}, "
                             f"{cfg.val_fraction}, {cfg.pkeep}")
    if 0 < cfg.steps <= cfg.warmup_steps:
        print(f"warning: warmup_steps={cfg.warmup_steps} is not below --steps {cfg.steps}: the rate never "
              "reaches its peak")
    if cfg.cond_mode not in ("prefix", "aligned"):
        raise SystemExit(f"unknown cond_mode {cfg.cond_mode!r}; choose prefix or aligned")
    if cfg.cond_mode == "aligned" and cfg.condition not in ("segmentation", "depth", "edges"):
        raise SystemExit(f"cond_mode=aligned needs a spatial condition (segmentation, depth, edges), not "
                         f"{cfg.condition!r}")
    if not 0 <= cfg.cond_drop < 1 or (cfg.cond_drop > 0 and cfg.condition == "none"):
        raise SystemExit(f"cond_drop={cfg.cond_drop}: must lie in [0, 1), and 0 without a condition")
    cfg.data.kind = CONDITIONS[cfg.condition]
    cfg.data.with_image = True
    first = stage(cfg.first_stage)
    if cfg.data.size == 0:
        cfg.data.size = first.config.ddconfig.resolution
    if cfg.data.size != first.config.ddconfig.resolution:
        r = first.config.ddconfig.resolution
        raise tc.ConfigError(f"the first stage was trained at {r}x{r}: use --size {r} (the transformer's grid is "
                             "the first stage's training grid)")
    if cfg.condition in ("segmentation", "depth", "edges") and not cfg.cond_grid:
        if not cfg.cond_stage:
            article = "an" if cfg.condition[0] in "aeiou" else "a"
            raise tc.ConfigError(f"{article} {cfg.condition} condition needs its VQ model: --cond-stage "
                                 "runs/..../model" + (" (or cond_grid=8: label grids)" * (cfg.condition ==
                                                                                         "segmentation")))
        stage(cfg.cond_stage, cfg.condition)
    if cfg.train_only not in ("all", "condition"):
        raise SystemExit(f"unknown train_only {cfg.train_only!r}; choose all or condition")
    if cfg.train_only == "condition" and (cfg.cond_mode != "aligned" or not cfg.init_from):
        raise SystemExit("train_only=condition needs cond_mode=aligned and init_from= (a trained image prior)")
    if cfg.cond_grid and (cfg.condition != "segmentation" or cfg.cond_stage or not cfg.data.n_labels):
        raise SystemExit("cond_grid applies to segmentation without --cond-stage, and needs data.n_labels")
    if cfg.cond_grid_detail and (not cfg.cond_grid or cfg.cond_grid % 2):
        raise SystemExit("cond_grid_detail needs an even cond_grid (a label grid whose cells have quarters)")
    if cfg.condition == "segmentation" and cfg.data.n_labels is None and cfg.cond_stage:
        cfg.data.n_labels = stage(cfg.cond_stage, "segmentation").config.ddconfig.in_channels
    return cfg


def build_net2net(cfg: TrainConfig, n_classes: int) -> tc.Net2Net:
    """Net2Net with the trained stages' weights and a fresh transformer sized to the token sequence."""
    first = stage(cfg.first_stage)
    dd = first.config.ddconfig
    h = dd.resolution // first.downsample_factor
    cond_cfg, cond_model, n_cond_tokens, cond_vocab = tc.ConditionerConfig(kind="none"), None, 1, 1
    if cfg.condition == "class":
        cond_cfg, cond_vocab = tc.ConditionerConfig(kind="class", n_classes=n_classes), n_classes
    elif cfg.cond_grid:
        cond_cfg = tc.ConditionerConfig(kind="segmentation", n_labels=cfg.data.n_labels,
                                        label_offset=cfg.data.label_offset, grid_factor=cfg.cond_grid,
                                        grid_detail=cfg.cond_grid_detail)
        side = cfg.data.size // cfg.cond_grid
        n_cond_tokens = side * side
        cond_vocab = tc.conditioners.LabelGrid(cfg.data.n_labels, cfg.data.label_offset, cfg.cond_grid,
                                               cfg.cond_grid_detail).n_ids
    elif cfg.condition != "none":
        cond_model = stage(cfg.cond_stage, cfg.condition)
        n_labels = cond_model.config.ddconfig.in_channels if cfg.condition == "segmentation" else None
        cond_cfg = tc.ConditionerConfig(kind=cfg.condition, vq=cond_model.config, n_labels=n_labels,
                                        label_offset=cfg.data.label_offset)
        side = cfg.data.size // cond_model.downsample_factor
        n_cond_tokens, cond_vocab = side * side, cond_model.n_codes
    null = cfg.cond_drop > 0  # the null condition takes one more id, after the condition's own
    if cfg.cond_mode == "aligned":  # image tokens in the GPT vocabulary, condition ids in their own table
        if n_cond_tokens != h * h:
            raise SystemExit(f"cond_mode=aligned needs the condition on the image grid: {side}x{side} condition "
                             f"tokens for a {h}x{h} image grid (use a condition stage with the same factor)")
        gpt = replace(cfg.transformer, vocab_size=first.n_codes, block_size=h * h,
                      cond_vocab_size=cond_vocab + null)
        null_token = cond_vocab if null else None
    else:  # the original: condition and image tokens share the vocabulary
        if cfg.transformer.cond_layers:
            raise SystemExit("transformer.cond_layers convolves an aligned condition: set cond_mode=aligned")
        vocab = max(first.n_codes, cond_vocab) + null
        gpt = replace(cfg.transformer, vocab_size=vocab, block_size=n_cond_tokens + h * h, cond_vocab_size=0)
        null_token = vocab - 1 if null else None
    net = tc.Net2Net(tc.Net2NetConfig(first_stage=first.config, cond_stage=cond_cfg,
                                      permuter=replace(cfg.permuter, H=h, W=h), transformer=gpt,
                                      cond_stage_key=cfg.data.kind, pkeep=cfg.pkeep, cond_mode=cfg.cond_mode,
                                      null_token=null_token))
    net.first_stage_model.load_state_dict(first.state_dict())
    if cond_model is not None:
        net.cond_stage_model.load_state_dict(cond_model.state_dict())
    return net


def _detailed_table(donor: tc.Net2Net, net: tc.Net2Net) -> torch.Tensor | None:
    """A plain label grid's condition table (labels + null rows) -> the table of the same labels with detail
    (LabelGrid: id = label * 16 + mask): every id of a label starts as that label's row, the null row stays
    last; None unless the donor has a plain label grid over the same labels and this model a detailed one."""
    mine, theirs = net.conditioner, donor.conditioner
    grids = isinstance(mine, tc.conditioners.LabelGrid) and isinstance(theirs, tc.conditioners.LabelGrid)
    if not (grids and mine.detail and not theirs.detail and mine.n_labels == theirs.n_labels and net.aligned
            and donor.aligned):
        return None
    table = donor.transformer.cond_emb.weight.detach()  # (n_labels [+ 1], E)
    labels = table[:theirs.n_labels].repeat_interleave(mine.QUARTERS, 0)  # (n_labels * 16, E)
    rows = net.config.transformer.cond_vocab_size - labels.shape[0]  # 1 with a null condition, else 0
    if rows not in (0, 1) or table.shape[0] - theirs.n_labels != rows:
        return None
    return torch.cat([labels, table[theirs.n_labels:]])


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to min_lr_ratio * cfg.lr at the last step."""
    return tc.warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)


REQUIRED = ("step", "config", "transformer", "opt", "rng")


def check_resume(ckpt: dict, net: tc.Net2Net, path: Path) -> None:
    """The checkpoint's run used these stages (sha256 of their weights) and this GPT shape: its weights load."""
    if "first_stage_sha256" in ckpt:  # checkpoints of earlier versions do not record them
        tc.check_stage_ids(ckpt, tc.stage_ids(net), f"the run in {path}", "resume with the stages it was "
                           "trained on, or start a new run (another --out) for these")
    tc.load_resume_part(net.transformer, ckpt["transformer"], "transformer", path)


def main(argv=None) -> Path:
    args = parse_args(argv)
    # ---- setup: config (every check before any data is read or folder written), processes, run folder ------
    ckpt, resumed_from = None, None
    if args.resume:  # the run to resume: in --out (flags, overrides, --config or preset), or the path given
        resumed_from = tc.resolve_resume(args.resume, build_config(args).out)
        ckpt = tc.load_checkpoint(resumed_from, required=REQUIRED)
    cfg = complete_config(build_config(args, ckpt["config"] if ckpt else None))
    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    cuda = torch.cuda.is_available()
    if distributed:  # a long timeout: rank 0 encodes the data set while the others wait
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(hours=4))
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    main_process = rank == 0
    out = Path(cfg.out)
    # the folder is locked for this run; a fresh start into a folder holding a run is refused, untouched
    lock = tc.claim_run_dir(out, resume=ckpt is not None, force=args.force) if main_process else None
    if ckpt and main_process:
        print(f"resuming from step {ckpt['step']}, {resumed_from}")
    torch.manual_seed(cfg.seed + rank)
    precision = tc.resolve_precision(cfg.precision, device)
    autocast = tc.autocast_for(precision, device)

    # ---- data: encode once, then tokens only --------------------------------------------------------------
    cache = Path(cfg.cache) if cfg.cache else out / "codes.pt"
    codes_only = not cfg.data.root  # train from a codes file made elsewhere (its images are not here)
    if codes_only:
        if not cfg.cache or not cache.is_file():
            raise tc.DataError("pass the training images (--data) or a codes file made from them (cache=FILE)")
        codes = tc.load_checkpoint(cache, required=("key", "z", "c"))
        dataset, key = None, codes["key"]
        net = build_net2net(cfg, int(codes.get("n_classes", 0))).to(device)
        tc.check_stage_ids(codes, tc.stage_ids(net), f"the codes in {cache}", "encode them again with "
                           "--data and these stages, or pass the stages they were made with")
        if main_process:
            print(f"training from the codes in {cache} alone (made from {codes.get('root', 'unrecorded images')})")
    else:
        dataset = tc.ImageFolder(cfg.data)  # unreadable files are dropped (and counted) here
        net = build_net2net(cfg, len(dataset.classes)).to(device)
        key = tc.cache_key(dataset.files, cfg.data, net, f"{cfg.condition}|{cfg.permuter}|{cfg.cond_mode}|"
                           f"{cfg.crops}|{cfg.seed}|{cfg.cond_grid}" + ("|detail" if cfg.cond_grid_detail else ""))
        codes = tc.cached_codes(cache, key) if main_process else None
    if ckpt:  # before any encoding: the run's stages and GPT shape
        check_resume(ckpt, net, resumed_from)
    if main_process and codes is None:
        codes = {"key": key, "root": str(cfg.data.root), "n_classes": len(dataset.classes), **tc.stage_ids(net),
                 **tc.encode_images(net, dataset, cfg.condition, cfg.crops, cfg.seed, cfg.data.flip,
                                    cfg.encode_batch_size, cfg.num_workers, device)}
        tmp = cache.with_suffix(".tmp")
        with tc.writing(cache, out):
            torch.save(codes, tmp)
            os.replace(tmp, cache)
    if distributed:
        dist.barrier()
    if codes is None:  # other ranks: the cache rank 0 checked or wrote
        codes = tc.load_checkpoint(cache, required=("key", "z", "c"))
    Z, C = codes["z"], codes["c"]  # (N, V, L), (N, V, L_c) int32
    n, variants = Z.shape[0], Z.shape[1]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    n_val = min(n - 1, max(1, round(n * cfg.val_fraction))) if cfg.val_fraction > 0 and n > 1 else 0
    val_idx, train_idx = order[:n_val], order[n_val:]

    # ---- model, optimizer ---------------------------------------------------------------------------------
    gpt = net.transformer
    if cfg.train_only == "condition":
        for name, p in gpt.named_parameters():
            p.requires_grad_(name.startswith(("cond_emb.", "cond_conv.")))
    learn = [(name, p) for name, p in gpt.named_parameters() if p.requires_grad]
    decay = [p for name, p in learn if name.endswith("weight") and p.ndim == 2
             and "emb" not in name]  # Linear weights; embeddings, LayerNorm and biases are not decayed
    no_decay = [p for _, p in learn if all(p is not q for q in decay)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=tuple(cfg.betas))
    start = 0
    if cfg.init_from and not ckpt:
        donor = tc.load_model(cfg.init_from)
        shape = lambda g: (g.vocab_size, g.block_size, g.n_layer, g.n_head, g.n_embd,  # noqa: E731  not dropout
                           g.cond_vocab_size > 0)
        if not isinstance(donor, tc.Net2Net) or shape(donor.config.transformer) != shape(net.config.transformer):
            raise SystemExit(f"init_from={cfg.init_from}: not a Net2Net with this GPT shape (vocab, block, "
                             f"layers, heads, width, condition table = {shape(net.config.transformer)})")
        weights = donor.transformer.state_dict()
        grown = _detailed_table(donor, net)
        if grown is not None:
            weights["cond_emb.weight"] = grown
            if main_process:
                print("init_from: each label's row of the condition table starts all 16 of its detailed ids")
        elif donor.config.transformer.cond_vocab_size != net.config.transformer.cond_vocab_size:
            del weights["cond_emb.weight"]  # another condition's ids: that table starts afresh
            if main_process:
                print(f"init_from: the condition table ({donor.config.transformer.cond_vocab_size} ids there, "
                      f"{net.config.transformer.cond_vocab_size} here) starts afresh")
        missing, unexpected = gpt.load_state_dict(weights, strict=False)
        fresh = [k for k in missing if k != "cond_emb.weight" and not k.startswith("cond_conv.")]
        if fresh or unexpected:
            raise SystemExit(f"init_from={cfg.init_from}: weights do not fit this GPT (missing {fresh}, "
                             f"unexpected {unexpected})")
        if any(k.startswith("cond_conv.") for k in missing) and main_process:
            print("init_from: the condition convolutions (cond_layers) start at zero: the donor's behaviour")
    ema = tc.EMA(gpt, cfg.ema) if cfg.ema > 0 else None
    if ckpt:  # (the GPT's weights were loaded by check_resume)
        tc.load_resume_part(opt, ckpt["opt"], "optimizer state", resumed_from)
        if ema and "ema" in ckpt:
            tc.load_resume_part(ema, ckpt["ema"], "EMA", resumed_from)
        start = ckpt["step"]
        if len(ckpt["rng"]) == world:
            tc.set_rng_state(ckpt["rng"][rank])
    net.train()
    model = DDP(net, device_ids=[local_rank] if cuda else None, broadcast_buffers=False) if distributed else net
    n_first = net.first_stage_model.n_codes
    if main_process:
        skipped = (len(dataset.unreadable) if dataset else 0) + int(codes.get("skipped", 0))
        notes = ([f"{skipped} unreadable skipped"] if skipped else []) + [f"{n_val} held out"]
        print(f"{n} images ({', '.join(notes)}) x {variants} variant(s), {Z.shape[2]} image + {C.shape[2]} condition "
              f"tokens, {sum(p.numel() for p in gpt.parameters()) / 1e6:.1f}M parameters, {world} process(es) on "
              f"{device.type} ({precision}), steps {start}..{cfg.steps}")
        with tc.writing(out / "config.yaml", out):
            tc.save_run_config(cfg, out)
    runlog = tc.RunLog(out, main_process, purge_step=start + 1 if ckpt else None, tensorboard=cfg.tensorboard)

    @torch.no_grad()
    def val_bits_per_token() -> float:
        net.eval()
        mine = val_idx[rank::world]
        total = torch.zeros(2, device=device)  # (sum of nats, tokens)
        for i in range(0, len(mine), cfg.batch_size):
            idx = mine[i:i + cfg.batch_size]
            z, c = Z[idx, 0].long().to(device), C[idx, 0].long().to(device)
            with autocast:
                logits = net(z, c)  # (B, L, V)
            total += torch.stack([F.cross_entropy(logits.float().flatten(0, 1), z.flatten(), reduction="sum"),
                                  torch.tensor(float(z.numel()), device=device)])
        if distributed:
            dist.all_reduce(total)
        net.train()
        return float(total[0] / total[1].clamp_min(1) / math.log(2))

    @torch.no_grad()
    def sample_grid(step: int) -> None:
        net.eval()
        pick = (val_idx if len(val_idx) else train_idx)[:cfg.n_samples]
        z, c = Z[pick, 0].long().to(device), C[pick, 0].long().to(device)
        tokens = tc.sample(net, c, steps=z.shape[1], top_k=cfg.top_k)  # (B, L)
        rows = [net.decode_indices(z), net.decode_indices(tokens)]  # reconstruction, sample
        if hasattr(net, "cond_stage_model") and cfg.condition != "none":
            h = int(math.isqrt(c.shape[1]))
            raster = net.permuter(c, reverse=True) if net.aligned else c  # aligned: c is in token order
            cond = net.cond_stage_model.decode_indices(raster.view(-1, h, h))
            if cfg.condition == "segmentation" and hasattr(net.cond_stage_model, "colorize"):
                cond = net.cond_stage_model.to_rgb(F.one_hot(cond.argmax(1), cond.shape[1]).permute(0, 3, 1, 2).float())
            rows.insert(0, cond.clamp(-1, 1).expand(-1, 3, -1, -1))
        grid = out / "images" / f"step-{step:08d}.png"
        with tc.writing(grid, out):
            tc.save_grid(torch.cat(rows), grid, nrow=len(pick))
        runlog.image("samples", step, grid)  # rows: condition, reconstruction, sample
        net.train()

    def save(step: int) -> None:
        rngs = tc.gather_rng_states()  # collective: every rank
        if main_process:
            state = {"step": step, "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
                     "transformer": gpt.state_dict(), "opt": opt.state_dict(), "rng": rngs, **tc.stage_ids(net),
                     **({"ema": ema.state_dict()} if ema else {})}
            tc.save_checkpoint(state, out, step, cfg.keep_last)
            with tc.writing(out / "model", out):
                tc.save_model(net, out / "model")

    # ---- loop ---------------------------------------------------------------------------------------------
    per_step = cfg.batch_size * cfg.grad_accum
    sampler = iter(tc.ResumableSampler(len(train_idx), cfg.seed, rank, world, start=start * per_step))
    bar = tqdm(total=cfg.steps, initial=start, disable=not main_process, dynamic_ncols=True)
    loss_sum, n_sum, n_steps = torch.zeros((), device=device), 0, 0
    def micro_step() -> None:
        """One batch: forward, stop on a non-finite loss, backward of loss / grad_accum (gradients add up)."""
        nonlocal loss_sum, n_sum
        keys = [next(sampler) for _ in range(cfg.batch_size)]
        idx = train_idx[torch.tensor([k[0] for k in keys])]
        var = torch.tensor([k[1] % variants for k in keys])  # the example's seed picks plain or mirrored
        z, c = Z[idx, var].long().to(device), C[idx, var].long().to(device)  # (B, L), (B, L_c)
        z_in = z
        if cfg.pkeep < 1.0:  # the original's corruption: each input token replaced with prob. 1 - pkeep
            keep = torch.bernoulli(torch.full(z.shape, cfg.pkeep, device=device)).bool()
            z_in = torch.where(keep, z, torch.randint_like(z, n_first))  # targets stay the true tokens
        if cfg.cond_drop > 0:  # classifier-free guidance: some examples see the null condition instead
            drop = torch.rand(c.shape[0], 1, device=device) < cfg.cond_drop  # (B, 1)
            c = torch.where(drop, net.config.null_token, c)  # (B, L_c)
        with autocast:
            logits = model(z_in, c)  # (B, L, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), z.flatten())
        bad = (~torch.isfinite(loss.detach())).float()
        if distributed:
            dist.all_reduce(bad)
        if bad > 0:
            raise SystemExit(f"non-finite loss at step {step} ({float(loss):.4g}); nothing of this step was "
                             f"applied. Last good checkpoint: {tc.latest_checkpoint(out) or resumed_from}. "
                             "Lower lr, then --resume.")
        (loss / cfg.grad_accum).backward()
        loss_sum += loss.detach()
        n_sum += 1

    best_path = out / "model-best"
    best = tc.best_so_far(best_path, "val_bits_per_token")  # a resumed run keeps its best so far
    stop = tc.StopRequest().install()  # Ctrl-C / SIGTERM: finish the step, save, exit
    step = start
    t_start = t_log = time.perf_counter()
    while step < cfg.steps:
        if stop.due(step, time.perf_counter() - t_start, cfg.max_minutes, device, main_process):
            save(step)  # every rank stops at the same step
            break
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        opt.zero_grad(set_to_none=True)
        for _ in range(cfg.grad_accum):  # gradients of grad_accum batches, then one update
            micro_step()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(gpt.parameters(), cfg.grad_clip)
        opt.step()
        if ema:
            ema.update(gpt)
        step += 1
        n_steps += 1

        # ---- logging, validation, samples, checkpoints ----
        bar.update(1)
        logs = {}
        if step % cfg.log_every == 0 or step == cfg.steps:
            mean = loss_sum / n_sum
            if distributed:
                dist.all_reduce(mean)
            now = time.perf_counter()
            logs.update(loss=float(mean) / world, bits_per_token=float(mean) / world / math.log(2),
                        lr=lr_at(step - 1, cfg), sec_per_step=(now - t_log) / n_steps)
            t_log = now
            loss_sum.zero_()
            n_sum = n_steps = 0
        if n_val and (step % cfg.eval_every == 0 or step == cfg.steps):
            logs.update(val_bits_per_token=val_bits_per_token())
            if cfg.keep_best and main_process and logs["val_bits_per_token"] < best:
                best = logs["val_bits_per_token"]
                tc.save_best(net, best_path, out, step, val_bits_per_token=best)
        if logs and main_process:
            bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()})
            runlog.scalars(step, logs)
        if main_process and (step % cfg.sample_every == 0 or step == cfg.steps):
            sample_grid(step)
        if step % cfg.save_every == 0 or step == cfg.steps:
            save(step)
    stop.restore()
    bar.close()
    runlog.close()
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
        print(f"done: {out / 'model'} (load with taming_core.load_model)" if (out / "model").is_dir()
              else f"done: codes in {cache}, no training steps")
    return out / "model"


if __name__ == "__main__":
    tc.run_main(main)  # a bad config, checkpoint or data folder: one line "error: ...", exit status 2
