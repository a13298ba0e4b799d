"""Condition maps from plain images: edge maps (from photos or sketches), depth maps, label maps.

Shape legend: H,W map size. Every function takes numpy arrays as image files decode them and returns a
float32 map in [-1, 1] (edges, depth) or int64 label ids (segmentation), ready for `Net2Net.encode_cond`
after adding batch (and channel) axes. Training data, the app and evaluation use these same functions.
The last part reads maps as people give them (an upload of any shape, grey ids counted one way or the other,
a photo by mistake) and refuses what cannot be used with a MapError that says why in words.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from . import labels as L
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


def rgb_of(image: np.ndarray) -> np.ndarray:
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


def map_to_image(values: np.ndarray) -> np.ndarray:
    """A map (H, W) in [-1, 1] -> grey RGB (H, W, 3) uint8: how an edge or depth map is shown."""
    grey = ((values + 1) * 127.5).clip(0, 255).astype(np.uint8)
    return np.stack([grey] * 3, -1)


def edges_from_image(image: np.ndarray, kind: str, size: tuple[int, int]) -> np.ndarray:
    """A sketch (strokes on a plain background) or a photo (its Canny edges) (H, W[, C]) -> edge map (height,
    width) = size in [-1, 1]. A photo's edges are extracted at the output size, as training extracts them at the
    training size; a sketch's strokes are resized keeping thin lines."""
    if kind == "photo":
        grey = Image.fromarray(to_grey(image)).resize(size[::-1], Image.BICUBIC)
        return edges_from_photo(np.asarray(grey))
    if kind == "sketch":
        return resize_edges(edges_from_sketch(image), size)
    raise ValueError(f"kind must be 'sketch' or 'photo', got {kind!r}")


# ----------------------------------------------------------------------------------------------------------
# Maps as people give them

# A colour upload whose snapped labels change between more neighbouring pixels than this is a photo, not a
# label map (labels.roughness: real and painted maps 0.01-0.13 at 128 px, photos mostly 0.2-0.6)
PHOTO_ROUGHNESS = 0.2
# ... or whose pixels lie mostly far from every label colour: a smooth photo, or a map of colours not the legend's
# (painted and saved maps are exact, JPEG'd ones mostly within a few levels)
# Euclidean RGB distance to the snapped label's colour (JPEG q50 maps: 11% of pixels farther; photos 93-95%)
OFF_PALETTE_DISTANCE = 12
OFF_PALETTE_SHARE = 0.5  # share of pixels farther than that
# How grey COCO-Stuff label maps count: "0-based" = the data's ids (COCO category id - 1, 255 = unlabelled),
# "1-based" = the official COCO-Stuff PNGs (category id itself, 0 = unlabelled)
GREY_BASES = ("0-based", "1-based")
DEPTH_COLOUR = 8  # an opaque RGB depth upload whose channels differ by more, on average, is a colour photo


class MapError(ValueError):
    """A map, or a choice of how to read it, that cannot be used; the message says why, in words for whoever
    gave it."""


class LooksLikePhoto(MapError):
    """A colour image given as a label map whose snapped labels change from pixel to pixel, or whose colours are
    mostly no label's: a photo (or a map in other colours). `why` says which, in words."""

    def __init__(self, roughness: float, off_palette: float = 0.0):
        self.roughness = roughness  # labels.roughness of its snapped labels
        self.off_palette = off_palette  # share of pixels far from their label's colour
        self.why = (f"its colours change from pixel to pixel ({roughness:.0%} of neighbouring pixels get different "
                    f"labels; label maps have a few percent)" if roughness > PHOTO_ROUGHNESS else
                    f"{off_palette:.0%} of its pixels are far from every label colour")
        super().__init__(f"This looks like a photo, not a label map: {self.why}.")


def fit_map(a: np.ndarray, size: tuple[int, int], fit: str, what: str, fill=None) -> tuple[np.ndarray, str]:
    """fit_aspect with a report: a map (H, W[, C]) -> (its part or padded form at the aspect ratio of size =
    (height, width), a sentence naming the map as `what` and saying what was done, empty when nothing was)."""
    if fit not in FITS:
        raise MapError(f"fit must be one of {', '.join(FITS)}, got {fit!r}.")
    out = fit_aspect(a, size, fit, fill)
    h, w = a.shape[:2]
    if same_aspect(a.shape, size):
        return out, ""
    done = {"crop": f"cropped to its centre {out.shape[1]}x{out.shape[0]}",
            "pad": f"padded to {out.shape[1]}x{out.shape[0]}", "stretch": "stretched"}[fit]
    return out, f" The {w}x{h} {what} was {done} to fit {size[1]}x{size[0]}."


def check_grey_ids(grey_ids: str) -> None:
    """Refuses a grey-id counting other than GREY_BASES."""
    if grey_ids not in GREY_BASES:
        raise MapError(f"grey_ids must be one of {', '.join(GREY_BASES)}, got {grey_ids!r}.")


