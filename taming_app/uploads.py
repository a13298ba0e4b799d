"""Uploads and canvases -> arrays: reading files within the limits, deleting refused ones, flattening the
painter's layers, and the label, depth and edge maps of an upload (read by tc.condition_maps)."""
from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path

import gradio as gr
import gradio.utils
import numpy as np
from PIL import Image, UnidentifiedImageError

import taming_core as tc

from .refused import Refused, log, refusing

MAX_UPLOAD_PIXELS = 4096 * 4096  # larger uploads are refused before decoding
MAX_UPLOAD_BYTES = 64 * 2**20  # larger files are refused while they arrive (a 4096^2 PNG of noise still fits)
UPLOAD_QUOTA = 512 * 2**20  # Gradio's upload folder is held to this, the oldest files deleted first
MIN_MAP_SIDE = 16  # sketches and depth maps need at least this many pixels a side
ENLARGED_NOTE = 4  # a map enlarged this many times or more is named in the status


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
    """An image file -> numpy array as stored (L, RGB, RGBA, 32-bit grey kept; 16-bit grey of either byte order,
    as 16-bit TIFFs, as native uint16; others to RGB). Any decoding error (a damaged file, a text or colour-profile
    chunk that inflates past Pillow's limit: ValueError, ...) is a refusal."""
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_UPLOAD_PIXELS:
                raise Refused(too_large(what, im.width, im.height))
            if im.mode.startswith("I;16"):  # I;16, I;16B (big-endian TIFF), I;16L, I;16N
                return np.asarray(im).astype(np.uint16)  # native byte order
            return np.asarray(im if im.mode in ("L", "RGB", "RGBA", "I") else im.convert("RGB"))
    except FileNotFoundError:
        raise Refused(f"The {what} is no longer on the server: upload it again.") from None
    except gr.Error:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise Refused(f"Could not read the {what}: this is not an image file (PNG, JPEG, WebP...), or it is "
                      f"damaged (UnidentifiedImageError).") from None
    except Exception as e:  # noqa: BLE001 - whatever a decoder raises on a hostile file: one line, no traceback
        raise Refused(f"Could not read the {what}: this is not an image file (PNG, JPEG, WebP...), or it is "
                      f"damaged ({type(e).__name__}).") from None


def too_large(what: str, width: int, height: int) -> str:
    side = math.isqrt(MAX_UPLOAD_PIXELS)
    return (f"The {what} is {width}x{height} pixels; it may have at most {MAX_UPLOAD_PIXELS / 1e6:.1f} million "
            f"pixels ({side}x{side}). Make it smaller and upload it again.")


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


def enforce_quota(folder: Path, quota: int) -> int:
    """Deletes the oldest files under `folder` (Gradio's upload folder, which also caches what the page was sent)
    until they take at most `quota` bytes: uploads no handler uses stayed an hour with no bound (20 x 50 MB ->
    1.1 GiB). Returns the bytes deleted."""
    files = list(_regular_files(Path(folder)))
    total, freed = sum(size for _, size, _ in files), 0
    for _, size, path in sorted(files, key=lambda f: f[0]):
        if total - freed <= quota:
            break
        path.unlink(missing_ok=True)
        freed += size
        if path.parent != Path(folder):
            try:
                path.parent.rmdir()
            except OSError:  # not empty
                pass
    return freed


def _regular_files(folder: Path):
    """(mtime, size, path) of every regular file under `folder`, links not followed: one stat per file
    (os.scandir knows the kinds)."""
    pending = [folder]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:  # deleted meanwhile, or not a folder
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    yield st.st_mtime, st.st_size, Path(entry.path)
            except OSError:  # deleted meanwhile
                pass


def keep_uploads_within(quota: int, is_running, every: float = 2.0, max_share: float = 0.02,
                        folder=None) -> threading.Thread:
    """Starts a thread that holds Gradio's upload folder (or `folder()`) to `quota` bytes (enforce_quota every
    `every` seconds) while `is_running()`; returns it. The folder also caches every image the page is sent
    (16 previews an image), kept an hour: thousands of files, whose listing took a fifth of a core when swept
    every 2 s. A sweep that took s seconds is followed by a wait of at least s / max_share, so the sweeps take at
    most that share of one core whatever the folder holds."""
    folder = folder or (lambda: Path(gradio.utils.get_upload_folder()))

    def sweep():
        while is_running():
            t0 = time.perf_counter()
            try:
                freed = enforce_quota(folder(), quota)
                if freed:
                    log.warning("upload folder over its %d MiB quota: deleted %d MiB of the oldest files",
                                quota >> 20, freed >> 20)
            except OSError as e:
                log.warning("upload quota: %s", e)
            time.sleep(max(every, (time.perf_counter() - t0) / max_share))

    thread = threading.Thread(target=sweep, name="upload-quota", daemon=True)
    thread.start()
    return thread


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


