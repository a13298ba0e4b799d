"""Copy a trained model into a release folder: half-precision weights, optionally a new nominal resolution.

    python train/release.py runs/vq/model checkpoints/vqgan --resolution 128 --dtype float16

`--transformer gpt.safetensors` puts a GPT's weights (a transformer state dict, e.g. brought back from another
machine by train/gpu_transformers.sh) into the source Net2Net first: the source then gives the stages and the
config (a run of the same settings, say one of a few steps), the file the weights; shapes must match exactly.

`--ema` releases the moving average of the weights a run kept (`ema=0.999` in training) instead of its last
weights: read from the latest checkpoint of the run the source belongs to (`<run>/model` or `<run>`).

`--resolution` changes only the first stage's nominal resolution (its `ddconfig.resolution`: the size whose
latent grid a transformer trains on and samples by default). A stage trained on small crops for speed is
released at the size it will code: allowed only where no attention layer depends on the resolution, so the
weights are the same either way. The copy is loaded back and checked against the source before it is kept.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

import taming_core as tc

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def with_resolution(model: tc.VQGAN, resolution: int) -> tc.VQGAN:
    dd = model.config.ddconfig
    if dd.attn_resolutions:
        raise SystemExit(f"the model has attention at resolutions {list(dd.attn_resolutions)}: its layers depend "
                         "on the resolution, retrain at the size you want instead")
    if resolution % model.downsample_factor:
        raise SystemExit(f"--resolution must be a multiple of the downsampling factor {model.downsample_factor}")
    out = tc.VQGAN(replace(model.config, ddconfig=replace(dd, resolution=resolution)))
    out.load_state_dict(model.state_dict(), strict=True)
    return out.eval()


def ema_weights(source: Path) -> tuple[dict, Path]:
    """The EMA weights in the latest checkpoint of the run `source` belongs to, and that checkpoint."""
    run = source if (source / "checkpoints").is_dir() else source.parent
    last = tc.latest_checkpoint(run)
    if last is None:
        raise tc.ConfigError(f"--ema: no checkpoint of a run in {run / 'checkpoints'} (give <run>/model or <run>)")
    ckpt = tc.load_checkpoint(last)
    if not isinstance(ckpt.get("ema"), dict) or not isinstance(ckpt["ema"].get("weights"), dict):
        raise tc.ConfigError(f"--ema: {last} holds no EMA weights (the run was trained without ema=0.999)")
    return ckpt["ema"]["weights"], last


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="trained model: our folder or .safetensors, or an original .ckpt")
    ap.add_argument("dest", help="release folder (replaced)")
    ap.add_argument("--resolution", type=int, help="new nominal resolution of a VQGAN without attention")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="float16", help="stored precision")
    ap.add_argument("--first-stage", help="a Net2Net's first stage as released (a folder): stored by reference, "
                    "not copied (tc.save_model(first_stage=...)); the folders must then stay side by side")
    ap.add_argument("--transformer", help="GPT weights (safetensors state dict) to put into the source Net2Net")
    ap.add_argument("--ema", action="store_true", help="release the run's moving average of the weights (from "
                    "its latest checkpoint) instead of its last weights")
    ap.add_argument("--run", help="with --transformer: the run whose weights to take from a pack "
                    "(keys '<run>/<name>', as train/gpu_transformers.sh writes them)")
    args = ap.parse_args(argv)
    source = Path(args.source)
    if args.ema and (source / "checkpoints").is_dir() and (source / "model").is_dir():
        source = source / "model"  # a run folder: its release weights give the config
    model = tc.load_model(source).eval()
    if args.ema:
        weights, last = ema_weights(Path(args.source))
        target = model.transformer if isinstance(model, tc.Net2Net) else model
        try:
            target.load_state_dict(weights)
        except (RuntimeError, ValueError) as e:
            raise tc.ConfigError(f"--ema: the EMA weights of {last} do not fit {source} "
                                 f"({' '.join(str(e).split())[:150]})") from None
        print(f"releasing the EMA weights of {last}")
    if args.transformer:
        if not isinstance(model, tc.Net2Net):
            raise SystemExit("--transformer applies to a Net2Net (a transformer model) only")
        weights = load_file(args.transformer)
        if args.run:  # a pack of several runs' GPTs, keys "<run>/<name>"
            weights = {k[len(args.run) + 1:]: v for k, v in weights.items() if k.startswith(args.run + "/")}
        own = model.transformer.state_dict()
        wrong = sorted(set(own) ^ set(weights)) + [k for k in own if k in weights and own[k].shape != weights[k].shape]
        if wrong:
            raise SystemExit(f"{args.transformer} does not fit the source's GPT ({len(wrong)} keys differ in name "
                             f"or shape, first: {wrong[0]})")
        model.transformer.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})
    if args.resolution:
        if not isinstance(model, tc.VQGAN):
            raise SystemExit("--resolution applies to a VQGAN (first stage) only")
        model = with_resolution(model, args.resolution)
    dest = Path(args.dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        # tmp lies beside dest, so a first stage linked by relative path stays valid after the copy
        try:
            tc.save_model(model, tmp, dtype=DTYPES[args.dtype], first_stage=args.first_stage)
        except ValueError as e:  # e.g. --first-stage names another first stage than the model's
            raise tc.ConfigError(str(e)) from None
        back = tc.load_model(tmp)
        for (k, a), (_, b) in zip(sorted(model.state_dict().items()), sorted(back.state_dict().items())):
            if a.is_floating_point() and not torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-3):
                raise SystemExit(f"{k} differs after the round trip: not released")
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(tmp, dest, copy_function=shutil.copyfile)  # plain permissions, not the temp dir's 0700
        dest.chmod(0o755)
    size = sum(f.stat().st_size for f in dest.iterdir()) / 1e6
    print(f"released {args.source} -> {dest} ({args.dtype}, {size:.1f} MB)")
    return dest


if __name__ == "__main__":
    tc.run_main(main)  # a bad model, link or argument: one line "error: ...", exit status 2
