"""The page: a tab per mode (its condition on the left, its own result on the right), the Sampling settings they
share, and the events that tie them to the handlers (page.Page) and to the API (api.add_api)."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

import taming_core as tc

from .api import add_api
from .handlers import App
from .models import MODES, SEGMENTER, ModelBank
from .page import SETTINGS_BY_TAB, Page
from .uploads import MAX_UPLOAD_PIXELS
from .scenes import BLANK, UPLOADED, hex_colour, legend_html, start_scenes, swatch_script
from .settings import FIT, GUIDANCE, GUIDANCE_BY_MODE

GREY_BASES = tc.condition_maps.GREY_BASES
CACHE_CLEANUP = (600, 3600)  # every 10 minutes, delete uploads and results older than an hour


def page_css() -> str:
    """The page's styles (app.css), for launch()."""
    return (Path(__file__).parent / "app.css").read_text()


def margin_script(editors: str = "#seg, #edges") -> str:
    """The page's head script that lets a stroke start on the margin around the image of the editors matched by
    the CSS selector `editors` (margin_strokes.js)."""
    script = (Path(__file__).parent / "margin_strokes.js").read_text()
    return f"<script>\n{script}\nmarginStrokes({json.dumps(editors)});\n</script>"


def result_column(key: str, with_view: bool = True) -> tuple:
    """A tab's own result, progress, Stop, (optionally) condition view and gallery of the images of one run:
    switching tabs keeps each tab's. The result is shown at its true size or larger (app.css); progress, Stop
    and the condition view sit in one row under it, in sight."""
    out = gr.Image(label="Result (true size or larger; the download: true size)", format="png",
                   interactive=False, elem_id=f"out_{key}", elem_classes=["result"],
                   buttons=["download", "fullscreen"])
    view = None
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=200):
            status = gr.Textbox(label="Progress", interactive=False, elem_id=f"status_{key}", lines=2, max_lines=6)
            stop = gr.Button("Stop", variant="secondary", elem_id=f"stop_{key}")
        if with_view:
            view = gr.Image(label="Condition the model sees", format="png", interactive=False,
                            elem_id=f"cond_{key}", elem_classes=["condition"], min_width=160, scale=1,
                            buttons=["fullscreen"])
    each = gr.Gallery(label="Each image (click one for its download)", format="png", columns=4, height=220,
                      elem_id=f"each_{key}", elem_classes=["each"], visible=False, interactive=False)
    return out, status, stop, view, each


def depth_note(bank: ModelBank) -> str:
    """What the Depth tab's model is: the bundled one is a demonstration (23 training maps), and how to serve the
    original's D-RIN depth-to-image model instead."""
    path = bank.paths.get("depth", (None, None))[0]
    bundled = path is not None and Path(path).resolve() == (Path(__file__).resolve().parents[1] / "checkpoints" /
                                                            "depth").resolve()
    drin = ("For real depth-to-image, serve the original D-RIN model: `python app.py --depth "
            "logs/2020-11-20T12-54-32_drin_transformer` (its float-in-RGBA depth PNGs are read as they are).")
    if path is None:
        return f"No depth model is loaded. {drin}"
    if bundled:
        return ("**A demonstration:** the bundled depth model was trained on 23 depth maps only, so it takes "
                f"little from the map and draws abstract scenes. {drin}")
    return f"Depth model: `{Path(path).name}`."


@contextlib.contextmanager
def tab_with_results(label: str, key: str, results: dict, with_view: bool = True, visible: bool = True):
    """A tab (id `<key>_tab`) of two columns: the with-block fills the left one (the condition and Generate); the
    right one holds the tab's result_column, stored as results[key]."""
    with gr.Tab(label, id=f"{key}_tab", visible=visible) as t:
        with gr.Row():
            with gr.Column(scale=1):
                yield t
            with gr.Column(scale=1):
                results[key] = result_column(key, with_view)


