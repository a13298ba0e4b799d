"""Train the photo -> label map segmenter (taming_core/segmenter.py) on photos with COCO-Stuff label maps.

    python train/train_segmenter.py --data runs/seg320/train --holdout runs/seg320/holdout --out runs/segmenter
    python train/train_segmenter.py ... --resume              # continue the run in --out

Data: images with label PNGs in a sibling `segmentations/` folder (or data.maps), grey values = COCO-Stuff
id - 1, 255 = unlabelled (../shared/data/{coco,sflckr}; train/prepare_data.py scales them once). The classes are
`labels` (COCO-Stuff names, default: the app's palette) plus "other" for every other label; unlabelled
pixels are ignored. Augmentation: random crops of a random zoom (data.scale_max), flips, a random downscale of
each batch (min_scale) so that small generated images segment too, and colour jitter (brightness, contrast,
saturation). The ImageNet MobileNetV2 backbone is frozen for `freeze_steps` (the head learns first), then
fine-tuned at `backbone_lr`. Every `eval_every` steps: pixel accuracy and mIoU on the centre crops of
--holdout, logged to <out>/log.jsonl. At the end <out>/model holds the release weights (tc.load_model).
Every default is in `TrainConfig`; --config yaml and key=value overrides merge over it, then the flags.
Steps: setup, data, model, optimizer, loop, save.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from tqdm import tqdm

import taming_core as tc
from taming_core.labels import SCENE_LABELS


@dataclass
class TrainConfig:
    data: tc.DataConfig = field(default_factory=lambda: tc.DataConfig(
        size=224, kind="segmentation", n_labels=256, label_offset=0, scale_max=1.6, with_image=True))
    holdout: Optional[str] = None  # folder of held-out images with maps, evaluated every eval_every steps
    labels: list[str] = field(default_factory=lambda: list(SCENE_LABELS))  # + "other"
    width: int = 96  # head channels
    out: str = "runs/segmenter"
    steps: int = 3000
    batch_size: int = 16
    lr: float = 2e-3  # head (AdamW), warmup then cosine
    backbone_lr: float = 2e-4  # backbone after freeze_steps
    freeze_steps: int = 600
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    min_scale: float = 0.55  # each batch is downscaled by a random factor in [min_scale, 1]
    jitter: float = 0.25  # colour jitter strength (brightness, contrast, saturation factors in 1 +- jitter)
    eval_size: int = 256  # held-out crops
    eval_every: int = 250
    save_every: int = 250
    keep_last: int = 2
    log_every: int = 25
    seed: int = 5
    num_workers: int = 2
    threads: int = 0  # torch threads (0: torch's default)
    # fp32 by default: MobileNetV2's depthwise convolutions run slower under CPU bf16 autocast (measured)
    precision: str = "fp32"
    max_minutes: float = 0.0  # stop (and save) after this long; 0: no limit


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. width=128 data.size=256")
    ap.add_argument("--data", help="folder of training images with label maps beside them")
    ap.add_argument("--holdout", help="folder of held-out images with label maps, evaluated during training")
    ap.add_argument("--out", help="run folder: checkpoints/, model/, log.jsonl")
    ap.add_argument("--steps", type=int, help="total optimisation steps")
    ap.add_argument("--batch-size", type=int, help="batch size")
    ap.add_argument("--config", help="yaml with TrainConfig fields")
    ap.add_argument("--resume", nargs="?", const="latest",
                    help="continue a run: a checkpoint file, a run folder, or nothing (latest in --out)")
    return ap.parse_intermixed_args(argv)


def build_config(args: argparse.Namespace, saved: dict | None = None, check: bool = True) -> TrainConfig:
    """Defaults <- saved run config (resume) <- --config <- overrides <- flags."""
    flags = {"data.root": args.data, "holdout": args.holdout, "out": args.out, "steps": args.steps,
             "batch_size": args.batch_size}
    cfg = tc.merge_run_config(TrainConfig, [saved, args.config, args.overrides], flags)
    cfg.data.kind, cfg.data.n_labels, cfg.data.label_offset = "segmentation", 256, 0  # raw ids, mapped below
    if check and not cfg.data.root:
        raise tc.ConfigError("pass the training images: --data FOLDER")
    return cfg


def jitter_colours(x: torch.Tensor, strength: float, g: torch.Generator) -> torch.Tensor:
    """x (B, 3, H, W) in [-1, 1] -> brightness, contrast and saturation each scaled by 1 +- strength."""
    if strength <= 0:
        return x
    b, c, s = (1 + strength * (2 * torch.rand(3, x.shape[0], 1, 1, 1, generator=g) - 1)).unbind(0)
    x = (x + 1) / 2 * b  # (B, 3, H, W) in [0, ~1]
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * c + mean
    grey = x.mean(1, keepdim=True)
    x = (x - grey) * s + grey
    return x.clamp(0, 1) * 2 - 1


def rescale(x: torch.Tensor, y: torch.Tensor, factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Downscale images (B, 3, S, S) (area) and class maps (B, S, S) (nearest) by `factor`."""
    size = max(32, round(x.shape[-1] * factor))
    if size == x.shape[-1]:
        return x, y
    x = F.interpolate(x, size=(size, size), mode="area")
    y = F.interpolate(y[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()
    return x, y


@torch.no_grad()
def evaluate(model: tc.Segmenter, batches: list[dict], names: list[str]) -> dict:
    """Pixel accuracy, mIoU and per-class scores on held-out batches {"image", "segmentation": classes}."""
    model.eval()
    conf = torch.zeros(len(names), len(names), dtype=torch.int64)
    for b in batches:
        pred = model(b["image"]).argmax(1)  # (B, S, S)
        conf += tc.confusion_matrix(pred, b["segmentation"], len(names))
    model.train()
    return tc.segmentation_scores(conf, names)


def main(argv=None) -> None:
    # ---- setup ------------------------------------------------------------------------------------------------
    args = parse_args(argv)
    ckpt, resumed_from = None, None
    if args.resume:
        resumed_from = tc.resolve_resume(args.resume, build_config(args, check=False).out)
        ckpt = tc.load_checkpoint(resumed_from, required=("step", "config", "model", "opt", "rng"))
        print(f"resuming from step {ckpt['step']}, {resumed_from}")
    cfg = build_config(args, ckpt["config"] if ckpt else None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = tc.resolve_precision(cfg.precision, device)
    autocast = tc.autocast_for(precision, device)

    # ---- data -------------------------------------------------------------------------------------------------
    data = tc.ImageFolder(cfg.data)
    start = ckpt["step"] if ckpt else 0
    sampler = tc.ResumableSampler(len(data), seed=cfg.seed, start=start * cfg.batch_size)
    loader = iter(torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, sampler=sampler,
                                              num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0))
    held = []  # held-out batches (centre crops, in order), moved to the device once
    if cfg.holdout:
        hcfg = tc.DataConfig(root=cfg.holdout, size=cfg.eval_size, kind="segmentation", n_labels=256,
                             label_offset=0, flip=False, maps=None)
        held = list(torch.utils.data.DataLoader(tc.ImageFolder(hcfg), batch_size=16))

    # ---- model ------------------------------------------------------------------------------------------------
    model = tc.Segmenter(tc.SegmenterConfig(labels=list(cfg.labels), width=cfg.width))
    if ckpt:
        model.load_state_dict(ckpt["model"])
    else:
        model.backbone.load_state_dict(tc.load_mobilenet_v2().state_dict())  # ImageNet features
    model = model.to(device).train()
    names = list(cfg.labels) + ["other"]
    table = torch.from_numpy(model.class_of_id())  # (256,) COCO-Stuff id -> class, -1 = ignored
    held = [{"image": b["image"].to(device), "segmentation": table[b["segmentation"]].to(device)} for b in held]
    print(f"{len(data)} training images, {sum(len(b['image']) for b in held)} held out; {len(names)} classes; "
          f"{device.type} ({precision}), steps {start}..{cfg.steps}")

    # ---- optimizer --------------------------------------------------------------------------------------------
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    opt = torch.optim.AdamW([{"params": head, "lr": cfg.lr},
                             {"params": list(model.backbone.parameters()), "lr": 0.0}],
                            weight_decay=cfg.weight_decay)
    if ckpt:
        opt.load_state_dict(ckpt["opt"])
        tc.set_rng_state(ckpt["rng"][0])
    g = torch.Generator().manual_seed(cfg.seed * 7919 + start)  # batch scales and colour jitter

    def save(step: int) -> None:
        state = {"step": step, "config": OmegaConf.to_container(OmegaConf.structured(cfg)),
                 "model": model.state_dict(), "opt": opt.state_dict(), "rng": tc.gather_rng_states()}
        tc.save_checkpoint(state, out, step, cfg.keep_last)

    # ---- loop -------------------------------------------------------------------------------------------------
    t0, log = time.time(), open(out / "log.jsonl", "a")
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="segmenter", dynamic_ncols=True)
    done, loss = start, torch.zeros(())  # steps done
    for step in bar:
        frozen = step < cfg.freeze_steps
        model.backbone.requires_grad_(not frozen)
        if frozen:
            model.backbone.eval()  # keep the ImageNet BatchNorm statistics while the head learns
        else:
            model.backbone.train()
        scale = tc.warmup_cosine(step, 1.0, cfg.warmup_steps, cfg.steps, 0.05)
        opt.param_groups[0]["lr"] = cfg.lr * scale
        opt.param_groups[1]["lr"] = 0.0 if frozen else cfg.backbone_lr * scale
        batch = next(loader)
        x, y = batch["image"], table[batch["segmentation"]]  # (B, 3, S, S), (B, S, S)
        x, y = rescale(x, y, cfg.min_scale + (1 - cfg.min_scale) * float(torch.rand(1, generator=g)))
        x = jitter_colours(x, cfg.jitter, g).to(device)
        y = y.to(device)
        with autocast:
            logits = model(x)  # (B, K, s, s)
        loss = F.cross_entropy(logits.float(), y, ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % cfg.log_every == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
            log.write(json.dumps({"step": step + 1, "loss": round(loss.item(), 4),
                                  "minutes": round((time.time() - t0) / 60, 2)}) + "\n")
            log.flush()
        if held and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            scores = evaluate(model, held, names)
            tqdm.write(f"step {step + 1}: held-out pixel accuracy {scores['pixel_accuracy']:.3f}, "
                       f"mIoU {scores['miou']:.3f}")
            log.write(json.dumps({"step": step + 1, "holdout": scores}) + "\n")
            log.flush()
        done = step + 1
        if done % cfg.save_every == 0 and done < cfg.steps:
            save(done)
        if cfg.max_minutes and time.time() - t0 > 60 * cfg.max_minutes and done < cfg.steps:
            print(f"stopping after {cfg.max_minutes} minutes at step {done}; continue with --resume")
            break
    bar.close()

    # ---- save -------------------------------------------------------------------------------------------------
    if not math.isfinite(loss.item()):
        raise SystemExit("the loss is not finite; not saving the model")
    save(done)
    tc.save_model(model.eval().cpu(), out / "model")
    print(f"wrote {out / 'model'}")


if __name__ == "__main__":
    tc.run_main(main)
