"""Release a first stage with a new decoder for the same codes, and relink the transformers that read it.

    python train/swap_decoder.py runs/dec/model checkpoints/vqgan \
        checkpoints/segmentation checkpoints/edges checkpoints/depth checkpoints/unconditional

The new stage (e.g. from `train_vqgan.py ... init_from=checkpoints/vqgan train_only=decoder`) must hold the
released stage's encoder, quant_conv and codebook unchanged, so every image keeps its codes and the
transformers trained on those codes stay valid. The transformers store their first stage by reference (the
folder and the sha256 of its weights, `tc.save_model(first_stage=...)`): each is loaded while the old stage is
in place, given the new decoder, and saved again linked to the new file. Every folder is written beside its
destination and checked by loading it back before anything is replaced.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch

import taming_core as tc

FROZEN = ("encoder.", "quant_conv.", "quantize.")  # what decides the codes


def same_codes(old: tc.VQGAN, new: tc.VQGAN) -> None:
    """Refuse a stage whose configuration or code-deciding tensors differ from the released one's."""
    if old.config != new.config:
        raise SystemExit("the new first stage's config differs from the released one's: not the same model")
    a, b = old.state_dict(), new.state_dict()
    changed = [k for k in a if k.startswith(FROZEN) and not torch.equal(a[k], b[k].to(a[k].dtype))]
    if changed:
        raise SystemExit(f"{len(changed)} code-deciding tensor(s) differ (first: {changed[0]}): the codes would "
                         "change; train with train_only=decoder")


def write(model, dest: Path, dtype: torch.dtype, first_stage: Path | None = None) -> Path:
    """Save beside `dest`, load back, compare; returns the checked temporary folder (moved later)."""
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        tc.save_model(model, tmp, dtype=dtype, first_stage=first_stage)
        back = tc.load_model(tmp).state_dict()
        for k, v in model.state_dict().items():
            if v.is_floating_point() and not torch.allclose(v.float(), back[k].float(), rtol=1e-2, atol=1e-3):
                raise SystemExit(f"{dest}: {k} differs after the round trip: nothing replaced")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written folder left beside dest
        raise
    return tmp


def replace(tmp: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    dest.chmod(0o755)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", help="the first stage with the new decoder (our folder or .safetensors)")
    ap.add_argument("stage", help="the released first stage's folder (replaced)")
    ap.add_argument("transformers", nargs="*", help="released Net2Net folders linked to `stage` (replaced)")
    args = ap.parse_args(argv)
    stage = Path(args.stage)
    old, new = tc.load_model(stage), tc.load_model(args.source).eval()
    if not isinstance(old, tc.VQGAN) or not isinstance(new, tc.VQGAN):
        raise SystemExit("source and stage must both be first stages (VQGAN)")
    same_codes(old, new)
    nets = {Path(t): tc.load_model(t) for t in args.transformers}  # loaded while the old stage is in place
    for t, net in nets.items():
        if not isinstance(net, tc.Net2Net):
            raise SystemExit(f"{t} is not a transformer (Net2Net)")
        if not all(torch.equal(a, b) for a, b in zip(net.first_stage_model.state_dict().values(),
                                                       old.state_dict().values())):
            raise SystemExit(f"{t} does not read {stage}: nothing replaced")
    dtype = torch.float16  # as every released model stores its weights (computed in float32)
    replace(write(new, stage, dtype), stage)  # first: the transformers' links hash the file in place
    for t, net in nets.items():
        net.first_stage_model.load_state_dict(new.state_dict())
        replace(write(net, t, dtype, first_stage=stage), t)
        print(f"relinked {t} -> {stage}")
    print(f"released {args.source} -> {stage}")


if __name__ == "__main__":
    main()