def build_demo(bank: ModelBank, side: int | None = None, max_batch: int = 8) -> gr.Blocks:
    """The app's page on the models of `bank` (not launched: see app.launch). `side`: the output's width and
    height the page starts with, for the tabs of maps (None: the segmentation model's native size); the
    painter and the sketch canvas take the output's shape. `max_batch`: the most images concurrent requests
    for one model sample together (each request's images count; 1: one request at a time)."""
    Image.MAX_IMAGE_PIXELS = MAX_UPLOAD_PIXELS  # what Gradio decodes itself: Pillow refuses bombs beyond it
    app = App(bank, max_batch)
    space = app.label_space()  # the segmentation model's labels: palette, legend, grey ids, examples
    names = space.painter  # the palette; black paints the unlabelled id, where the model has one
    # "Replace label" offers every label: the painter's first, then the others by name
    every = [*names, *sorted({n for n in space.names.values() if not n.startswith("unused-")} - set(names))]
    native = {mode: app.native_size(mode) for mode in MODES}  # canvas sizes follow the models
    # the start size: `side` where the segmentation model can make it, else its native size
    side = (app.output_shape("segmentation", side or 0, side or 0) or (native["segmentation"],))[0]
    examples = start_scenes(side, space)
    first_example = next(iter(examples))
    empty = BLANK if BLANK in examples else first_example  # what "Clear canvas" gives
    page = Page(app, space, side, list(examples), empty)
    brush_colour = space.colours[space.id("tree") if "tree" in names else space.id(names[0])]
    results = {}  # tab key -> (out, status, stop, view, gallery)

    with gr.Blocks(title="Taming Transformers", delete_cache=CACHE_CLEANUP) as demo:
        demo.page_head = swatch_script(space) + margin_script()  # launch() puts them in the page's head
        gr.Markdown("## Taming Transformers\nPaint a scene, draw edges or upload depth; press Generate and "
                    "watch the image appear token by token.")
        with gr.Tabs():
            with tab_with_results("Segmentation", "seg", results) as seg_tab:
                seg = gr.ImageEditor(
                    value=page.canvas(examples[first_example]), type="numpy",
                    image_mode="RGBA", format="png", sources=(), transforms=(), layers=False,
                    brush=gr.Brush(colors=[hex_colour(space.colours[space.id(n)]) for n in names],
                                   default_color=hex_colour(brush_colour), color_mode="fixed",
                                   default_size=max(4, side // 32)),
                    eraser=gr.Eraser(default_size=max(4, side // 32)),
                    canvas_size=(side, side), fixed_canvas=False, elem_id="seg",
                    label="Label map")
                gr.HTML(legend_html(space))
                go_seg = gr.Button("Generate", variant="primary", elem_id="go_seg")
                with gr.Row():
                    example = gr.Dropdown([*examples, UPLOADED], value=first_example, label="Start from",
                                          elem_id="seg_example")
                    fill_from = gr.Dropdown(every, value=every[0], label="Replace label",
                                            elem_id="fill_from")
                    fill_to = gr.Dropdown(every, value=every[1 % len(every)], label="with",
                                          elem_id="fill_to")
                    fill_btn = gr.Button("Fill", size="sm")
                with gr.Row():
                    seg_photo = gr.File(label="Start from a photo",
                                        file_types=["image"], elem_id="seg_photo", height=150,
                                        visible=app.can_segment(), elem_classes=["upload"])
                    seg_upload = gr.File(label="Or upload a label map",
                                         file_types=["image"], elem_id="seg_upload", height=150,
                                         elem_classes=["upload"])
                gr.Markdown("A photo is segmented and its label map, at the photo's aspect, replaces the canvas "
                            "(width and height follow). A label map holds the legend's colours or grey ids.",
                            elem_classes=["hint"])
                coco = space in tc.labels.COCO_SPACES
                grey_ids = gr.Radio(list(GREY_BASES), value=GREY_BASES[0], label="Grey ids count from",
                                    info="0-based: the data's ids; 1-based: the official COCO-Stuff PNGs "
                                         "(0 = unlabelled)", elem_id="grey_ids_base", visible=coco)
                gr.Markdown(space.grey, elem_id="grey_ids")
            with tab_with_results("Edges", "edges", results) as edges_tab:
                sketch = gr.ImageEditor(
                    value=page.blank_sketch(side, side), type="numpy",
                    image_mode="RGBA", format="png", sources=(), transforms=(), layers=False,
                    brush=gr.Brush(colors=["#000000"], default_color="#000000", color_mode="fixed",
                                   default_size=2),
                    eraser=gr.Eraser(default_size=8), canvas_size=(side, side),
                    fixed_canvas=False, elem_id="edges", label="Sketch")
                gr.Markdown("Draw dark strokes on white; \"Clear canvas\" gives white paper of the output's size.",
                            elem_classes=["hint"])
                edge_kind = gr.Radio(["sketch", "photo"], value="sketch", label="An upload is a",
                                     elem_id="edges_kind")
                edge_upload = gr.File(label="Or upload a sketch, or a photo to take its edges",
                                      file_types=["image"], elem_id="edges_upload", height=150,
                                      elem_classes=["upload"])
                go_edges = gr.Button("Generate", variant="primary", elem_id="go_edges")
            with tab_with_results("Depth", "depth", results) as depth_tab:
                gr.Markdown(depth_note(bank), elem_id="depth_note")
                # a short label: a long one wraps over the upload icon in narrow windows; the formats go below
                depth = gr.File(label="Upload a depth map", file_types=["image"], elem_id="depth", height=150,
                                elem_classes=["upload"])
                gr.Markdown("A 16- or 8-bit grey PNG, nearer = brighter, or the original float-in-RGBA PNG.",
                            elem_classes=["hint"])
                depth_preview = gr.Image(label="Depth preview", format="png", interactive=False,
                                         elem_id="depth_preview", elem_classes=["condition"])
                go_depth = gr.Button("Generate", variant="primary", elem_id="go_depth")
            with tab_with_results("Unconditional", "uncond", results, with_view=False) as uncond_tab:
                gr.Markdown("Samples from the start token alone, at the model's native size.")
                go_uncond = gr.Button("Generate", variant="primary", elem_id="go_uncond")
            with tab_with_results("Class", "class", results, with_view=False,
                                  visible=bank.available("class")) as class_tab:
                choices = app.class_choices()
                class_id = gr.Dropdown(choices, value=choices[0][1] if choices else None,
                                       label="Class (type to search)", filterable=True,
                                       elem_id="class_id")
                gr.Markdown("Samples of the chosen class, at the model's native size.")
                go_class = gr.Button("Generate", variant="primary", elem_id="go_class")
        with gr.Accordion("Sampling", open=True):
            with gr.Row():
                seed = gr.Number(0, label="Seed", precision=0, elem_id="seed")
                dice = gr.Button("Random seed", size="sm", elem_id="dice")
            with gr.Row():
                temperature = gr.Slider(0.1, 2.0, 1.0, step=0.05, label="Temperature")
                top_k = gr.Slider(0, 1024, 100, step=1, label="Top-k (0 = off)")
                top_p = gr.Slider(0.05, 1.0, 1.0, step=0.01, label="Top-p (1 = off)")
            with gr.Row():
                width = gr.Number(side, label="Width px", precision=0, elem_id="width", minimum=0,
                                  info=f"the canvas follows; beyond the model's {native['segmentation']} px the "
                                       "sliding window samples")
                height = gr.Number(side, label="Height px", precision=0, elem_id="height", minimum=0,
                                   info="multiples of the token size, up to 8x the model's size (1024x512 and more)")
                fit = gr.Radio(list(tc.condition_maps.FITS), value=FIT, label="Uploads of another shape",
                               info="crop to the centre, pad the sides, or stretch to the output's shape",
                               elem_id="fit")
            with gr.Row():
                frames = gr.Slider(2, 32, 16, step=1, label="Previews per image, at most", elem_id="frames",
                                   info="fewer when decoding them would take over a fifth of the time (the API's "
                                        "frames)")
                guidance = gr.Slider(1.0, 5.0, GUIDANCE, step=0.25, label="Guidance (1 = off)", elem_id="guidance",
                                     info="higher follows the condition more closely, with less variety. Each tab "
                                          "starts at its measured best; a value you set is kept")
                guidance_set = gr.State(False)  # whether the visitor has moved the slider
                images = gr.Slider(1, 4, 1, step=1, label="Images per run", elem_id="images",
                                   info="variations of one condition, sampled together and shown side by side")

        settings = dict(seed=seed, temperature=temperature, top_k=top_k, top_p=top_p, width=width, height=height,
                        frames=frames, guidance=guidance, images=images, fit=fit)
        # generations run together up to max_batch (the batcher samples them as one batch, one at a time when
        # their models or sizes differ); each takes its Stop ticket as it enters the queue
        common = dict(concurrency_id="model", concurrency_limit=max_batch, validator=app.admit)
        idle = dict(fn=lambda: gr.update(variant="secondary"), inputs=None, queue=False, show_progress="hidden",
                    api_visibility="private")
        for key, button, fn, condition in (("seg", go_seg, page.from_canvas, [seg]),
                                           ("edges", go_edges, page.from_sketch, [sketch]),
                                           ("depth", go_depth, page.from_depth, [depth]),
                                           ("uncond", go_uncond, page.from_nothing, []),
                                           ("class", go_class, page.from_class, [class_id])):
            out, status, stop, view, each = results[key]
            outputs = [out, status, *([view] if view is not None else []), stop, each]
            # named apart, so the API's names stay free
            button.click(fn, condition, outputs, inputs_kwargs={name: settings[name] for name in SETTINGS_BY_TAB[key]},
                         api_name=f"ui_{key}", api_visibility="private", show_progress_on=[status],
                         **common).then(outputs=stop, **idle)
            stop.click(app.request_stop, None, None, queue=False, api_visibility="private")
        # Width, height and the fit of inputs apply to the map tabs only, guidance to the conditional ones
        # (each with its measured default)
        for tab, sized, mode in ((seg_tab, True, "segmentation"), (edges_tab, True, "edges"),
                                 (depth_tab, True, "depth"), (uncond_tab, False, None), (class_tab, False, "class")):
            def on_select(user_set: bool, sized=sized, mode=mode):
                value = {} if user_set or not mode else {"value": GUIDANCE_BY_MODE[mode]}  # the visitor's is kept
                g = gr.update(visible=mode is not None, **value)
                return [gr.update(visible=sized), gr.update(visible=sized), g, gr.update(visible=sized)]
            tab.select(on_select, guidance_set, [width, height, guidance, fit], queue=False, show_progress="hidden",
                       api_visibility="private")
        guidance.input(lambda: True, None, guidance_set, queue=False, show_progress="hidden",
                       api_visibility="private")

        add_api(app, common, side)
        app.blocks = demo  # the handlers ask its queue whether a job's client is still there
        dice.click(lambda: int(np.random.randint(0, 2**31 - 1)), None, seed, queue=False, api_visibility="private")

        quiet = dict(show_progress="hidden", api_visibility="private")
        example.change(page.start_from, [example, width, height], [seg, width, height], **quiet)
        seg.clear(page.cleared, [width, height], [seg, example], **quiet)
        sketch.clear(page.blank_sketch, [width, height], sketch, **quiet)
        for field in (width, height):  # the canvases follow the output's shape (a number being typed: no change)
            field.input(page.resize_painter, [seg, example, width, height], seg, trigger_mode="always_last",
                        **quiet)
            field.input(page.resize_sketch, [sketch, width, height], sketch, trigger_mode="always_last", **quiet)
        fill_btn.click(page.replace_label, [seg, fill_from, fill_to], seg, **quiet)
        # A refused upload empties its file box (and the depth preview), so nothing looks loaded that is not
        seg_upload.upload(page.load_label_upload, [seg_upload, fit, grey_ids, width, height], [seg, example],
                          **quiet).failure(
            lambda: None, None, seg_upload, queue=False, **quiet)
        edge_upload.upload(page.load_edge_upload, [edge_upload, edge_kind, fit, width, height], sketch,
                           **quiet).failure(
            lambda: None, None, edge_upload, queue=False, **quiet)
        seg_photo.upload(page.load_photo, [seg_photo, width, height], [seg, results["seg"][1], example, width, height],
                         concurrency_id=SEGMENTER, **quiet).failure(lambda: None, None, seg_photo, queue=False, **quiet)
        depth.upload(page.load_depth_upload, depth, depth_preview, **quiet).failure(
            lambda: (None, None), None, [depth, depth_preview], queue=False, **quiet)
        depth.clear(lambda: None, None, depth_preview, queue=False, **quiet)
    return demo
