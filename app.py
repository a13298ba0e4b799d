"""Gradio app: paint a segmentation map, draw or upload edges, upload depth, sample unconditionally or from a
class, and watch the image appear token by token. UI only: every model call goes through taming_core.

    python app.py [--host 127.0.0.1] [--port 7860] [--device auto|cpu|cuda]
                  [--segmentation PATH [--segmentation-config YAML]] [--edges ...] [--depth ...] [--unconditional ...]
                  [--class ...]

The Segmentation tab follows its model's label space (tc.labels: COCO-Stuff with or without unlabelled,
ADE20K, generic); the Class tab appears when a class-conditional model is loaded.
Each mode is also a named API endpoint taking plain images and numbers (gradio_client):
generate_segmentation, generate_edges, generate_depth, generate_unconditional, generate_class; every number
is checked against LIMITS. label_map_from_photo turns a photo into a label map in the palette colours (the segmenter,
--segmenter PATH, default checkpoints/segmenter). `stop` ends this client's running job and cancels its jobs
still waiting in the queue.
Every model is loaded at start: one that cannot be loaded ends the app with the cause.

This file is the command line and the launch; the app itself is the package taming_app (its __init__ lists the
parts). The names below are re-exported for code and tests that import them from `app`.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

# The command line's names, written here so that --help imports neither gradio nor torch (tests check them
# against taming_app.MODES, taming_app.SEGMENTER and tc.SAMPLING_PRECISIONS)
MODES = ("segmentation", "edges", "depth", "unconditional", "class")
SEGMENTER = "segmenter"
PRECISIONS = ("auto", "fp32", "bf16", "int8")
MATMULS = ("auto", "packed", "plain")  # tc.MATMULS
SIDE = 256  # the output's width and height the page starts with (Segmentation, Edges, Depth)
ROOT = Path(__file__).resolve().parent
PACKAGE_NAMES = (
    "BLANK", "CONDITION_KINDS_BY_MODE", "FIT", "GUIDANCE", "GUIDANCE_BY_MODE", "LIMITS", "MAX_SCALE",
    "MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS", "UPLOADED", "App", "ModelBank", "Page", "Refused", "Settings", "Stops",
    "build_demo", "example_maps", "flatten_editor", "for_page", "label_map_of", "legend_html", "page_css",
    "read_upload", "swatch_script", "tiled", "untiled")
__all__ = [*PACKAGE_NAMES, "MODES", "SEGMENTER", "GREY_BASES", "PHOTO_ROUGHNESS", "parse_args", "launch", "main"]


def __getattr__(name: str):
    """The package's names (taming_app, tc.condition_maps), imported when first asked for (PEP 562)."""
    if name in PACKAGE_NAMES:
        import taming_app
        return getattr(taming_app, name)
    if name in ("GREY_BASES", "PHOTO_ROUGHNESS"):
        import taming_core as tc
        return getattr(tc.condition_maps, name)
    raise AttributeError(f"module 'app' has no attribute {name!r}")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Serve the Taming Transformers demo: paint a segmentation map, draw or upload edges, upload "
                    "depth, or sample unconditionally, and watch the image appear token by token.",
        epilog="Every model is loaded at start; one that cannot be loaded ends the app with the cause. "
               "Each tab is also an API endpoint (gradio_client): generate_segmentation, generate_edges, "
               "generate_depth, generate_unconditional, generate_class, label_map_from_photo, and stop.")
    ap.add_argument("--host", default="127.0.0.1", help="address to serve on (default: %(default)s)")
    ap.add_argument("--port", type=int, default=7860, help="port to serve on (default: %(default)s)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="auto: the fastest faithful path on the device (CPU: int8 GPT weights, bf16 decodes "
                         "where the CPU has bf16 units; CUDA: fp32, measured fastest there); fp32: everything in "
                         "fp32 (default: %(default)s)")
    for mode in MODES:
        ap.add_argument(f"--{mode}", default=None, metavar="PATH",
                        help=f"{mode} model: our folder or an original .ckpt (default: the bundled one, when present)")
        ap.add_argument(f"--{mode}-config", default=None, metavar="YAML",
                        help="yaml for an original .ckpt (default: found beside it or in ../configs)")
    ap.add_argument(f"--{SEGMENTER}", default=None, metavar="PATH",
                    help="photo -> label map model behind 'Start from a photo' (default: the bundled one, when "
                         "present)")
    ap.add_argument("--size", type=int, default=SIDE, metavar="PX",
                    help="the width and height the page starts with for maps (segmentation, edges, depth); the "
                         "canvases follow the Width and Height fields (default: %(default)s)")
    ap.add_argument("--queue-size", type=int, default=16, help="requests waiting at most (others are refused)")
    ap.add_argument("--matmul", default="auto", choices=MATMULS,
                    help="the fp32 GPT's products on a CPU (--precision fp32): auto: the faster of oneDNN-packed "
                         "and plain for each model's decode steps, measured at load and cached per host in "
                         "$XDG_CACHE_HOME/taming-core/; packed or plain: forced (default: %(default)s)")
    ap.add_argument("--threads", default="auto", type=threads_arg, metavar="auto|N",
                    help="torch threads per part of a generation: auto: one while another process keeps a core "
                         "busy, else the measured best per part (bench/threads.py); N: N for every part "
                         "(default: %(default)s)")
    ap.add_argument("--max-batch", type=int, default=8, metavar="N",
                    help="images that concurrent requests for one model sample together as one batch (each "
                         "request's images count; 1: one request at a time) (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.max_batch < 1:
        ap.error(f"--max-batch must be at least 1, got {args.max_batch}")
    return args


def threads_arg(text: str) -> str:
    """--threads: 'auto' or a whole number >= 1 (as tc.parse_threads, checked here without importing torch)."""
    if text != "auto" and not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"auto or a whole number of at least 1, got {text!r}")
    return text


def launch(demo, queue_size: int = 16, **kwargs) -> tuple:
    """Queue (generations run together up to build_demo's max_batch, `queue_size` waiting) and serve the
    gr.Blocks `demo`, refusing uploads over MAX_UPLOAD_BYTES as they arrive and holding the upload folder to
    UPLOAD_QUOTA. kwargs go to Blocks.launch; returns what it returns."""
    from taming_app import page_css, swatch_script
    from taming_app.uploads import MAX_UPLOAD_BYTES, UPLOAD_QUOTA, keep_uploads_within

    demo.queue(default_concurrency_limit=1, max_size=queue_size)
    started = [False]  # the quota holds from now until the server has run and closed
    keep_uploads_within(UPLOAD_QUOTA, lambda: demo.is_running or not started[0])
    out = demo.launch(max_file_size=MAX_UPLOAD_BYTES, css=page_css(),
                      head=getattr(demo, "page_head", None) or swatch_script(), **kwargs)
    started[0] = True
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    # OpenMP threads sleep at a barrier instead of spinning: 2 threads beside a busy core ran every part 5-14x
    # faster so (bench/results/threads.json); set before torch starts its OpenMP runtime
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    import taming_core as tc
    from taming_app import ModelBank, build_demo

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    paths = {}
    for m in MODES:  # a path given is loaded or ends the app; a bundled model that is missing leaves its tab empty
        bundled = ROOT / "checkpoints" / m
        path = getattr(args, m) or (str(bundled) if bundled.exists() else None)
        paths[m] = (path, getattr(args, f"{m}_config"))
    bundled = ROOT / "checkpoints" / SEGMENTER
    paths[SEGMENTER] = (args.segmenter or (str(bundled) if bundled.exists() else None), None)
    try:
        threads = tc.ThreadPolicy(args.threads)
        bank = ModelBank(paths, device, args.precision, matmul=args.matmul, threads=threads)
        tc.sampling_precision(args.precision, device)  # int8 weights on CUDA: refused here, in one line
    except ValueError as e:
        raise SystemExit(f"app.py: {e}") from None
    threads.measure()
    torch.set_num_threads(threads.threads_for("gpt"))  # loading; generations set their parts' own (threads.use)
    print(f"threads: {threads.describe()}; now {torch.get_num_threads()}", flush=True)
    bank.load_all()
    for mode, plan in bank.plans.items():
        print(f"{mode} model on {device} (--precision {args.precision}): {plan}", flush=True)
    launch(build_demo(bank, args.size, args.max_batch), args.queue_size, server_name=args.host,
           server_port=args.port)


if __name__ == "__main__":
    main()
