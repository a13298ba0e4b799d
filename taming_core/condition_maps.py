"""Condition maps from plain images: edge maps (from photos or sketches), depth maps, label maps.

Shape legend: H,W map size. Every function takes numpy arrays as image files decode them and returns a
float32 map in [-1, 1] (edges, depth) or int64 label ids (segmentation), ready for `Net2Net.encode_cond`
after adding batch (and channel) axes. Training data, the app and evaluation use these same functions.
"""
from __future__ import annotations

import cv2
import numpy as np

from .labels import COCO_STUFF_UNLABELLED, LabelSpace

CANNY_LOW, CANNY_HIGH = 100, 200  # thresholds of the edge extractor (on a 0..255 grey image)
SKETCH_DARKNESS = 0.5  # a sketch pixel is a stroke when (255 - grey) / 255 exceeds this


def _as_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8/uint16 -> (H, W, 1) or (H, W, 3) uint8, alpha composited
    over white."""
    a = np.asarray(image)
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an image (H, W[, C]), got shape {a.shape}")
    if a.shape[2] == 4:
        alpha = a[..., 3:].astype(np.float32) / 255.0
        a = (a[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    return a


def to_rgb(image: np.ndarray) -> np.ndarray:
    """An image (see to_grey) -> (H, W, 3) uint8, grey repeated: a photo as the segmenter reads it."""
    a = _as_uint8(image)
    return np.ascontiguousarray(np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a)


def to_grey(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8/uint16 -> (H, W) uint8 grey (alpha over white)."""
    a = _as_uint8(image)
    return cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY) if a.shape[2] == 3 else a[..., 0]


def edges_from_photo(image: np.ndarray, low: float = CANNY_LOW, high: float = CANNY_HIGH) -> np.ndarray:
    """A photo (H, W[, C]) -> edge map (H, W) float32: +1 on Canny edges (hysteresis thresholds low/high),
    -1 elsewhere."""
    edges = cv2.Canny(to_grey(image), low, high)  # (H, W) uint8 in {0, 255}
    return edges.astype(np.float32) / 127.5 - 1.0


def edges_from_sketch(image: np.ndarray) -> np.ndarray:
    """Strokes on a plain background (H, W[, C]) -> edge map (H, W) float32: +1 on strokes, -1 elsewhere.
    Strokes are the minority tone: dark strokes on white (a drawing) or bright ones on black (a boundary map
    such as BSDS500's). They are thinned to one-pixel lines so they look like the extractor's edges."""
    grey = to_grey(image).astype(np.int32)
    ink = 255 - grey if grey.mean() >= 128 else grey  # how strongly each pixel is a stroke
    strokes = (ink > SKETCH_DARKNESS * 255).astype(np.uint8)
    thin = _thin(strokes)
    return thin.astype(np.float32) * 2.0 - 1.0


def edges_from_soft(probability: np.ndarray, threshold: float) -> np.ndarray:
    """Soft edge map (H, W) uint8 (probability x 255, e.g. HED's) -> edge map (H, W) float32 in {-1, 1}: the
    pixels above `threshold` (in [0, 1]) thinned to one-pixel lines, like a sketch's strokes."""
    if probability.ndim != 2 or probability.dtype != np.uint8:
        raise ValueError(f"expected a single-channel uint8 edge-probability map, got {probability.shape} "
                         f"{probability.dtype}")
    thin = _thin((probability > threshold * 255).astype(np.uint8))
    return thin.astype(np.float32) * 2.0 - 1.0


def _thin(mask: np.ndarray) -> np.ndarray:
    """Binary (H, W) uint8 -> its one-pixel skeleton (morphological thinning by repeated opening)."""
    skeleton = np.zeros_like(mask)
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    m = mask.copy()
    while m.any():
        eroded = cv2.erode(m, kernel)
        skeleton |= m & ~cv2.dilate(eroded, kernel) & 1
        m = eroded
    return skeleton


