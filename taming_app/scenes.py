"""The label painter's scenes and palette: ready-made label maps, the legend and the swatches' names, and the
painter's value."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import taming_core as tc

from .files import png_file

# the label spaces COCO-Stuff maps translate into (tc.labels.from_coco_stuff): the segmenter's photo maps and
# the ready-made scenes exist for these
SCENE_SPACES = (*tc.labels.COCO_SPACES, tc.labels.ADE20K_151)


def hex_colour(rgb) -> str:
    """(r, g, b) -> "#rrggbb"."""
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


# The scenes drawn wider than tall: choosing one sets the output (and the canvas) to this width : height
PANORAMAS = {"Mountain panorama": 2, "Coast panorama": 2}


def as_shape(size) -> tuple[int, int]:
    """A side (square) or (height, width) -> (height, width)."""
    return (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))


def example_maps(size, space: tc.labels.LabelSpace = tc.labels.COCO_STUFF_UNLABELLED) -> dict[str, np.ndarray]:
    """A few scenes as label maps (height, width) uint8 of `space` (size: a side, or (height, width); each scene is
    drawn in fractions of the width and height, so at any shape), from simple shapes: COCO-Stuff ids, ADE20K's
    labels of the same things (snow as mountain, fog as sky); none for other spaces."""
    if space not in SCENE_SPACES:
        return {}
    maps = coco_example_maps(as_shape(size))
    if space is tc.labels.ADE20K_151:
        L = tc.labels.label_id
        for name, a in maps.items():
            a = np.where(a == L("snow"), L("mountain"), np.where(a == L("fog"), L("sky-other"), a))
            maps[name] = tc.labels.from_coco_stuff(a, space).astype(np.uint8)
    return maps


def start_scenes(size, space: tc.labels.LabelSpace) -> dict[str, np.ndarray]:
    """The painter's "Start from" list at `size` (a side or (height, width)): the ready-made scenes (example_maps),
    then the blank (unlabelled) map where `space` has an unlabelled id; a space without scenes or unlabelled gets
    a canvas of its first label."""
    shape = as_shape(size)
    scenes = example_maps(shape, space)
    if space.unlabelled is not None:
        scenes[BLANK] = np.full(shape, space.unlabelled, np.uint8)
    if not scenes:  # a generic label space: a canvas of its first label to paint over
        scenes["Blank"] = np.full(shape, space.ids[0], np.uint8)
    return scenes


def coco_example_maps(shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """The scenes of example_maps in COCO-Stuff ids (height, width) uint8; points are (x, y) fractions."""
    import cv2

    L, (h, w) = tc.labels.label_id, shape

    def sky():
        return np.full((h, w), L("sky-other"), np.uint8)

    def poly(a, name, pts):
        cv2.fillPoly(a, [np.array([(x * w, y * h) for x, y in pts], dtype=np.int32)], L(name))

    maps = {}
    a = sky()
    poly(a, "mountain", [(0, .62), (.3, .25), (.55, .5), (.75, .3), (1, .55), (1, .7), (0, .7)])
    poly(a, "snow", [(.24, .33), (.3, .25), (.36, .33)])
    a[int(.68 * h):] = L("water-other")
    a[int(.9 * h):] = L("grass")
    maps["Mountain lake"] = a
    a = sky()
    poly(a, "clouds", [(.1, .15), (.4, .1), (.5, .2), (.2, .25)])
    a[int(.45 * h):] = L("sea")
    poly(a, "sand", [(0, .75), (1, .6), (1, 1), (0, 1)])
    maps["Beach"] = a
    a = sky()
    a[int(.35 * h):] = L("tree")
    a[int(.6 * h):] = L("grass")
    poly(a, "river", [(.45, .6), (.55, .6), (.8, 1), (.3, 1)])
    maps["Forest river"] = a
    a = np.full((h, w), L("fog"), np.uint8)
    poly(a, "mountain", [(0, .8), (.5, .2), (1, .8)])
    poly(a, "snow", [(.38, .35), (.5, .2), (.62, .35)])
    a[int(.8 * h):] = L("rock")
    maps["Snowy peak"] = a
    # panoramas (PANORAMAS): a range of peaks over a lake and a meadow; a coast of cliffs, sea and beach
    a = sky()
    poly(a, "mountain", [(0, .6), (.12, .3), (.22, .45), (.38, .2), (.5, .42), (.62, .28), (.78, .5), (.9, .32),
                         (1, .45), (1, .66), (0, .66)])
    for x, y in ((.12, .3), (.38, .2), (.62, .28), (.9, .32)):
        poly(a, "snow", [(x - .04, y + .07), (x, y), (x + .04, y + .07)])
    a[int(.66 * h):] = L("water-other")
    poly(a, "grass", [(0, .82), (.4, .78), (1, .85), (1, 1), (0, 1)])
    maps["Mountain panorama"] = a
    a = sky()
    poly(a, "clouds", [(.55, .12), (.75, .08), (.85, .16), (.6, .2)])
    a[int(.5 * h):] = L("sea")
    poly(a, "rock", [(0, .3), (.15, .35), (.3, .55), (.35, .8), (0, .9)])
    poly(a, "grass", [(0, .3), (.15, .35), (.12, .4), (0, .38)])
    poly(a, "sand", [(.3, .85), (.6, .72), (1, .7), (1, 1), (.3, 1)])
    maps["Coast panorama"] = a
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
    """An RGB image (H, W, 3) uint8 -> the value of an ImageEditor holding it as its background, no strokes (a
    file written once: files.py)."""
    return {"background": png_file(background, "canvas"), "layers": [], "composite": None}


def swatch_script(space: tc.labels.LabelSpace = tc.labels.COCO_STUFF_UNLABELLED) -> str:
    """The page's head script for the label painter (swatch_names.js), given the names of the painter's colours."""
    names = {f"rgb({r}, {g}, {b})": n for n in space.painter for r, g, b in [space.colours[space.id(n)].tolist()]}
    script = (Path(__file__).parent / "swatch_names.js").read_text()
    return f"<script>\n{script}\nnameSwatches({json.dumps(names)});\n</script>"
