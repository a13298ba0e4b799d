"""The app's path on a full-size original model: an S-FLCKR-shaped Net2Net (f16 VQGAN first and condition
stages, 182 labels, GPT 24 x 1024, about 456M parameters, random weights) built from the original config
schema, prepared as app.py loads it (`tc.prepare_for_sampling`: fp32 packed, or int8 / bf16 weights) and streamed
as app.py streams a 256x256 image: time to prepare, to the first preview and to the final image, for each
--precision.

    .venv/bin/python bench/full_size.py [--precision fp32 auto] [--threads 2] [--repeats 1]

Random weights time the same as trained ones (every step reads every weight). Writes
bench/results/full_size.json. The goal on this repo's 2-core CPU: first preview within 2 s, the 256x256 image
within 15 s.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import taming_core as tc

ROOT = Path(__file__).resolve().parents[1]


def f16_stage(channels: int, key: str) -> dict:
    """The original f16 VQGAN (imagenet_vqgan / sflckr_cond_stage shape) in the original yaml schema."""
    return {"target": "taming.models.vqgan.VQModel",
            "params": {"embed_dim": 256, "n_embed": 1024, "image_key": key,
                       "ddconfig": {"double_z": False, "z_channels": 256, "resolution": 256,
                                    "in_channels": channels, "out_ch": channels, "ch": 128,
                                    "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16],
                                    "dropout": 0.0},
                       "lossconfig": {"target": "taming.modules.losses.DummyLoss"}}}


def sflckr_config() -> dict:
    gpt = {"vocab_size": 1024, "block_size": 512, "n_layer": 24, "n_head": 16, "n_embd": 1024}
    return {"model": {"target": "taming.models.cond_transformer.Net2NetTransformer",
                      "params": {"cond_stage_key": "segmentation", "first_stage_key": "image",
                                 "transformer_config": {"target": "taming.modules.transformer.mingpt.GPT",
                                                        "params": gpt},
                                 "first_stage_config": f16_stage(3, "image"),
                                 "cond_stage_config": f16_stage(182, "segmentation")}}}


@torch.no_grad()
def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--precision", nargs="+", default=["fp32", "auto"], choices=tc.SAMPLING_PRECISIONS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "full_size.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t = time.perf_counter()
    net = tc.build_model(tc.config_from_original(sflckr_config())).eval()
    params = sum(p.numel() for p in net.parameters())
    gpt_params = sum(p.numel() for p in net.transformer.parameters())
    print(f"built in {time.perf_counter() - t:.0f} s: {params / 1e6:.0f}M parameters, GPT {gpt_params / 1e6:.0f}M")
    labels = np.full((256, 256), 156, np.int64)  # sky over grass, as the app's canvas would give
    labels[160:] = 123
    c = net.encode_cond(torch.from_numpy(labels)[None])  # (1, 256)
    rows = []
    for precision in args.precision:
        plan = tc.sampling_precision(precision, "cpu")
        t = time.perf_counter()
        model = tc.prepare_for_sampling(net, plan)  # as the app loads it: fp32 packed in place, or a low-bit copy
        prepare = time.perf_counter() - t
        firsts, finals = [], []
        for i in range(args.repeats):
            t0, first = time.perf_counter(), None
            for ev in tc.stream(model, c, top_k=100, generator=torch.Generator().manual_seed(i),
                                decode_dtype=plan.decode_dtype):
                if ev.preview is not None and first is None:
                    first = time.perf_counter() - t0
            firsts.append(first)
            finals.append(time.perf_counter() - t0)
        row = {"precision": precision, "plan": plan.describe(), "threads": args.threads,
               "prepare_s": prepare, "first_preview_s": statistics.median(firsts), "final_s": statistics.median(finals),
               "tokens_per_s": ev.tokens_per_s, "preview_s": ev.preview_s}
        rows.append(row)
        print(f"--precision {precision:<5} ({row['plan']}): prepared at load in {prepare:.1f} s; "
              f"first preview {row['first_preview_s']:.2f} s, "
              f"256x256 image {row['final_s']:.1f} s ({row['tokens_per_s']:.1f} tokens/s sampling, "
              f"{row['preview_s']:.1f} s decoding previews and the image)")
        del model
        tc.drop_sampling_copies(net)  # the next precision's run does not carry fp32 packed copies
    out = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
           "threads": args.threads, "params": params, "gpt_params": gpt_params, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
