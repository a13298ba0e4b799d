"""The app in a real browser (Debian's chromium through Playwright): painting, Generate, Stop, tabs, uploads,
"Start from a photo", the blank canvas and the named swatches."""
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")

import app as A  # noqa: E402
import taming_core as tc  # noqa: E402
from app_helpers import browser_page, colour_button, needs_chromium, server_log  # noqa: E402


@pytest.mark.slow
@needs_chromium
def test_browser_paint_generate_stop_and_errors(served, files, tmp_path):
    from playwright.sync_api import expect

    with browser_page(served) as page:
        colour = colour_button(page)
        canvas = page.locator("#seg canvas").first
        box = canvas.bounding_box()
        for rgb, y in (((0, 102, 0), 0.3), ((255, 0, 255), 0.7)):  # tree, then person
            colour.click()
            page.locator(f'#seg button.color[style*="rgb({rgb[0]}, {rgb[1]}, {rgb[2]})"]').click()
            page.locator("#seg").get_by_role("button", name="Brush", exact=True).click()
            x0, x1, yy = box["x"] + box["width"] * 0.3, box["x"] + box["width"] * 0.7, box["y"] + box["height"] * y
            page.mouse.move(x0, yy)
            page.mouse.down()
            page.mouse.move(x1, yy, steps=8)
            page.mouse.up()
        page.evaluate("""() => { window.__srcs = []; new MutationObserver(() => {
            const img = document.querySelector('#out_seg img');
            if (img && window.__srcs[window.__srcs.length - 1] !== img.src) window.__srcs.push(img.src);
        }).observe(document.body, {subtree: true, childList: true, attributes: true}); }""")
        page.locator("#width input").fill("64")
        page.locator("#height input").fill("64")
        page.click("#go_seg")
        expect(page.locator("#status_seg textarea")).to_have_value(re.compile("^Done"), timeout=60000)
        srcs = page.evaluate("window.__srcs")
        assert len(set(srcs[:-1])) >= 3, srcs  # at least three different partial images before the final one
        page.wait_for_function("document.querySelector('#out_seg img').naturalWidth > 0")
        # the file keeps the true size, the page shows it enlarged
        assert page.evaluate("[document.querySelector('#out_seg img').naturalWidth, "
                             "document.querySelector('#out_seg img').naturalHeight]") == [64, 64]
        assert page.locator("#out_seg img").bounding_box()["width"] >= 256
        page.screenshot(path=str(tmp_path / "segmentation.png"))

        # Stop midway: sampling ends early and the partial result stays
        page.locator("#width input").fill("128")
        page.locator("#height input").fill("128")
        page.click("#go_seg")
        expect(page.locator("#status_seg textarea")).to_have_value(re.compile(r"^\d+/4096 tokens"), timeout=60000)
        expect(page.locator("#stop_seg")).to_have_class(re.compile(r"\bstop\b"))  # active while a job runs
        page.click("#stop_seg")
        expect(page.locator("#status_seg textarea")).to_have_value(re.compile("^Stopped at"), timeout=10000)
        expect(page.locator("#stop_seg")).to_have_class(re.compile(r"\bsecondary\b"))

        # A corrupt upload: a clear message, and the app keeps serving
        page.get_by_role("tab", name="Depth").click()
        page.locator("#depth input[type=file]").set_input_files(str(files / "corrupt.png"))
        expect(page.get_by_text(re.compile("not an image file")).first).to_be_visible(timeout=20000)


