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
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import gradio as gr
import gradio.utils
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

import taming_core as tc

ROOT = Path(__file__).resolve().parent
MODES = ("segmentation", "edges", "depth", "unconditional", "class")
# mode -> the condition kinds its model may have (a coordinate stage, as FacesHQ's, samples whole images alone)
KINDS = {"segmentation": ("segmentation",), "edges": ("edges",), "depth": ("depth",),
         "unconditional": ("none", "coord"), "class": ("class",)}
SEGMENTER = "segmenter"  # the photo -> label map model behind "Start from a photo"
MAX_UPLOAD_PIXELS = 4096 * 4096  # larger uploads are refused before decoding
MAX_UPLOAD_BYTES = 64 * 2**20  # larger files are refused while they arrive (a 4096^2 PNG of noise still fits)
CACHE_CLEANUP = (600, 3600)  # every 10 minutes, delete uploads and results older than an hour
MAX_SCALE = 4  # the largest output side, in multiples of the model's native size
# A colour upload whose snapped labels change between more neighbouring pixels than this is a photo, not a
# label map (labels.roughness: real and painted maps 0.01-0.13 at 128 px, photos mostly 0.2-0.6)
PHOTO_ROUGHNESS = 0.2
Image.MAX_IMAGE_PIXELS = MAX_UPLOAD_PIXELS  # PIL refuses decompression bombs beyond this
# How grey COCO-Stuff label maps count: "0-based" = the data's ids (COCO category id - 1, 255 = unlabelled),
# "1-based" = the official COCO-Stuff PNGs (category id itself, 0 = unlabelled)
GREY_BASES = ("0-based", "1-based")
# the label spaces COCO-Stuff maps translate into (tc.labels.from_coco_stuff): the segmenter's photo maps and
# the ready-made scenes exist for these
SCENE_SPACES = (*tc.labels.COCO_SPACES, tc.labels.ADE20K_151)
log = logging.getLogger("app")


class Refused(gr.Error):
    """An expected refusal (a bad upload or argument): shown to the user until closed (a message that fades
    leaves a visitor with a bare "Error"), logged as one line, no traceback."""

    def __init__(self, message: str):
        super().__init__(message, duration=None, title="Not accepted", print_exception=False)
        log.warning("refused: %s", message)


# ----------------------------------------------------------------------------------------------------------
# Models and sessions


@dataclass
class ModelBank:
    """One loaded model per mode, shared by every browser session; loaded at start (load_all) or on first use."""

    paths: dict[str, tuple[str | None, str | None]]  # mode -> (checkpoint, optional original yaml)
    device: torch.device = torch.device("cpu")
    precision: str = "auto"  # how to sample (tc.sampling_precision): auto = the fastest faithful path here
    _models: dict[str, tc.Net2Net] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)  # mode -> how its model samples, in words
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def available(self, mode: str) -> bool:
        return self.paths.get(mode, (None, None))[0] is not None  # get() caches only modes with a path

    def load_all(self) -> None:
        """Loads every model with a path now, so that one that cannot be loaded is known at start: raises
        SystemExit with one line naming the mode, the path and the cause."""
        for mode in (*MODES, SEGMENTER):
            if self.available(mode):
                try:
                    self.get(mode)
                except Exception as e:  # noqa: BLE001 - any cause ends the app, said in one line
                    path, config = self.paths[mode]
                    cause = (" ".join(str(e).split()) or type(e).__name__).replace("pass config=...",
                                                                                    f"pass --{mode}-config YAML")
                    raise SystemExit(f"app.py: cannot load the {mode} model from {path}"
                                     f"{f' with {config}' if config else ''}: {cause}") from None

    @property
    def sampling(self) -> tc.SamplingPrecision:
        return tc.sampling_precision(self.precision, self.device)

    def decoding(self):
        """The context of first-stage decodes outside tc.stream (its decode_dtype)."""
        dtype = self.sampling.decode_dtype
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def get(self, mode: str) -> tc.Net2Net | tc.Segmenter:
        with self._lock:
            if mode not in self._models:
                path, config = self.paths.get(mode, (None, None))
                if path is None:
                    raise Refused(f"No {mode} model is loaded: start the app with --{mode} PATH.")
                model = tc.load_model(path, config)  # errors name the cause (main ends the app with it)
                if mode == SEGMENTER and not isinstance(model, tc.Segmenter):
                    raise tc.ConfigError(f"{path} is not a segmenter (train/train_segmenter.py makes one).")
                if mode != SEGMENTER and not isinstance(model, tc.Net2Net):
                    raise tc.ConfigError(f"{path} is a {type(model).__name__}, not a transformer.")
                kind = model.config.cond_stage.kind if mode != SEGMENTER else None
                if kind is not None and kind not in KINDS[mode]:
                    flag = [f"--{m}" for m, k in KINDS.items() if kind in k]
                    raise tc.ConfigError(f"{path} is conditioned on {kind}, not {' or '.join(KINDS[mode])}"
                                         + (f": pass it with {flag[0]}." if flag else
                                            ": the app has no tab for this condition (use the library)."))
                model = model.to(self.device).eval()
                if isinstance(model, tc.Net2Net):
                    params = sum(p.numel() for p in model.transformer.parameters())
                    plan = self.sampling
                    if plan.weight_dtype is not None:  # int8 or bf16 weights, kept once; the fp32 GPT is let go
                        model = tc.quantize_gpt(model, plan.weight_dtype, plan.prefill_dtype)
                    elif self.device.type == "cpu":  # fp32: the packed copies now, not during the first image
                        model.transformer.pack_for_sampling()
                    self.plans[mode] = f"{params / 1e6:.1f}M GPT parameters, {plan.describe()}"
                    with torch.no_grad(), self.decoding():  # warm up the decoder: the first previews are not late
                        model.decode_indices(torch.zeros(1, model.grid[0] * model.grid[1], dtype=torch.long,
                                                         device=self.device))
                self._models[mode] = model
            return self._models[mode]


