"""The label painter's scenes and palette: ready-made label maps, the legend and the swatches' names, and the
painter's value."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import taming_core as tc

# the label spaces COCO-Stuff maps translate into (tc.labels.from_coco_stuff): the segmenter's photo maps and
# the ready-made scenes exist for these
SCENE_SPACES = (*tc.labels.COCO_SPACES, tc.labels.ADE20K_151)


def hex_colour(rgb) -> str:
    """(r, g, b) -> "#rrggbb"."""
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


def example_maps(size: int, space: tc.labels.LabelSpace = tc.labels.COCO_STUFF_UNLABELLED) -> dict[str, np.ndarray]:
    """A few scenes as label maps (size, size) uint8 of `space`, drawn from simple shapes: COCO-Stuff ids,
    ADE20K's labels of the same things (snow as mountain, fog as sky); none for other spaces."""
    if space not in SCENE_SPACES:
        return {}
    maps = coco_example_maps(size)
    if space is tc.labels.ADE20K_151:
        L = tc.labels.label_id
        for name, a in maps.items():
            a = np.where(a == L("snow"), L("mountain"), np.where(a == L("fog"), L("sky-other"), a))
            maps[name] = tc.labels.from_coco_stuff(a, space).astype(np.uint8)
    return maps


def start_scenes(size: int, space: tc.labels.LabelSpace) -> dict[str, np.ndarray]:
    """The painter's "Start from" list: the ready-made scenes (example_maps), then the blank (unlabelled) map
    where `space` has an unlabelled id; a space without scenes or unlabelled gets a canvas of its first label."""
    scenes = example_maps(size, space)
    if space.unlabelled is not None:
        scenes[BLANK] = np.full((size, size), space.unlabelled, np.uint8)
    if not scenes:  # a generic label space: a canvas of its first label to paint over
        scenes["Blank"] = np.full((size, size), space.ids[0], np.uint8)
    return scenes


def coco_example_maps(size: int) -> dict[str, np.ndarray]:
    """The scenes of example_maps in COCO-Stuff ids (size, size) uint8."""
    import cv2

    L, s = tc.labels.label_id, size

    def poly(a, name, pts):
        cv2.fillPoly(a, [np.array([(x * s, y * s) for x, y in pts], dtype=np.int32)], L(name))

    maps = {}
    a = np.full((s, s), L("sky-other"), np.uint8)
    poly(a, "mountain", [(0, .62), (.3, .25), (.55, .5), (.75, .3), (1, .55), (1, .7), (0, .7)])
    poly(a, "snow", [(.24, .33), (.3, .25), (.36, .33)])
    a[int(.68 * s):] = L("water-other")
    a[int(.9 * s):] = L("grass")
    maps["Mountain lake"] = a
    a = np.full((s, s), L("sky-other"), np.uint8)
    poly(a, "clouds", [(.1, .15), (.4, .1), (.5, .2), (.2, .25)])
    a[int(.45 * s):] = L("sea")
    poly(a, "sand", [(0, .75), (1, .6), (1, 1), (0, 1)])
    maps["Beach"] = a
    a = np.full((s, s), L("sky-other"), np.uint8)
    a[int(.35 * s):] = L("tree")
    a[int(.6 * s):] = L("grass")
    poly(a, "river", [(.45, .6), (.55, .6), (.8, 1), (.3, 1)])
    maps["Forest river"] = a
    a = np.full((s, s), L("fog"), np.uint8)
    poly(a, "mountain", [(0, .8), (.5, .2), (1, .8)])
    poly(a, "snow", [(.38, .35), (.5, .2), (.62, .35)])
    a[int(.8 * s):] = L("rock")
    maps["Snowy peak"] = a
    return maps


UNLABELLED_RGB = tuple(int(v) for v in tc.labels.UNLABELLED_COLOUR)  # black: erased pixels, "unlabelled"
BLANK = "Blank (unlabelled)"  # the empty scene of the "Start from" list (spaces with an unlabelled id)
UPLOADED = "(your upload)"  # what the "Start from" list says while the canvas holds an uploaded map or a photo's


def legend_html(space: tc.labels.LabelSpace) -> str:
    """A row of colour chips named by label, the painter's (the editor's swatches carry no names)."""
    chips = "".join(
        f'<span style="display:inline-flex;align-items:center;margin:2px 8px 2px 0;font-size:12px">'
        f'<span style="width:14px;height:14px;border:1px solid #888;margin-right:4px;'
        f'background:{hex_colour(space.colours[space.id(n)])}"></span>{n}</span>' for n in space.painter)
    more = sum(not n.startswith("unused-") for n in space.names.values()) - len(space.painter)
    extra = (f'<span style="font-size:12px;color:#666">and {more} more {space.name} labels under '
             f'"Replace label"</span>' if more > 0 else "")
    return f'<div id="legend">{chips}{extra}</div>'


def editor_value(background: np.ndarray) -> dict:
    """An RGB image (H, W, 3) uint8 -> the value of an ImageEditor holding it as its background, no strokes."""
    return {"background": background, "layers": [], "composite": None}


def swatch_script(space: tc.labels.LabelSpace = tc.labels.COCO_STUFF_UNLABELLED) -> str:
    """The page's head script for the label painter (swatch_names.js), given the names of the painter's colours."""
    names = {f"rgb({r}, {g}, {b})": n for n in space.painter for r, g, b in [space.colours[space.id(n)].tolist()]}
    script = (Path(__file__).parent / "swatch_names.js").read_text()
    return f"<script>\n{script}\nnameSwatches({json.dumps(names)});\n</script>"