@pytest.mark.slow
@needs_chromium
def test_browser_tabs_keep_their_results_and_refused_uploads_clear(served, files):
    from playwright.sync_api import expect

    with browser_page(served) as page:
        page.locator("#go_seg").wait_for(timeout=30000)
        expect(page.locator("#grey_ids")).to_contain_text("156 = sky-other")
        expect(page.locator("#stop_seg")).to_have_class(re.compile(r"\bsecondary\b"))  # nothing runs yet

        page.get_by_role("tab", name="Unconditional").click()
        expect(page.locator("#width")).to_be_hidden()  # the size fields apply to the other tabs only
        page.locator("#seed input").fill("5")
        page.click("#go_uncond")
        expect(page.locator("#status_uncond textarea")).to_have_value(re.compile("^Done"), timeout=60000)
        uncond_src = page.locator("#out_uncond img").get_attribute("src")
        assert uncond_src.endswith("/taming-unconditional-seed5.png"), uncond_src

        page.get_by_role("tab", name="Segmentation").click()
        expect(page.locator("#width")).to_be_visible()
        expect(page.locator("#out_seg img")).to_have_count(0)  # not the other tab's result
        expect(page.locator("#status_seg textarea")).to_have_value("")
        page.click("#go_seg")
        expect(page.locator("#status_seg textarea")).to_have_value(re.compile("^Done"), timeout=60000)
        page.get_by_role("tab", name="Unconditional").click()
        expect(page.locator("#status_uncond textarea")).to_have_value(re.compile("^Done"))
        assert page.locator("#out_uncond img").get_attribute("src") == uncond_src

        # A refused upload empties its box: Generate then asks for a depth map, it uses no earlier one
        page.get_by_role("tab", name="Depth").click()
        page.locator("#depth input[type=file]").set_input_files(str(files / "corrupt.png"))
        expect(page.get_by_text(re.compile("not an image file")).first).to_be_visible(timeout=20000)
        expect(page.locator("#depth")).not_to_contain_text("corrupt.png", timeout=10000)
        page.click("#go_depth")
        expect(page.get_by_text("Upload a depth map first.").first).to_be_visible(timeout=20000)
        page.locator("#depth input[type=file]").set_input_files(str(files / "depth16.png"))  # the box takes another
        expect(page.locator("#depth_preview img")).to_be_visible(timeout=20000)
        # the same in the Segmentation tab: the file box empties, the canvas stays as it was
        page.get_by_role("tab", name="Segmentation").click()
        page.locator("#seg_upload input[type=file]").set_input_files(str(files / "corrupt.png"))
        expect(page.locator("#seg_upload")).not_to_contain_text("corrupt.png", timeout=20000)
        expect(page.locator("#seg_upload input[type=file]")).to_have_count(1)


@pytest.mark.slow
@needs_chromium
def test_browser_start_from_a_photo(served, bank, files, tmp_path):
    """A photo uploaded under "Start from a photo" becomes the canvas (its label map in the palette colours), the
    status names what was found, and Generate then uses that map."""
    from playwright.sync_api import expect

    with browser_page(served) as page:
        page.locator("#go_seg").wait_for(timeout=30000)
        expect(page.locator("#seg_photo")).to_be_visible()
        page.locator("#seg_photo input[type=file]").set_input_files(str(files / "photo.jpg"))
        expect(page.locator("#status_seg textarea")).to_have_value(re.compile("^Label map of the 90x60 photo"),
                                                                    timeout=20000)
        page.click("#go_seg")
        expect(page.locator("#status_seg textarea")).to_have_value(re.compile("^Done"), timeout=60000)
        page.screenshot(path=str(tmp_path / "from_photo.png"))
        # the condition the model saw is the photo's label map, pixel for pixel
        src = page.locator("#cond_seg img").get_attribute("src")
        seen = np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))
        expected, _ = A.App(bank).label_map_from_photo(str(files / "photo.jpg"))
        assert np.array_equal(seen, expected)


@pytest.mark.slow
@needs_chromium
def test_browser_blank_canvas_and_clear_give_an_unlabelled_map(served, files):
    """"Blank (unlabelled)" in the scene list and the editor's "Clear canvas" both give an all-unlabelled map
    (black), and Generate then conditions on exactly that; the legend names the unlabelled colour."""
    from playwright.sync_api import expect

    def generate(page) -> np.ndarray:
        """Press Generate, wait for this run's condition view, return it."""
        view = page.locator("#cond_seg img")
        before = view.get_attribute("src") if view.count() else None
        page.click("#go_seg")
        page.wait_for_function("([sel, old]) => { const i = document.querySelector(sel); "
                               "return i && i.src && i.src !== old; }", arg=["#cond_seg img", before], timeout=60000)
        expect(page.locator("#status_seg textarea")).to_have_value(re.compile("^Done"), timeout=60000)
        src = view.get_attribute("src")
        return np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))

    with browser_page(served) as page:
        colour_button(page)
        expect(page.locator("#legend")).to_contain_text("unlabelled")
        page.locator("#seg_example input").click()
        page.get_by_role("option", name=A.BLANK).click()
        page.wait_for_timeout(1500)  # the server sends the new canvas; Generate sends what the canvas holds
        assert (generate(page) == 0).all()
        # back to a scene, then Clear canvas: blank again, and the list says so
        page.locator("#seg_example input").click()
        page.get_by_role("option", name="Beach").click()
        page.wait_for_timeout(1500)
        assert not (generate(page) == 0).all()
        page.locator("#seg").get_by_role("button", name="Clear canvas", exact=True).click()
        expect(page.locator("#seg_example input")).to_have_value(A.BLANK, timeout=10000)
        page.wait_for_timeout(1500)
        assert (generate(page) == 0).all()