class Stops:
    """Stop, per browser session (or API client): a count of Stop presses. A job takes the count as its ticket
    when it enters the queue and stops once the count has moved on: within a token when it runs, before it
    starts when it still waits. Jobs queued after a Stop take the new count and run."""

    def __init__(self):
        self._presses: dict[str, int] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _session(request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or "default"

    def press(self, request: gr.Request | None) -> None:
        with self._lock:
            key = self._session(request)
            self._presses[key] = self._presses.get(key, 0) + 1

    def presses(self, request: gr.Request | None) -> int:
        return self._presses.get(self._session(request), 0)

    def admit(self, request: gr.Request | None) -> None:
        """Gives a job entering the queue its ticket. Gradio hands the job the same underlying HTTP request
        when it starts, so the ticket travels in that request's state."""
        if getattr(request, "request", None) is not None:
            request.request.state.stop_ticket = self.presses(request)

    def ticket(self, request: gr.Request | None) -> int:
        """The ticket taken in the queue; for a direct call (no queue), the count now."""
        ticket = getattr(getattr(getattr(request, "request", None), "state", None), "stop_ticket", None)
        return self.presses(request) if ticket is None else ticket


# ----------------------------------------------------------------------------------------------------------
# Conditions from plain images


def read_upload(path_or_array, what: str) -> np.ndarray:
    """A file path (or an array) from an upload -> numpy array as stored (16-bit kept), or a clear error.
    A refused file is deleted from Gradio's upload folder at once."""
    if path_or_array is None:
        raise Refused(f"Upload a {what} first.")
    try:
        a = path_or_array if isinstance(path_or_array, np.ndarray) else open_image(path_or_array, what)
        if a.ndim < 2:
            raise Refused(f"The {what} is not an image: an array of shape {a.shape}.")
        if min(a.shape[:2]) < 2:
            raise Refused(f"The {what} is {a.shape[1]}x{a.shape[0]} pixels; it needs at least 2x2 pixels.")
        if a.shape[0] * a.shape[1] > MAX_UPLOAD_PIXELS:
            raise Refused(too_large(what, a.shape[1], a.shape[0]))
    except gr.Error:
        if not isinstance(path_or_array, np.ndarray):
            discard_upload(path_or_array)
        raise
    return a


def open_image(path: str, what: str) -> np.ndarray:
    """An image file -> numpy array as stored (L, RGB, RGBA, 16- and 32-bit grey kept; others to RGB)."""
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_UPLOAD_PIXELS:
                raise Refused(too_large(what, im.width, im.height))
            return np.asarray(im if im.mode in ("L", "RGB", "RGBA", "I;16", "I") else im.convert("RGB"))
    except FileNotFoundError:
        raise Refused(f"The {what} is no longer on the server: upload it again.") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise Refused(f"Could not read the {what}: this is not an image file (PNG, JPEG, WebP...), or it is "
                      f"damaged ({type(e).__name__}).") from None


def too_large(what: str, width: int, height: int) -> str:
    side = math.isqrt(MAX_UPLOAD_PIXELS)
    return (f"The {what} is {width}x{height} pixels; it may have at most {MAX_UPLOAD_PIXELS / 1e6:.1f} million "
            f"pixels ({side}x{side}). Make it smaller and upload it again.")


def depth_map(raw: np.ndarray) -> np.ndarray:
    """An uploaded depth image -> (H, W) float32 in [-1, 1], or a message saying what is wrong and what to
    upload instead."""
    try:
        return tc.condition_maps.depth_from_array(raw)
    except ValueError as e:
        if raw.ndim == 3 and raw.shape[2] == 4:  # transparency: read as the original float-in-RGBA depth
            raise Refused("This image has transparency, so it was read as an original float-in-RGBA depth PNG, "
                          "and its pixels are not valid depths: it looks like a photo, not a depth map. Upload a "
                          "grey depth PNG (16- or 8-bit, nearer = brighter) or an original depth PNG.") from None
        raise Refused(f"This is not a depth map the app can read ({e}). Upload a grey depth PNG (16- or 8-bit, "
                      "nearer = brighter).") from None


def discard_upload(path: str) -> None:
    """Deletes a file (and its folder, when left empty) if it lies in Gradio's upload folder; other paths,
    such as files given to the handlers directly, are left alone."""
    folder, file = Path(gradio.utils.get_upload_folder()).resolve(), Path(path).resolve()
    if file == folder or not file.is_relative_to(folder) or not file.is_file():
        return
    file.unlink(missing_ok=True)
    if file.parent != folder:
        try:
            file.parent.rmdir()
        except OSError:  # not empty: another upload shares the folder
            pass


def flatten_editor(value: dict | None, transparent=(255, 255, 255)) -> np.ndarray:
    """An ImageEditor value -> RGB (H, W, 3) uint8: the composite, else the layers over the background.
    Transparent (erased) pixels become `transparent`: white paper for a sketch, unlabelled for a label map."""
    if value is None or (value.get("composite") is None and value.get("background") is None):
        raise Refused("The canvas is empty: paint something or load an example first.")
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
    if rgba.shape[-1] == 4:  # transparent pixels (erased background) take the canvas's empty colour
        alpha = rgba[..., 3:].astype(np.float32) / 255.0
        rgba = (rgba[..., :3] * alpha + np.asarray(transparent, np.float32) * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(rgba[..., :3])


def fitted(a: np.ndarray, size: tuple[int, int], fit: str, what: str, fill=None) -> tuple[np.ndarray, str]:
    """An input map -> (its part or padded form at the output's aspect ratio, a sentence saying what was done,
    empty when nothing was)."""
    if fit not in tc.condition_maps.FITS:
        raise Refused(f"fit must be one of {', '.join(tc.condition_maps.FITS)}, got {fit!r}.")
    out = tc.condition_maps.fit_aspect(a, size, fit, fill)
    h, w = a.shape[:2]
    if tc.condition_maps.same_aspect(a.shape, size):
        return out, ""
    done = {"crop": f"cropped to its centre {out.shape[1]}x{out.shape[0]}",
            "pad": f"padded to {out.shape[1]}x{out.shape[0]}", "stretch": "stretched"}[fit]
    return out, f" The {w}x{h} {what} was {done} to fit {size[1]}x{size[0]}."


def label_map_of(upload, size: tuple[int, int], can_segment: bool, fit: str = "stretch",
                 space: tc.labels.LabelSpace = tc.labels.COCO_STUFF_UNLABELLED,
                 grey_ids: str = "0-based") -> tuple[np.ndarray, str]:
    """An uploaded or painted label map -> (raw label ids of `space` (height, width) int64, a note on
    cropping or padding). It is brought to the output's aspect ratio (`fit`; padding is unlabelled) and
    resized before the colours are snapped (the work follows the output's size, not the upload's). Refused
    in words: a colour image that snaps to label noise (a photo: pointing to "Start from a photo"), black
    (unlabelled) areas for a model without an unlabelled id, grey ids that are no label (by name, with the
    official 1-based COCO-Stuff ids in mind)."""
    if grey_ids not in GREY_BASES:
        raise Refused(f"grey_ids must be one of {', '.join(GREY_BASES)}, got {grey_ids!r}.")
    raw = read_upload(upload, "label map")
    grey = raw.ndim == 2
    if fit == "pad" and space.unlabelled is None and not tc.condition_maps.same_aspect(raw.shape, size):
        raise Refused("This model has no \"unlabelled\" label to pad with: choose crop or stretch for inputs of "
                      "another shape, or paint every pixel.")
    unlabelled = space.unlabelled if grey else (*tc.labels.UNLABELLED_COLOUR, 255)[:raw.shape[2]]
    raw, note = fitted(raw, size, fit, "label map", unlabelled)
    labels = tc.condition_maps.labels_from_image(raw, size=size, space=space)
    if grey:
        labels = grey_labels(labels, space, grey_ids)
    elif raw.shape[2] >= 3:
        rough = tc.labels.roughness(labels)
        if rough > PHOTO_ROUGHNESS:
            if not isinstance(upload, np.ndarray):
                discard_upload(upload)
            where = ("upload it under \"Start from a photo\" (API: label_map_from_photo) to get its label map"
                     if can_segment else "paint its layout with the legend's colours instead")
            raise Refused(f"This looks like a photo, not a label map: its colours change from pixel to pixel "
                          f"({rough:.0%} of neighbouring pixels get different labels; label maps have a few "
                          f"percent). To start from a photo, {where}. A label map is coloured with the legend's "
                          f"colours, or holds grey label ids.")
        if space.unlabelled is None:
            black = tc.condition_maps.resize_labels((raw[..., :3] == 0).all(-1).astype(np.uint8), size).mean()
            if black > 0.005:
                raise Refused(f"{black:.0%} of the map is black (unlabelled, erased or unpainted), and this model "
                              f"({space.name}) has no unlabelled label: paint every pixel with a legend colour.")
    return labels, note


def grey_labels(values: np.ndarray, space: tc.labels.LabelSpace, grey_ids: str) -> np.ndarray:
    """Grey values of an uploaded map (H, W) int64 -> the space's raw ids. COCO-Stuff maps count from 0
    (the data's ids) or from 1 (the official PNGs: 0 = unlabelled); a 0-based map holding ids that no
    COCO-Stuff label has is refused, naming what those values mean in the official ids."""
    coco = space in tc.labels.COCO_SPACES
    if grey_ids == "1-based":
        if not coco:
            raise Refused(f"1-based grey ids are the official COCO-Stuff encoding; this model reads {space.name} "
                          f"ids. {space.grey}")
        ids = np.where(values == 0, tc.labels.UNLABELLED, np.where(values == 255, 255, values - 1))
        unused = sorted(set(np.unique(ids).tolist()) & set(tc.labels.COCO_UNUSED))
        if unused:
            raise Refused(f"Grey values {', '.join(str(v + 1) for v in unused[:4])} are no COCO-Stuff label in the "
                          f"official 1-based ids either (unused categories). {space.grey}")
        return ids
    if coco:
        unused = sorted(set(np.unique(values).tolist()) & set(tc.labels.COCO_UNUSED))
        if unused:
            named = ", ".join(f"{v} = {tc.labels.COCO_STUFF[v - 1]}" for v in unused[:4])
            raise Refused(f"Grey values {', '.join(map(str, unused[:4]))} are no label in the 0-based COCO-Stuff "
                          f"ids this map is read with; in the official 1-based ids they are labels ({named}). If "
                          f"the map counts from 1, choose 1-based grey ids (API: grey_ids=\"1-based\").")
    return values


def labels_found(labels: np.ndarray, space: tc.labels.LabelSpace, skip: int | None = None, at_least: float = 0.01,
                 most: int = 6) -> str:
    """'sky-other 52%, grass 30%, ...': the labels of a map (raw ids 0..255) by share, largest first."""
    share = np.bincount(np.asarray(labels).ravel(), minlength=256) / max(1, labels.size)
    top = [i for i in np.argsort(-share, kind="stable") if i != skip and share[i] >= at_least][:most]
    return ", ".join(f"{space.names.get(i, f'id {i}')} {share[i]:.0%}" for i in top)


def class_names(n_classes: int) -> tuple[str, ...]:
    """The names of a class-conditional model's classes: ImageNet's for 1000 classes, else "class i"."""
    return tc.labels.imagenet_classes() if n_classes == 1000 else tuple(f"class {i}" for i in range(n_classes))


def class_index(value, names: tuple[str, ...]) -> int:
    """A class id (a whole number, or its digits) or a class name -> its index in `names`, else a refusal."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, str):
        lowered = [n.lower() for n in names]
        if value.strip().lower() in lowered:
            return lowered.index(value.strip().lower())
        near = [n for n in names if value.strip().lower() in n.lower()][:5]
        raise Refused(f"No class is named {value[:40]!r}" + (f"; similar: {', '.join(near)}." if near else "."))
    whole = isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or not 0 <= int(value) < len(names):
        raise Refused(f"class_id must be a class name or a whole number from 0 to {len(names) - 1}, got "
                      f"{str(value)[:40]!r}.")
    return int(value)


def tiled(x: torch.Tensor, gap: int = 2) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> one (H', W', 3) uint8 image: the B images in a near-square grid with white
    gaps (B = 1: the image itself)."""
    if x.shape[0] == 1:
        return to_image(x)
    images = [to_image(x[i:i + 1]) for i in range(x.shape[0])]
    cols = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    h, w = images[0].shape[:2]
    out = np.full((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = im
    return out


def untiled(image: np.ndarray, n: int, gap: int = 2) -> list[np.ndarray]:
    """The inverse of `tiled`: one (H', W', 3) grid of n images -> the n images (H, W, 3)."""
    if n == 1:
        return [image]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    h, w = (image.shape[0] - (rows - 1) * gap) // rows, (image.shape[1] - (cols - 1) * gap) // cols
    return [image[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w]
            for r, c in (divmod(i, cols) for i in range(n))]


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


# Every number a generation takes: (lowest, highest, whole numbers only). API arguments are checked against
# these before any work; the sliders stay inside them.
LIMITS = {
    "seed": (0, 2**63 - 1, True),
    "temperature": (0.01, 10.0, False),
    "top_k": (0, 65536, True),  # 0 = off
    "top_p": (0.01, 1.0, False),  # 1 = off
    "width": (0, 16384, True),  # 0 = the model's size; output_size checks multiples and the scale
    "height": (0, 16384, True),
    "frames": (1, 64, True),
    "guidance": (0.0, 10.0, False),  # 1 = off; 0 = the null condition alone
    "images": (1, 8, True),  # variations: samples of the one condition, drawn as one batch
}
# Classifier-free guidance of models trained with condition dropout (a null condition); others sample without.
# Each tab's default, measured on the bundled models' hold-out (checkpoints/README.md): segmentation 3 (the
# samples' layout matches the map in 51.6% of pixels against 36.1% at 1, and FID/KID do not worsen); edges 2
# (edge F-score 0.86 against 0.55 at 1, on drawn outlines 0.77 against 0.62, for KID 0.103 against 0.068; 3
# draws the edges more literally still at KID 0.128); depth and class 1 (not measured: the bundled depth model
# takes almost nothing from its 23 training maps, and no class model is bundled).
GUIDANCE_BY_MODE = {"segmentation": 3.0, "edges": 2.0, "depth": 1.0, "class": 1.0}
GUIDANCE = GUIDANCE_BY_MODE["segmentation"]  # the slider's value when the app opens on the Segmentation tab
FIT = "crop"  # a condition of another aspect ratio than the output: its centre part (or "pad", "stretch")


def checked_number(name: str, value) -> int | float:
    """An argument -> int or float within LIMITS[name], else a gr.Error that names it."""
    lo, hi, whole = LIMITS[name]
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if (not real or (isinstance(value, (float, np.floating)) and not math.isfinite(value))
            or (whole and value != int(value)) or not lo <= value <= hi):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise Refused(f"{name} must be {'a whole number' if whole else 'a number'} from {lo} to {hi}, "
                       f"got {shown}.")
    return int(value) if whole else float(value)


@dataclass
class Settings:
    seed: int = 0
    temperature: float = 1.0
    top_k: int = 100
    top_p: float = 1.0
    width: int = 0  # 0 = the model's native size
    height: int = 0
    frames: int = 16  # partial images sent per run (a page stays smooth with about 16-32 messages per image)
    guidance: float = GUIDANCE
    images: int = 1

    @classmethod
    def checked(cls, **values) -> Settings:
        """Settings from API arguments, each checked against LIMITS."""
        return cls(**{name: checked_number(name, value) for name, value in values.items()})


class App:
    def __init__(self, bank: ModelBank):
        self.bank, self.stops = bank, Stops()

    def output_size(self, model: tc.Net2Net, s: Settings) -> tuple[int, int]:
        """(height, width) in pixels: the native size by default, else multiples of the token size."""
        f = model.first_stage_model.downsample_factor
        gh, gw = model.grid
        height, width = s.height or gh * f, s.width or gw * f
        if height % f or width % f:
            raise Refused(f"Width and height must be multiples of {f} pixels, got {width}x{height}.")
        if height < gh * f or width < gw * f or max(height / (gh * f), width / (gw * f)) > MAX_SCALE:
            raise Refused(f"Sizes go from the model's {gw * f}x{gh * f} up to {MAX_SCALE}x that; "
                           f"got {width}x{height}.")
        return height, width

    def run(self, mode: str, cond: torch.Tensor | None, size: tuple[int, int], s: Settings,
            view: np.ndarray | None, request: gr.Request | None, note: str = "") -> Iterator[tuple]:
        """Sample and stream (image, status, view) about `frames` times, then the final image. `view` is the
        condition as shown, also the fill of the not yet sampled area; `note` ends the final status line."""
        ticket = self.stops.ticket(request)
        if self.stops.presses(request) != ticket:  # Stop was pressed while this job waited in the queue
            yield gr.skip(), "Stopped before it started.", gr.skip()
            return
        model = self.bank.get(mode)
        device = self.bank.device
        f = model.first_stage_model.downsample_factor
        grid = (size[0] // f, size[1] // f)
        with torch.no_grad():
            c = model.encode_cond(cond.to(device) if cond is not None else None)  # (1, L_c)
        if grid != model.grid:
            if mode in ("unconditional", "class"):
                raise Refused(f"{mode.capitalize()} samples have the model's native size only.")
            c = c.view(1, *grid)  # the condition grid for the sliding window
        c = c.repeat(s.images, *[1] * (c.dim() - 1))  # variations: one batch, each row its own draws
        fill = None
        if view is not None:
            fill = torch.from_numpy(view).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(device)
        gen = torch.Generator(device=device).manual_seed(s.seed)
        guided = mode != "unconditional" and model.config.null_token is not None
        if not guided and s.guidance not in (1, GUIDANCE_BY_MODE.get(mode, 1)) and mode != "unconditional":
            note += " Guidance off: this model was trained without a null condition."  # a value the user chose
        # Larger grids: the fast sliding window (the window held for half-window bands, cached), many times
        # faster than the original's exact placement; bench/sampling.py compares their likelihoods.
        events = tc.stream(model, c, grid=grid, window=model.grid, mode="fast", temperature=s.temperature,
                           top_k=s.top_k or None, top_p=s.top_p if s.top_p < 1 else None,
                           generator=gen, fill=fill, guidance=s.guidance if guided else 1.0,
                           decode_dtype=self.bank.sampling.decode_dtype)
        every, last, frame, t0 = max(1, (grid[0] * grid[1]) // s.frames), 0, None, time.time()
        try:
            for ev in events:
                if ev.preview is not None:
                    frame = ev.preview
                if self.stops.presses(request) != ticket:
                    yield (gr.skip() if frame is None else tiled(frame),
                           f"Stopped at {ev.done}/{ev.total} tokens ({ev.tokens_per_s:.0f} tokens/s).", view)
                    return
                if ev.finished:
                    what = f"{s.images} images of {ev.total} tokens" if s.images > 1 else f"{ev.total} tokens"
                    yield tiled(ev.preview), (f"Done: {what} in {time.time() - t0:.1f} s ({ev.tokens_per_s:.0f} "
                                              f"tokens/s each), {size[1]}x{size[0]} px.{note}"), view
                elif ev.preview is not None and ev.done - last >= every:
                    last = ev.done
                    yield tiled(ev.preview), f"{ev.done}/{ev.total} tokens, {ev.tokens_per_s:.0f} tokens/s", view
        finally:
            events.close()  # stops all work at once, also when the client goes away

    def admit(self, request: gr.Request, *inputs):
        """Gradio's validator of every generation: runs as a job enters the queue, to give it its Stop ticket.
        The arguments themselves are checked by the handlers, whose errors name them."""
        self.stops.admit(request)
        return tuple(gr.validate(True, "") for _ in inputs)

    # --- the four modes -------------------------------------------------------------------------------

    def generate_segmentation(self, label_map, seed=0, temperature=1.0, top_k=100, top_p=1.0, width=0,
                              height=0, frames=16, guidance=GUIDANCE_BY_MODE["segmentation"], images=1, fit=FIT,
                              grey_ids="0-based",
                              request: gr.Request = None):
        """Label map (grey ids of the model's label space, or colour-coded with the app's palette for it) ->
        streamed images. A map of another aspect ratio than the output is cropped to its centre, padded with
        unlabelled, or stretched (`fit`), as the status line says, which also names the labels read. Grey
        COCO-Stuff maps count from 0 (the data's ids, 255 = unlabelled) or, with grey_ids="1-based", from 1
        (the official PNGs, 0 = unlabelled)."""
        s = Settings.checked(seed=seed, temperature=temperature, top_k=top_k, top_p=top_p, width=width,
                             height=height, frames=frames, guidance=guidance, images=images)
        model = self.bank.get("segmentation")
        size = self.output_size(model, s)
        space = self.label_space()
        # resized before the colours are snapped: the work follows the output's size, not the upload's
        labels, note = label_map_of(label_map, size, self.can_segment(), fit, space, grey_ids)
        try:
            model.conditioner.labels_to_onehot(torch.from_numpy(labels)[None])  # checks the label ids
        except ValueError as e:
            raise Refused(f"This label map has grey values that are no label: {e}. {space.grey} A photo is not "
                          "a label map: paint one, or upload one coloured with the legend's colours.") from None
        yield from self.run("segmentation", torch.from_numpy(labels)[None], size, s, space.colourise(labels),
                            request, f"{note} Labels: {labels_found(labels, space)}.")

    def generate_edges(self, image, kind="sketch", seed=0, temperature=1.0, top_k=100, top_p=1.0, width=0,
                       height=0, frames=16, guidance=GUIDANCE_BY_MODE["edges"], images=1, fit=FIT,
                       request: gr.Request = None):
        """An edge sketch (strokes on a plain background) or a photo (edges extracted) -> streamed images. An
        image of another aspect ratio is cropped, padded with its border's tone, or stretched (`fit`)."""
        s = Settings.checked(seed=seed, temperature=temperature, top_k=top_k, top_p=top_p, width=width,
                             height=height, frames=frames, guidance=guidance, images=images)
        if kind not in ("sketch", "photo"):
            raise Refused(f"kind must be 'sketch' or 'photo', got {kind!r}")
        size = self.output_size(self.bank.get("edges"), s)
        a, note = fitted(read_upload(image, "sketch or photo"), size, fit, kind)
        if kind == "photo":  # extract at the output size, as training extracts at the training size
            rgb = np.asarray(Image.fromarray(tc.condition_maps.to_grey(a)).resize(size[::-1], Image.BICUBIC))
            edges = tc.condition_maps.edges_from_photo(rgb)
        else:
            edges = tc.condition_maps.resize_edges(tc.condition_maps.edges_from_sketch(a), size)
        view = map_to_image(-edges)  # dark edges on white, as drawn
        yield from self.run("edges", torch.from_numpy(edges)[None, None], size, s, view, request, note)

    def generate_depth(self, depth, seed=0, temperature=1.0, top_k=100, top_p=1.0, width=0, height=0,
                       frames=16, guidance=GUIDANCE_BY_MODE["depth"], images=1, fit=FIT,
                       request: gr.Request = None):
        """A depth map (16- or 8-bit grey PNG, nearer = brighter, or the original float-in-RGBA PNG). A map of
        another aspect ratio is cropped, padded with its border's depth, or stretched (`fit`)."""
        s = Settings.checked(seed=seed, temperature=temperature, top_k=top_k, top_p=top_p, width=width,
                             height=height, frames=frames, guidance=guidance, images=images)
        size = self.output_size(self.bank.get("depth"), s)
        d, note = fitted(depth_map(read_upload(depth, "depth map")), size, fit, "depth map")
        d = tc.condition_maps.resize_map(d, size)
        yield from self.run("depth", torch.from_numpy(d)[None, None], size, s, map_to_image(d), request, note)

    def generate_unconditional(self, seed=0, temperature=1.0, top_k=100, top_p=1.0, frames=16, images=1,
                               request: gr.Request = None):
        """Samples from the start token alone, at the model's native size (a model with a coordinate stage,
        as FacesHQ's, is given every pixel's position, as the original's data gives it)."""
        s = Settings.checked(seed=seed, temperature=temperature, top_k=top_k, top_p=top_p, frames=frames,
                             images=images)
        model = self.bank.get("unconditional")
        size = self.output_size(model, s)
        cond = None
        if model.config.cond_stage.kind == "coord":
            h, w = size
            cond = (torch.arange(h * w, dtype=torch.float32) / (h * w)).view(1, 1, h, w)  # raster position
        yield from self.run("unconditional", cond, size, s, None, request)

    def generate_class(self, class_id, seed=0, temperature=1.0, top_k=100, top_p=1.0, frames=16, images=1,
                       guidance=GUIDANCE_BY_MODE["class"], request: gr.Request = None):
        """A class (its id, or its name as class_names lists it) -> streamed images at the model's native
        size."""
        s = Settings.checked(seed=seed, temperature=temperature, top_k=top_k, top_p=top_p, frames=frames,
                             images=images, guidance=guidance)
        model = self.bank.get("class")
        names = class_names(model.conditioner.n_classes)
        i = class_index(class_id, names)
        size = self.output_size(model, s)
        yield from self.run("class", torch.tensor([i]), size, s, None, request, f" Class {i}: {names[i]}.")

    def class_choices(self) -> list[tuple[str, int]]:
        """The class picker's entries: ("980: volcano", 980), ... (empty when no class model is loaded)."""
        if not self.bank.available("class"):
            return []
        return [(f"{i}: {n}", i) for i, n in enumerate(class_names(self.bank.get("class").conditioner.n_classes))]

    def request_stop(self, request: gr.Request = None):
        self.stops.press(request)

    def label_map_from_photo(self, photo, size: int = 0) -> tuple[np.ndarray, str]:
        """A photo -> (its label map in the palette colours (size, size, 3) uint8, a message naming what was
        found). The centre square of the photo is segmented (size 0: the segmentation model's native size).
        The photo only goes to the segmenter, never to the generator."""
        if not self.can_segment():
            raise Refused(f"Start from a photo needs the segmenter (--segmenter) and a segmentation model over "
                          f"COCO-Stuff or ADE20K labels; this one has {self.label_space().name}.")
        segmenter, space = self.bank.get(SEGMENTER), self.label_space()
        if not size:
            size = self.native_size("segmentation")
        rgb = tc.condition_maps.to_rgb(read_upload(photo, "photo"))
        h, w = rgb.shape[:2]
        ids = segmenter.segment(tc.condition_maps.centre_square(rgb))  # (S, S) uint8, COCO-Stuff ids
        labels = tc.labels.from_coco_stuff(tc.condition_maps.resize_labels(ids, (size, size)), space)
        other_id = tc.labels.UNLABELLED if space.unlabelled is None else space.unlabelled
        other = labels == other_id
        found = labels_found(labels, space, skip=other_id)
        crop = f"its centre {min(h, w)}x{min(h, w)} square" if h != w else "it"
        missing = "" if space.unlabelled is not None else ", which this model has no label for: paint them"
        black = (f"; black = {space.names.get(space.unlabelled, 'unlabelled')} ({other.mean():.0%}: things "
                 f"outside the palette{missing})" if other.mean() >= 0.01 else "")
        message = (f"Label map of the {w}x{h} photo ({crop}, segmented): {found or 'no palette label'}"
                   f"{black}. Repaint it, then press Generate; the photo itself is not used.")
        return space.colourise(labels), message  # "other" is black (255 too, where it is no label)

    def label_space(self) -> tc.labels.LabelSpace:
        """The label space of the segmentation model (COCO-Stuff + unlabelled when none is loaded)."""
        if not self.bank.available("segmentation"):
            return tc.labels.COCO_STUFF_UNLABELLED
        cond = self.bank.get("segmentation").conditioner
        return tc.labels.label_space(cond.n_labels, cond.label_offset)

    def can_segment(self) -> bool:
        """Whether "Start from a photo" works: a segmenter, and a model whose labels its COCO-Stuff maps fit."""
        return self.bank.available(SEGMENTER) and self.label_space() in SCENE_SPACES

    def native_size(self, mode: str) -> int:
        """The side in pixels of the images a mode's model makes (256 when no model is loaded)."""
        if not self.bank.available(mode):
            return 256
        m = self.bank.get(mode)
        return m.grid[0] * m.first_stage_model.downsample_factor


# ----------------------------------------------------------------------------------------------------------
# Ready-made segmentation maps and the palette


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


def example_maps(size: int, space: tc.labels.LabelSpace = tc.labels.COCO_STUFF_UNLABELLED) -> dict[str, np.ndarray]:
    """A few scenes as label maps (size, size) uint8 of `space`, drawn from simple shapes: COCO-Stuff ids,
    ADE20K's labels of the same things (snow as mountain, fog as sky); none for other spaces."""
    if space not in SCENE_SPACES:
        return {}
    maps = coco_example_maps(size)
    if space is tc.labels.ADE20K_151:
        L = tc.labels.label_id
        for name, a in maps.items():
            a = np.where(a == L("snow"), L("mountain"), np.where(a == L("fog"), L("sky-other"), a))
            maps[name] = tc.labels.from_coco_stuff(a, space).astype(np.uint8)
    return maps


def coco_example_maps(size: int) -> dict[str, np.ndarray]:
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


def editor_value(labels: np.ndarray, space: tc.labels.LabelSpace = tc.labels.COCO_STUFF_UNLABELLED) -> dict:
    return {"background": space.colourise(labels), "layers": [], "composite": None}


UNLABELLED_RGB = tuple(int(v) for v in tc.labels.UNLABELLED_COLOUR)  # black: erased pixels, "unlabelled"
BLANK = "Blank (unlabelled)"  # the empty scene of the "Start from" list (spaces with an unlabelled id)
UPLOADED = "(your upload)"  # what the "Start from" list says while the canvas holds an uploaded map or a photo's


def legend_html(space: tc.labels.LabelSpace) -> str:
    chips = "".join(
        f'<span style="display:inline-flex;align-items:center;margin:2px 8px 2px 0;font-size:12px">'
        f'<span style="width:14px;height:14px;border:1px solid #888;margin-right:4px;'
        f'background:{_hex(space.colours[space.id(n)])}"></span>{n}</span>' for n in space.painter)
    more = sum(not n.startswith("unused-") for n in space.names.values()) - len(space.painter)
    extra = (f'<span style="font-size:12px;color:#666">and {more} more {space.name} labels under '
             f'"Replace label"</span>' if more > 0 else "")
    return f'<div id="legend">{chips}{extra}</div>'


# ----------------------------------------------------------------------------------------------------------
# The UI

# Results and condition maps are shown enlarged with nearest-neighbour pixels (display only: files keep their size)
CSS = ".result img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }"


def swatch_script(space: tc.labels.LabelSpace = tc.labels.COCO_STUFF_UNLABELLED) -> str:
    """Page script for the label painter: the editor's colour swatches carry no names, so each gets its label's
    name as tooltip and accessible name; picking one closes the colour popup (it would otherwise stay open over
    the canvas and swallow the next stroke), by clicking the Brush tool as a user would."""
    names = {f"rgb({r}, {g}, {b})": n for n in space.painter for r, g, b in [space.colours[space.id(n)].tolist()]}
    return """<script>
(() => {
  const names = %s;
  const name = (b) => names[b.style.backgroundColor];
  new MutationObserver(() => {
    document.querySelectorAll("#seg button.color:not([data-named])").forEach((b) => {
      b.dataset.named = "1";
      if (!name(b)) return;
      b.title = name(b);
      b.setAttribute("aria-label", name(b));
      b.addEventListener("click", () => setTimeout(() => {
        const brush = document.querySelector('#seg button[aria-label="Brush"]');
        if (!brush) return;
        for (const type of ["pointerdown", "mousedown", "pointerup", "mouseup"]) {
          brush.dispatchEvent(new PointerEvent(type, {bubbles: true, cancelable: true, pointerType: "mouse"}));
        }
        brush.click();
      }, 0));
    });
  }).observe(document.documentElement, {subtree: true, childList: true});
})();
</script>""" % json.dumps(names)


def for_page(mode: str, seed, images, stream: Iterator[tuple], with_view: bool = True) -> Iterator[tuple]:
    """A handler's stream, made for a tab: each image saved as `taming-<mode>-seed<seed>.png` (the name its
    download keeps), and Stop styled as active while the job runs (an event after the job styles it back).
    With several images per run, the last grid is also cut into its images, `...-seed<seed>-<i>.png`, shown
    in the tab's gallery (each its own download) once the run ends; the gallery hides for single images.
    Each file is deleted once Gradio has copied it to its cache, that is when the next one is asked for.
    The condition view is sent once: Gradio rewrites an array's cache file in place each time it is sent,
    which cuts short a browser still reading it (a broken image, "Too little data for declared Content-Length");
    copies of files, as the images here, are written once under a new name."""
    folder, view_sent, last, first = None, False, None, True
    try:
        for image, status, view in stream:
            if view_sent:
                view = gr.skip()
            view_sent = view_sent or isinstance(view, np.ndarray)
            if isinstance(image, np.ndarray):
                done, folder, last = folder, Path(tempfile.mkdtemp(prefix="taming-app-")), image
                path = folder / f"taming-{mode}-seed{int(seed)}.png"
                Image.fromarray(image).save(path)
                image = str(path)
                if done is not None:
                    shutil.rmtree(done, ignore_errors=True)
            gallery = gr.update(value=None, visible=False) if first else gr.skip()
            first = False
            yield (image, status, *([view] if with_view else []), gr.update(variant="stop"), gallery)
        if last is not None and int(images) > 1:
            files = []
            for i, one in enumerate(untiled(last, int(images)), 1):
                files.append((str(folder / f"taming-{mode}-seed{int(seed)}-{i}.png"), f"{i}"))
                Image.fromarray(one).save(files[-1][0])
            yield (gr.skip(), gr.skip(), *([gr.skip()] if with_view else []), gr.skip(),
                   gr.update(value=files, visible=True))
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def result_column(key: str, with_view: bool = True) -> tuple:
    """A tab's own result, progress, Stop, (optionally) condition view and gallery of the images of one run:
    switching tabs keeps each tab's."""
    out = gr.Image(label="Result (enlarged; the download is the true size)", format="png", interactive=False,
                   elem_id=f"out_{key}", elem_classes=["result"], height=420, buttons=["download", "fullscreen"])
    status = gr.Textbox(label="Progress", interactive=False, elem_id=f"status_{key}", lines=2, max_lines=6)
    stop = gr.Button("Stop", variant="secondary", elem_id=f"stop_{key}")
    each = gr.Gallery(label="Each image (click one for its download)", format="png", columns=4, height=200,
                      elem_id=f"each_{key}", visible=False, interactive=False)
    view = None
    if with_view:
        view = gr.Image(label="Condition the model sees", format="png", interactive=False,
                        elem_id=f"cond_{key}", elem_classes=["result"], height=200)
    return out, status, stop, view, each


def build_demo(bank: ModelBank) -> gr.Blocks:
    app = App(bank)
    space = app.label_space()  # the segmentation model's labels: palette, legend, grey ids, examples
    names = space.painter  # the palette; black paints the unlabelled id, where the model has one
    # "Replace label" offers every label: the painter's first, then the others by name
    every = [*names, *sorted({n for n in space.names.values() if not n.startswith("unused-")} - set(names))]
    native = {mode: app.native_size(mode) for mode in MODES}  # canvas sizes follow the models
    seg_size, edge_size = native["segmentation"], native["edges"]
    examples = example_maps(seg_size, space)
    if space.unlabelled is not None:
        examples[BLANK] = np.full((seg_size, seg_size), space.unlabelled, np.uint8)
    if not examples:  # a generic label space: a canvas of its first label to paint over
        examples["Blank"] = np.full((seg_size, seg_size), space.ids[0], np.uint8)
    first_example = next(iter(examples))
    empty = BLANK if BLANK in examples else first_example  # what "Clear canvas" gives
    brush_colour = space.colours[space.id("tree") if "tree" in names else space.id(names[0])]
    results = {}  # tab key -> (out, status, stop, view, gallery)

    with gr.Blocks(title="Taming Transformers", delete_cache=CACHE_CLEANUP) as demo:
        demo.page_head = swatch_script(space)  # launch() puts it in the page's head
        gr.Markdown("## Taming Transformers\nPaint a scene, draw edges or upload depth; press Generate and "
                    "watch the image appear token by token.")
        with gr.Tabs():
            with gr.Tab("Segmentation", id="seg_tab") as seg_tab:
                with gr.Row():
                    with gr.Column(scale=1):
                        seg = gr.ImageEditor(
                            value=editor_value(examples[first_example], space), type="numpy",
                            image_mode="RGBA", format="png", sources=(), transforms=(), layers=False,
                            brush=gr.Brush(colors=[_hex(space.colours[space.id(n)]) for n in names],
                                           default_color=_hex(brush_colour), color_mode="fixed",
                                           default_size=max(4, seg_size // 32)),
                            eraser=gr.Eraser(default_size=max(4, seg_size // 32)),
                            canvas_size=(seg_size, seg_size), fixed_canvas=True, elem_id="seg",
                            label=f"Paint with the label colours ({space.name})")
                        gr.HTML(legend_html(space))
                        go_seg = gr.Button("Generate", variant="primary", elem_id="go_seg")
                        with gr.Row():
                            example = gr.Dropdown([*examples, UPLOADED], value=first_example, label="Start from",
                                                  elem_id="seg_example")
                            fill_from = gr.Dropdown(every, value=every[0], label="Replace label",
                                                    elem_id="fill_from")
                            fill_to = gr.Dropdown(every, value=every[1 % len(every)], label="with",
                                                  elem_id="fill_to")
                            fill_btn = gr.Button("Fill", size="sm")
                        with gr.Row():
                            seg_photo = gr.File(label="Start from a photo (its label map replaces the canvas)",
                                                file_types=["image"], elem_id="seg_photo", height=150,
                                                visible=app.can_segment())
                            seg_upload = gr.File(label="Or upload a label map (legend colours or grey ids)",
                                                 file_types=["image"], elem_id="seg_upload", height=150)
                        coco = space in tc.labels.COCO_SPACES
                        grey_ids = gr.Radio(list(GREY_BASES), value=GREY_BASES[0], label="Grey ids count from",
                                            info="0-based: the data's ids; 1-based: the official COCO-Stuff PNGs "
                                                 "(0 = unlabelled)", elem_id="grey_ids_base", visible=coco)
                        gr.Markdown(space.grey, elem_id="grey_ids")
                    with gr.Column(scale=1):
                        results["seg"] = result_column("seg")
            with gr.Tab("Edges", id="edges_tab") as edges_tab:
                with gr.Row():
                    with gr.Column(scale=1):
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
                                              file_types=["image"], elem_id="edges_upload", height=150)
                        go_edges = gr.Button("Generate", variant="primary", elem_id="go_edges")
                    with gr.Column(scale=1):
                        results["edges"] = result_column("edges")
            with gr.Tab("Depth", id="depth_tab") as depth_tab:
                with gr.Row():
                    with gr.Column(scale=1):
                        depth = gr.File(label="Upload a depth map (16/8-bit grey PNG, nearer = brighter, or the "
                                              "original float-in-RGBA PNG)", file_types=["image"], elem_id="depth",
                                        height=150)
                        depth_preview = gr.Image(label="Depth preview", format="png", interactive=False,
                                                 elem_id="depth_preview", elem_classes=["result"], height=200)
                        go_depth = gr.Button("Generate", variant="primary", elem_id="go_depth")
                    with gr.Column(scale=1):
                        results["depth"] = result_column("depth")
            with gr.Tab("Unconditional", id="uncond_tab") as uncond_tab:
                with gr.Row():
                    with gr.Column(scale=1):
                        gr.Markdown("Samples from the start token alone, at the model's native size.")
                        go_uncond = gr.Button("Generate", variant="primary", elem_id="go_uncond")
                    with gr.Column(scale=1):
                        results["uncond"] = result_column("uncond", with_view=False)
            with gr.Tab("Class", id="class_tab", visible=bank.available("class")) as class_tab:
                with gr.Row():
                    with gr.Column(scale=1):
                        choices = app.class_choices()
                        class_id = gr.Dropdown(choices, value=choices[0][1] if choices else None,
                                               label="Class (type to search)", filterable=True,
                                               elem_id="class_id")
                        gr.Markdown("Samples of the chosen class, at the model's native size.")
                        go_class = gr.Button("Generate", variant="primary", elem_id="go_class")
                    with gr.Column(scale=1):
                        results["class"] = result_column("class", with_view=False)
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
                frames = gr.Slider(2, 32, 16, step=1, label="Previews per image, at most", elem_id="frames",
                                   info="fewer when decoding them would take over a fifth of the time")
                guidance = gr.Slider(0.0, 5.0, GUIDANCE, step=0.25, label="Guidance (1 = off)", elem_id="guidance",
                                     info="higher follows the condition more closely, with less variety; for "
                                          "models trained with condition dropout")
                images = gr.Slider(1, 4, 1, step=1, label="Images per run", elem_id="images",
                                   info="variations of one condition, sampled together and shown side by side")
                fit = gr.Radio(list(tc.condition_maps.FITS), value=FIT, label="Inputs of another shape",
                               info="crop to the centre, pad the sides, or stretch to the output's shape",
                               elem_id="fit")

        settings = [seed, temperature, top_k, top_p, width, height, frames, guidance, images, fit]
        # every generation shares the one model, and takes its Stop ticket as it enters the queue
        common = dict(concurrency_id="model", validator=app.admit)

        def from_canvas(value, seed, temperature, top_k, top_p, width, height, frames, guidance, images, fit,
                        request: gr.Request):
            yield from for_page("segmentation", seed, images, app.generate_segmentation(
                flatten_editor(value, UNLABELLED_RGB), seed, temperature, top_k, top_p, width, height, frames,
                guidance, images, fit, "0-based", request))

        def from_sketch(value, seed, temperature, top_k, top_p, width, height, frames, guidance, images, fit,
                        request: gr.Request):
            yield from for_page("edges", seed, images, app.generate_edges(
                flatten_editor(value), "sketch", seed, temperature, top_k, top_p, width, height, frames, guidance,
                images, fit, request))

        def from_depth(path, seed, temperature, top_k, top_p, width, height, frames, guidance, images, fit,
                       request: gr.Request):
            yield from for_page("depth", seed, images, app.generate_depth(
                path, seed, temperature, top_k, top_p, width, height, frames, guidance, images, fit, request))

        def from_nothing(seed, temperature, top_k, top_p, frames, images, request: gr.Request):
            yield from for_page("unconditional", seed, images, app.generate_unconditional(
                seed, temperature, top_k, top_p, frames, images, request), with_view=False)

        def from_class(class_id, seed, temperature, top_k, top_p, frames, images, guidance, request: gr.Request):
            yield from for_page("class", seed, images, app.generate_class(
                class_id, seed, temperature, top_k, top_p, frames, images, guidance, request), with_view=False)

        idle = dict(fn=lambda: gr.update(variant="secondary"), inputs=None, queue=False, show_progress="hidden",
                    api_visibility="private")
        for key, button, fn, inputs in (("seg", go_seg, from_canvas, [seg, *settings]),
                                        ("edges", go_edges, from_sketch, [sketch, *settings]),
                                        ("depth", go_depth, from_depth, [depth, *settings]),
                                        ("uncond", go_uncond, from_nothing,
                                         [seed, temperature, top_k, top_p, frames, images]),
                                        ("class", go_class, from_class,
                                         [class_id, seed, temperature, top_k, top_p, frames, images, guidance])):
            out, status, stop, view, each = results[key]
            outputs = [out, status, *([view] if view is not None else []), stop, each]
            # named apart, so the API's names stay free
            button.click(fn, inputs, outputs, api_name=f"ui_{key}", api_visibility="private",
                         show_progress_on=[status], **common).then(outputs=stop, **idle)
            stop.click(app.request_stop, None, None, queue=False, api_visibility="private")
        # Width, height and the fit of inputs apply to the map tabs only, guidance to the conditional ones
        # (each with its measured default)
        for tab, sized, mode in ((seg_tab, True, "segmentation"), (edges_tab, True, "edges"),
                                 (depth_tab, True, "depth"), (uncond_tab, False, None), (class_tab, False, "class")):
            def on_select(sized=sized, mode=mode):
                g = gr.update(visible=True, value=GUIDANCE_BY_MODE[mode]) if mode else gr.update(visible=False)
                return [gr.update(visible=sized), gr.update(visible=sized), g, gr.update(visible=sized)]
            tab.select(on_select, None, [width, height, guidance, fit], queue=False, show_progress="hidden",
                       api_visibility="private")

        # The API: one endpoint per mode on hidden inputs, plain files and numbers without the sliders' bounds,
        # so that every argument reaches the handlers, whose checks name it.
        with gr.Row(visible=False):
            api_map = gr.File(label="label map")
            api_edges = gr.File(label="sketch or photo")
            api_depth = gr.File(label="depth map")
            api_photo = gr.File(label="photo")
            api_photo_button = gr.Button()
            api_photo_outputs = [gr.Image(format="png"), gr.Textbox()]
            api_kind = gr.Textbox("sketch", label="kind: sketch or photo")
            api_fit = gr.Textbox(FIT, label="fit: crop, pad or stretch")
            api_grey = gr.Textbox(GREY_BASES[0], label="grey_ids: 0-based or 1-based")
            api_class = gr.Textbox("0", label="class_id: a class id or name")
            defaults = asdict(Settings())
            api = {name: gr.Number(value, label=name) for name, value in defaults.items() if name != "guidance"}
            api_buttons = {mode: gr.Button() for mode in MODES}
            api_outputs = [gr.Image(format="png"), gr.Textbox(), gr.Image(format="png")]
            api_stop = gr.Button()
            api_guidance = {mode: gr.Number(g, label="guidance") for mode, g in GUIDANCE_BY_MODE.items()}

        def api_settings(mode: str) -> list:  # the settings' inputs, with that mode's guidance default
            return [api_guidance[mode] if name == "guidance" else api[name] for name in defaults]
        api_uncond = [api[name] for name in ("seed", "temperature", "top_k", "top_p", "frames", "images")]
        for mode, fn, inputs in (("segmentation", app.generate_segmentation,
                                  [api_map, *api_settings("segmentation"), api_fit, api_grey]),
                                 ("edges", app.generate_edges,
                                  [api_edges, api_kind, *api_settings("edges"), api_fit]),
                                 ("depth", app.generate_depth, [api_depth, *api_settings("depth"), api_fit]),
                                 ("unconditional", app.generate_unconditional, api_uncond),
                                 ("class", app.generate_class, [api_class, *api_uncond, api_guidance["class"]])):
            api_buttons[mode].click(fn, inputs, api_outputs, api_name=f"generate_{mode}", **common)
        api_stop.click(app.request_stop, None, None, queue=False, api_name="stop")
        if app.can_segment():
            api_photo_button.click(app.label_map_from_photo, api_photo, api_photo_outputs,
                                   api_name="label_map_from_photo", concurrency_id=SEGMENTER)
        dice.click(lambda: int(np.random.randint(0, 2**31 - 1)), None, seed, queue=False, api_visibility="private")

        example.change(lambda name: editor_value(examples[name], space) if name in examples else gr.skip(),
                       example, seg, show_progress="hidden", api_visibility="private")
        # "Clear canvas" gives the blank (unlabelled) map, which the model reads as "no layout given"
        seg.clear(lambda: (editor_value(examples[empty], space), empty), None, [seg, example],
                  show_progress="hidden", api_visibility="private")

        def replace_label(value, a, b):
            labels = tc.condition_maps.labels_from_image(flatten_editor(value, UNLABELLED_RGB),
                                                          size=(seg_size, seg_size), space=space)
            labels[labels == space.id(a)] = space.id(b)
            return editor_value(labels, space)

        fill_btn.click(replace_label, [seg, fill_from, fill_to], seg, show_progress="hidden",
                       api_visibility="private")

        def load_label_upload(path, fit, grey_ids):
            # snapped at canvas size: the pixels resizing keeps, not the whole upload (up to 16.8 MP)
            labels, note = label_map_of(path, (seg_size, seg_size), app.can_segment(), fit, space, grey_ids)
            gr.Info(f"{note.strip()} Labels: {labels_found(labels, space)}.".strip())
            return editor_value(labels, space), UPLOADED

        def load_edge_upload(path, kind, fit):
            a, note = fitted(read_upload(path, "sketch or photo"), (edge_size, edge_size), fit, kind)
            if note:
                gr.Info(note.strip())
            if kind == "photo":
                grey = Image.fromarray(tc.condition_maps.to_grey(a)).resize((edge_size, edge_size), Image.BICUBIC)
                edges = tc.condition_maps.edges_from_photo(np.asarray(grey))
            else:
                edges = tc.condition_maps.resize_edges(tc.condition_maps.edges_from_sketch(a), (edge_size,) * 2)
            return {"background": map_to_image(-edges), "layers": [], "composite": None}

        def load_depth_upload(path):
            return map_to_image(depth_map(read_upload(path, "depth map")))

        # A refused upload empties its file box (and the depth preview), so nothing looks loaded that is not
        quiet = dict(show_progress="hidden", api_visibility="private")
        seg_upload.upload(load_label_upload, [seg_upload, fit, grey_ids], [seg, example], **quiet).failure(
            lambda: None, None, seg_upload, queue=False, **quiet)
        edge_upload.upload(load_edge_upload, [edge_upload, edge_kind, fit], sketch, **quiet).failure(
            lambda: None, None, edge_upload, queue=False, **quiet)

        def load_photo(path):
            rgb, message = app.label_map_from_photo(path, seg_size)
            return {"background": rgb, "layers": [], "composite": None}, message, UPLOADED

        seg_photo.upload(load_photo, seg_photo, [seg, results["seg"][1], example], concurrency_id=SEGMENTER,
                         **quiet).failure(lambda: None, None, seg_photo, queue=False, **quiet)
        depth.upload(load_depth_upload, depth, depth_preview, **quiet).failure(
            lambda: (None, None), None, [depth, depth_preview], queue=False, **quiet)
        depth.clear(lambda: None, None, depth_preview, queue=False, **quiet)
    return demo


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
    return demo.launch(max_file_size=MAX_UPLOAD_BYTES, css=CSS,
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
