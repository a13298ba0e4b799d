"""The app with models other than the bundled kinds: label spaces that follow the segmentation model (ADE20K,
COCO-Stuff without unlabelled, official 1-based COCO-Stuff ids) and the Class tab of a class-conditional
model; handlers, API and browser."""
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")

import app as A  # noqa: E402
import taming_core as tc  # noqa: E402
from app_helpers import browser_page, colour_button, free_port, needs_chromium  # noqa: E402
from conftest import small_model  # noqa: E402

L = tc.labels


def bank_of(root, **models) -> A.ModelBank:
    """A bank of small models: mode=(condition kind, label or class count)."""
    paths = {}
    for mode, (kind, n) in models.items():
        cfg = small_model(kind, n if kind == "segmentation" else 5)
        if kind == "class":
            cfg["cond_stage"]["n_classes"] = n
            # class ids are tokens of the GPT, whose vocabulary is the first stage's codebook (cIN: 16384)
            cfg["transformer"]["vocab_size"] = cfg["first_stage"]["n_embed"] = 1024
        torch.manual_seed(0)
        tc.save_model(tc.build_model(cfg), root / mode)
        paths[mode] = (str(root / mode), None)
    seg = root / "segmenter"
    tc.save_model(tc.Segmenter(tc.SegmenterConfig(labels=["sky-other", "grass", "sea"], width=8)), seg)
    return A.ModelBank({**paths, A.SEGMENTER: (str(seg), None)})


@pytest.fixture(scope="module")
def ade_bank(tmp_path_factory):
    return bank_of(tmp_path_factory.mktemp("ade"), segmentation=("segmentation", 151), **{"class": ("class", 1000)})


def final(stream) -> tuple:
    return list(stream)[-1]


def test_an_ade20k_model_reads_ade20k_maps(ade_bank):
    app = A.App(ade_bank)
    space = app.label_space()
    assert space is L.ADE20K_151
    labels = np.full((32, 32), space.id("sky"), np.uint8)
    labels[20:] = space.id("grass")
    labels[28:] = 0  # other
    for given in (labels, space.colourise(labels)):  # grey ADE20K ids, or painted with its colours
        image, status, view = final(app.generate_segmentation(given, seed=1))
        assert status.startswith("Done") and status.endswith("Labels: sky 62%, grass 25%, other 12%."), status
        assert np.array_equal(view, space.colourise(labels))
    # the COCO-Stuff scenes come in ADE20K's labels; the official COCO-Stuff counting is refused by name
    lake = A.example_maps(32, space)["Mountain lake"]
    assert {space.names[i] for i in np.unique(lake)} == {"sky", "mountain", "water", "grass"}
    with pytest.raises(gr.Error, match="1-based grey ids are the official COCO-Stuff encoding; this model reads"):
        final(app.generate_segmentation(labels, grey_ids="1-based"))
    with pytest.raises(gr.Error, match="grey values that are no label.*ADE20K ids: 0 = other"):
        final(app.generate_segmentation(np.full((32, 32), 200, np.uint8)))


def test_a_photo_becomes_an_ade20k_label_map(ade_bank, tmp_path):
    photo = np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    app = A.App(ade_bank)
    rgb, message = app.label_map_from_photo(str(tmp_path / "photo.png"), 32)
    coco = ade_bank.get(A.SEGMENTER).segment(photo)  # the segmenter's COCO-Stuff map, at its own size
    expected = L.from_coco_stuff(tc.condition_maps.resize_labels(coco, (32, 32)), L.ADE20K_151)
    assert np.array_equal(L.ADE20K_151.snap(rgb), expected)
    assert message.startswith("Label map of the 40x40 photo") and "sky-other" not in message


