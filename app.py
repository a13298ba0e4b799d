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
from pathlib import Path

import gradio as gr
import torch

import taming_core as tc
from taming_app import (BLANK, CONDITION_KINDS_BY_MODE, FIT, GUIDANCE, GUIDANCE_BY_MODE, LIMITS, MAX_SCALE,
                        MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, MODES, SEGMENTER, UPLOADED, App, ModelBank, Page,
                        Refused, Settings, Stops, build_demo, example_maps, flatten_editor, for_page, label_map_of,
                        legend_html, page_css, read_upload, swatch_script, tiled, untiled)

PHOTO_ROUGHNESS = tc.condition_maps.PHOTO_ROUGHNESS
GREY_BASES = tc.condition_maps.GREY_BASES
ROOT = Path(__file__).resolve().parent
__all__ = [
    "BLANK", "CONDITION_KINDS_BY_MODE", "FIT", "GUIDANCE", "GUIDANCE_BY_MODE", "GREY_BASES", "LIMITS", "MAX_SCALE",
    "MAX_UPLOAD_BYTES", "MAX_UPLOAD_PIXELS", "MODES", "PHOTO_ROUGHNESS", "SEGMENTER", "UPLOADED", "App",
    "ModelBank", "Page", "Refused", "Settings", "Stops", "build_demo", "example_maps", "flatten_editor",
    "for_page", "label_map_of", "legend_html", "page_css", "read_upload", "swatch_script", "tiled", "untiled",
    "parse_args", "launch", "main",
]


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
    ap.add_argument("--precision", default="auto", choices=tc.SAMPLING_PRECISIONS,
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
    ap.add_argument("--queue-size", type=int, default=16, help="requests waiting at most (others are refused)")
    return ap.parse_args(argv)


def launch(demo: gr.Blocks, queue_size: int = 16, **kwargs) -> tuple:
    """Queue (one generation at a time, `queue_size` waiting) and serve, refusing uploads over MAX_UPLOAD_BYTES
    as they arrive. kwargs go to Blocks.launch; returns what it returns."""
    demo.queue(default_concurrency_limit=1, max_size=queue_size)
    return demo.launch(max_file_size=MAX_UPLOAD_BYTES, css=page_css(),
                       head=getattr(demo, "page_head", None) or swatch_script(), **kwargs)


def main(argv=None) -> None:
    args = parse_args(argv)
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
        bank = ModelBank(paths, device, args.precision)
        tc.sampling_precision(args.precision, device)  # int8 weights on CUDA: refused here, in one line
    except ValueError as e:
        raise SystemExit(f"app.py: {e}") from None
    bank.load_all()
    for mode, plan in bank.plans.items():
        print(f"{mode} model on {device} (--precision {args.precision}): {plan}", flush=True)
    launch(build_demo(bank), args.queue_size, server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