@pytest.mark.slow
@needs_chromium
def test_browser_swatches_are_named_picking_one_closes_the_popup_and_a_stroke_paints_it(served):
    from playwright.sync_api import expect

    with browser_page(served) as page:
        colour = colour_button(page)
        colour.click()
        grass = page.locator("#seg").get_by_role("button", name="grass", exact=True)
        expect(grass).to_be_visible(timeout=10000)
        assert grass.get_attribute("title") == "grass"
        swatches = page.locator("#seg button.color")
        named = [swatches.nth(i).get_attribute("title") for i in range(swatches.count())]
        assert set(named) >= {"sky-other", "tree", "unlabelled"}, named
        grass.click()
        expect(page.locator("#seg button.color").first).to_be_hidden(timeout=5000)  # the popup closed on pick
        # a stroke from the middle of the (blank) canvas then paints grass, and Generate conditions on it
        page.locator("#seg_example input").click()
        page.get_by_role("option", name=A.BLANK).click()
        page.wait_for_timeout(1500)  # the server sends the blank canvas
        box = page.locator("#seg canvas").first.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2  # the image is centred in the canvas
        page.mouse.move(x - 30, y)
        page.mouse.down()
        for dx in range(-25, 35, 5):
            page.mouse.move(x + dx, y)
        page.mouse.up()
        page.wait_for_timeout(500)
        page.click("#go_seg")
        expect(page.locator("#status_seg textarea")).to_have_value(re.compile("^Done.*Labels: unlabelled"),
                                                                     timeout=60000)
        view = np.asarray(Image.open(io.BytesIO(page.request.get(
            page.locator("#cond_seg img").get_attribute("src")).body())).convert("RGB"))
        grass_rgb = tc.labels.coco_stuff_colours()[tc.labels.label_id("grass")]
        painted = (view == grass_rgb).all(-1)
        assert painted.any() and ((view == 0).all(-1) | painted).all()  # grass where stroked, the rest blank
        rows = np.nonzero(painted.any(1))[0]
        assert rows.min() >= 8 and rows.max() <= 24  # a horizontal stroke through the middle