def label_map(raw: np.ndarray, size: tuple[int, int], fit: str = "stretch", space: LabelSpace = COCO_STUFF_UNLABELLED,
              grey_ids: str = "0-based") -> tuple[np.ndarray, str]:
    """A label map as given (grey ids (H, W), or colours (H, W, 3|4) of `space`) -> (raw ids of `space` (height,
    width) = size int64, a note on cropping or padding). It is brought to the output's aspect ratio (`fit`;
    padding is unlabelled) and resized before the colours are snapped (the work follows the output's size, not
    the map's). Refused (MapError): a colour image that snaps to label noise (LooksLikePhoto), black (unlabelled)
    areas or padding for a space without an unlabelled id, grey ids that are no label (grey_labels)."""
    check_grey_ids(grey_ids)
    grey = raw.ndim == 2
    if fit == "pad" and space.unlabelled is None and not same_aspect(raw.shape, size):
        raise MapError("This model has no \"unlabelled\" label to pad with: choose crop or stretch for inputs of "
                       "another shape, or paint every pixel.")
    unlabelled = space.unlabelled if grey else (*L.UNLABELLED_COLOUR, 255)[:raw.shape[2]]
    raw, note = fit_map(raw, size, fit, "label map", unlabelled)
    named = [i for i in space.ids if not space.names[i].startswith("unused-")]  # colours snap to real labels only
    labels = labels_from_image(raw, size=size, space=space, ids=None if grey else named)
    if grey:
        labels = grey_labels(labels, space, grey_ids)
    elif raw.shape[2] >= 3:
        rough = L.roughness(labels)
        far = off_palette(_pick(raw, size)[..., :3], labels, space)
        if rough > PHOTO_ROUGHNESS or far > OFF_PALETTE_SHARE:
            raise LooksLikePhoto(rough, far)
        if space.unlabelled is None:
            black = resize_labels((raw[..., :3] == 0).all(-1).astype(np.uint8), size).mean()
            if black > 0.005:
                raise MapError(f"{black:.0%} of the map is black (unlabelled, erased or unpainted), and this model "
                               f"({space.name}) has no unlabelled label: paint every pixel with a legend colour.")
    return labels, note


def off_palette(rgb: np.ndarray, labels: np.ndarray, space: LabelSpace) -> float:
    """The share of pixels of a colour map (H, W, 3) farther than OFF_PALETTE_DISTANCE from the colour of the
    label they snapped to (labels (H, W))."""
    d = ((rgb.astype(np.int32) - space.colours[labels & 255].astype(np.int32)) ** 2).sum(-1)  # (H, W)
    return float((d > OFF_PALETTE_DISTANCE ** 2).mean())


def grey_labels(values: np.ndarray, space: LabelSpace, grey_ids: str) -> np.ndarray:
    """Grey values of a given map (H, W) int64 -> the space's raw ids. COCO-Stuff maps count from 0 (the data's
    ids) or from 1 (the official PNGs: 0 = unlabelled); a 0-based map holding ids that no COCO-Stuff label has
    is refused, naming what those values mean in the official ids."""
    coco = space in L.COCO_SPACES
    if grey_ids == "1-based":
        if not coco:
            raise MapError(f"1-based grey ids are the official COCO-Stuff encoding; this model reads {space.name} "
                           f"ids. {space.grey}")
        ids = np.where(values == 0, L.UNLABELLED, np.where(values == 255, 255, values - 1))
        unused = sorted(set(np.unique(ids).tolist()) & set(L.COCO_UNUSED))
        if unused:
            raise MapError(f"Grey values {', '.join(str(v + 1) for v in unused[:4])} are no COCO-Stuff label in the "
                           f"official 1-based ids either (unused categories). {space.grey}")
        return ids
    if coco:
        unused = sorted(set(np.unique(values).tolist()) & set(L.COCO_UNUSED))
        if unused:
            named = ", ".join(f"{v} = {L.COCO_STUFF[v - 1]}" for v in unused[:4])
            raise MapError(f"Grey values {', '.join(map(str, unused[:4]))} are no label in the 0-based COCO-Stuff "
                           f"ids this map is read with; in the official 1-based ids they are labels ({named}). If "
                           f"the map counts from 1, choose 1-based grey ids (API: grey_ids=\"1-based\").")
    return values


def labels_found(labels: np.ndarray, space: LabelSpace, skip: int | None = None, at_least: float = 0.01,
                 most: int = 6) -> str:
    """'sky-other 52%, grass 30%, ...': the labels of a map (raw ids 0..255) by share, largest first (at most
    `most`, each at least `at_least` of the map, `skip` left out)."""
    share = np.bincount(np.asarray(labels).ravel(), minlength=256) / max(1, labels.size)
    top = [i for i in np.argsort(-share, kind="stable") if i != skip and share[i] >= at_least][:most]
    return ", ".join(f"{space.names.get(i, f'id {i}')} {share[i]:.0%}" for i in top)


def read_depth_map(raw: np.ndarray) -> np.ndarray:
    """A depth image as given -> (H, W) float32 in [-1, 1] (depth_from_array), or a MapError saying what is
    wrong and what to give instead: also for a colour photo (depth maps are grey), which would otherwise be read
    as its brightness."""
    opaque = raw.ndim == 3 and raw.dtype == np.uint8 and (raw.shape[2] == 3 or (raw[..., 3] == 255).all())
    if opaque and raw.shape[2] >= 3:
        rgb = raw[..., :3].astype(np.int16)
        colour = float((rgb.max(-1) - rgb.min(-1)).mean())  # 0 for grey pixels
        if colour > DEPTH_COLOUR:
            raise MapError("This is a colour image, not a depth map: depth maps are grey (nearer = brighter). "
                           "Upload a grey depth PNG (16- or 8-bit) or an original float-in-RGBA depth PNG; to "
                           "use a photo's layout, try the Edges tab with \"An upload is a: photo\".")
    try:
        return depth_from_array(raw)
    except ValueError as e:
        if raw.ndim == 3 and raw.shape[2] == 4:  # transparency: read as the original float-in-RGBA depth
            raise MapError("This image has transparency, so it was read as an original float-in-RGBA depth PNG, "
                           "and its pixels are not valid depths: it looks like a photo, not a depth map. Upload a "
                           "grey depth PNG (16- or 8-bit, nearer = brighter) or an original depth PNG.") from None
        raise MapError(f"This is not a depth map the app can read ({e}). Upload a grey depth PNG (16- or 8-bit, "
                       "nearer = brighter).") from None
