"""End-to-end speed of the served app, and where the time goes: app.py is started with the bundled models and
driven through gradio_client on its /generate_segmentation endpoint (a generated two-label grey map, the API's
defaults: 16 previews, top-k 100, guidance 3), at 128 px (the segmentation model's own size) and 256 px (the
fast sliding window).

    .venv/bin/python bench/serving.py [--quick] [--sizes 128 256] [--clients 1 2 4 8] [--images N] [--port P]
                                      [--repeats R] [--app-args ARGS...]

Per size it prints and writes to bench/results/serving.json:
- layers, one under another, for the same image: (a) the sampler alone (tc.stream with the app's settings,
  bench/bundled.py's stream_times), (b) the app's handler called in-process (App.generate_segmentation, no
  HTTP), (c) gradio_client predict end to end; b - a is the handler's overhead (of which: reading the upload and
  checking its labels, encoding the condition), c - b HTTP, the queue and encoding (of which: uploading the map,
  the PNG encoding gradio gives every yielded image);
- one client's latency alone and beside a process that keeps one core busy, and 1/2/4/8 concurrent clients
  (each its own Client, each submitting --images images one after another): images per minute, p50/p95 latency.
The host's CPU model and flags, the 1-minute load average at the start (quiet under 0.3) and the threads go
beside the figures. Everything after --app-args goes to app.py (e.g. --precision fp32 --threads 1); (a) and (b)
run in this process with the same --precision and thread policy (tc.ThreadPolicy of the app's --threads, default
auto; OMP_WAIT_POLICY=PASSIVE as the app sets it). CPU only.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

# as app.py: OpenMP threads sleep at barriers (set before torch starts its runtime), so that the in-process
# layers run as the served app does
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is a folder of scripts, not a package
import serving_clients as sc  # noqa: E402
from bundled import median_time, stream_times  # noqa: E402

import taming_core as tc  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SKY, GRASS = 156, 123  # 0-based COCO-Stuff ids: sky-other over grass
FRAMES, GUIDANCE = 16, 3.0  # the API's defaults for /generate_segmentation


def two_label_map(size: int, path: Path) -> Path:
    """A size x size grey PNG of 0-based COCO-Stuff ids, sky over grass, written to `path`."""
    labels = np.full((size, size), GRASS, np.uint8)
    labels[: size // 2] = SKY
    Image.fromarray(labels).save(path)
    return path


def app_options(app_args: list[str]) -> argparse.Namespace:
    """The app's options that the in-process layers follow (others are the app's alone): --precision,
    --threads (auto or N: the same tc.ThreadPolicy as the app's), --segmentation, --segmentation-config."""
    ap = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--threads", default="auto")
    ap.add_argument("--segmentation", default=str(ROOT / "checkpoints" / "segmentation"))
    ap.add_argument("--segmentation-config", default=None)
    known, _ = ap.parse_known_args(app_args)
    known.policy = tc.ThreadPolicy(known.threads)  # ValueError, as the app's, for neither auto nor N >= 1
    return known


def in_process_app(opts: argparse.Namespace):
    """The app's handlers (taming_app.App) over the same segmentation model and precision as the served app."""
    from taming_app import App, ModelBank

    bank = ModelBank({"segmentation": (opts.segmentation, opts.segmentation_config)}, torch.device("cpu"),
                     opts.precision, threads=opts.policy)
    bank.load_all()
    return App(bank)


def handler_run(app, label_map: Path, size: int, seed: int) -> tuple[int, tuple]:
    """One App.generate_segmentation run to its end, as the endpoint calls it: (yields, the last output)."""
    n, last = 0, None
    for out in app.generate_segmentation(str(label_map), seed, 1.0, 100, 1.0, size, size, FRAMES, GUIDANCE):
        n, last = n + 1, out
    if not str(last[1]).startswith("Done"):
        raise RuntimeError(f"the handler did not finish: {last[1]}")
    return n, last


def png_encoding(outputs: tuple, yields: int) -> float:
    """Seconds gradio spends encoding what the handler yields, `yields` times: each yield's image and condition
    view go through the API outputs' gr.Image(format="png") postprocess (PNG into gradio's cache)."""
    from gradio.image_utils import postprocess_image

    image, _, view = outputs
    with tempfile.TemporaryDirectory() as cache:
        once = median_time(lambda: [postprocess_image(a, cache_dir=cache, format="png") for a in (image, view)], 5)
    return once * yields


def upload_time(url: str, label_map: Path, repeats: int) -> float:
    """Seconds to POST the label map to the app's upload route, as gradio_client does before each predict."""
    import httpx

    data = label_map.read_bytes()
    with httpx.Client(timeout=60) as http:
        return median_time(lambda: http.post(url + "gradio_api/upload",
                                             files={"files": (label_map.name, data)}).raise_for_status(), repeats)


@torch.no_grad()
def layers(url: str, app, net: tc.Net2Net, label_map: Path, size: int, opts, repeats: int) -> dict:
    """(a) the sampler, (b) the handler in-process, (c) gradio_client end to end, for one size x size image, and
    the parts of b - a and c - b that can be timed alone (seconds, medians of `repeats` after a warm-up; a, b
    and c in interleaved rounds, their times kept in "runs")."""
    from gradio_client import Client

    from taming_app import FIT
    from taming_app.uploads import label_map_of

    model, space = app.bank.get("segmentation"), app.label_space()
    labels, _ = label_map_of(str(label_map), (size, size), app.can_segment(), FIT, space, "0-based")  # (H, W)
    f = net.first_stage_model.downsample_factor
    grid = (size // f, size // f)
    c = net.encode_cond(torch.from_numpy(labels)[None])  # (1, L_c)
    if grid != net.grid:
        c = c.view(1, *grid)  # the condition grid of the sliding window, as the handler makes it

    def checks():
        read, _ = label_map_of(str(label_map), (size, size), app.can_segment(), FIT, space, "0-based")
        model.conditioner.labels_to_onehot(torch.from_numpy(read)[None])
    yields, outputs = handler_run(app, label_map, size, 0)  # a warm-up, and what gradio would encode
    client = Client(url, verbose=False)
    request = sc.segmentation_request(label_map, size, FRAMES, GUIDANCE)
    request(client, 0)  # a warm-up
    runs = {"sampler_s": [], "handler_s": [], "e2e_s": []}
    for i in range(1, repeats + 1):  # interleaved rounds: a round's three layers see the same load
        opts.policy.measure()
        with opts.policy.use("gpt") as threads:  # as the app's batcher: GPT steps and previews at the GPT's
            runs["sampler_s"].append(stream_times(net, c, opts.precision, 1, GUIDANCE, grid)[1])  # after a warm-up
        t = time.perf_counter()
        handler_run(app, label_map, size, i)
        runs["handler_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        request(client, i)
        runs["e2e_s"].append(time.perf_counter() - t)
    client.close()
    sampler, handler, e2e = (statistics.median(runs[k]) for k in ("sampler_s", "handler_s", "e2e_s"))
    return {"size": size, "threads": threads, "load_1min": round(os.getloadavg()[0], 2),
            "sampler_s": sampler, "handler_s": handler, "e2e_s": e2e, "handler_overhead_s": handler - sampler,
            "http_queue_encoding_s": e2e - handler,
            "read_and_label_checks_s": median_time(checks, repeats),
            "condition_encoding_s": median_time(lambda: model.encode_cond(torch.from_numpy(labels)[None]), repeats),
            "yields": yields, "png_encoding_s": png_encoding(outputs, yields),
            "upload_s": upload_time(url, label_map, repeats), "runs": runs}


def print_layers(r: dict) -> None:
    ms = lambda s: f"{s * 1000:9.1f} ms"  # noqa: E731
    print(f"\n{r['size']} px, the sampler at {r['threads']} threads, load {r['load_1min']}")
    print(f"  (a) sampler alone (tc.stream)            {ms(r['sampler_s'])}")
    print(f"  (b) handler in-process                   {ms(r['handler_s'])}   b - a = {ms(r['handler_overhead_s'])}")
    print(f"        of which reading + label checks    {ms(r['read_and_label_checks_s'])}")
    print(f"        of which condition encoding        {ms(r['condition_encoding_s'])}")
    print(f"  (c) gradio_client predict                {ms(r['e2e_s'])}   c - b = {ms(r['http_queue_encoding_s'])}")
    print(f"        of which the map's upload          {ms(r['upload_s'])}")
    print(f"        of which PNG encoding, {r['yields']:2d} yields   {ms(r['png_encoding_s'])}")
    print(f"  end to end / sampler: {r['e2e_s'] / r['sampler_s']:.2f}x")


def print_loads(rows: list[dict]) -> None:
    print(f"\n{'size':>5} {'clients':>12} {'images':>7} {'wall s':>8} {'images/min':>11} {'p50 s':>7} {'p95 s':>7} "
          f"{'threads':>16}")
    for r in rows:
        who = f"{r['clients']}" + (" + busy" if r["busy_core"] else "")
        print(f"{r['size']:>5} {who:>12} {r['clients'] * r['images']:>7} {r['wall_s']:8.2f} "
              f"{r['images_per_min']:11.1f} {r['p50_s']:7.2f} {r['p95_s']:7.2f} {r['threads']:>16}")


def ratios(layer_rows: list[dict], load_rows: list[dict]) -> dict:
    """The issue's "done when" ratios that this run measured, per size: end to end / sampler; 4 clients' images
    per minute / one client's and their p95 / one client's p95; one client beside a busy core / alone (p50)."""
    out = {}
    for r in layer_rows:
        out[f"{r['size']} px end to end / sampler"] = r["e2e_s"] / r["sampler_s"]
    by = {(r["size"], r["clients"], r["busy_core"]): r for r in load_rows}
    for size in sorted({r["size"] for r in load_rows}):
        one, four, busy = by.get((size, 1, False)), by.get((size, 4, False)), by.get((size, 1, True))
        if one and four:
            out[f"{size} px 4 clients / 1 client, images per minute"] = four["images_per_min"] / one["images_per_min"]
            out[f"{size} px 4 clients / 1 client, p95 latency"] = four["p95_s"] / one["p95_s"]
        if one and busy:
            out[f"{size} px busy core / alone, p50 latency"] = busy["p50_s"] / one["p50_s"]
    return out


def commit() -> str:
    """The checkout's commit, "+ changes" when its files differ from it ("unknown" outside a git checkout)."""
    import subprocess

    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + changes" if dirty else "")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 image per client and 1 timed run per layer (a few "
                                                         "minutes)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="square output sides in px")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--images", type=int, default=None, help="images per client (default 4; --quick 1)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per layer (default 3; --quick 1)")
    ap.add_argument("--port", type=int, default=0, help="the app's port (default: a free one)")
    ap.add_argument("--no-busy", action="store_true", help="skip the run beside a busy core")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "serving.json"))
    ap.add_argument("--note", default="", help="words stored with the results (what ran, the machine's state)")
    ap.add_argument("--app-args", nargs=argparse.REMAINDER, default=[], help="the rest goes to app.py")
    args = ap.parse_args(argv)
    images = args.images or (1 if args.quick else 4)
    repeats = args.repeats or (1 if args.quick else 3)
    machine = sc.host()  # before anything of ours runs
    opts = app_options(args.app_args)
    threads = f"--threads {opts.policy.mode}"  # the app's and the in-process layers' policy
    print(f"{tc.host_line(machine)}; {threads}: {opts.policy.describe()}; load {machine['load_1min']} at the start "
          f"({'quiet' if machine['quiet'] else 'BUSY machine: figures from a shared machine'}); app args "
          f"{args.app_args}", flush=True)
    net = tc.load_model(opts.segmentation, opts.segmentation_config).eval()  # fp32: stream_times prepares it
    app = in_process_app(opts)
    layer_rows, load_rows = [], []
    with tempfile.TemporaryDirectory() as tmp, \
            sc.served_app(args.app_args, args.port, Path(tmp) / "app.log") as url:
        maps = {s: two_label_map(s, Path(tmp) / f"labels{s}.png") for s in args.sizes}
        for size in args.sizes:
            layer_rows.append(layers(url, app, net, maps[size], size, opts, repeats))
            print_layers(layer_rows[-1])
        for size in args.sizes:
            request = sc.segmentation_request(maps[size], size, FRAMES, GUIDANCE)
            for n in args.clients:
                load = sc.run_clients(url, n, images, request).row()
                load_rows.append({"size": size, "busy_core": False, "threads": threads,
                                  "load_1min": round(os.getloadavg()[0], 2), **load})
            if not args.no_busy:
                with sc.busy_core():
                    load = sc.run_clients(url, 1, images, request).row()
                load_rows.append({"size": size, "busy_core": True, "threads": threads,
                                  "load_1min": round(os.getloadavg()[0], 2), **load})
        plan = [line for line in (Path(tmp) / "app.log").read_text(errors="replace").splitlines() if " model on " in line
                or line.startswith("threads:")]
    print_loads(load_rows)
    found = ratios(layer_rows, load_rows)
    for name, value in found.items():
        print(f"{name}: {value:.2f}x")
    out = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "note": args.note,
           "commit": commit(), "host": machine,
           "load_1min_at_end": round(os.getloadavg()[0], 2), "torch": torch.__version__, "threads": threads,
           "thread_policy": opts.policy.describe(), "app_args": args.app_args, "app_plan": plan,
           "settings": {"frames": FRAMES, "guidance": GUIDANCE, "images_per_client": images, "repeats": repeats,
                        "label_map": "two labels, sky-other over grass, grey 0-based ids"},
           "layers": layer_rows, "clients": load_rows, "ratios": found}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # killed: the app and the busy core end too
    try:
        main()
    except RuntimeError as e:
        raise SystemExit(f"serving.py: {e}") from None