@pytest.mark.slow
@needs_chromium
def test_browser_canvases_follow_the_output_clear_gives_white_paper_and_guidance_is_kept(served, bank):
    """The visitor's list: the canvas is the output's shape (a panorama scene sets 2:1 and is used whole, not a
    cropped strip of a square); the Edges tab's "Clear canvas" gives white paper, not a collapsed box and an
    error; a guidance the visitor set survives switching tabs, and 0 cannot be chosen."""
    from playwright.sync_api import expect

    def condition(page, key) -> np.ndarray:
        src = page.locator(f"#cond_{key} img").get_attribute("src")
        return np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))

    with browser_page(served) as page:
        colour_button(page)
        page.locator("#seg_example input").click()
        page.get_by_role("option", name="Mountain panorama").click()
        expect(page.locator("#width input")).to_have_value("64", timeout=10000)  # 2:1 of the native 32
        expect(page.locator("#height input")).to_have_value("32")
        page.wait_for_timeout(1500)  # the canvas takes the new shape
        page.locator("#frames input[type=number]").fill("2")
        page.click("#go_seg")
        expect(page.locator("#status_seg textarea")).to_have_value(re.compile("^Done.*64x32 px"), timeout=60000)
        assert "cropped" not in page.locator("#status_seg textarea").input_value()
        space = A.App(bank).label_space()
        assert np.array_equal(condition(page, "seg"), space.colourise(A.example_maps((32, 64))["Mountain panorama"]))
        # the result is shown at its true size or larger
        assert page.locator("#out_seg img").bounding_box()["width"] >= 64

        guidance = page.locator("#guidance input[type=number]")
        assert page.locator("#guidance input[type=range]").get_attribute("min") == "1"  # 0 cannot be chosen
        guidance.fill("4")
        guidance.press("Enter")
        page.get_by_role("tab", name="Edges").click()
        expect(guidance).to_have_value("4")  # not reset to the tab's default (2)
        page.locator("#edges").get_by_role("button", name="Clear canvas", exact=True).click()
        page.wait_for_timeout(1500)
        page.click("#go_edges")
        expect(page.locator("#status_edges textarea")).to_have_value(re.compile("^Done.*64x32 px"), timeout=60000)
        white = condition(page, "edges")
        assert white.shape == (32, 64, 3) and (white == 255).all()  # white paper of the output's shape
        page.get_by_role("tab", name="Depth").click()
        expect(guidance).to_have_value("4")
        expect(page.locator("#depth_note")).to_contain_text("Depth model")
    # the bundled depth model says in its tab that it is a demonstration, and how to serve the original's
    from taming_app.layout import depth_note

    bundled = A.ModelBank({"depth": (str(Path(A.__file__).parent / "checkpoints" / "depth"), None)})
    assert "A demonstration" in depth_note(bundled) and "python app.py --depth logs/" in depth_note(bundled)


def image_rect(page, editor: str) -> dict:
    """Where the editor `editor` (#id) shows its image inside its canvas (px), found in a screenshot of the canvas
    as the box of the dark pixels (a blank label map is black; the margin and the toolbar's background are light)."""
    canvas = page.locator(f"{editor} canvas").first
    canvas.scroll_into_view_if_needed()
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=canvas.bounding_box()))).convert("RGB"))
    ys, xs = np.nonzero(shot.sum(-1) < 30)
    return {"x": float(xs.min()), "y": float(ys.min()), "width": float(xs.max() - xs.min() + 1),
            "height": float(ys.max() - ys.min() + 1), "canvas": shot.shape[:2]}


def stroke_from_margin(page, editor: str, rect: dict, gap: float = 4) -> None:
    """Two real mouse strokes (trusted events) in the editor `editor` that start `gap` px outside its image `rect`
    (image_rect), on the margin: one from the left into the image (low down: the editor's tool column covers the
    left margin higher up), one from above."""
    canvas = page.locator(f"{editor} canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()  # in the viewport, as the mouse moves
    assert abs(box["height"] - rect["canvas"][0]) <= 1 and abs(box["width"] - rect["canvas"][1]) <= 1  # the same canvas
    x, y = box["x"] + rect["x"], box["y"] + rect["y"]
    cx, cy = x + rect["width"] / 2, y + rect["height"] * 0.85
    for (x0, y0), (x1, y1) in (((x - gap, cy), (x + rect["width"] * 0.3, cy)),
                               ((cx, y - gap), (cx, y + rect["height"] * 0.3))):
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x1, y1, steps=2)
        page.mouse.up()
    page.wait_for_timeout(300)


