"""The page's own handlers (the API has its own, in handlers.App): each tab's Generate, streamed for the page
by for_page, and the uploads and edits that fill the painter and the sketch canvas."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import cv2
import gradio as gr
import numpy as np
from PIL import Image

import taming_core as tc

from .files import png_file
from .handlers import App, untiled
from .scenes import PANORAMAS, UNLABELLED_RGB, UPLOADED, editor_value, start_scenes
from .uploads import edges_of_upload, flatten_editor, label_map_of, read_depth

# The Sampling fields each tab's Generate takes, by its handler's argument names (and the API's): the event
# passes them as keywords (inputs_kwargs)
MAP_SETTINGS = ("seed", "temperature", "top_k", "top_p", "width", "height", "frames", "guidance", "images", "fit")
SETTINGS_BY_TAB = {"seg": MAP_SETTINGS, "edges": MAP_SETTINGS, "depth": MAP_SETTINGS,
                   "uncond": ("seed", "temperature", "top_k", "top_p", "frames", "images"),
                   "class": ("seed", "temperature", "top_k", "top_p", "frames", "images", "guidance")}


def for_page(mode: str, seed, images, stream: Iterator[tuple], with_view: bool = True) -> Iterator[tuple]:
    """A handler's stream, made for a tab: each image saved as `taming-<mode>-seed<seed>.png` (the name its
    download keeps), and Stop styled as active while the job runs (an event after the job styles it back).
    With several images per run, the last grid is also cut into its images, `...-seed<seed>-<i>.png`, shown
    in the tab's gallery (each its own download) once the run ends; the gallery hides for single images.
    Each file is deleted once Gradio has copied it to its cache, that is when the next one is asked for.
    The condition view is sent once, as a file written once (files.py: an array's cache file is rewritten each
    time it is sent, cutting short a browser still reading it)."""
    folder, view_sent, last, first = None, False, None, True
    try:
        for image, status, view in stream:
            if view_sent:
                view = gr.skip()
            if isinstance(view, np.ndarray):
                view, view_sent = png_file(view, "condition"), True
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


class Page:
    """The handlers of one page: `app` generates; the painter shows label maps of `space` and the sketch canvas
    white paper, both at the output's shape (the Width and Height fields; `side` square until they are read);
    `scenes` name the "Start from" scenes (scenes.start_scenes), `empty` the one "Clear canvas" gives."""

    def __init__(self, app: App, space: tc.labels.LabelSpace, side: int, scenes: list[str], empty: str):
        self.app, self.space, self.side, self.scenes, self.empty = app, space, side, scenes, empty

    def shape(self, mode: str, width, height) -> tuple[int, int] | None:
        """The output's (height, width) that the fields give for `mode`, or None while they give none (as while a
        number is being typed)."""
        return self.app.output_shape(mode, width, height)

    def canvas(self, labels: np.ndarray) -> dict:
        """A label map (H, W) -> the painter's value: the map in the palette colours."""
        return editor_value(self.space.colourise(labels))

    def scene(self, name: str, shape: tuple[int, int]) -> np.ndarray:
        """A "Start from" scene as a label map of `shape` (height, width)."""
        return start_scenes(shape, self.space)[name]

    def blank_sketch(self, width=None, height=None) -> dict:
        """The sketch canvas's value: white paper of the output's shape (also what "Clear canvas" gives)."""
        shape = self.shape("edges", width, height) or (self.side, self.side)
        return editor_value(np.full((*shape, 3), 255, np.uint8))

    # --- Generate, one per tab; settings: the tab's SETTINGS_BY_TAB --------------------------------------

    def from_canvas(self, value, request: gr.Request, **settings):
        yield from for_page("segmentation", settings["seed"], settings["images"], self.app.generate_segmentation(
            flatten_editor(value, UNLABELLED_RGB), **settings, grey_ids="0-based", request=request))

    def from_sketch(self, value, request: gr.Request, **settings):
        yield from for_page("edges", settings["seed"], settings["images"], self.app.generate_edges(
            flatten_editor(value), "sketch", **settings, request=request))

    def from_depth(self, path, request: gr.Request, **settings):
        yield from for_page("depth", settings["seed"], settings["images"], self.app.generate_depth(
            path, **settings, request=request))

    def from_nothing(self, request: gr.Request, **settings):
        yield from for_page("unconditional", settings["seed"], settings["images"], self.app.generate_unconditional(
            **settings, request=request), with_view=False)

    def from_class(self, class_id, request: gr.Request, **settings):
        yield from for_page("class", settings["seed"], settings["images"], self.app.generate_class(
            class_id, **settings, request=request), with_view=False)

    # --- the painter and the uploads -----------------------------------------------------------------------

    def start_from(self, name: str, width, height):
        """A "Start from" scene -> (the painter's value, width, height): a panorama sets the output to its aspect
        (the height kept where it can be), other scenes take the output's shape; "(your upload)" changes nothing."""
        if name not in self.scenes:
            return gr.skip(), gr.skip(), gr.skip()
        shape = self.shape("segmentation", width, height) or (self.side, self.side)
        if name in PANORAMAS:
            shape = self.app.shape_of_aspect("segmentation", PANORAMAS[name], shape)
        return self.canvas(self.scene(name, shape)), shape[1], shape[0]

    def cleared(self, width=None, height=None) -> tuple[dict, str]:
        """After "Clear canvas": the blank (unlabelled) map of the output's shape, which the model reads as "no
        layout given"."""
        shape = self.shape("segmentation", width, height) or (self.side, self.side)
        return self.canvas(self.scene(self.empty, shape)), self.empty

    def resize_painter(self, value, name: str, width, height):
        """Width or height changed: the painter follows the output's shape, its scene drawn anew where nothing was
        painted over it, else the painting stretched (nearest pixels, the labels kept)."""
        shape = self.shape("segmentation", width, height)
        if shape is None or value is None:
            return gr.skip()
        if name in self.scenes and not painted(value):
            return self.canvas(self.scene(name, shape))
        rgb = flatten_editor(value, UNLABELLED_RGB)
        if rgb.shape[:2] == shape:
            return gr.skip()
        return self.canvas(tc.condition_maps.labels_from_image(rgb, size=shape, space=self.space))

    def resize_sketch(self, value, width, height):
        """Width or height changed: the sketch canvas follows the output's shape (strokes stretched)."""
        shape = self.shape("edges", width, height)
        if shape is None or value is None:
            return gr.skip()
        if not painted(value):
            return self.blank_sketch(width, height)
        rgb = flatten_editor(value)
        if rgb.shape[:2] == shape:
            return gr.skip()
        return editor_value(cv2.resize(rgb, shape[::-1], interpolation=cv2.INTER_AREA))

    def replace_label(self, value, a: str, b: str) -> dict:
        """Label `a` painted over with label `b` (at the canvas's own shape)."""
        labels = tc.condition_maps.labels_from_image(flatten_editor(value, UNLABELLED_RGB), space=self.space)
        labels[labels == self.space.id(a)] = self.space.id(b)
        return self.canvas(labels)

    def load_label_upload(self, path, fit: str, grey_ids: str, width, height) -> tuple[dict, str]:
        # snapped at the output's shape: the pixels resizing keeps, not the whole upload (up to 16.8 MP)
        shape = self.shape("segmentation", width, height) or (self.side, self.side)
        labels, note = label_map_of(path, shape, self.app.can_segment(), fit, self.space, grey_ids)
        gr.Info(f"{note.strip()} Labels: {tc.condition_maps.labels_found(labels, self.space)}.".strip())
        return self.canvas(labels), UPLOADED

    def load_edge_upload(self, path, kind: str, fit: str, width, height) -> dict:
        shape = self.shape("edges", width, height) or (self.side, self.side)
        edges, note = edges_of_upload(path, kind, shape, fit)
        if note:
            gr.Info(note.strip())
        return editor_value(tc.condition_maps.map_to_image(-edges))

    def load_depth_upload(self, path) -> str:
        return png_file(tc.condition_maps.map_to_image(read_depth(path)), "depth")

    def load_photo(self, path, width, height) -> tuple[dict, str, str, int, int]:
        """A photo -> (its label map in the painter, the message, "(your upload)", width, height): the output
        takes the photo's aspect, its short side kept."""
        shape = self.shape("segmentation", width, height) or (self.side, self.side)
        rgb, message = self.app.label_map_from_photo(path, min(shape))
        return editor_value(rgb), message, UPLOADED, rgb.shape[1], rgb.shape[0]


def painted(value: dict) -> bool:
    """Whether an ImageEditor value holds strokes (a layer with any opaque pixel)."""
    return any(np.asarray(layer).ndim == 3 and np.asarray(layer).shape[-1] == 4 and np.asarray(layer)[..., 3].any()
               for layer in value.get("layers") or [])
