"""Speed of the bundled models on this CPU: decoding a 16x16 token grid, sampling one image per mode,
streaming one as the app does (time to the first preview and to the final image, fp32 and the app's
default `--precision auto`; also at the app's default 256x256 and a 512x256 panorama, through the fast sliding
window), and segmenting a 256x256 photo (the app's "Start from a photo").

    .venv/bin/python bench/bundled.py [--threads 1 2 auto] [--repeats 5] [--sizes 256 512 ...] [--only-stream]

`--threads auto` times the app's own thread policy (tc.ThreadPolicy("auto"): a GPT step on 1 thread, the
decodes on 2 when both cores are free); OpenMP threads sleep at barriers (OMP_WAIT_POLICY=PASSIVE) as in the
app unless the environment says otherwise. Prints one row per (figure, threads) with the median of --repeats runs and writes
bench/results/bundled.json. The decode goal of the bundled VQGAN is at most 300 ms per 16x16 grid here; the
segmenter's goal is under 0.5 s per 256x256 photo.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app.py, before OpenMP starts

import numpy as np
import torch
from PIL import Image

import taming_core as tc

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"  # a real photo for the segmenter
MODES = ("segmentation", "edges", "depth", "unconditional")


def condition(net: tc.Net2Net, size: int, width: int | None = None) -> torch.Tensor:
    """Condition tokens (1, L_c) of a plain map (size high, `width` (default size) wide) of the model's kind
    (timing does not depend on its content)."""
    kind, width = net.config.cond_stage.kind, width or size
    if kind == "segmentation":
        return net.encode_cond(torch.zeros(1, size, width, dtype=torch.long))  # label ids
    if kind in ("depth", "edges"):
        return net.encode_cond(-torch.ones(1, 1, size, width))
    return net.encode_cond(1)


def stream_times(net: tc.Net2Net, cond: torch.Tensor, precision: str, repeats: int,
                 guidance: float = 1.0, grid: tuple[int, int] | None = None,
                 policy: tc.ThreadPolicy | None = None) -> tuple[float, float]:
    """Median seconds to the first preview and to the final image of tc.stream with the app's settings
    (16 previews at most, top-k 100, `guidance` for a model with a null condition; a `grid` larger than the
    model's through the fast sliding window, cond then the condition grid (1, h, w)) and `precision`
    (tc.sampling_precision on the CPU); `policy`: the threads per part as the app's worker sets them (None: the
    threads as set)."""
    plan = tc.sampling_precision(precision, "cpu")
    model = tc.prepare_for_sampling(net, plan)  # as the app loads it (fp32: packed in place)
    firsts, finals = [], []
    window = dict(grid=grid, window=net.grid, mode="fast") if grid not in (None, net.grid) else {}
    for i in range(repeats + 1):  # the first run warms up
        t0, first = time.perf_counter(), None
        if policy is not None:
            policy.measure()
        with policy.use("gpt") if policy is not None else contextlib.nullcontext():
            for ev in tc.stream(model, cond, top_k=100, generator=torch.Generator().manual_seed(i),
                                decode_dtype=plan.decode_dtype, **window,
                                decode_threads=policy.threads_for("decode") if policy is not None else None,
                                guidance=guidance if net.config.null_token is not None else 1.0):
                if ev.preview is not None and first is None:
                    first = time.perf_counter() - t0
        if i:
            firsts.append(first)
            finals.append(time.perf_counter() - t0)
    return statistics.median(firsts), statistics.median(finals)


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@torch.no_grad()
def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=tc.parse_threads, nargs="+", default=[1, 2],
                    help="a number of threads for every part, or auto: the app's policy (the stream figures)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--guidance", type=float, default=3.0, help="the app's default on the segmentation tab")
    ap.add_argument("--sizes", type=int, nargs=2, action="append", metavar=("H", "W"), default=None,
                    help="stream sizes beyond the model's own (default: 256 256 and 256 512, the app's default "
                         "and a panorama)")
    ap.add_argument("--only-stream", action="store_true", help="the segmentation stream figures alone")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "bundled.json"))
    args = ap.parse_args(argv)
    args.sizes = args.sizes or [(256, 256), (256, 512)]
    host = tc.host_info()
    print(tc.host_line(host), flush=True)  # figures hold for this CPU only (issue 28)
    vq = tc.load_model(ROOT / "checkpoints" / "vqgan").eval()
    side = vq.config.ddconfig.resolution // vq.downsample_factor
    codes = torch.randint(0, vq.n_codes, (1, side, side), generator=torch.Generator().manual_seed(0))
    nets = {m: tc.prepare_for_sampling(tc.load_model(ROOT / "checkpoints" / m).eval())  # fp32, packed
            for m in MODES if (ROOT / "checkpoints" / m).is_dir()}
    segmenter = tc.load_model(ROOT / "checkpoints" / "segmenter") if (ROOT / "checkpoints" / "segmenter").is_dir() \
        else None
    found = sorted((SHARED / "sflckr" / "images").glob("*.jpg"))  # timing does not depend on the content
    photo = np.asarray(Image.open(found[0]).convert("RGB"))[:256, :256] if found else \
        np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    photo = np.ascontiguousarray(photo)
    rows = []
    for threads in args.threads:
        policy = tc.ThreadPolicy("auto") if threads == "auto" else None
        torch.set_num_threads(os.cpu_count() if threads == "auto" else threads)
        for mode, net in ({} if args.only_stream else {"decode": None, **nets}).items():
            if net is None:
                t = median_time(lambda: vq.decode_indices(codes), args.repeats)
                rows.append({"figure": f"decode {side}x{side} grid -> {side * vq.downsample_factor} px",
                             "threads": threads, "seconds": t})
                continue
            cond = condition(net, side * vq.downsample_factor)
            n = side * side
            t = median_time(lambda: net.decode_indices(tc.sample(net, cond, steps=n, top_k=100)),
                            max(1, args.repeats // 2))
            rows.append({"figure": f"{mode}: sample {n} tokens + decode", "threads": threads, "seconds": t})
        if "segmentation" in nets:
            net = nets["segmentation"]
            f = vq.downsample_factor
            # the model's size, then the app's default 256x256 and a 512x256 panorama (fast sliding window)
            for h, w in ((side * f, side * f), *((tuple(size) for size in args.sizes))):
                cond = condition(net, h, w)
                grid = (h // f, w // f)
                if grid != net.grid:
                    cond = cond.view(1, *grid)  # the condition grid of the window sampler
                for precision in ("fp32", "auto"):
                    if grid != net.grid and precision == "fp32":
                        continue  # larger sizes: the app's default precision only
                    first, final = stream_times(net, cond, precision, max(1, args.repeats // 2), args.guidance, grid,
                                                policy)
                    what = f"app stream {w}x{h}, --precision {precision}, guidance {args.guidance:g}"
                    rows.append({"figure": f"{what}: first preview", "threads": threads, "seconds": first})
                    rows.append({"figure": f"{what}: final image", "threads": threads, "seconds": final})
        if segmenter is not None and not args.only_stream:
            t = median_time(lambda: segmenter.segment(photo), args.repeats)
            rows.append({"figure": f"segmenter: {photo.shape[1]}x{photo.shape[0]} photo -> label map",
                         "threads": threads, "seconds": t})
    for r in rows:
        print(f"{r['figure']:<64} threads {r['threads']}  {r['seconds'] * 1000:8.1f} ms")
    out = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__, "host": host,
           "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