def test_official_one_based_coco_ids_are_read_when_chosen_and_refused_by_name_otherwise(tmp_path):
    app = A.App(bank_of(tmp_path, segmentation=("segmentation", 183)))
    official = np.full((32, 32), 157, np.uint8)  # 1-based: sky-other
    official[16:] = 124  # grass
    official[:4] = 0  # unlabelled
    official[30:] = 13  # stop sign (COCO category 13; 0-based 12)
    official[31:] = 11  # fire hydrant (category 11; 0-based 10); 0-based 11 is category 12, which is unused
    with pytest.raises(gr.Error, match=r"Grey values 11 are no label in the 0-based COCO-Stuff ids .* "
                                       r"\(11 = fire hydrant\).*1-based"):
        final(app.generate_segmentation(official))
    _, status, view = final(app.generate_segmentation(official, seed=1, grey_ids="1-based"))
    assert "Labels: grass 44%, sky-other 38%, unlabelled 12%, fire hydrant 3%, stop sign 3%." in status, status
    expected = np.where(official == 0, 255, official.astype(np.int64) - 1)
    assert np.array_equal(view, L.colourise(expected))
    official[31:] = 12  # category 12 is unused: no label in either counting
    with pytest.raises(gr.Error, match="Grey values 12 are no COCO-Stuff label in the official 1-based ids either"):
        final(app.generate_segmentation(official, grey_ids="1-based"))
    with pytest.raises(gr.Error, match="grey_ids must be one of 0-based, 1-based"):
        final(app.generate_segmentation(official, grey_ids="2-based"))


def test_a_model_without_unlabelled_wants_every_pixel_labelled(tmp_path):
    app = A.App(bank_of(tmp_path, segmentation=("segmentation", 182)))
    space = app.label_space()
    assert space is L.COCO_STUFF_182 and "unlabelled" not in space.painter
    painted = space.colourise(A.example_maps(32, space)["Beach"])
    _, status, _ = final(app.generate_segmentation(painted, seed=1))
    assert status.startswith("Done")
    painted[:8] = 0  # a quarter erased or left black
    with pytest.raises(gr.Error, match="25% of the map is black .* has no unlabelled label"):
        final(app.generate_segmentation(painted))
    with pytest.raises(gr.Error, match="no \"unlabelled\" label to pad with"):
        final(app.generate_segmentation(np.full((32, 64), 156, np.uint8), fit="pad"))
    with pytest.raises(gr.Error, match="no label.*this model has no unlabelled id"):
        final(app.generate_segmentation(np.full((32, 32), 255, np.uint8)))


def test_a_model_with_any_label_count_gets_a_generic_palette_and_loads(tmp_path):
    """6 labels (data.n_labels=6): the palette is "label 0".."label 5", the page builds, a painted map samples."""
    app = A.App(bank_of(tmp_path, segmentation=("segmentation", 6)))
    space = app.label_space()
    assert space.painter == [f"label {i}" for i in range(6)]
    assert len({tuple(space.colours[i]) for i in range(6)}) == 6  # six distinct colours
    A.build_demo(app.bank)  # no IndexError at the palette
    painted = space.colourise(np.repeat(np.arange(6, dtype=np.uint8), 6)[None].repeat(32, 0)[:, :32])
    image, status, view = final(app.generate_segmentation(painted, seed=1))
    assert status.startswith("Done") and "label 5" in status and np.array_equal(view, painted)


def test_class_samples_by_id_or_name(ade_bank):
    app = A.App(ade_bank)
    assert app.class_choices()[980] == ("980: volcano", 980)
    by_id = final(app.generate_class(980, seed=3))
    by_name = final(app.generate_class("Volcano", seed=3))
    assert by_id[1].endswith("Class 980: volcano.") and np.array_equal(by_id[0], by_name[0])
    assert not np.array_equal(by_id[0], final(app.generate_class(981, seed=3))[0])  # the class matters
    for bad, words in ((1000, "whole number from 0 to 999"), (2.5, "whole number"), ("volcan", "similar: volcano"),
                       ("xyzzy", "No class is named 'xyzzy'.")):
        with pytest.raises(gr.Error, match=re.escape(words)):
            final(app.generate_class(bad))


