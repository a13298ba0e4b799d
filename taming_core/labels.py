"""Label names and colours for segmentation conditions.

COCO-Stuff ids (the 'caffe' encoding of ../shared/data/coco and S-FLCKR): v = COCO category id - 1, 0..181
(things 0..90, stuff 91..181), 255 = unlabelled; `unused-N` ids never occur in the data.
A 183-label model sees channel v + 1, with channel 0 = unlabelled (see conditioners.VQCondition).
"""
from __future__ import annotations

import numpy as np

UNLABELLED = 255

COCO_STUFF = [
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat', 'traffic light',
    'fire hydrant', 'unused-12', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep',
    'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'unused-26', 'backpack', 'umbrella', 'unused-29',
    'unused-30', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle', 'unused-45',
    'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli',
    'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch', 'potted plant', 'bed', 'unused-66',
    'dining table', 'unused-68', 'unused-69', 'toilet', 'unused-71', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'unused-83', 'book',
    'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush', 'unused-91', 'banner', 'blanket',
    'branch', 'bridge', 'building-other', 'bush', 'cabinet', 'cage', 'cardboard', 'carpet', 'ceiling-other',
    'ceiling-tile', 'cloth', 'clothes', 'clouds', 'counter', 'cupboard', 'curtain', 'desk-stuff', 'dirt',
    'door-stuff', 'fence', 'floor-marble', 'floor-other', 'floor-stone', 'floor-tile', 'floor-wood', 'flower',
    'fog', 'food-other', 'fruit', 'furniture-other', 'grass', 'gravel', 'ground-other', 'hill', 'house',
    'leaves', 'light', 'mat', 'metal', 'mirror-stuff', 'moss', 'mountain', 'mud', 'napkin', 'net', 'paper',
    'pavement', 'pillow', 'plant-other', 'plastic', 'platform', 'playingfield', 'railing', 'railroad', 'river',
    'road', 'rock', 'roof', 'rug', 'salad', 'sand', 'sea', 'shelf', 'sky-other', 'skyscraper', 'snow',
    'solid-other', 'stairs', 'stone', 'straw', 'structural-other', 'table', 'tent', 'textile-other', 'towel',
    'tree', 'vegetable', 'wall-brick', 'wall-concrete', 'wall-other', 'wall-panel', 'wall-stone', 'wall-tile',
    'wall-wood', 'water-other', 'waterdrops', 'window-blind', 'window-other', 'wood',
]
assert len(COCO_STUFF) == 182

# Labels offered first in a painter (the common ones in landscape and street photos), with colours that
# suggest them. Every colour lies on the 6x6x6 grid of multiples of 51, so any two labels differ by at least
# 51 in one channel and anti-aliased or re-encoded pixels snap back to the right label.
SCENE_COLOURS = {
    "sky-other": (102, 153, 255), "clouds": (204, 204, 255), "tree": (0, 102, 0), "grass": (102, 204, 0),
    "bush": (51, 153, 51), "flower": (255, 102, 204), "mountain": (102, 51, 51), "hill": (153, 153, 51),
    "rock": (102, 102, 102), "stone": (153, 153, 153), "sand": (255, 204, 102), "snow": (204, 255, 255),
    "sea": (0, 51, 153), "river": (0, 153, 204), "water-other": (51, 102, 204), "fog": (204, 204, 204),
    "dirt": (153, 102, 51), "gravel": (204, 153, 102), "road": (51, 51, 51), "pavement": (153, 102, 153),
    "building-other": (204, 51, 51), "house": (255, 102, 51), "bridge": (153, 51, 0), "fence": (204, 153, 0),
    "person": (255, 0, 255), "dog": (255, 153, 0), "horse": (153, 0, 51), "cow": (255, 255, 102),
    "car": (0, 0, 255), "boat": (0, 255, 255), "wall-other": (102, 0, 153), "leaves": (0, 204, 102),
}
SCENE_LABELS = list(SCENE_COLOURS)
UNLABELLED_COLOUR = (0, 0, 0)
SNAP_CHUNK = 1 << 14  # pixels snapped at a time: two (SNAP_CHUNK, n <= 256) int32 arrays, at most 32 MiB