def resize_edges(edges: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Edge map (H, W) in [-1, 1] -> (height, width) = size; a target pixel is an edge if any source pixel
    it covers is (so thin lines survive downscaling)."""
    h, w = size
    on = (edges > 0).astype(np.uint8)
    if on.shape[0] > h or on.shape[1] > w:
        on = cv2.resize(on.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0
    else:
        on = cv2.resize(on, (w, h), interpolation=cv2.INTER_NEAREST) > 0
    return on.astype(np.float32) * 2.0 - 1.0


def depth_from_array(image: np.ndarray, float_rgba: bool | None = None) -> np.ndarray:
    """A depth image -> (H, W) float32 in [-1, 1], nearer = larger, min-max normalised per image.

    uint16 grey (16-bit PNG) and uint8 grey/RGB are read as brightness; an RGBA uint8 array whose four bytes
    per pixel are one little-endian float32 (the original's depth PNGs) is decoded as such. `float_rgba=None`
    guesses: RGBA whose alpha is not all 255 is taken as float-in-RGBA.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 4 and a.dtype == np.uint8:
        if float_rgba is None:
            float_rgba = not bool((a[..., 3] == 255).all())
        d = np.ascontiguousarray(a).view("<f4").reshape(a.shape[:2]) if float_rgba else to_grey(a)
    elif a.ndim == 3:
        d = to_grey(a) if a.dtype == np.uint8 else a[..., 0]
    elif a.ndim == 2:
        d = a
    else:
        raise ValueError(f"expected a depth image (H, W[, C]), got shape {a.shape}")
    d = d.astype(np.float32)
    if not np.isfinite(d).all():
        raise ValueError("the depth map holds NaN or infinite values")
    lo, hi = float(d.min()), float(d.max())
    return (d - lo) / max(hi - lo, 1e-8) * 2.0 - 1.0


def labels_from_image(image: np.ndarray, ids: list[int] | None = None,
                      size: tuple[int, int] | None = None, space: LabelSpace | None = None) -> np.ndarray:
    """A label map -> (H, W) int64 raw ids: grey images hold the ids themselves; colour images are
    colour-coded with the label space's colours (default: COCO-Stuff + unlabelled) and snapped to the nearest
    label colour (restricted to `ids` if given).

    With `size` = (height, width) the map is resized first, picking the pixels `resize_labels` would pick
    (the same ids as resizing afterwards), so only the output's pixels are snapped."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"expected a label map (H, W) or a colour-coded map (H, W, 3), got shape {a.shape}")
    if size is not None:
        a = _pick(a, size)  # (height, width[, C])
    return a.astype(np.int64) if a.ndim == 2 else (space or COCO_STUFF_UNLABELLED).snap(a, ids)


def centre_square(a: np.ndarray) -> np.ndarray:
    """(H, W[, C]) -> the centred (S, S[, C]) crop, S = min(H, W)."""
    h, w = a.shape[:2]
    s = min(h, w)
    return a[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


FITS = ("crop", "pad", "stretch")  # how a map of another shape is brought to the output's aspect ratio


def same_aspect(shape: tuple[int, ...], size: tuple[int, int]) -> bool:
    """Whether a (H, W, ...) shape has the aspect ratio of size = (height, width), within 0.1%."""
    return abs(shape[1] / shape[0] - size[1] / size[0]) < 1e-3 * size[1] / size[0]


def fit_aspect(a: np.ndarray, size: tuple[int, int], how: str, fill=None) -> np.ndarray:
    """A map (H, W[, C]) -> the same content at the aspect ratio of size = (height, width), not yet resized:
    "crop" keeps the centred largest part of that shape, "pad" adds `fill` (a value or one per channel;
    None: the median of the border pixels) on both sides, "stretch" leaves it (resizing then distorts it)."""
    if how not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {how!r}")
    h, w = a.shape[:2]
    target = size[1] / size[0]  # width / height
    if how == "stretch" or same_aspect(a.shape, size):
        return a
    if how == "crop":
        if w / h > target:  # too wide: keep the middle columns
            cw = max(1, round(h * target))
            return a[:, (w - cw) // 2:(w - cw) // 2 + cw]
        ch = max(1, round(w / target))
        return a[(h - ch) // 2:(h - ch) // 2 + ch]
    if fill is None:
        border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])  # (2W + 2H[, C])
        fill = np.median(border, axis=0)
    if w / h > target:  # too wide: add rows
        extra = round(w / target) - h
        pads = ((extra // 2, extra - extra // 2), (0, 0))
    else:
        extra = round(h * target) - w
        pads = ((0, 0), (extra // 2, extra - extra // 2))
    out = np.empty((h + sum(pads[0]), w + sum(pads[1]), *a.shape[2:]), a.dtype)
    out[...] = np.asarray(fill, dtype=np.float64).astype(a.dtype)
    out[pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + w] = a
    return out


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Label ids (H, W) -> (height, width) = size with nearest-neighbour sampling only."""
    return _pick(np.asarray(labels), size).astype(np.int64)  # (height, width)


def _pick(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W[, C]) -> (height, width[, C]): the pixels nearest-neighbour resizing picks, values untouched."""
    return a[np.ix_(_nearest(a.shape[0], size[0]), _nearest(a.shape[1], size[1]))]


def _nearest(n_in: int, n_out: int) -> np.ndarray:
    """The source index of each of n_out samples along an axis of n_in, as cv2's INTER_NEAREST picks them."""
    return cv2.resize(np.arange(n_in, dtype=np.int32)[None], (n_out, 1), interpolation=cv2.INTER_NEAREST)[0]


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float map (H, W) -> (height, width) = size: area averaging down, bilinear up."""
    h, w = size
    shrink = values.shape[0] > h or values.shape[1] > w
    return cv2.resize(values.astype(np.float32), (w, h),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
