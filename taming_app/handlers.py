"""The handlers: one per mode (each also an API endpoint), taking plain images and numbers and streaming
(image, status, condition view) as the image is sampled; Stop; the photo -> label map of "Start from a photo"."""
from __future__ import annotations

import functools
import math
import queue
import threading
import time
from typing import Iterator

import gradio as gr
import numpy as np
import torch

import taming_core as tc

from .batching import END, Batcher, Job, Update
from .models import SEGMENTER, ModelBank, Stops
from .refused import Refused, log
from .scenes import SCENE_SPACES
from .settings import FIT, GUIDANCE_BY_MODE, MAX_SCALE, Settings, class_index, class_names
from .uploads import depth_of_upload, edges_of_upload, label_map_of, read_upload


def arrives(handler):
    """Marks a generation handler: from its first step until it submits its job (or fails), the batcher knows
    a request is on its way, so a batch about to start can wait a little for it (Batcher.linger)."""
    @functools.wraps(handler)
    def wrapper(self, *args, **kwargs):
        arrival = self.batcher.arriving()
        self._arrivals.value = arrival  # read by run() on this thread, before the handler's first yield
        try:
            yield from handler(self, *args, **kwargs)
        finally:
            arrival.close()
    return wrapper


class App:
    """The handlers over one ModelBank, shared by every session; Stop is per session (Stops)."""

    def __init__(self, bank: ModelBank, max_batch: int = 8):
        self.bank, self.stops = bank, Stops()
        self.batcher = Batcher(max_batch, threads=bank.threads)  # concurrent generations, sampled as one batch
        self._arrivals = threading.local()  # the Arrival of the handler call running on this thread
        self.blocks: gr.Blocks | None = None  # the page serving the handlers (build_demo): its queue knows the jobs

    def client_gone(self, request: gr.Request | None) -> bool:
        """Whether the client of the queued job behind `request` has gone: it disconnected (gradio marks the job
        dead) or cancelled it (gradio drops the job from the running ones). Gradio itself stops a generator only at
        its next yield, seconds later for large images; the handlers ask every token. A direct call (no queue)
        has no client to lose."""
        queue, raw = getattr(self.blocks, "_queue", None), getattr(request, "request", None)
        if queue is None or raw is None:
            return False
        for jobs in list(queue.active_jobs):
            for job in jobs or ():
                if job.request is raw:
                    return not job.alive
        return True  # no longer among the running jobs: cancelled

    def output_size(self, model: tc.Net2Net, s: Settings) -> tuple[int, int]:
        """(height, width) in pixels: the native size by default, else multiples of the token size."""
        size, problem = size_of(model, s.width, s.height)
        if problem:
            raise Refused(problem)
        return size

    def output_shape(self, mode: str, width, height) -> tuple[int, int] | None:
        """The (height, width) that `width` and `height` give `mode`'s output, or None where they give none (no
        model, a size out of range, a number being typed): for the page's canvases, which follow the output."""
        if not self.bank.available(mode) or any(not isinstance(v, (int, float)) or v != v for v in (width, height)):
            return None
        size, problem = size_of(self.bank.get(mode), int(width), int(height))
        return None if problem else size

    def shape_of_aspect(self, mode: str, aspect: float, near: tuple[int, int]) -> tuple[int, int]:
        """The output (height, width) of `mode` closest to width = aspect * height, with its short side as near
        `near`'s as the sizes allow (multiples of the token size, MAX_SCALE)."""
        model = self.bank.get(mode)
        f = model.first_stage_model.downsample_factor
        lo = model.grid[0] * f, model.grid[1] * f
        side = min(near)
        h, w = (side, side * aspect) if aspect >= 1 else (side / aspect, side)
        scale = min(1.0, MAX_SCALE * lo[0] / h, MAX_SCALE * lo[1] / w)  # shrink both to stay within the limit
        h, w = (max(lo[0], min(MAX_SCALE * lo[0], f * round(h * scale / f))),
                max(lo[1], min(MAX_SCALE * lo[1], f * round(w * scale / f))))
        return int(h), int(w)

    def run(self, mode: str, cond: torch.Tensor | None, size: tuple[int, int], s: Settings,
            view: np.ndarray | None, request: gr.Request | None, note: str = "") -> Iterator[tuple]:
        """Sample and stream (image, status, view) about `frames` times, then the final image. `view` is the
        condition as shown, also the fill of the not yet sampled area; `note` ends the final status line. The
        sampling itself runs on the batcher's worker, together with concurrent requests for the same model."""
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
        guided = mode != "unconditional" and model.config.null_token is not None
        if not guided and s.guidance not in (1, GUIDANCE_BY_MODE.get(mode, 1)) and mode != "unconditional":
            note += " Guidance off: this model was trained without a null condition."  # a value the user chose
        # Larger grids: the fast sliding window (the window held for half-window bands, cached), many times
        # faster than the original's exact placement; bench/sampling.py compares their likelihoods.
        pick = tc.make_picker(s.temperature, s.top_k or None, s.top_p if s.top_p < 1 else None, False,
                              torch.Generator(device=device).manual_seed(s.seed))
        job = Job(mode, model, c, grid, pick, s.guidance if guided else 1.0, fill, self.bank.sampling.decode_dtype,
                  stopped=lambda: self.stops.presses(request) != ticket)
        self.batcher.submit(job, getattr(self._arrivals, "value", None))
        every, last, frame, t0 = max(1, (grid[0] * grid[1]) // s.frames), 0, None, time.time()
        checked, told, latest = 0.0, False, None
        try:
            while True:
                try:
                    ev = job.updates.get(timeout=0.05)  # at most 50 ms apart: Stop and a gone client are seen
                except queue.Empty:
                    ev = None
                if ev is END:
                    if latest is None and self.stops.presses(request) != ticket:  # dropped before it started
                        yield gr.skip(), "Stopped before it started.", gr.skip()
                    return
                if isinstance(ev, BaseException):
                    raise ev
                if isinstance(ev, Update):
                    latest, frame = ev, frame if ev.preview is None else ev.preview
                if time.time() - checked > 0.05:  # a cancelled or abandoned job stops at once
                    checked, gone = time.time(), self.client_gone(request)
                    if gone:
                        log.info("stopped at %s tokens: the client has gone",
                                 f"{latest.done}/{latest.total}" if latest else "0")
                        return
                if self.stops.presses(request) != ticket:
                    if latest is None and not job.started.is_set():  # it waited behind another batch
                        yield gr.skip(), "Stopped before it started.", gr.skip()
                        return
                    done = (f"{latest.done}/{latest.total} tokens ({latest.tokens_per_s:.0f} tokens/s)" if latest
                            else "the start")
                    yield gr.skip() if frame is None else tiled(frame), f"Stopped at {done}.", view
                    return
                if ev is None:
                    if not told and not job.started.is_set() and time.time() - t0 > 0.5:
                        told = True  # waits behind a batch of another size or model
                        yield gr.skip(), "Waiting for the images being made to finish…", view
                    continue
                if ev.finished:
                    what = f"{s.images} images of {ev.total} tokens" if s.images > 1 else f"{ev.total} tokens"
                    shared = f", sampled together with {ev.shared_with} other request(s)" if ev.shared_with else ""
                    yield tiled(ev.preview), (f"Done: {what} in {time.time() - t0:.1f} s ({ev.tokens_per_s:.0f} "
                                              f"tokens/s each{shared}), {size[1]}x{size[0]} px.{note}"), view
                    return
                if ev.preview is not None and ev.done - last >= every:
                    # the condition view goes with the first preview and the result only: resending an image
                    # costs every update its encoding and transfer
                    shown, last = view if last == 0 else gr.skip(), ev.done
                    yield tiled(ev.preview), f"{ev.done}/{ev.total} tokens, {ev.tokens_per_s:.0f} tokens/s", shown
        finally:
            job.cancel()  # no more updates; the batch stops once every job in it is cancelled

    def admit(self, request: gr.Request, *inputs, **named):
        """Gradio's validator of every generation: runs as a job enters the queue, to give it its Stop ticket.
        The arguments themselves (positional, and named for the page's events) are checked by the handlers,
        whose errors name them."""
        self.stops.admit(request)
        return tuple(gr.validate(True, "") for _ in (*inputs, *named))

    # --- the five modes, one handler each (also the API's endpoints) -----------------------------------

    @arrives
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
            model.conditioner.label_ids(torch.from_numpy(labels)[None])  # checks the label ids
        except ValueError as e:
            raise Refused(f"This label map has grey values that are no label: {e}. {space.grey} A photo is not "
                          "a label map: paint one, or upload one coloured with the legend's colours.") from None
        yield from self.run("segmentation", torch.from_numpy(labels)[None], size, s, space.colourise(labels),
                            request, f"{note} Labels: {tc.condition_maps.labels_found(labels, space)}.")

    @arrives
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
        edges, note = edges_of_upload(image, kind, size, fit)
        view = tc.condition_maps.map_to_image(-edges)  # dark edges on white, as drawn
        yield from self.run("edges", torch.from_numpy(edges)[None, None], size, s, view, request, note)

    @arrives
    def generate_depth(self, depth, seed=0, temperature=1.0, top_k=100, top_p=1.0, width=0, height=0,
                       frames=16, guidance=GUIDANCE_BY_MODE["depth"], images=1, fit=FIT,
                       request: gr.Request = None):
        """A depth map (16- or 8-bit grey PNG, nearer = brighter, or the original float-in-RGBA PNG). A map of
        another aspect ratio is cropped, padded with its border's depth, or stretched (`fit`)."""
        s = Settings.checked(seed=seed, temperature=temperature, top_k=top_k, top_p=top_p, width=width,
                             height=height, frames=frames, guidance=guidance, images=images)
        size = self.output_size(self.bank.get("depth"), s)
        d, note = depth_of_upload(depth, size, fit)
        yield from self.run("depth", torch.from_numpy(d)[None, None], size, s, tc.condition_maps.map_to_image(d),
                            request, note)

    @arrives
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

    @arrives
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
        """A photo -> (its label map in the palette colours (height, width, 3) uint8, a message naming what was
        found). The whole photo is segmented; the map has its aspect ratio, its short side `size` (0: the
        segmentation model's native size), within the output sizes of the model. The photo only goes to the
        segmenter, never to the generator."""
        if not self.can_segment():
            raise Refused(f"Start from a photo needs the segmenter (--segmenter) and a segmentation model over "
                          f"COCO-Stuff or ADE20K labels; this one has {self.label_space().name}.")
        segmenter, space = self.bank.get(SEGMENTER), self.label_space()
        size = int(size) or self.native_size("segmentation")
        rgb = tc.condition_maps.rgb_of(read_upload(photo, "photo"))
        h, w = rgb.shape[:2]
        shape = self.shape_of_aspect("segmentation", w / h, (size, size))
        self.bank.threads.measure()
        with self.bank.threads.use("segmenter"):
            ids = segmenter.segment(rgb)  # (h, w) uint8, COCO-Stuff ids
        labels = tc.labels.from_coco_stuff(tc.condition_maps.resize_labels(ids, shape), space)
        other_id = tc.labels.UNLABELLED if space.unlabelled is None else space.unlabelled
        other = labels == other_id
        found = tc.condition_maps.labels_found(labels, space, skip=other_id)
        missing = "" if space.unlabelled is not None else ", which this model has no label for: paint them"
        black = (f"; black = {space.names.get(space.unlabelled, 'unlabelled')} ({other.mean():.0%}: things "
                 f"outside the palette{missing})" if other.mean() >= 0.01 else "")
        message = (f"Label map of the {w}x{h} photo, at {shape[1]}x{shape[0]} (width and height set to it): "
                   f"{found or 'no palette label'}{black}. Repaint it, then press Generate; the photo itself is "
                   f"not used.")
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


def size_of(model: tc.Net2Net, width: int, height: int) -> tuple[tuple[int, int], str]:
    """((height, width) in pixels, "") of a model's output for the asked width and height (0: native), or (the
    native size, what is wrong with them)."""
    f = model.first_stage_model.downsample_factor
    gh, gw = model.grid
    h, w = height or gh * f, width or gw * f
    if h % f or w % f:
        return (gh * f, gw * f), f"Width and height must be multiples of {f} pixels, got {w}x{h}."
    if h < gh * f or w < gw * f or max(h / (gh * f), w / (gw * f)) > MAX_SCALE:
        return (gh * f, gw * f), f"Sizes go from the model's {gw * f}x{gh * f} up to {MAX_SCALE}x that; got {w}x{h}."
    return (h, w), ""


def tiled(x: torch.Tensor, gap: int = 2) -> np.ndarray:
    """(B, C, H, W) in [-1, 1] -> one (H', W', 3) uint8 image: the B images in a near-square grid with white
    gaps (B = 1: the image itself)."""
    images = tc.to_image(x)  # B x (H, W, 3)
    if len(images) == 1:
        return images[0]
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