def test_a_coordinate_model_samples_in_the_unconditional_tab(tmp_path):
    """FacesHQ-style: the condition is every pixel's raster position, which the tab supplies."""
    cfg = small_model("coord")
    cfg["cond_stage"].update(n_embed=32, down_factor=2)  # tokens within the GPT's 32; a 16x16 grid at 32 px
    tc.save_model(tc.build_model(cfg), tmp_path / "faces")
    app = A.App(A.ModelBank({"unconditional": (str(tmp_path / "faces"), None)}))
    model, seen = app.bank.get("unconditional"), []
    encode = model.encode_cond
    model.encode_cond = lambda cond: seen.append(cond) or encode(cond)
    image, status, _ = final(app.generate_unconditional(seed=2))
    assert status.startswith("Done: 256 tokens") and image.shape == (32, 32, 3)
    ramp = (torch.arange(32 * 32) / (32 * 32)).view(1, 1, 32, 32)  # the original's coord map: raster position
    assert len(seen) == 1 and torch.equal(seen[0], ramp)


def test_a_model_of_another_kind_ends_the_app_at_start_naming_its_flag(tmp_path):
    bank = bank_of(tmp_path, depth=("depth", 0))
    wrong = A.ModelBank({"segmentation": bank.paths["depth"]})
    with pytest.raises(SystemExit, match="conditioned on depth, not segmentation: pass it with --depth"):
        wrong.load_all()


@pytest.fixture(scope="module")
def served(ade_bank):
    demo = A.build_demo(ade_bank)
    _, url, _ = A.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                         quiet=True)
    yield url
    demo.close()


def test_api_generate_class(served):
    from gradio_client import Client

    client = Client(served, verbose=False)
    # class_id, seed, temperature, top_k, top_p, previews, images, guidance
    image, status, _ = client.predict("volcano", 1, 1.0, 100, 1.0, 8, 2, 1.0, api_name="/generate_class")
    assert np.asarray(Image.open(image)).shape[:2] == (32, 66) and "Class 980: volcano." in status


@pytest.mark.slow
@needs_chromium
def test_browser_ade20k_palette_and_the_class_tab(served):
    from playwright.sync_api import expect

    with browser_page(served) as page:
        colour = colour_button(page)
        expect(page.locator("#legend")).to_contain_text("waterfall")  # ADE20K's painter, not COCO-Stuff's
        expect(page.locator("#legend")).not_to_contain_text("sky-other")
        expect(page.locator("#grey_ids")).to_contain_text("ADE20K ids: 0 = other")
        expect(page.locator("#grey_ids_base")).to_be_hidden()  # 0/1-based counting is COCO-Stuff's
        colour.click()
        sky = page.locator("#seg").get_by_role("button", name="sky", exact=True)
        expect(sky).to_be_visible(timeout=10000)
        sky.click()
        page.click("#go_seg")
        expect(page.locator("#status_seg textarea")).to_have_value(re.compile("^Done.*Labels: sky"), timeout=60000)

        guidance = page.locator("#guidance input[type=number]")
        expect(guidance).to_have_value("3")  # each tab's measured default (app.GUIDANCE_BY_MODE)
        page.get_by_role("tab", name="Class").click()
        expect(page.locator("#width")).to_be_hidden()
        expect(page.locator("#guidance")).to_be_visible()
        expect(guidance).to_have_value("1")
        search = page.locator("#class_id input")
        search.click()
        search.press("Control+a")
        search.press_sequentially("volca")
        page.get_by_role("option", name="980: volcano").click()
        images = page.locator("#images input[type=number]")
        images.fill("2")
        images.press("Enter")
        page.click("#go_class")
        expect(page.locator("#status_class textarea")).to_have_value(
            re.compile("^Done: 2 images.*Class 980: volcano"), timeout=60000)
        assert page.locator("#out_class img").get_attribute("src").endswith("/taming-class-seed0.png")
        expect(page.locator("#each_class img")).to_have_count(2, timeout=10000)  # each its own download
        assert page.locator("#each_class img").nth(1).get_attribute("src").endswith("taming-class-seed0-2.png")
        page.set_viewport_size({"width": 800, "height": 900})  # a narrow window: no tab hides behind a menu
        page.wait_for_timeout(500)
        assert all(tab.is_visible() for tab in page.get_by_role("tab").all())
        assert page.get_by_role("tab").count() == 5
