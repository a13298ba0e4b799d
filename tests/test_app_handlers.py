"""The app's handlers as plain functions: each mode's generation, uploads and canvases read into conditions,
the page's stream, the checks of every argument, Stop, and the command line."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")

import app as A  # noqa: E402
import taming_core as tc  # noqa: E402
from app_helpers import free_port  # noqa: E402
from conftest import small_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_flatten_editor_without_composite_layers_over_background():
    bg = np.zeros((4, 4, 4), np.uint8)
    bg[..., :3], bg[..., 3] = (102, 153, 255), 255
    layer = np.zeros((4, 4, 4), np.uint8)
    layer[1, 1] = (0, 102, 0, 255)
    rgb = A.flatten_editor({"background": bg, "layers": [layer], "composite": None})
    assert tuple(rgb[1, 1]) == (0, 102, 0) and tuple(rgb[0, 0]) == (102, 153, 255)
    with pytest.raises(gr.Error, match="canvas is empty"):
        A.flatten_editor({"background": None, "layers": [], "composite": None})


def test_antialiased_brush_colours_snap_to_labels():
    labels = A.example_maps(32)["Mountain lake"]
    rgb = tc.labels.colourise(labels).astype(int)
    blurred = np.clip(rgb + np.random.RandomState(0).randint(-20, 21, rgb.shape), 0, 255).astype(np.uint8)
    assert np.array_equal(tc.condition_maps.labels_from_image(blurred), labels)


def test_handlers_stream_and_return_requested_size(bank, files):
    app = A.App(bank)
    runs = {
        "segmentation": app.generate_segmentation(str(files / "labels.png"), seed=1, frames=8),
        "coloured map, larger": app.generate_segmentation(str(files / "coloured.png"), seed=1, width=48, height=40),
        "edges": app.generate_edges(str(files / "sketch.png"), "sketch", seed=2, width=64, height=32),
        "photo edges": app.generate_edges(str(files / "labels.png"), "photo", seed=2),
        "depth": app.generate_depth(str(files / "depth16.png"), seed=3),
        "unconditional": app.generate_unconditional(seed=4),
    }
    sizes = {"coloured map, larger": (40, 48), "edges": (32, 64)}
    for name, run in runs.items():
        outs = list(run)
        assert len(outs) >= 3, name  # several updates, then the final image
        image, status, _ = outs[-1]
        assert image.shape == (*sizes.get(name, (32, 32)), 3) and image.dtype == np.uint8, name
        assert status.startswith("Done"), (name, status)


def test_a_photo_becomes_a_label_map_in_the_palette_colours(bank, files):
    app = A.App(bank)
    rgb, message = app.label_map_from_photo(str(files / "photo.jpg"))
    segmenter = bank.get(A.SEGMENTER)
    photo = np.asarray(Image.open(files / "photo.jpg"))
    expected = tc.condition_maps.resize_labels(segmenter.segment(photo), (32, 48))  # the whole photo, its aspect
    assert rgb.shape == (32, 48, 3) and np.array_equal(rgb, tc.labels.colourise(expected))
    assert message.startswith("Label map of the 90x60 photo, at 48x32 (width and height set to it)")
    assert "the photo itself is not used" in message
    with pytest.raises(gr.Error, match="Upload a photo first"):
        app.label_map_from_photo(None)
    with pytest.raises(gr.Error, match="not an image file"):
        app.label_map_from_photo(str(files / "corrupt.png"))


def test_a_photo_given_as_a_label_map_is_refused_and_points_to_start_from_a_photo(bank, files, tmp_path):
    app = A.App(bank)
    photo = np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)  # label noise once snapped
    with pytest.raises(gr.Error, match=r"looks like a photo, not a label map.*\"Start from a photo\""):
        list(app.generate_segmentation(photo))
    no_segmenter = A.App(A.ModelBank({"segmentation": bank.paths["segmentation"]}))
    with pytest.raises(gr.Error, match="paint its layout"):
        list(no_segmenter.generate_segmentation(photo))
    # real maps pass, JPEG-compressed too
    import io
    coloured = tc.labels.colourise(A.example_maps(32)["Forest river"])
    buf = io.BytesIO()
    Image.fromarray(coloured).save(buf, "JPEG", quality=70)
    jpeg = np.asarray(Image.open(buf))
    assert tc.labels.roughness(tc.condition_maps.labels_from_image(jpeg)) < A.PHOTO_ROUGHNESS
    assert list(app.generate_segmentation(jpeg, seed=1))[-1][1].startswith("Done")


def test_guidance_applies_to_models_with_a_null_condition_and_says_when_it_cannot(bank, files, tmp_path):
    cfg = small_model("segmentation", 183)
    cfg.update(cond_mode="aligned", null_token=32)  # the tiny condition stage has 32 codes; 32 = null
    cfg["transformer"]["cond_vocab_size"] = 33
    torch.manual_seed(1)
    tc.save_model(tc.build_model(cfg), tmp_path / "guided")
    guided = A.App(A.ModelBank({"segmentation": (str(tmp_path / "guided"), None)}))
    off = list(guided.generate_segmentation(str(files / "labels.png"), seed=3, guidance=1))[-1]
    on = list(guided.generate_segmentation(str(files / "labels.png"), seed=3, guidance=3))[-1]
    assert not np.array_equal(off[0], on[0]) and "Guidance off" not in on[1]
    plain = list(A.App(bank).generate_segmentation(str(files / "labels.png"), seed=3, guidance=2))[-1]
    assert plain[1].startswith("Done") and "Guidance off: this model was trained without a null condition" in plain[1]
    # the tab's default (3 for segmentation) is no choice of the user's: a model without a null condition then
    # samples unguided without a note
    assert A.GUIDANCE_BY_MODE["segmentation"] == 3.0
    default = list(A.App(bank).generate_segmentation(str(files / "labels.png"), seed=3))[-1]
    assert default[1].startswith("Done") and "Guidance" not in default[1]
    with pytest.raises(gr.Error, match="guidance"):
        list(A.App(bank).generate_segmentation(str(files / "labels.png"), guidance=11))
    # 0 (the null condition alone) gave near-black images: refused, saying what the numbers mean
    with pytest.raises(gr.Error, match=re.escape("guidance must be a number from 1.0 to 10.0 (1 = off, higher "
                                                 "follows the condition more closely; below 1 would steer away "
                                                 "from it), got 0.")):
        list(A.App(bank).generate_segmentation(str(files / "labels.png"), guidance=0))


def test_inputs_of_another_shape_are_fitted_as_chosen_and_the_status_says_so(bank, files, tmp_path):
    app = A.App(bank)
    wide = np.full((32, 64), tc.labels.label_id("sea"), np.uint8)
    wide[:, :16] = tc.labels.label_id("sand")  # the left quarter: cropped away by default
    runs = {fit: list(app.generate_segmentation(wide, seed=1, fit=fit))[-1] for fit in ("crop", "pad", "stretch")}
    crop, pad, stretch = runs["crop"], runs["pad"], runs["stretch"]
    assert crop[1].endswith("The 64x32 label map was cropped to its centre 32x32 to fit 32x32. Labels: sea 100%.")
    sea, sand = tc.labels.coco_stuff_colours()[[tc.labels.label_id("sea"), tc.labels.label_id("sand")]]
    assert (crop[2][:, :8] == sea).all()  # the condition view: sand gone from the left edge
    assert "padded to 64x64 to fit 32x32." in pad[1] and (pad[2][:8] == 0).all()  # unlabelled rows
    assert pad[1].endswith("Labels: unlabelled 50%, sea 38%, sand 12%.")
    assert "was stretched to fit 32x32." in stretch[1] and (stretch[2][:, :8] == sand).all()
    with pytest.raises(gr.Error, match="fit must be one of crop, pad, stretch"):
        list(app.generate_depth(str(files / "depth16.png"), fit="squash"))
    tall = list(app.generate_edges(str(files / "sketch.png"), "sketch", seed=1, width=64, height=32))[-1]
    assert "The 48x48 sketch was cropped to its centre 48x24 to fit 64x32." in tall[1]


def test_variations_come_as_one_batch_side_by_side(bank, files):
    app = A.App(bank)
    image, status, _ = list(app.generate_segmentation(str(files / "labels.png"), seed=5, images=4))[-1]
    assert image.shape == (66, 66, 3) and status.startswith("Done: 4 images of 256 tokens")  # 2x2, 2 px gaps
    tiles = [image[r:r + 32, c:c + 32] for r in (0, 34) for c in (0, 34)]
    assert (image[32:34] == 255).all() and len({t.tobytes() for t in tiles}) == 4  # four different samples
    again = list(app.generate_segmentation(str(files / "labels.png"), seed=5, images=4))[-1][0]
    # seeded as one batch: the same tokens; the decode's threads follow the machine's load (tc.ThreadPolicy), and
    # convolutions over another thread count round apart by one level in a few pixels
    diff = np.abs(image.astype(int) - again)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    three = list(app.generate_unconditional(seed=1, images=3))[-1][0]
    assert three.shape == (66, 66, 3) and (three[34:, 34:] == 255).all()  # the fourth place stays empty
    with pytest.raises(gr.Error, match="images must be a whole number from 1 to 8"):
        list(app.generate_depth(str(files / "depth16.png"), images=9))


def test_same_seed_same_image(bank, files):
    app = A.App(bank)
    a = list(app.generate_segmentation(str(files / "labels.png"), seed=7))[-1][0]
    b = list(app.generate_segmentation(str(files / "labels.png"), seed=7))[-1][0]
    c = list(app.generate_segmentation(str(files / "labels.png"), seed=8))[-1][0]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_inputs_give_clear_messages(bank, files):
    app = A.App(bank)
    cases = [
        (lambda: app.generate_depth(str(files / "corrupt.png")), "not an image"),
        (lambda: app.generate_segmentation(None), "Upload a label map"),
        (lambda: app.generate_segmentation(str(files / "labels.png"), width=33), "multiples of 2"),
        (lambda: app.generate_segmentation(str(files / "labels.png"), width=4096), "up to 8x"),
        (lambda: app.generate_segmentation(np.full((32, 32), 200, np.uint8)), r"label ids \[200\] are unknown.*"
                                                                              r"0-based COCO-Stuff ids"),
        (lambda: app.generate_edges(str(files / "sketch.png"), "poem"), "sketch' or 'photo"),
    ]
    for make, message in cases:
        with pytest.raises(gr.Error, match=message):
            list(make())


def test_messages_in_plain_words(bank, tmp_path):
    app = A.App(bank)
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    cutout = np.zeros((32, 32, 4), np.uint8)  # a photo with a transparent background, given as depth
    cutout[8:24, 8:24] = (200, 180, 220, 255)
    Image.fromarray(cutout).save(tmp_path / "cutout.png")
    with pytest.raises(gr.Error, match=r"The label map is 1x1 pixels; it needs at least 2x2 pixels\."):
        list(app.generate_segmentation(str(tmp_path / "dot.png")))
    with pytest.raises(gr.Error, match="not a depth map. Upload a grey depth PNG"):
        list(app.generate_depth(str(tmp_path / "cutout.png")))
    with pytest.raises(gr.Error, match=r"4096x4097 pixels; it may have at most 16.8 million pixels \(4096x4096\)"):
        A.read_upload(np.zeros((4097, 4096), np.uint8), "depth map")



def test_uploads_that_do_not_fit_a_tab_are_refused_or_named(bank, tmp_path):
    """A photo given as depth was used as its brightness without a word, and 8x8 sketches and depth maps were
    enlarged silently: the photo and the tiny maps are refused (and deleted), a small map enlarged is named."""
    app = A.App(bank)
    photo = np.random.default_rng(2).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    with pytest.raises(gr.Error, match="This is a colour image, not a depth map"):
        list(app.generate_depth(photo))
    for make, what in ((lambda: app.generate_depth(np.zeros((8, 8), np.uint8)), "depth map"),
                       (lambda: app.generate_edges(np.full((8, 8, 3), 255, np.uint8)), "sketch")):
        with pytest.raises(gr.Error, match=f"The {what} is 8x8 pixels: too small to draw from"):
            list(make())
    ramp = (np.linspace(0, 255, 16)[:, None] * np.ones((1, 16))).astype(np.uint8)
    *_, (image, status, _) = app.generate_depth(ramp, width=64, height=64, frames=2)
    assert image.shape == (64, 64, 3) and "The 16x16 depth map was enlarged 4x to 64x64" in status


def test_page_stream_names_its_files_and_styles_stop(bank, files):
    """The tabs get each image as a file named for the download, at the true size, and Stop styled as active;
    the files are gone once the run is over (Gradio keeps its own copies)."""
    app = A.App(bank)
    folders = []
    for path, status, view, stop, each in A.for_page("segmentation", 123, 1, app.generate_segmentation(
            str(files / "labels.png"), seed=123, width=48, height=32, frames=4)):
        assert Path(path).name == "taming-segmentation-seed123.png" and Path(path).is_file()
        assert Image.open(path).size == (48, 32) and stop == gr.update(variant="stop")
        # the condition view goes once, as a file written once (Gradio rewrites an array's cache file in place on
        # every send, cutting short a browser still reading it)
        assert Image.open(view).size == (48, 32) if not folders else view == gr.skip()
        # the gallery of single images is hidden (emptied at the start), then left alone
        assert each == (gr.update(value=None, visible=False) if not folders else gr.skip())
        folders.append(Path(path).parent)
    assert status.startswith("Done") and len(folders) >= 2 and not any(f.exists() for f in folders)
    outs = list(A.for_page("unconditional", 4, 1, app.generate_unconditional(seed=4), with_view=False))
    assert Path(outs[-1][0]).name == "taming-unconditional-seed4.png" and len(outs[-1]) == 4


def test_variations_also_come_one_by_one_for_their_downloads(bank, files):
    """Several images per run: after the run, each image of the last grid as its own file in the gallery."""
    app = A.App(bank)
    outs = []
    for out in A.for_page("segmentation", 7, 3, app.generate_segmentation(str(files / "labels.png"), seed=7, images=3)):
        # read the files while they exist (Gradio copies them before asking for the next update)
        outs.append([np.asarray(Image.open(f)) if isinstance(f, str) else f for f in out[:1]] + list(out[1:]))
        if isinstance(out[-1], dict) and out[-1].get("visible"):
            each = [(Path(f).name, np.asarray(Image.open(f)), caption) for f, caption in out[-1]["value"]]
    grid = outs[-2][0]  # the last grid; the last update carries the gallery alone
    assert outs[-1][:4] == [gr.skip()] * 4 and grid.shape == (66, 66, 3)
    assert [(name, caption) for name, _, caption in each] == [
        (f"taming-segmentation-seed7-{i}.png", str(i)) for i in (1, 2, 3)]
    assert all(np.array_equal(im, A.untiled(grid, 3)[i]) for i, (_, im, _) in enumerate(each))
    assert np.array_equal(each[1][1], grid[:32, 34:]) and each[2][1].shape == (32, 32, 3)


def test_untiled_inverts_tiled():
    x = torch.rand(5, 3, 8, 12) * 2 - 1
    parts = A.untiled(A.tiled(x), 5)
    assert len(parts) == 5 and all(np.array_equal(p, tc.to_image(x[i])) for i, p in enumerate(parts))


def test_precision_chooses_the_gpt_weights_and_the_app_says_how_each_model_samples(bank, files):
    """--precision int8 / bf16 / auto sample with low-bit GPT matrices on a CPU, fp32 with the plain ones;
    every loaded model's plan is stated."""
    from taming_core.packed import PackedLinear  # fp32 on a CPU: the plain weights, packed for sampling

    paths = {"segmentation": bank.paths["segmentation"]}
    bf16 = "bf16" if tc.cpu_has_bf16() else "fp32"
    for precision, layer, plan in (("int8", tc.LowBitLinear, "GPT int8 weights (fp32 prefill), decode fp32"),
                                   ("bf16", tc.LowBitLinear, "GPT bf16 weights, decode bf16"),
                                   ("fp32", PackedLinear, "GPT fp32 weights, decode fp32, packed products (forced)"),
                                   ("auto", tc.LowBitLinear, f"GPT int8 weights ({bf16} prefill), decode {bf16}")):
        low = A.ModelBank(paths, precision=precision)
        model = low.get("segmentation")
        assert type(model.transformer.blocks[0].mlp[0]) is layer, precision
        runs = [list(A.App(low).generate_segmentation(str(files / "labels.png"), seed=2))[-1][0] for _ in range(2)]
        assert np.array_equal(*runs) and runs[0].shape == (32, 32, 3)
        assert low.plans["segmentation"].endswith(f"M GPT parameters, {plan}"), low.plans
    with pytest.raises(SystemExit, match="int8 weights need a CPU"):
        A.main(["--precision", "int8", "--device", "cuda", "--segmentation", paths["segmentation"][0]])


