"""Gradio app: paint a segmentation map, draw or upload edges, upload depth, or sample unconditionally, and
watch the image appear token by token. UI only: every model call goes through taming_core.

    python app.py [--host 127.0.0.1] [--port 7860] [--device auto|cpu|cuda]
                  [--segmentation PATH [--segmentation-config YAML]] [--edges ...] [--depth ...] [--unconditional ...]

Each mode is also a named API endpoint taking plain images and numbers (gradio_client):
generate_segmentation, generate_edges, generate_depth, generate_unconditional.
"""
from __future__ import annotations

import argparse
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import gradio as gr
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

import taming_core as tc

ROOT = Path(__file__).resolve().parent
MODES = ("segmentation", "edges", "depth", "unconditional")
MAX_UPLOAD_PIXELS = 4096 * 4096  # larger uploads are refused before decoding
MAX_SCALE = 4  # the largest output side, in multiples of the model's native size
Image.MAX_IMAGE_PIXELS = MAX_UPLOAD_PIXELS  # PIL refuses decompression bombs beyond this


# ----------------------------------------------------------------------------------------------------------
# Models and sessions


@dataclass
class ModelBank:
    """One loaded model per mode, shared by every browser session; loaded on first use."""

    paths: dict[str, tuple[str | None, str | None]]  # mode -> (checkpoint, optional original yaml)
    device: torch.device = torch.device("cpu")
    _models: dict[str, tc.Net2Net] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def available(self, mode: str) -> bool:
        path = self.paths.get(mode, (None, None))[0]
        return mode in self._models or (path is not None and Path(path).exists())

    def get(self, mode: str) -> tc.Net2Net:
        with self._lock:
            if mode not in self._models:
                path, config = self.paths.get(mode, (None, None))
                if path is None or not Path(path).exists():
                    raise gr.Error(f"No {mode} model is loaded: start the app with --{mode} PATH.")
                model = tc.load_model(path, config)
                if not isinstance(model, tc.Net2Net):
                    raise gr.Error(f"{path} is a first-stage model, not a transformer.")
                model = model.to(self.device).eval()
                with torch.no_grad():  # warm up the decoder, so the first previews are not late
                    model.decode_indices(torch.zeros(1, model.grid[0] * model.grid[1], dtype=torch.long,
                                                     device=self.device))
                self._models[mode] = model
            return self._models[mode]


class StopFlags:
    """A per-session stop flag, checked after every token: Stop ends sampling within one token."""

    def __init__(self):
        self._flags: dict[str, threading.Event] = {}

    def get(self, request: gr.Request | None) -> threading.Event:
        key = getattr(request, "session_hash", None) or "default"
        return self._flags.setdefault(key, threading.Event())


# ----------------------------------------------------------------------------------------------------------
# Conditions from plain images


def read_upload(path_or_array, what: str) -> np.ndarray:
    """A file path (or an array) from an upload -> numpy array as stored (16-bit kept), or a clear error."""
    if path_or_array is None:
        raise gr.Error(f"Upload a {what} first.")
    if isinstance(path_or_array, np.ndarray):
        a = path_or_array
    else:
        try:
            with Image.open(path_or_array) as im:
                if im.width * im.height > MAX_UPLOAD_PIXELS:
                    raise gr.Error(f"The {what} is {im.width}x{im.height}: at most {MAX_UPLOAD_PIXELS} pixels.")
                a = np.asarray(im if im.mode in ("L", "RGB", "RGBA", "I;16", "I") else im.convert("RGB"))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            raise gr.Error(f"Could not read the {what}: not an image file ({type(e).__name__}).") from None
    if a.ndim < 2 or min(a.shape[:2]) < 2:
        raise gr.Error(f"The {what} is too small ({a.shape}).")
    if a.shape[0] * a.shape[1] > MAX_UPLOAD_PIXELS:
        raise gr.Error(f"The {what} is {a.shape[1]}x{a.shape[0]}: at most {MAX_UPLOAD_PIXELS} pixels.")
    return a