@pytest.mark.slow
@needs_chromium
def test_browser_strokes_that_start_on_the_margin_paint_the_edge(served):
    """A stroke that starts a few px outside the image, on the editor's margin, paints from the image's edge
    (margin_strokes.js; the editor drops such a press), in the painter at 1:1, 2:1 and 1:2 and in the sketch canvas."""
    from playwright.sync_api import expect

    def condition(key: str) -> np.ndarray:
        """Generate in tab `key`; the condition view of this run."""
        view = page.locator(f"#cond_{key} img")
        before = view.get_attribute("src") if view.count() else None
        page.click(f"#go_{key}")
        page.wait_for_function("([sel, old]) => { const i = document.querySelector(sel); "
                               "return i && i.src && i.src !== old; }", arg=[f"#cond_{key} img", before],
                               timeout=60000)
        return np.asarray(Image.open(io.BytesIO(page.request.get(view.get_attribute("src")).body())).convert("RGB"))

    with browser_page(served) as page:
        colour_button(page)
        page.locator("#seg_example input").click()
        page.get_by_role("option", name=A.BLANK).click()
        page.locator("#frames input[type=number]").fill("2")
        for width, height in ((32, 32), (64, 32), (32, 64)):
            page.locator("#width input").fill(str(width))
            page.locator("#height input").fill(str(height))
            page.wait_for_timeout(1500)  # the blank canvas takes the new shape
            rect = image_rect(page, "#seg")
            assert abs(rect["width"] / rect["height"] - width / height) < 0.05, (rect, width, height)
            stroke_from_margin(page, "#seg", rect)
            view = condition("seg")
            assert view.shape[:2] == (height, width)
            painted = ~(view == 0).all(-1)  # not the blank map's unlabelled black
            assert painted[:, 0].any() and painted[0, :].any(), f"{width}x{height}: the edge is not painted"
            page.locator("#seg").get_by_role("button", name="Clear canvas", exact=True).click()
        # the sketch canvas (white paper on a light margin): its image lies where the painter's did at that shape
        page.get_by_role("tab", name="Edges").click()
        expect(page.locator("#edges canvas").first).to_be_visible()
        page.wait_for_timeout(500)
        stroke_from_margin(page, "#edges", rect)
        dark = condition("edges").mean(-1) < 128
        # strokes are thinned to one-pixel lines for the model, which can take a pixel off a line's end
        assert dark[:, :2].any() and dark[:2, :].any(), "the sketch's edge is not drawn"


@pytest.mark.slow
@needs_chromium
def test_browser_quick_fills_and_generate_stop_leave_no_errors(served, capfd):
    """Fill four times in a row, a scene picked four times, and Generate/Stop/Generate in quick succession: the
    server logs no "Too much/little data for declared Content-Length" or any traceback, and the browser sees no
    failed request (ERR_CONTENT_LENGTH_MISMATCH) and no console error (issue 25). (Tried with the canvas files
    rewritten in place while served: both the log lines and the failed requests are caught.)"""
    from playwright.sync_api import expect

    with server_log() as log, browser_page(served) as page:
        failed, errors = [], []
        # the page aborts requests of its own (net::ERR_ABORTED): a job's event stream once the job has ended, a
        # preview still loading when the next replaces it; any other failure (ERR_CONTENT_LENGTH_MISMATCH) counts
        page.on("requestfailed", lambda r: r.failure != "net::ERR_ABORTED" and failed.append(f"{r.url} {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.url} {r.status}"))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        colour_button(page)
        page.locator("#width input").fill("64")  # a quick run
        page.locator("#height input").fill("64")
        page.wait_for_timeout(1500)
        page.click("#go_seg")
        expect(page.locator("#status_seg textarea")).to_have_value(re.compile(r"^\d+/\d+ tokens"), timeout=60000)
        page.click("#stop_seg")
        # at once when the stopped job has ended (a click while it runs is ignored, as gradio ignores repeats)
        expect(page.locator("#stop_seg")).to_have_class(re.compile(r"\bsecondary\b"), timeout=10000)
        page.click("#go_seg")
        expect(page.locator("#status_seg textarea")).to_have_value(re.compile("^Done"), timeout=60000)
        page.locator("#width input").fill("256")  # canvases of 256x256, as the visitor's
        page.locator("#height input").fill("256")
        page.wait_for_timeout(1500)
        for _ in range(4):
            page.get_by_role("button", name="Fill", exact=True).click()
        for scene in ("Beach", "Mountain lake", "Beach", "Mountain lake"):
            page.locator("#seg_example input").click()
            page.get_by_role("option", name=scene).click()
        page.wait_for_timeout(3000)  # the last canvases arrive
    out = capfd.readouterr()
    printed = (out.out + out.err).splitlines()
    bad = [line for line in log + printed
           if re.search("Content-Length|Traceback|Exception in ASGI|Error", line)]
    assert not bad, "\n".join(bad)
    assert not failed, failed
    assert not errors, errors