def label_map_of(upload, size: tuple[int, int], can_segment: bool, fit: str = "stretch",
                 space: tc.labels.LabelSpace = tc.labels.COCO_STUFF_UNLABELLED,
                 grey_ids: str = "0-based") -> tuple[np.ndarray, str]:
    """An uploaded or painted label map -> (raw label ids of `space` (height, width) int64, a note on cropping
    or padding), read by tc.condition_maps.label_map. A photo given as a label map is deleted and refused with a
    pointer to "Start from a photo" where the app `can_segment`."""
    with refusing():
        tc.condition_maps.check_grey_ids(grey_ids)
    raw = read_upload(upload, "label map")
    try:
        return tc.condition_maps.label_map(raw, size, fit, space, grey_ids)
    except tc.condition_maps.LooksLikePhoto as e:
        if not isinstance(upload, np.ndarray):
            discard_upload(upload)
        where = ("upload it under \"Start from a photo\" (API: label_map_from_photo) to get its label map"
                 if can_segment else "paint its layout with the legend's colours instead")
        raise Refused(f"This looks like a photo, not a label map: {e.why}. To start from a photo, {where}. A "
                      f"label map is coloured with the legend's colours, or holds grey label ids.") from None
    except tc.condition_maps.MapError as e:
        raise Refused(str(e)) from None


def depth_of_upload(upload, size: tuple[int, int], fit: str) -> tuple[np.ndarray, str]:
    """An uploaded depth map -> ((height, width) = size float32 in [-1, 1], a note on cropping or padding, or
    on a small map enlarged)."""
    with refusing():
        d, note = tc.condition_maps.fit_map(read_depth(upload), size, fit, "depth map")
    return tc.condition_maps.resize_map(d, size), note + enlarged(d.shape, size, "depth map")


def read_depth(upload) -> np.ndarray:
    """An uploaded depth map -> (H, W) float32 in [-1, 1], as uploaded (a colour photo or a map under
    MIN_MAP_SIDE refused)."""
    with refusing():
        return tc.condition_maps.read_depth_map(read_map(upload, "depth map"))


def edges_of_upload(upload, kind: str, size: tuple[int, int], fit: str) -> tuple[np.ndarray, str]:
    """An uploaded sketch or photo (`kind`) -> (edge map (height, width) = size in [-1, 1], a note on cropping
    or padding, or on a small image enlarged)."""
    with refusing():
        a, note = tc.condition_maps.fit_map(read_map(upload, kind), size, fit, kind)
    return tc.condition_maps.edges_from_image(a, kind, size), note + enlarged(a.shape, size, kind)


def read_map(upload, what: str) -> np.ndarray:
    """read_upload for the maps drawn from (sketches, photos' edges, depth): one under MIN_MAP_SIDE pixels holds
    too little to draw from (an 8x8 image was silently enlarged 32x), refused and deleted."""
    a = read_upload(upload, what)
    if min(a.shape[:2]) < MIN_MAP_SIDE:
        if not isinstance(upload, np.ndarray):
            discard_upload(upload)
        raise Refused(f"The {what} is {a.shape[1]}x{a.shape[0]} pixels: too small to draw from. Upload one of at "
                      f"least {MIN_MAP_SIDE}x{MIN_MAP_SIDE} pixels, ideally the output's size.")
    return a


def enlarged(shape: tuple[int, ...], size: tuple[int, int], what: str) -> str:
    """A note when a map (H, W) was enlarged ENLARGED_NOTE times or more to size (height, width), else ""."""
    scale = max(size[0] / shape[0], size[1] / shape[1])
    return (f" The {shape[1]}x{shape[0]} {what} was enlarged {scale:.3g}x to {size[1]}x{size[0]}: it holds little "
            f"detail to follow." if scale >= ENLARGED_NOTE else "")
