"""Write a label map for every photo of a folder: the real map where one exists, else the segmenter's.

    python train/pseudo_labels.py --data runs/photos/train --out runs/photos/train_maps
    python train/train_transformer.py --data runs/photos/train --cond segmentation data.maps=runs/photos/train_maps ...

For each image `<data>/<relative path>.<ext>` this writes `<out>/<relative path>.png`, an 8-bit grey PNG in
the data's encoding (grey value = COCO-Stuff id - 1, 255 = unlabelled), the layout that `data.maps=` reads
(taming_core/data.py). Real maps take precedence: an image with a map in --maps (same relative path or same
stem) or in the shared layout's `segmentations/` folder beside its `images/` folder is copied as it is.
In a folder of the shared layout (<set>/images/ beside map folders) only the files in `images/` folders
are photos. Every other photo is segmented (checkpoints/segmenter by default; labels outside the segmenter's classes
and its "other" class become 255). Maps already in --out are kept, so a rerun only adds what is missing.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import taming_core as tc

ROOT = Path(__file__).resolve().parent.parent


def real_map(image: Path, data: Path, maps: Path | None) -> Path | None:
    """The label map that comes with `image`, if any: in `maps` (mirrored path or same stem), else in the
    shared layout's sibling folder (<set>/images/x.jpg -> <set>/segmentations/x.png)."""
    candidates = []
    if maps is not None:
        candidates += [maps / image.relative_to(data).with_suffix(".png"), maps / (image.stem + ".png")]
    real = image.resolve()  # symlinked views of the shared layout count too
    if real.parent.name == "images":
        candidates.append(real.parent.parent / "segmentations" / (real.stem + ".png"))
    return next((c for c in candidates if c.is_file()), None)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder of photos (recursive)")
    ap.add_argument("--out", required=True, help="folder for the maps, mirroring --data")
    ap.add_argument("--maps", help="folder of real label maps (default: segmentations/ beside images/)")
    ap.add_argument("--model", default=str(ROOT / "checkpoints" / "segmenter"), help="segmenter")
    ap.add_argument("--short-side", type=int, help="segment at this short side (default: the model's)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    maps = Path(args.maps) if args.maps else None
    if maps is not None and not maps.is_dir():
        raise FileNotFoundError(f"label map folder not found: {maps}")
    files = tc.list_images(data)
    if any(f.resolve().parent.name == "images" for f in files):  # the shared layout: maps beside images/
        files = [f for f in files if f.resolve().parent.name == "images"]
    model = None
    counts = {"real": 0, "pseudo": 0, "kept": 0, "unreadable": 0}
    for f in tqdm(files, desc="label maps", dynamic_ncols=True):
        target = out / f.relative_to(data).with_suffix(".png")
        if target.is_file():
            counts["kept"] += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        given = real_map(f, data, maps)
        if given is not None:
            shutil.copyfile(given, target)
            counts["real"] += 1
            continue
        if model is None:
            model = tc.load_model(args.model)
            if not isinstance(model, tc.Segmenter):
                raise tc.ConfigError(f"{args.model} is not a segmenter")
            model = model.to(args.device)
        try:
            with Image.open(f) as im:
                rgb = tc.pil_to_rgb(im)
        except (OSError, ValueError, SyntaxError) as e:
            tqdm.write(f"skipping unreadable {f}: {e}")
            counts["unreadable"] += 1
            continue
        ids = model.segment(rgb, args.short_side)  # (H, W) uint8
        tmp = target.with_suffix(".tmp.png")
        Image.fromarray(np.ascontiguousarray(ids)).save(tmp)
        tmp.replace(target)  # a map is either complete or absent
        counts["pseudo"] += 1
    print(f"{counts['real']} real maps copied, {counts['pseudo']} predicted, {counts['kept']} already there, "
          f"{counts['unreadable']} unreadable -> {out}")
    return counts


if __name__ == "__main__":
    tc.run_main(main)