def label_id(name: str) -> int:
    """COCO-Stuff id of a label name (e.g. 'sky-other' -> 156)."""
    try:
        return COCO_STUFF.index(name)
    except ValueError:
        raise ValueError(f"unknown COCO-Stuff label {name!r}") from None


def coco_stuff_colours() -> np.ndarray:
    """(256, 3) uint8: the colour of every COCO-Stuff id (unused ids too) and of 255 = unlabelled.
    Scene labels get SCENE_COLOURS; the others take the remaining grid colours in id order."""
    grid = [(r, g, b) for r in range(0, 256, 51) for g in range(0, 256, 51) for b in range(0, 256, 51)]
    taken = set(SCENE_COLOURS.values()) | {UNLABELLED_COLOUR}
    free = iter(c for c in grid if c not in taken)
    table = np.zeros((256, 3), dtype=np.uint8)
    for i, name in enumerate(COCO_STUFF):
        table[i] = SCENE_COLOURS.get(name) or next(free)
    table[UNLABELLED] = UNLABELLED_COLOUR
    return table


def colourise(labels: np.ndarray) -> np.ndarray:
    """Label ids (H, W) uint8/int -> RGB (H, W, 3) uint8."""
    return coco_stuff_colours()[np.asarray(labels).astype(np.int64) & 255]


def snap_to_labels(rgb: np.ndarray, ids: list[int] | None = None) -> np.ndarray:
    """RGB (H, W, 3) uint8 -> label ids (H, W) int64 of the nearest label colour (squared distance, the first
    of `ids` on ties; `ids` default: all). Other integer types are clipped to 0..255.

    Beyond the output, memory is bounded whatever the image: pixels are taken SNAP_CHUNK at a time and only
    their distinct colours are compared, through per-channel tables of squared distances, so a map of noise
    (no colour is a label's) costs (SNAP_CHUNK, n) distances at a time, not (H * W, n, 3)."""
    table = coco_stuff_colours()
    ids = np.asarray(sorted(set(range(len(COCO_STUFF))) | {UNLABELLED}) if ids is None else ids)
    colours = table[ids].astype(np.int32)  # (n, 3)
    sq = (np.arange(256, dtype=np.int32)[None, :, None] - colours.T[:, None, :]) ** 2  # (3, 256, n)
    rgb = np.asarray(rgb)
    flat = rgb.reshape(-1, rgb.shape[-1])  # (H*W, C), a view of a contiguous image
    out = np.empty(len(flat), np.int64)
    for start in range(0, len(flat), SNAP_CHUNK):
        px = np.clip(flat[start:start + SNAP_CHUNK, :3], 0, 255).astype(np.int32)  # (S, 3)
        keys, inverse = np.unique((px[:, 0] << 16) | (px[:, 1] << 8) | px[:, 2], return_inverse=True)  # (U,)
        d = sq[0][keys >> 16]  # (U, n)
        d += sq[1][(keys >> 8) & 255]
        d += sq[2][keys & 255]
        out[start:start + SNAP_CHUNK] = ids[d.argmin(1)][inverse]
    return out.reshape(rgb.shape[:2])


def roughness(labels: np.ndarray) -> float:
    """Label ids (H, W) -> the fraction of horizontally and vertically neighbouring pixel pairs whose labels
    differ. Painted and real label maps lie near 0 (0.01-0.13 for COCO-Stuff maps at 128 px, JPEG-compressed
    too); a photo snapped to label colours becomes label noise (0.1-0.6)."""
    a = np.asarray(labels)
    pairs = a[:, 1:].size + a[1:].size
    return float(((a[:, 1:] != a[:, :-1]).sum() + (a[1:] != a[:-1]).sum()) / max(1, pairs))
