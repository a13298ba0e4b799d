"""Downscale a data folder once and split it into train / holdout by a hash of each file name.

    python train/prepare_data.py --src ../shared/data --out runs/data --short-side 128 --holdout 0.1

`--src` holds data sets in the shared layout: `<set>/images/*.jpg` with optional sibling map folders
(`segmentations/` label PNGs, `depth16/` 16-bit depth PNGs). Each image is scaled so that its short side is
`--short-side` (OpenCV INTER_AREA; label maps nearest-neighbour; depth INTER_AREA in float) and written as a
lossless PNG to `<out>/<split>/<set>/images/`, its maps beside it in the same layout, so the training scripts
find them as before. The split is a pure function of "<set>/<stem>": the same photo always lands on the same
side, whatever else is in the folder. Decoding a 6-megapixel JPEG per training step costs more than the
small models themselves; after this step a 128 px crop reads in about a millisecond. Files already written
are kept (delete `--out` to redo them), so a rerun only adds what is missing.
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from taming_core.condition_maps import edges_from_sketch, resize_edges
from taming_core.data import IMAGE_EXTS, pil_to_rgb

# map folder -> how it is resized; boundaries (BSDS500 human outlines) are thinned at full size first, as the
# training data and the app treat sketches (condition_maps.edges_from_sketch), and saved as white on black
MAPS = {"segmentations": "labels", "depth16": "depth", "boundaries": "sketch"}


def split_of(data_set: str, stem: str, holdout: float) -> str:
    """'holdout' for a fixed fraction of names (md5 of "<set>/<stem>"), else 'train'."""
    h = int(hashlib.md5(f"{data_set}/{stem}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "holdout" if h < holdout else "train"


def scaled_size(w: int, h: int, short: int) -> tuple[int, int]:
    s = short / min(w, h)
    return max(short, round(w * s)), max(short, round(h * s))


def resize_map(path: Path, size: tuple[int, int], how: str) -> Image.Image:
    with Image.open(path) as m:
        a = np.asarray(m)
    if how == "labels":  # ids are not values: nearest neighbour only
        return Image.fromarray(cv2.resize(a, size, interpolation=cv2.INTER_NEAREST))
    if how == "sketch":
        e = resize_edges(edges_from_sketch(a), (size[1], size[0]))  # (H, W) in {-1, 1}
        return Image.fromarray(((e > 0) * 255).astype(np.uint8))
    d = cv2.resize(a.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return Image.fromarray(np.clip(d + 0.5, 0, 65535).astype(np.uint16))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True, help="folder of data sets: <set>/images/ (+ map folders)")
    ap.add_argument("--out", required=True, help="output folder: <out>/{train,holdout}/<set>/...")
    ap.add_argument("--short-side", type=int, default=128, help="short side after scaling, in pixels")
    ap.add_argument("--holdout", type=float, default=0.1, help="fraction of images held out")
    args = ap.parse_args(argv)
    src, out = Path(args.src), Path(args.out)
    jobs = [(d.name, f) for d in sorted(src.iterdir()) if (d / "images").is_dir()
            for f in sorted((d / "images").iterdir()) if f.suffix.lower() in IMAGE_EXTS]
    if not jobs:
        raise SystemExit(f"no <set>/images/ folders with images under {src}")
    counts: dict[str, int] = {}
    for data_set, f in tqdm(jobs, desc="images"):
        split = split_of(data_set, f.stem, args.holdout)
        dst = out / split / data_set
        counts[split] = counts.get(split, 0) + 1
        maps = [(src / data_set / folder / f"{f.stem}.png", dst / folder / f"{f.stem}.png", how)
                for folder, how in MAPS.items()]
        maps = [m for m in maps if m[0].is_file() and not m[1].is_file()]
        if (dst / "images" / f"{f.stem}.png").is_file() and not maps:
            continue
        with Image.open(f) as im:
            rgb = pil_to_rgb(im)
        size = scaled_size(rgb.shape[1], rgb.shape[0], args.short_side)  # (W, H)
        interp = cv2.INTER_AREA if size[0] < rgb.shape[1] else cv2.INTER_CUBIC
        (dst / "images").mkdir(parents=True, exist_ok=True)
        if not (dst / "images" / f"{f.stem}.png").is_file():
            Image.fromarray(cv2.resize(rgb, size, interpolation=interp)).save(dst / "images" / f"{f.stem}.png")
        for m, target, how in maps:
            target.parent.mkdir(exist_ok=True)
            resize_map(m, size, how).save(target)
    print(f"{counts.get('train', 0)} train, {counts.get('holdout', 0)} held out, short side {args.short_side} "
          f"px -> {out}")


if __name__ == "__main__":
    main()
