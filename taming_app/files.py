"""Images the page is sent (canvases, previews, condition views), as PNG files written once.

Gradio saves an array it is sent under a name made from its content, writing the file anew each time, even
while a browser is still reading the earlier copy: the browser gets a cut-short image and the server logs "Too
little/much data for declared Content-Length" (seen after Fill four times in a row, or quick Generate/Stop).
A file is copied into Gradio's cache only when no copy of that content is there yet, so images sent as files
are written exactly once."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

KEEP_SECONDS = 3600  # files older than this are deleted (Gradio has copied them long before)
_lock = threading.Lock()
_swept = [0.0]  # when old files were last deleted


def folder() -> Path:
    """This process's folder of written images."""
    return Path(tempfile.gettempdir()) / f"taming-app-{os.getpid()}"


def png_file(image: np.ndarray, stem: str = "image") -> str:
    """An image (H, W[, C]) uint8 -> the path of a PNG of it, `<folder>/<content hash>/<stem>.png`, written only
    if absent (atomically: never seen half written)."""
    image = np.ascontiguousarray(image)
    digest = hashlib.sha1(repr((image.shape, image.dtype.str)).encode() + image.tobytes()).hexdigest()
    path = folder() / digest / f"{stem}.png"
    with _lock:
        sweep()
        if path.exists():
            os.utime(path.parent)  # sent again: kept another KEEP_SECONDS
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = path.with_name(f".{path.name}.part")
            Image.fromarray(image).save(staging, format="png")
            staging.replace(path)
    return str(path)


def sweep(now: float | None = None) -> None:
    """Deletes the written images older than KEEP_SECONDS (looked at once a minute at most)."""
    now = time.time() if now is None else now
    if now - _swept[0] < 60 or not folder().is_dir():
        return
    _swept[0] = now
    for entry in folder().iterdir():
        try:
            if now - entry.stat().st_mtime > KEEP_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:  # deleted meanwhile
            pass
