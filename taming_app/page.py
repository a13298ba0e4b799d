"""The page's own handlers (the API has its own, in handlers.App): each tab's Generate, streamed for the page
by for_page, and the uploads and edits that fill the painter and the sketch canvas."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import gradio as gr
import numpy as np
from PIL import Image

import taming_core as tc

from .handlers import App, untiled
from .scenes import UNLABELLED_RGB, UPLOADED, editor_value
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


class Page:
    """The handlers of one page: `app` generates; the painter shows label maps of `space` at `seg_size`, the
    sketch canvas is `edge_size` square; `examples` are the "Start from" scenes, `empty` the one "Clear canvas"
    gives."""

    def __init__(self, app: App, space: tc.labels.LabelSpace, seg_size: int, edge_size: int,
                 examples: dict[str, np.ndarray], empty: str):
        self.app, self.space, self.seg_size, self.edge_size = app, space, seg_size, edge_size
        self.examples, self.empty = examples, empty

    def canvas(self, labels: np.ndarray) -> dict:
        """A label map (H, W) -> the painter's value: the map in the palette colours."""
        return editor_value(self.space.colourise(labels))

    def blank_sketch(self) -> dict:
        """The sketch canvas's value: white paper."""
        return editor_value(np.full((self.edge_size, self.edge_size, 3), 255, np.uint8))

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

    def start_from(self, name: str):
        """A "Start from" scene -> the painter's value ("(your upload)" leaves the canvas as it is)."""
        return self.canvas(self.examples[name]) if name in self.examples else gr.skip()

    def cleared(self) -> tuple[dict, str]:
        """After "Clear canvas": the blank (unlabelled) map, which the model reads as "no layout given"."""
        return self.canvas(self.examples[self.empty]), self.empty

    def replace_label(self, value, a: str, b: str) -> dict:
        """Label `a` painted over with label `b`."""
        labels = tc.condition_maps.labels_from_image(flatten_editor(value, UNLABELLED_RGB),
                                                      size=(self.seg_size, self.seg_size), space=self.space)
        labels[labels == self.space.id(a)] = self.space.id(b)
        return self.canvas(labels)

    def load_label_upload(self, path, fit: str, grey_ids: str) -> tuple[dict, str]:
        # snapped at canvas size: the pixels resizing keeps, not the whole upload (up to 16.8 MP)
        labels, note = label_map_of(path, (self.seg_size, self.seg_size), self.app.can_segment(), fit, self.space,
                                    grey_ids)
        gr.Info(f"{note.strip()} Labels: {tc.condition_maps.labels_found(labels, self.space)}.".strip())
        return self.canvas(labels), UPLOADED

    def load_edge_upload(self, path, kind: str, fit: str) -> dict:
        edges, note = edges_of_upload(path, kind, (self.edge_size, self.edge_size), fit)
        if note:
            gr.Info(note.strip())
        return editor_value(tc.condition_maps.map_to_image(-edges))

    def load_depth_upload(self, path) -> np.ndarray:
        return tc.condition_maps.map_to_image(read_depth(path))

    def load_photo(self, path) -> tuple[dict, str, str]:
        rgb, message = self.app.label_map_from_photo(path, self.seg_size)
        return editor_value(rgb), message, UPLOADED