def test_a_model_that_cannot_load_ends_the_app_at_start(tmp_path):
    ckpt = tmp_path / "run" / "last.ckpt"  # an original checkpoint with no yaml beside it
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"not even a checkpoint")
    r = subprocess.run([sys.executable, "app.py", "--segmentation", str(ckpt), "--port", str(free_port())],
                       cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert r.returncode != 0 and "Traceback" not in r.stderr and "Running on" not in r.stdout
    assert r.stderr.strip().splitlines()[-1] == (f"app.py: cannot load the segmentation model from {ckpt}: no config "
                                                 f"found for {ckpt}: pass --segmentation-config YAML, or put last.yaml"
                                                 " or config.yaml beside it")


def test_a_segmenter_path_holding_another_model_ends_the_app_at_start(bank):
    bad = A.ModelBank({A.SEGMENTER: bank.paths["segmentation"]})
    with pytest.raises(SystemExit, match=r"cannot load the segmenter model from .*: .* is not a segmenter"):
        bad.load_all()


def test_help_is_complete(capsys):
    with pytest.raises(SystemExit) as e:
        A.parse_args(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "token by token." in out and out.rstrip().endswith("stop.")
    assert "--segmentation PATH" in out and "--segmentation-config YAML" in out



def test_help_is_fast_and_its_names_are_the_packages():
    """`app.py --help` imports neither gradio nor torch (it took 10 s on a busy machine); the command line's own
    copies of the names are the package's."""
    import time

    import taming_app

    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "app.py"), "--help"], capture_output=True,
                         text=True, check=True)
    assert time.perf_counter() - t < 2.0 and "--size PX" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines()}
    assert not imported & {"gradio", "torch", "taming_core", "taming_app"}
    assert (A.MODES, A.SEGMENTER, A.PRECISIONS) == (taming_app.MODES, taming_app.SEGMENTER, tc.SAMPLING_PRECISIONS)

