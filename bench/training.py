"""Training step time per precision: fp32 vs bf16 autocast (and channels_last) through the training scripts.

    python bench/training.py --data runs/photos/train                # about 6 minutes on a 2-core CPU
    python bench/training.py --data runs/photos/train --steps 60 --threads 2

Runs `train/train_vqgan.py` (the bundled first stage's shape: f8, widths 32-128, 64 px crops, batch 16,
L1 + perceptual loss; no GAN) and `train/train_transformer.py` (the bundled GPT: 4 layers x 256 over 256 image
tokens of checkpoints/vqgan, batch 8) for `--steps` steps per setting, and reads the mean seconds per step of
the logged intervals after the first (warm-up) from each run's log.jsonl: the scripts' own loop, data
loading included. Run it on a quiet machine (the table says the load average before and after).
Prints a table and writes bench/results/training.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
VQGAN = ["--size", "64", "--batch-size", "16", "data.resize=upscale", "model.n_embed=512", "model.embed_dim=32",
         "model.ddconfig.z_channels=64", "model.ddconfig.ch=32", "model.ddconfig.ch_mult=[1,2,4,4]",
         "model.ddconfig.num_res_blocks=1", "model.ddconfig.attn_resolutions=[]", "model.l2_normalize=true",
         "--disc-start", "100000000", "num_workers=0"]
GPT = ["--cond", "none", "--batch-size", "8", "transformer.n_layer=4", "transformer.n_head=4",
       "transformer.n_embd=256", "warmup_steps=5", "eval_every=100000000", "sample_every=100000000",
       "num_workers=0"]
SETTINGS = {"vqgan": [("fp32", ["precision=fp32"]), ("bf16", ["precision=bf16"]),
                      ("bf16 + channels_last", ["precision=bf16", "channels_last=true"]),
                      ("fp32 + channels_last", ["precision=fp32", "channels_last=true"])],
            "transformer": [("fp32", ["precision=fp32"]), ("bf16", ["precision=bf16"])]}


def run(script: str, args: list[str], out: str, threads: int) -> float:
    """Mean seconds per step over the logged intervals after the first."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "train" / script), *args], env=env, capture_output=True,
                          text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{script} failed:\n{proc.stderr[-2000:]}")
    logs = [json.loads(line) for line in open(Path(out) / "log.jsonl")]
    times = [r["sec_per_step"] for r in logs if "sec_per_step" in r][1:]
    return sum(times) / len(times)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "runs" / "photos" / "train"), help="folder of photos")
    ap.add_argument("--first-stage", default=str(ROOT / "checkpoints" / "vqgan"),
                    help="VQGAN for the transformer's codes (the 16x16 grid of the bundled transformers; the "
                         "figures in train/README.md were taken with the first first stage, now gone)")
    ap.add_argument("--steps", type=int, default=40, help="steps per setting (logged every 10)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "training.json"))
    args = ap.parse_args(argv)
    rows = []
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        cache = f"{tmp}/codes.pt"  # encoded once, shared by the transformer runs
        for model, settings in SETTINGS.items():
            for name, extra in settings:
                out = f"{tmp}/{model}-{len(rows)}"
                common = ["--data", args.data, "--out", out, "--steps", str(args.steps), "log_every=10",
                          "save_every=100000000"]
                if model == "vqgan":
                    sec = run("train_vqgan.py", common + VQGAN + ["image_every=100000000"] + extra, out, args.threads)
                else:
                    sec = run("train_transformer.py", common + GPT + ["--first-stage", args.first_stage,
                                                                      f"cache={cache}"] + extra, out, args.threads)
                rows.append({"model": model, "precision": name, "sec_per_step": sec})
                base = next(r["sec_per_step"] for r in rows if r["model"] == model)
                print(f"{model:12s} {name:22s} {sec * 1e3:8.1f} ms/step  {base / sec:5.2f}x fp32", flush=True)
    result = {"meta": {"threads": args.threads, "steps": args.steps, "torch": torch.__version__,
                       "machine": platform.machine(), "cpus": os.cpu_count(), "bf16_units": __import__(
                           "taming_core").cpu_has_bf16(), "loadavg_start": load_start,
                       "loadavg_end": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M")},
              "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
