"""The HTTP / gradio_client API: one endpoint per mode (generate_segmentation, generate_edges, generate_depth,
generate_unconditional, generate_class), label_map_from_photo and stop. Their names, parameters (names, order,
types, defaults) and outputs are a public interface: change none of them.

Each endpoint is an event of a hidden button on hidden inputs: plain files, texts and numbers without the
sliders' bounds, so that every argument reaches the handlers, whose checks name it. (gr.api would derive other
parameter names and types from the handlers' signatures.)"""
from __future__ import annotations

import functools
from dataclasses import asdict

import gradio as gr
import numpy as np

import taming_core as tc

from .files import png_file
from .handlers import App
from .models import MODES, SEGMENTER
from .settings import FIT, GUIDANCE_BY_MODE, LIMITS, Settings


def whole_number(value, label: str) -> gr.Number:
    """A number the API documents as an int (type "integer"), passed on as given: the handlers refuse a fraction
    by name, where gr.Number(precision=0) would round it silently. (The instance's api_info is replaced: a
    subclass of a gradio component makes gradio write a .pyi file beside this module.)"""
    number = gr.Number(value, label=label)
    number.api_info = lambda: {"type": "integer"}
    return number


def image_file(example: str, label: str) -> gr.File:
    """An image file of the API, whose documented example is an image of that name (not gradio's PDF URL)."""
    file = gr.File(label=label)
    file.example_payload = lambda: {"path": example, "meta": {"_type": "gradio.FileData"}, "orig_name": example}
    file.example_value = lambda: example
    return file


WHOLE = {name for name, (_, _, whole) in LIMITS.items() if whole}  # the settings documented as ints
OUTPUT_STEMS = ("image", "status", "condition")  # the file names API clients download


def images_as_files(handler):
    """A handler's stream with each image array sent as a PNG file written once (files.png_file). Gradio writes an
    array to its cache under a name made from its content, anew for every request: concurrent requests with the
    same condition view (or the same seed and settings) rewrote that file while another client was reading it
    ("Too little data for declared Content-Length", a failed download; 8 concurrent clients, bench/serving.py)."""
    @functools.wraps(handler)  # gradio reads the handler's signature (its gr.Request parameter) through this
    def stream(*args, **kwargs):
        for out in handler(*args, **kwargs):
            yield tuple(png_file(x, stem) if isinstance(x, np.ndarray) else x for x, stem in zip(out, OUTPUT_STEMS))
    return stream


def add_api(app: App, common: dict, side: int = 0) -> None:
    """Adds the API's hidden inputs and endpoints to the Blocks being built; `common`: the event arguments every
    generation shares (its concurrency group and Stop-ticket validator); `side`: the default width and height of
    the map endpoints (0: the model's native size)."""
    with gr.Row(visible=False):
        api_map = image_file("label_map.png", "label map")
        api_edges = image_file("sketch.png", "sketch or photo")
        api_depth = image_file("depth.png", "depth map")
        api_photo = image_file("photo.jpg", "photo")
        api_photo_button = gr.Button()
        api_photo_outputs = [gr.Image(format="png", label="label map"), gr.Textbox(label="message")]
        api_kind = gr.Textbox("sketch", label="kind: sketch or photo")
        api_fit = gr.Textbox(FIT, label="fit: crop, pad or stretch")
        api_grey = gr.Textbox(tc.condition_maps.GREY_BASES[0], label="grey_ids: 0-based or 1-based")
        api_class = gr.Textbox("0", label="class_id: a class id or name")
        defaults = asdict(Settings(width=side, height=side))
        api = {name: whole_number(value, name) if name in WHOLE else gr.Number(value, label=name)
               for name, value in defaults.items() if name != "guidance"}
        api_buttons = {mode: gr.Button() for mode in MODES}
        api_outputs = [gr.Image(format="png", label="image"), gr.Textbox(label="status"),
                       gr.Image(format="png", label="condition")]
        api_stop = gr.Button()
        api_guidance = {mode: gr.Number(g, label="guidance") for mode, g in GUIDANCE_BY_MODE.items()}

    def api_settings(mode: str) -> list:  # the settings' inputs, with that mode's guidance default
        return [api_guidance[mode] if name == "guidance" else api[name] for name in defaults]
    api_uncond = [api[name] for name in ("seed", "temperature", "top_k", "top_p", "frames", "images")]
    for mode, fn, inputs in (("segmentation", app.generate_segmentation,
                              [api_map, *api_settings("segmentation"), api_fit, api_grey]),
                             ("edges", app.generate_edges, [api_edges, api_kind, *api_settings("edges"), api_fit]),
                             ("depth", app.generate_depth, [api_depth, *api_settings("depth"), api_fit]),
                             ("unconditional", app.generate_unconditional, api_uncond),
                             ("class", app.generate_class, [api_class, *api_uncond, api_guidance["class"]])):
        api_buttons[mode].click(images_as_files(fn), inputs, api_outputs, api_name=f"generate_{mode}", **common)
    api_stop.click(app.request_stop, None, None, queue=False, api_name="stop")
    if app.can_segment():
        api_photo_button.click(app.label_map_from_photo, api_photo, api_photo_outputs,
                               api_name="label_map_from_photo", concurrency_id=SEGMENTER)