def nearest_colour_reference(rgb: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The nearest-colour rule written out: (H, W, n) squared distances, the first of `ids` on ties."""
    colours = tc.labels.coco_stuff_colours()[ids].astype(np.int64)  # (n, 3)
    d = ((rgb[..., None, :3].astype(np.int64) - colours) ** 2).sum(-1)  # (H, W, n)
    return ids[d.argmin(-1)]


def test_snapping_equals_the_nearest_colour_rule():
    rng = np.random.default_rng(0)
    every = np.array(sorted(set(range(182)) | {255}))
    some = np.array([156, 3, 255, 168, 7])
    labels = A.example_maps(40)["Beach"]
    near_labels = np.clip(tc.labels.colourise(labels).astype(int) + rng.integers(-60, 61, (40, 40, 3)), 0, 255)
    for rgb in (rng.integers(0, 256, (37, 23, 3)), rng.integers(0, 256, (9, 70, 4)), near_labels):
        rgb = rgb.astype(np.uint8)
        for ids, among in ((None, every), (some, some)):
            assert np.array_equal(tc.labels.snap_to_labels(rgb, ids), nearest_colour_reference(rgb, among))
        # resizing before snapping picks the same pixels as resizing the labels afterwards
        for size in ((80, 46), (11, 5), (37, 23)):
            assert np.array_equal(tc.condition_maps.labels_from_image(rgb, size=size),
                                  tc.condition_maps.resize_labels(tc.condition_maps.labels_from_image(rgb), size))


def test_noise_label_map_snaps_in_bounded_memory():
    """A 1024^2 map of noise (no pixel has a label's colour) once asked for (N, 183, 3) int64 = 4.4 GB."""
    import tracemalloc

    noise = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        labels = tc.condition_maps.labels_from_image(noise)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert labels.shape == (1024, 1024)
    assert peak - labels.nbytes < 48 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_every_number_is_checked_by_name(bank, files):
    app = A.App(bank)
    path = str(files / "labels.png")
    cases = {
        "seed": [2**70, -1, "abc", 1.5, float("nan"), None, True],
        "temperature": [float("nan"), float("inf"), 0, -1.0, 11, "1"],
        "top_k": [float("nan"), 2.5, -1, 10**6],
        "top_p": [float("nan"), 0, 1.5],
        "width": [float("inf"), -32, 31.5, 10**9],
        "height": [float("-inf"), "64"],
        "frames": [float("nan"), 0, 1000],
    }
    for name, values in cases.items():
        for value in values:
            with pytest.raises(gr.Error, match=f"{name} must be a"):
                list(app.generate_segmentation(path, **{name: value}))
            if name not in ("width", "height"):
                with pytest.raises(gr.Error, match=f"{name} must be a"):
                    list(app.generate_unconditional(**{name: value}))
    # whole floats and numpy numbers are fine
    image, status, _ = list(app.generate_unconditional(seed=np.int64(3), top_k=50.0, frames=np.float32(4)))[-1]
    assert status.startswith("Done")


def test_stop_ends_sampling_within_one_token(bank, files):
    app = A.App(bank)
    run = app.generate_segmentation(str(files / "labels.png"), seed=1, frames=32, width=64, height=64)
    first = next(run)
    app.request_stop(None)
    rest = list(run)
    assert len(rest) == 1 and rest[0][1].startswith("Stopped at")
    done = int(re.search(r"Stopped at (\d+)/", rest[0][1])[1])
    assert done < 32 * 32 and rest[0][0].shape == (64, 64, 3) and first[0].shape == (64, 64, 3)


def test_the_bundled_segmentation_model_runs_in_the_app():
    """checkpoints/segmentation reads label grids (no condition stage): the app's checks and sampling take it."""
    bank = A.ModelBank({"segmentation": (str(ROOT / "checkpoints" / "segmentation"), None)})
    labels = np.full((128, 128), tc.labels.label_id("sky-other"), np.uint8)
    labels[64:] = tc.labels.label_id("grass")
    image, status, view = list(A.App(bank).generate_segmentation(labels, seed=0))[-1]
    assert status.startswith("Done") and "Labels: grass 50%, sky-other 50%." in status, status
    assert image.shape == (128, 128, 3) and "Guidance" not in status  # guided at the tab's default, 3
    with pytest.raises(gr.Error, match="no label"):
        list(A.App(bank).generate_segmentation(np.full((128, 128), 11, np.uint8)))  # an unused COCO id


def test_images_sent_to_the_page_are_files_written_once(bank):
    """Fill four times in a row, or quick Generate/Stop, logged "Too much/little data for declared Content-Length"
    tracebacks: gradio rewrote an array's cache file in place while a browser was still reading it. Canvases,
    depth previews and condition views now go as files written once, which gradio copies once."""
    from taming_app import files as F

    app = A.App(bank)
    page = A.Page(app, app.label_space(), 32, ["Beach"], "Beach")
    first = page.canvas(A.example_maps(32)["Beach"])["background"]
    inode, mtime = os.stat(first).st_ino, os.stat(first).st_mtime_ns
    for _ in range(4):  # the same canvas again: the same file, untouched
        again = page.canvas(A.example_maps(32)["Beach"])["background"]
        assert again == first and (os.stat(again).st_ino, os.stat(again).st_mtime_ns) == (inode, mtime)
    assert np.array_equal(np.asarray(Image.open(first)), tc.labels.colourise(A.example_maps(32)["Beach"]))
    other = page.canvas(A.example_maps(32)["Beach"][::-1])["background"]
    assert other != first and Path(other).parent.parent == F.folder()


def test_canvases_follow_the_output_and_panoramas_set_it(bank):
    """The painter and the sketch canvas take the output's shape: scenes are drawn at it, a painting is
    stretched to it, a panorama scene sets it to 2:1, "Clear canvas" gives a blank one of it, and sizes being
    typed (no valid size yet) change nothing."""
    app = A.App(bank)
    page = A.Page(app, app.label_space(), 32, ["Mountain lake", "Mountain panorama", A.BLANK], A.BLANK)

    def shape(value) -> tuple:
        return np.asarray(Image.open(value["background"])).shape[:2]

    value, width, height = page.start_from("Mountain panorama", 32, 32)
    assert (width, height) == (64, 32) and shape(value) == (32, 64)
    value, width, height = page.start_from("Mountain lake", 96, 48)
    assert (width, height) == (96, 48) and shape(value) == (48, 96)
    scene = {"background": np.asarray(Image.open(value["background"])), "layers": [], "composite": None}
    assert shape(page.resize_painter(scene, "Mountain lake", 64, 32)) == (32, 64)
    assert page.resize_painter(scene, "Mountain lake", 6, 32) == gr.skip()  # "6" of "64" being typed
    stroke = np.zeros((48, 96, 4), np.uint8)
    stroke[10:20, 10:50] = (255, 0, 255, 255)  # person, painted over the scene
    painted = {**scene, "layers": [stroke]}
    stretched = np.asarray(Image.open(page.resize_painter(painted, "Mountain lake", 64, 64)["background"]))
    assert stretched.shape == (64, 64, 3) and (stretched == (255, 0, 255)).all(-1).any()  # the painting, kept
    cleared, name = page.cleared(64, 32)
    assert name == A.BLANK and shape(cleared) == (32, 64) and not np.asarray(Image.open(cleared["background"])).any()
    white = np.asarray(Image.open(page.blank_sketch(64, 32)["background"]))
    assert white.shape == (32, 64, 3) and (white == 255).all()  # the sketch's "Clear canvas": white paper
    assert shape(page.resize_sketch({"background": white, "layers": [], "composite": None}, 96, 32)) == (32, 96)
