"""Intra-op threads per part of a generation, alone and beside a busy core (issue 28, thread policy).

    .venv/bin/python bench/threads.py [--repeats 5] [--threads 1 2] [--wait-policies default passive]

Times each part the app runs, with the bundled models and the app's default `--precision auto`:
- gpt: one decode step of the segmentation GPT at batch 2 (one guided image), 128 cached positions, as the
  samplers take it (tc.sampling.next_logits: the decode step without module calls);
- gpt-8rows, gpt-16rows: the same step for 4 and 8 guided images (a batch of requests);
- prefill: 128 positions into an empty cache, batch 2;
- decode: the first stage decoding a 16x16 token grid (a preview or the image);
- segmenter: a 256x256 photo -> label map.
Each part runs with 1 and 2 intra-op threads, alone and beside a python process spinning on one core, in a
fresh worker process per (OpenMP wait policy, condition): OMP_WAIT_POLICY must be set before the OpenMP
runtime starts. Prints a table under host_line() and writes bench/results/threads.json. The median of
--repeats runs; "alone" means no spinner of ours, whatever else the machine runs (the json keeps the load
average).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
POLICIES = {"default": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}}
SPIN = "while True: pass"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--wait-policies", nargs="+", default=["default", "passive"], choices=list(POLICIES))
    ap.add_argument("--parts", nargs="+", default=["gpt", "gpt-8rows", "gpt-16rows", "prefill", "decode",
                                                   "segmenter"])
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "threads.json"))
    ap.add_argument("--note", default="busy machine: other work (a training process on one core, other tests) "
                    "ran in every condition", help="what else the machine ran, stored in the json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one process's timings, to stdout
    return ap.parse_args(argv)


def worker(args) -> dict:
    """Times every part at every thread count in this process -> {part: {threads: median seconds}}."""
    import numpy as np
    import torch
    from PIL import Image

    import taming_core as tc

    torch.set_grad_enabled(False)
    plan = tc.sampling_precision("auto", "cpu")
    jobs = {}
    net = tc.prepare_for_sampling(tc.load_model(ROOT / "checkpoints" / "segmentation").eval(), plan)
    gpt, ctx, B = net.transformer, 128, 2

    def decode_step(rows: int):
        cache = tc.sampling.new_sampling_cache(gpt, rows, gpt.config.block_size, None)
        gpt(torch.zeros(rows, ctx, dtype=torch.long), cache)  # the cache's first call (packed copies checked)
        tok = torch.zeros(rows, 1, dtype=torch.long)

        def step():
            cache.length = ctx
            tc.sampling.next_logits(gpt, tok, cache, None)
        return step
    cache = tc.sampling.new_sampling_cache(gpt, B, gpt.config.block_size, None)

    def prefill():
        cache.length = 0
        gpt(torch.zeros(B, ctx, dtype=torch.long), cache, last_only=True)
    jobs["gpt"], jobs["gpt-8rows"], jobs["gpt-16rows"] = decode_step(B), decode_step(8), decode_step(16)
    jobs["prefill"] = prefill
    vq = net.first_stage_model
    codes = torch.randint(0, vq.n_codes, (1, 16, 16), generator=torch.Generator().manual_seed(0))
    jobs["decode"] = lambda: vq.decode_indices(codes)
    if (ROOT / "checkpoints" / "segmenter").is_dir():
        segmenter = tc.load_model(ROOT / "checkpoints" / "segmenter")
        found = sorted((SHARED / "sflckr" / "images").glob("*.jpg"))
        photo = np.asarray(Image.open(found[0]).convert("RGB"))[:256, :256] if found else \
            np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        photo = np.ascontiguousarray(photo)
        jobs["segmenter"] = lambda: segmenter.segment(photo)
    out = {}
    for part in args.parts:
        if part not in jobs:
            continue
        out[part] = {}
        for n in args.threads:
            torch.set_num_threads(n)
            jobs[part]()  # warm-up at this thread count
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                jobs[part]()
                times.append(time.perf_counter() - t)
            out[part][str(n)] = statistics.median(times)
    return {"host": tc.host_info(), "plan": plan.describe(), "seconds": out}


def run_worker(args, policy: str, busy: bool) -> dict:
    env = {**os.environ, **POLICIES[policy], "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, __file__, "--worker", "--repeats", str(args.repeats), "--threads",
           *map(str, args.threads), "--parts", *args.parts]
    spinner = subprocess.Popen([sys.executable, "-c", SPIN]) if busy else None
    try:
        time.sleep(0.2 if busy else 0)  # the spinner running before the first timing
        load = os.getloadavg()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["loadavg_before"] = load
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return {}
    import taming_core as tc

    print(tc.host_line(), "| busy machine unless said otherwise (see the json's load averages)", flush=True)
    runs = {}
    for policy in args.wait_policies:
        for busy in (False, True):
            condition = f"{policy} wait, {'beside a busy core' if busy else 'alone'}"
            runs[condition] = run_worker(args, policy, busy)
            print(f"{condition}: {runs[condition]['plan']}, load average before "
                  f"{runs[condition]['loadavg_before'][0]:.2f}", flush=True)
    parts = [p for p in args.parts if any(p in r["seconds"] for r in runs.values())]
    header = f"{'condition':<36}" + "".join(f"{p + ' ' + n + 't':>15}" for p in parts for n in map(str, args.threads))
    print(header)
    for condition, r in runs.items():
        cells = "".join(f"{1e3 * r['seconds'][p][str(n)]:>12.1f} ms" for p in parts for n in args.threads)
        print(f"{condition:<36}{cells}")
    safe = {p: all(r["seconds"][p][str(max(args.threads))] <= r["seconds"][p][str(min(args.threads))]
                   for r in runs.values()) for p in parts}
    print("more threads never slower in any condition:", {p: "yes" if ok else "no" for p, ok in safe.items()})
    out = {"host": next(iter(runs.values()))["host"], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "note": args.note,
           "repeats": args.repeats, "runs": runs, "more_threads_never_slower": safe}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")
    return out


if __name__ == "__main__":
    main()
