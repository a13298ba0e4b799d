"""Label spaces of segmentation conditions: the ids a label map holds, their names and painting colours.

A label map holds "raw" ids, the dataset's own encoding, which a model's conditioner turns into one-hot
channels (conditioners.VQCondition):
- COCO-Stuff (the 'caffe' encoding of ../shared/data/coco and S-FLCKR): v = COCO category id - 1, 0..181
  (things 0..90, stuff 91..181; `unused-N` ids never occur in the data). A 182-label model (S-FLCKR) reads
  these alone; a 183-label model (ours, the original COCO model) also reads 255 = unlabelled, as channel 0
  (channel = v + 1).
- ADE20K (ADEChallengeData2016): 0 = other, 1..150 the classes; 151 labels, no shift.
Any other label count gets a generic space, ids 0..n-1 named "label i".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

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
PAINTER_MAX = 35  # colours a painter offers at most (6x6 swatches with black)
SNAP_CHUNK = 1 << 14  # pixels snapped at a time: two (SNAP_CHUNK, n <= 256) int32 arrays, at most 32 MiB

# ADE20K's 150 classes (objectInfo150 order) after id 0 = "other"
ADE20K = [
    'other', 'wall', 'building', 'sky', 'floor', 'tree', 'ceiling', 'road', 'bed', 'windowpane', 'grass',
    'cabinet', 'sidewalk', 'person', 'earth', 'door', 'table', 'mountain', 'plant', 'curtain', 'chair', 'car',
    'water', 'painting', 'sofa', 'shelf', 'house', 'sea', 'mirror', 'rug', 'field', 'armchair', 'seat', 'fence',
    'desk', 'rock', 'wardrobe', 'lamp', 'bathtub', 'railing', 'cushion', 'base', 'box', 'column', 'signboard',
    'chest of drawers', 'counter', 'sand', 'sink', 'skyscraper', 'fireplace', 'refrigerator', 'grandstand',
    'path', 'stairs', 'runway', 'case', 'pool table', 'pillow', 'screen door', 'stairway', 'river', 'bridge',
    'bookcase', 'blind', 'coffee table', 'toilet', 'flower', 'book', 'hill', 'bench', 'countertop', 'stove',
    'palm', 'kitchen island', 'computer', 'swivel chair', 'boat', 'bar', 'arcade machine', 'hovel', 'bus',
    'towel', 'light', 'truck', 'tower', 'chandelier', 'awning', 'streetlight', 'booth', 'television receiver',
    'airplane', 'dirt track', 'apparel', 'pole', 'land', 'bannister', 'escalator', 'ottoman', 'bottle',
    'buffet', 'poster', 'stage', 'van', 'ship', 'fountain', 'conveyer belt', 'canopy', 'washer', 'plaything',
    'swimming pool', 'stool', 'barrel', 'basket', 'waterfall', 'tent', 'bag', 'minibike', 'cradle', 'oven',
    'ball', 'food', 'step', 'tank', 'trade name', 'microwave', 'pot', 'animal', 'bicycle', 'lake',
    'dishwasher', 'screen', 'blanket', 'sculpture', 'hood', 'sconce', 'vase', 'traffic light', 'tray',
    'ashcan', 'fan', 'pier', 'crt screen', 'plate', 'monitor', 'bulletin board', 'shower', 'radiator', 'glass',
    'clock', 'flag',
]
assert len(ADE20K) == 151
# The ADE20K painter: landscape and street labels, coloured like their COCO-Stuff counterparts where one exists
ADE20K_SCENE = {
    "sky": "sky-other", "tree": "tree", "grass": "grass", "plant": "bush", "flower": "flower",
    "mountain": "mountain", "hill": "hill", "rock": "rock", "sand": "sand", "sea": "sea", "river": "river",
    "water": "water-other", "earth": "dirt", "road": "road", "sidewalk": "pavement", "building": "building-other",
    "house": "house", "bridge": "bridge", "fence": "fence", "person": "person", "car": "car", "boat": "boat",
    "wall": "wall-other", "field": None, "lake": None, "path": None, "palm": None, "waterfall": None,
    "skyscraper": None, "animal": None,
}


def _grid(n: int) -> list[tuple[int, int, int]]:
    """At least n + 1 colours on an evenly spaced RGB grid (multiples of 51 up to 215 labels)."""
    levels = 6
    while levels ** 3 < n + 1:
        levels += 1
    steps = [round(i * 255 / (levels - 1)) for i in range(levels)]
    return [(r, g, b) for r in steps for g in steps for b in steps]


@dataclass(frozen=True, eq=False)
class LabelSpace:
    """The raw ids a segmentation model reads (see the module text), their names, and the colours a painter
    and a colour-coded map use for them. The unlabelled id (COCO-Stuff 255, ADE20K 0 = other) is black."""

    name: str
    names: dict[int, str]  # raw id -> name, every id a map may hold
    unlabelled: int | None = None  # the id painted black; None: the model has none, every pixel is a label
    scene: dict[str, tuple[int, int, int] | None] = field(default_factory=dict)  # painter label -> colour
    grey: str = ""  # how a grey label map encodes the ids, in words

    @cached_property
    def ids(self) -> list[int]:
        return sorted(self.names)

    @cached_property
    def colours(self) -> np.ndarray:
        """(256, 3) uint8: the colour of every raw id; the scene labels' own first, the others the remaining
        grid colours in id order; ids that are no label stay black."""
        grid = _grid(len(self.names))
        fixed = {self.id(n): c for n, c in self.scene.items() if c is not None}
        taken = set(fixed.values()) | {UNLABELLED_COLOUR}
        free = iter(c for c in grid if c not in taken)
        table = np.zeros((256, 3), dtype=np.uint8)
        for i in self.ids:
            table[i] = UNLABELLED_COLOUR if i == self.unlabelled else fixed.get(i) or next(free)
        return table

    @property
    def painter(self) -> list[str]:
        """The labels a painter offers: the scene labels (a space without them, as a generic one: its labels in id
        order, PAINTER_MAX at most), then the unlabelled one (black) when there is one."""
        scene = list(self.scene) or [self.names[i] for i in self.ids if i != self.unlabelled][:PAINTER_MAX]
        return [*scene, *([self.names[self.unlabelled]] if self.unlabelled is not None else [])]

    def id(self, name: str) -> int:
        """The raw id of a label name (e.g. COCO-Stuff 'sky-other' -> 156)."""
        for i, n in self.names.items():
            if n == name:
                return i
        raise ValueError(f"unknown {self.name} label {name!r}")

    def colourise(self, labels: np.ndarray) -> np.ndarray:
        """Raw ids (H, W) -> RGB (H, W, 3) uint8."""
        return self.colours[np.asarray(labels).astype(np.int64) & 255]

    def snap(self, rgb: np.ndarray, ids: list[int] | None = None) -> np.ndarray:
        """RGB (H, W, 3) uint8 -> raw ids (H, W) int64 of the nearest label colour (squared distance, the first
        of `ids` on ties; `ids` default: all). Other integer types are clipped to 0..255.

        Beyond the output, memory is bounded whatever the image: pixels are taken SNAP_CHUNK at a time and only
        their distinct colours are compared, through per-channel tables of squared distances, so a map of noise
        (no colour is a label's) costs (SNAP_CHUNK, n) distances at a time, not (H * W, n, 3)."""
        ids = np.asarray(self.ids if ids is None else ids)
        colours = self.colours[ids].astype(np.int32)  # (n, 3)
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


_COCO_NAMES = dict(enumerate(COCO_STUFF))  # unused ids too: they keep their colours (the data's palette)
_COCO_GREY = "grey value = COCO category id - 1 (0 = person, 156 = sky-other, 181 = wood)"
# ours and the original COCO model: 182 labels + unlabelled (255, channel 0)
COCO_STUFF_UNLABELLED = LabelSpace(
    "COCO-Stuff", {**_COCO_NAMES, UNLABELLED: "unlabelled"}, UNLABELLED, SCENE_COLOURS,
    f"Grey label maps hold 0-based COCO-Stuff ids: {_COCO_GREY}, 255 = unlabelled.")
# S-FLCKR: the 182 labels alone
COCO_STUFF_182 = LabelSpace(
    "COCO-Stuff (no unlabelled)", dict(_COCO_NAMES), None, SCENE_COLOURS,
    f"Grey label maps hold 0-based COCO-Stuff ids: {_COCO_GREY}; this model has no unlabelled id.")
ADE20K_151 = LabelSpace(
    "ADE20K", dict(enumerate(ADE20K)), 0,
    {n: SCENE_COLOURS[c] if c else None for n, c in ADE20K_SCENE.items()},
    "Grey label maps hold ADE20K ids: 0 = other, 1 = wall, 3 = sky, 5 = tree, ..., 150 = flag.")
COCO_UNUSED = [i for i, n in enumerate(COCO_STUFF) if n.startswith("unused-")]  # 0-based ids with no label
COCO_SPACES = (COCO_STUFF_UNLABELLED, COCO_STUFF_182)  # the spaces that read COCO-Stuff ids as they are


def label_space(n_labels: int, label_offset: int = 0) -> LabelSpace:
    """The label space of a model with `n_labels` one-hot channels whose raw ids are shifted by
    `label_offset` (conditioners.VQCondition): COCO-Stuff 183 (shift 1) or 182, ADE20K 151, else generic."""
    if (n_labels, label_offset) == (183, 1):
        return COCO_STUFF_UNLABELLED
    if (n_labels, label_offset) == (182, 0):
        return COCO_STUFF_182
    if (n_labels, label_offset) == (151, 0):
        return ADE20K_151
    if not 1 <= n_labels <= 256 or not 0 <= label_offset < 256:
        raise ValueError(f"label maps are 8-bit: {n_labels} labels (shift {label_offset}) do not fit")
    ids = [(c - label_offset) % 256 for c in range(n_labels)]  # the raw id of every channel
    unlabelled = (-label_offset) % 256 if label_offset else None  # channel 0, as COCO-Stuff's 255
    names = {i: "unlabelled" if i == unlabelled else f"label {i}" for i in ids}
    return LabelSpace(f"{n_labels} labels", names, unlabelled, {},
                      f"Grey label maps hold the label ids 0..{n_labels - 1 - bool(label_offset)}"
                      + (f", {unlabelled} = unlabelled." if unlabelled is not None else "."))


# COCO-Stuff labels (the segmenter's) -> ADE20K labels of the same thing; the rest become "other"
# (COCO_SPACES + ADE20K_151: the spaces from_coco_stuff translates into)
COCO_TO_ADE20K = {**{c: a for a, c in ADE20K_SCENE.items() if c}, "clouds": "sky", "leaves": "tree",
                  "stone": "rock", "horse": "animal", "dog": "animal", "cow": "animal", "sheep": "animal",
                  "skyscraper": "skyscraper"}


@cache
def _coco_to_ade20k_table() -> np.ndarray:
    """(256,) int64: the ADE20K id of every COCO-Stuff id (0 = other where ADE20K has no such label)."""
    table = np.zeros(256, np.int64)
    for coco, ade in COCO_TO_ADE20K.items():
        table[label_id(coco)] = ADE20K.index(ade)
    table.flags.writeable = False
    return table


def from_coco_stuff(ids: np.ndarray, space: LabelSpace) -> np.ndarray:
    """COCO-Stuff ids (H, W) (255 = unlabelled) -> the raw ids of `space` that mean the same: unchanged for
    the COCO-Stuff spaces (255 stays, also where the space has no unlabelled id), ADE20K through
    COCO_TO_ADE20K with everything else "other" (0); other spaces: ValueError."""
    if space in COCO_SPACES:
        return np.asarray(ids).astype(np.int64)
    if space is not ADE20K_151:
        raise ValueError(f"COCO-Stuff labels have no counterparts in {space.name}")
    return _coco_to_ade20k_table()[np.asarray(ids).astype(np.int64) & 255]


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names in the standard 0..999 order (the class ids of the original cIN model);
    read once."""
    names = tuple(Path(__file__).with_name("imagenet_classes.txt").read_text().splitlines())
    if len(names) != 1000:
        raise ValueError(f"imagenet_classes.txt holds {len(names)} names, not 1000")
    return names


# The COCO-Stuff (+ unlabelled) space of our models and data, as plain functions


def label_id(name: str) -> int:
    """COCO-Stuff id of a label name (e.g. 'sky-other' -> 156)."""
    try:
        return COCO_STUFF.index(name)
    except ValueError:
        raise ValueError(f"unknown COCO-Stuff label {name!r}") from None


def coco_stuff_colours() -> np.ndarray:
    """(256, 3) uint8: the colour of every COCO-Stuff id (unused ids too) and of 255 = unlabelled.
    Scene labels get SCENE_COLOURS; the others take the remaining grid colours in id order."""
    return COCO_STUFF_UNLABELLED.colours.copy()


def colourise(labels: np.ndarray) -> np.ndarray:
    """COCO-Stuff ids (H, W) uint8/int -> RGB (H, W, 3) uint8."""
    return COCO_STUFF_UNLABELLED.colourise(labels)


def snap_to_labels(rgb: np.ndarray, ids: list[int] | None = None) -> np.ndarray:
    """RGB (H, W, 3) -> COCO-Stuff ids (H, W) int64 of the nearest label colour (LabelSpace.snap)."""
    return COCO_STUFF_UNLABELLED.snap(rgb, ids)


def roughness(labels: np.ndarray) -> float:
    """Label ids (H, W) -> the fraction of horizontally and vertically neighbouring pixel pairs whose labels
    differ. Painted and real label maps lie near 0 (0.01-0.13 for COCO-Stuff maps at 128 px, JPEG-compressed
    too); a photo snapped to label colours becomes label noise (0.1-0.6)."""
    a = np.asarray(labels)
    pairs = a[:, 1:].size + a[1:].size
    return float(((a[:, 1:] != a[:, :-1]).sum() + (a[1:] != a[:-1]).sum()) / max(1, pairs))