def flatten_editor(value: dict | None) -> np.ndarray:
    """An ImageEditor value -> RGB (H, W, 3) uint8: the composite, else the layers over the background."""
    if value is None or (value.get("composite") is None and value.get("background") is None):
        raise gr.Error("The canvas is empty: paint something or load an example first.")
    if value.get("composite") is not None:
        rgba = np.asarray(value["composite"])
    else:
        rgba = np.asarray(value["background"])
        for layer in value.get("layers") or []:
            layer = np.asarray(layer)
            if layer.shape[-1] == 4:
                alpha = layer[..., 3:] > 0  # brush strokes are not anti-aliased: alpha is 0 or 255
                rgba = np.where(alpha, layer, rgba if rgba.shape[-1] == 4 else np.dstack([rgba, layer[..., 3]]))
    if rgba.ndim == 2:
        rgba = np.stack([rgba] * 3, -1)
    if rgba.shape[-1] == 4:  # transparent pixels (erased background) count as white
        alpha = rgba[..., 3:].astype(np.float32) / 255.0
        rgba = (rgba[..., :3] * alpha + 255.0 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(rgba[..., :3])


def to_image(x: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) in [-1, 1] -> (H, W, 3) uint8."""
    x = ((x[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x


def map_to_image(values: np.ndarray) -> np.ndarray:
    """A map (H, W) in [-1, 1] -> grey RGB (H, W, 3) uint8."""
    grey = ((values + 1) * 127.5).clip(0, 255).astype(np.uint8)
    return np.stack([grey] * 3, -1)


# ----------------------------------------------------------------------------------------------------------
# Generation (one function per mode; the canvas handlers call the same ones)


@dataclass
class Settings:
    seed: int = 0
    temperature: float = 1.0
    top_k: int = 100
    top_p: float = 1.0
    width: int = 0  # 0 = the model's native size
    height: int = 0
    frames: int = 16  # partial images sent per run (a page stays smooth with about 16-32 messages per image)


class App:
    def __init__(self, bank: ModelBank):
        self.bank, self.stops = bank, StopFlags()

    def output_size(self, model: tc.Net2Net, s: Settings) -> tuple[int, int]:
        """(height, width) in pixels: the native size by default, else multiples of the token size."""
        f = model.first_stage_model.downsample_factor
        gh, gw = model.grid
        height, width = int(s.height) or gh * f, int(s.width) or gw * f
        if height % f or width % f:
            raise gr.Error(f"Width and height must be multiples of {f} pixels, got {width}x{height}.")
        if height < gh * f or width < gw * f or max(height / (gh * f), width / (gw * f)) > MAX_SCALE:
            raise gr.Error(f"Sizes go from the model's {gw * f}x{gh * f} up to {MAX_SCALE}x that; "
                           f"got {width}x{height}.")
        return height, width

    def run(self, mode: str, cond: torch.Tensor | None, size: tuple[int, int], s: Settings,
            fill: np.ndarray | None, request: gr.Request | None) -> Iterator[tuple[np.ndarray, str]]:
        """Sample and stream (image, status) about `frames` times, then the final image."""
        model = self.bank.get(mode)
        stop = self.stops.get(request)
        stop.clear()
        device = self.bank.device
        f = model.first_stage_model.downsample_factor
        grid = (size[0] // f, size[1] // f)
        with torch.no_grad():
            c = model.encode_cond(cond.to(device) if cond is not None else None)  # (1, L_c)
        if grid != model.grid:
            if mode == "unconditional":
                raise gr.Error("Unconditional samples have the model's native size only.")
            c = c.view(1, *grid)  # the condition grid for the sliding window
        fill_t = None
        if fill is not None:
            fill_t = torch.from_numpy(fill).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(device)
        gen = torch.Generator(device=device).manual_seed(int(s.seed))
        # Larger grids: the fast sliding window (the window held for half-window bands, cached), many times
        # faster than the original's exact placement; bench/sampling.py compares their likelihoods.
        events = tc.stream(model, c, grid=grid, window=model.grid, mode="fast", temperature=float(s.temperature),
                           top_k=int(s.top_k) or None, top_p=float(s.top_p) if s.top_p < 1 else None,
                           generator=gen, fill=fill_t,
                           dtype=torch.bfloat16 if device.type == "cuda" else None)
        every, last, frame, t0 = max(1, (grid[0] * grid[1]) // max(1, int(s.frames))), 0, None, time.time()
        try:
            for ev in events:
                if ev.preview is not None:
                    frame = ev.preview
                if stop.is_set():
                    if frame is None:
                        return
                    yield to_image(frame), f"Stopped at {ev.done}/{ev.total} tokens ({ev.tokens_per_s:.0f} tokens/s)."
                    return
                if ev.finished:
                    yield to_image(ev.preview), (f"Done: {ev.total} tokens in {time.time() - t0:.1f} s "
                                                 f"({ev.tokens_per_s:.0f} tokens/s), {size[1]}x{size[0]} px.")
                elif ev.preview is not None and ev.done - last >= every:
                    last = ev.done
                    yield to_image(ev.preview), f"{ev.done}/{ev.total} tokens, {ev.tokens_per_s:.0f} tokens/s"
        finally:
            events.close()  # stops all work at once, also when the client goes away

    # --- the four modes -------------------------------------------------------------------------------

    def generate_segmentation(self, label_map, seed=0, temperature=1.0, top_k=100, top_p=1.0, width=0,
                              height=0, frames=16, request: gr.Request = None):
        """Label map (grey COCO-Stuff ids, or colour-coded with the app's palette) -> streamed images."""
        model, s = self.bank.get("segmentation"), Settings(seed, temperature, top_k, top_p, width, height, frames)
        size = self.output_size(model, s)
        labels = tc.condition_maps.labels_from_image(read_upload(label_map, "label map"))
        labels = tc.condition_maps.resize_labels(labels, size)
        fill = tc.labels.colourise(labels)
        try:
            model.conditioner.labels_to_onehot(torch.from_numpy(labels)[None])  # checks the label ids
        except ValueError as e:
            raise gr.Error(str(e)) from None
        for image, status in self.run("segmentation", torch.from_numpy(labels)[None], size, s, fill, request):
            yield image, status, fill

    def generate_edges(self, image, kind="sketch", seed=0, temperature=1.0, top_k=100, top_p=1.0, width=0,
                       height=0, frames=16, request: gr.Request = None):
        """An edge sketch (strokes on a plain background) or a photo (edges extracted) -> streamed images."""
        model, s = self.bank.get("edges"), Settings(seed, temperature, top_k, top_p, width, height, frames)
        size = self.output_size(model, s)
        a = read_upload(image, "sketch or photo")
        if kind == "photo":  # extract at the output size, as training extracts at the training size
            rgb = np.asarray(Image.fromarray(tc.condition_maps.to_grey(a)).resize(size[::-1], Image.BICUBIC))
            edges = tc.condition_maps.edges_from_photo(rgb)
        elif kind == "sketch":
            edges = tc.condition_maps.resize_edges(tc.condition_maps.edges_from_sketch(a), size)
        else:
            raise gr.Error(f"kind must be 'sketch' or 'photo', got {kind!r}")
        view = map_to_image(-edges)  # dark edges on white, as drawn
        cond = torch.from_numpy(edges)[None, None]
        for frame, status in self.run("edges", cond, size, s, view, request):
            yield frame, status, view

    def generate_depth(self, depth, seed=0, temperature=1.0, top_k=100, top_p=1.0, width=0, height=0,
                       frames=16, request: gr.Request = None):
        """A depth map (16- or 8-bit grey PNG, nearer = brighter, or the original float-in-RGBA PNG)."""
        model, s = self.bank.get("depth"), Settings(seed, temperature, top_k, top_p, width, height, frames)
        size = self.output_size(model, s)
        raw = read_upload(depth, "depth map")
        try:
            d = tc.condition_maps.depth_from_array(raw)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        d = tc.condition_maps.resize_map(d, size)
        view = map_to_image(d)
        for frame, status in self.run("depth", torch.from_numpy(d)[None, None], size, s, view, request):
            yield frame, status, view

    def generate_unconditional(self, seed=0, temperature=1.0, top_k=100, top_p=1.0, frames=16,
                               request: gr.Request = None):
        """Samples from the start token alone, at the model's native size."""
        model, s = self.bank.get("unconditional"), Settings(seed, temperature, top_k, top_p, 0, 0, frames)
        for frame, status in self.run("unconditional", None, self.output_size(model, s), s, None, request):
            yield frame, status, None

    def request_stop(self, request: gr.Request = None):
        self.stops.get(request).set()


# ----------------------------------------------------------------------------------------------------------
# Ready-made segmentation maps and the palette


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


def example_maps(size: int) -> dict[str, np.ndarray]:
    """A few scenes as COCO-Stuff label maps (size, size) uint8, drawn from simple shapes."""
    import cv2

    L, s = tc.labels.label_id, size

    def poly(a, name, pts):
        cv2.fillPoly(a, [np.array([(x * s, y * s) for x, y in pts], dtype=np.int32)], L(name))

    maps = {}
    a = np.full((s, s), L("sky-other"), np.uint8)
    poly(a, "mountain", [(0, .62), (.3, .25), (.55, .5), (.75, .3), (1, .55), (1, .7), (0, .7)])
    poly(a, "snow", [(.24, .33), (.3, .25), (.36, .33)])
    a[int(.68 * s):] = L("water-other")
    a[int(.9 * s):] = L("grass")
    maps["Mountain lake"] = a
    a = np.full((s, s), L("sky-other"), np.uint8)
    poly(a, "clouds", [(.1, .15), (.4, .1), (.5, .2), (.2, .25)])
    a[int(.45 * s):] = L("sea")
    poly(a, "sand", [(0, .75), (1, .6), (1, 1), (0, 1)])
    maps["Beach"] = a
    a = np.full((s, s), L("sky-other"), np.uint8)
    a[int(.35 * s):] = L("tree")
    a[int(.6 * s):] = L("grass")
    poly(a, "river", [(.45, .6), (.55, .6), (.8, 1), (.3, 1)])
    maps["Forest river"] = a
    a = np.full((s, s), L("fog"), np.uint8)
    poly(a, "mountain", [(0, .8), (.5, .2), (1, .8)])
    poly(a, "snow", [(.38, .35), (.5, .2), (.62, .35)])
    a[int(.8 * s):] = L("rock")
    maps["Snowy peak"] = a
    return maps


def editor_value(labels: np.ndarray) -> dict:
    return {"background": tc.labels.colourise(labels), "layers": [], "composite": None}


def legend_html(names: list[str]) -> str:
    colours = tc.labels.coco_stuff_colours()
    chips = "".join(
        f'<span style="display:inline-flex;align-items:center;margin:2px 8px 2px 0;font-size:12px">'
        f'<span style="width:14px;height:14px;border:1px solid #888;margin-right:4px;'
        f'background:{_hex(colours[tc.labels.label_id(n)])}"></span>{n}</span>' for n in names)
    return f'<div id="legend">{chips}</div>'


# ----------------------------------------------------------------------------------------------------------
# The UI


def build_demo(bank: ModelBank) -> gr.Blocks:
    app = App(bank)
    names = tc.labels.SCENE_LABELS
    colours = tc.labels.coco_stuff_colours()
    native = {}
    for mode in MODES:  # canvas sizes follow the models; 256 px when a model is missing
        try:
            m = bank.get(mode) if bank.available(mode) else None
        except Exception:  # a broken checkpoint must not stop the other tabs
            m = None
        native[mode] = m.grid[0] * m.first_stage_model.downsample_factor if m is not None else 256
    seg_size, edge_size = native["segmentation"], native["edges"]
    examples = example_maps(seg_size)
    first_example = next(iter(examples))

    with gr.Blocks(title="Taming Transformers") as demo:
        gr.Markdown("## Taming Transformers\nPaint a scene, draw edges or upload depth; press Generate and "
                    "watch the image appear token by token.")
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tabs():
                    with gr.Tab("Segmentation", id="seg_tab"):
                        seg = gr.ImageEditor(
                            value=editor_value(examples[first_example]), type="numpy", image_mode="RGBA",
                            format="png", sources=(), transforms=(), layers=False,
                            brush=gr.Brush(colors=[_hex(colours[tc.labels.label_id(n)]) for n in names],
                                           default_color=_hex(colours[tc.labels.label_id("tree")]),
                                           color_mode="fixed", default_size=max(4, seg_size // 32)),
                            eraser=gr.Eraser(default_size=max(4, seg_size // 32)),
                            canvas_size=(seg_size, seg_size), fixed_canvas=True, elem_id="seg",
                            label="Paint with the label colours")
                        gr.HTML(legend_html(names))
                        with gr.Row():
                            example = gr.Dropdown(list(examples), value=first_example, label="Start from",
                                                  elem_id="seg_example")
                            fill_from = gr.Dropdown(names, value="sky-other", label="Replace label")
                            fill_to = gr.Dropdown(names, value="clouds", label="with")
                            fill_btn = gr.Button("Fill", size="sm")
                        seg_upload = gr.File(label="Or upload a label map (grey COCO-Stuff ids or coloured)",
                                             file_types=["image"], elem_id="seg_upload", height=90)
                        go_seg = gr.Button("Generate", variant="primary", elem_id="go_seg")
                    with gr.Tab("Edges", id="edges_tab"):
                        white = np.full((edge_size, edge_size, 3), 255, np.uint8)
                        sketch = gr.ImageEditor(
                            value={"background": white, "layers": [], "composite": None}, type="numpy",
                            image_mode="RGBA", format="png", sources=(), transforms=(), layers=False,
                            brush=gr.Brush(colors=["#000000"], default_color="#000000", color_mode="fixed",
                                           default_size=2),
                            eraser=gr.Eraser(default_size=8), canvas_size=(edge_size, edge_size),
                            fixed_canvas=True, elem_id="edges", label="Draw dark strokes on white")
                        edge_kind = gr.Radio(["sketch", "photo"], value="sketch", label="An upload is a",
                                             elem_id="edges_kind")
                        edge_upload = gr.File(label="Or upload a sketch, or a photo to take its edges",
                                              file_types=["image"], elem_id="edges_upload", height=90)
                        go_edges = gr.Button("Generate", variant="primary", elem_id="go_edges")
                    with gr.Tab("Depth", id="depth_tab"):
                        depth = gr.File(label="Upload a depth map (16/8-bit grey PNG, nearer = brighter, or the "
                                              "original float-in-RGBA PNG)", file_types=["image"], elem_id="depth",
                                        height=90)
                        depth_preview = gr.Image(label="Depth preview", format="png", interactive=False,
                                                 elem_id="depth_preview", height=200)
                        go_depth = gr.Button("Generate", variant="primary", elem_id="go_depth")
                    with gr.Tab("Unconditional", id="uncond_tab"):
                        gr.Markdown("Samples from the start token alone, at the model's native size.")
                        go_uncond = gr.Button("Generate", variant="primary", elem_id="go_uncond")
                with gr.Accordion("Sampling", open=True):
                    with gr.Row():
                        seed = gr.Number(0, label="Seed", precision=0, elem_id="seed")
                        dice = gr.Button("Random seed", size="sm", elem_id="dice")
                    with gr.Row():
                        temperature = gr.Slider(0.1, 2.0, 1.0, step=0.05, label="Temperature")
                        top_k = gr.Slider(0, 1024, 100, step=1, label="Top-k (0 = off)")
                        top_p = gr.Slider(0.05, 1.0, 1.0, step=0.01, label="Top-p (1 = off)")
                    with gr.Row():
                        width = gr.Number(0, label="Width px (0 = native; larger uses the sliding window)",
                                          precision=0, elem_id="width")
                        height = gr.Number(0, label="Height px (0 = native)", precision=0, elem_id="height")
                        frames = gr.Slider(2, 32, 16, step=1, label="Previews per image", elem_id="frames")
            with gr.Column(scale=1):
                out = gr.Image(label="Result", format="png", interactive=False, elem_id="out", height=420,
                               buttons=["download", "fullscreen"])
                status = gr.Textbox(label="Progress", interactive=False, elem_id="status", lines=1)
                stop = gr.Button("Stop", variant="stop", elem_id="stop")
                cond_view = gr.Image(label="Condition the model sees", format="png", interactive=False,
                                     elem_id="cond_view", height=200)

        settings = [seed, temperature, top_k, top_p, width, height, frames]
        outputs = [out, status, cond_view]
        common = dict(outputs=outputs, show_progress_on=[status], concurrency_id="model")

        def from_canvas(value, seed, temperature, top_k, top_p, width, height, frames, request: gr.Request):
            yield from app.generate_segmentation(flatten_editor(value), seed, temperature, top_k, top_p, width,
                                                 height, frames, request)

        def from_sketch(value, seed, temperature, top_k, top_p, width, height, frames, request: gr.Request):
            yield from app.generate_edges(flatten_editor(value), "sketch", seed, temperature, top_k, top_p,
                                          width, height, frames, request)

        runs = [
            go_seg.click(from_canvas, [seg, *settings], api_visibility="private", **common),
            go_edges.click(from_sketch, [sketch, *settings], api_visibility="private", **common),
            go_depth.click(app.generate_depth, [depth, *settings], api_name="generate_depth", **common),
            go_uncond.click(app.generate_unconditional, [seed, temperature, top_k, top_p, frames],
                            api_name="generate_unconditional", **common),
        ]
        # API endpoints taking plain images (hidden inputs; the canvas handlers above call the same functions)
        with gr.Row(visible=False):
            api_map = gr.File(label="label map")
            api_edges = gr.File(label="sketch or photo")
            api_kind = gr.Textbox("sketch", label="kind: sketch or photo")
            api_seg_btn, api_edge_btn = gr.Button(), gr.Button()
        runs.append(api_seg_btn.click(app.generate_segmentation, [api_map, *settings],
                                      api_name="generate_segmentation", **common))
        runs.append(api_edge_btn.click(app.generate_edges, [api_edges, api_kind, *settings],
                                       api_name="generate_edges", **common))
        stop.click(app.request_stop, None, None, queue=False, api_name="stop")
        dice.click(lambda: int(np.random.randint(0, 2**31 - 1)), None, seed, queue=False, api_visibility="private")

        example.change(lambda name: editor_value(examples[name]), example, seg, show_progress="hidden",
                       api_visibility="private")
        seg.clear(lambda name: editor_value(examples[name]), example, seg, show_progress="hidden",
                  api_visibility="private")

        def replace_label(value, a, b):
            labels = tc.condition_maps.labels_from_image(flatten_editor(value))
            labels[labels == tc.labels.label_id(a)] = tc.labels.label_id(b)
            return editor_value(tc.condition_maps.resize_labels(labels, (seg_size, seg_size)))

        fill_btn.click(replace_label, [seg, fill_from, fill_to], seg, show_progress="hidden",
                       api_visibility="private")

        def load_label_upload(path):
            labels = tc.condition_maps.labels_from_image(read_upload(path, "label map"))
            return editor_value(tc.condition_maps.resize_labels(labels, (seg_size, seg_size)))

        seg_upload.upload(load_label_upload, seg_upload, seg, show_progress="hidden", api_visibility="private")

        def load_edge_upload(path, kind):
            a = read_upload(path, "sketch or photo")
            if kind == "photo":
                grey = Image.fromarray(tc.condition_maps.to_grey(a)).resize((edge_size, edge_size), Image.BICUBIC)
                edges = tc.condition_maps.edges_from_photo(np.asarray(grey))
            else:
                edges = tc.condition_maps.resize_edges(tc.condition_maps.edges_from_sketch(a), (edge_size,) * 2)
            return {"background": map_to_image(-edges), "layers": [], "composite": None}

        def load_depth_upload(path):
            raw = read_upload(path, "depth map")
            try:
                return map_to_image(tc.condition_maps.depth_from_array(raw))
            except ValueError as e:
                raise gr.Error(str(e)) from None

        depth.upload(load_depth_upload, depth, depth_preview, show_progress="hidden", api_visibility="private")
        edge_upload.upload(load_edge_upload, [edge_upload, edge_kind], sketch, show_progress="hidden",
                           api_visibility="private")
    return demo


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    for mode in MODES:
        ap.add_argument(f"--{mode}", default=str(ROOT / "checkpoints" / mode),
                        help=f"{mode} model: our folder or an original .ckpt (default: the bundled one)")
        ap.add_argument(f"--{mode}-config", default=None, help="yaml for an original .ckpt (default: beside it)")
    ap.add_argument("--queue-size", type=int, default=16, help="requests waiting at most (others are refused)")
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    paths = {m: (getattr(args, m), getattr(args, f"{m}_config")) for m in MODES}
    demo = build_demo(ModelBank(paths, device))
    demo.queue(default_concurrency_limit=1, max_size=args.queue_size)
    demo.launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
