"""Maps and images as people give them and see them, without Gradio: tc.to_image, and taming_core.condition_maps'
reading of uploaded label and depth maps (grey ids, colours, photos given by mistake), fitting to the output's
shape, and the labels found."""
import numpy as np
import pytest
import torch

import taming_core as tc


def test_to_image_inverts_the_pixel_convention():
    u8 = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, 3, H, W) in [-1, 1]
    images = tc.to_image(x)
    assert isinstance(images, list) and len(images) == 2
    assert all(im.dtype == np.uint8 and np.array_equal(im, u8[i]) for i, im in enumerate(images))
    assert np.array_equal(tc.to_image(x[1]), u8[1])  # one image (3, H, W) -> (H, W, 3)
    grey = tc.to_image(torch.tensor([[[-1.0, 0.0, 1.0, 3.0]]]))  # (1, 1, 4): repeated to RGB, clipped
    assert grey.shape == (1, 4, 3) and grey[0, :, 0].tolist() == [0, 128, 255, 255] and (grey == grey[..., :1]).all()
    with pytest.raises(ValueError, match=r"expected images \(C, H, W\) or \(B, C, H, W\)"):
        tc.to_image(torch.zeros(4, 4))


def test_map_to_image_shows_a_map_as_grey():
    rgb = tc.condition_maps.map_to_image(np.array([[-1.0, 0.0, 1.0, 2.0]], np.float32))
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    assert rgb[0, :, 0].tolist() == [0, 127, 255, 255] and (rgb == rgb[..., :1]).all()


def test_edges_from_image_reads_sketches_and_photos_at_the_output_size():
    sketch = np.full((48, 64, 3), 255, np.uint8)
    sketch[20:22, 5:60] = 0  # one dark stroke
    edges = tc.condition_maps.edges_from_image(sketch, "sketch", (24, 32))
    assert edges.shape == (24, 32) and set(np.unique(edges)) == {-1.0, 1.0}
    assert np.array_equal(edges, tc.condition_maps.resize_edges(tc.condition_maps.edges_from_sketch(sketch), (24, 32)))
    photo = np.zeros((40, 40, 3), np.uint8)
    photo[:, 20:] = 200  # one vertical step: Canny finds it, at the output size
    edges = tc.condition_maps.edges_from_image(photo, "photo", (32, 32))
    assert edges.shape == (32, 32) and (edges[:, 14:18] > 0).any(axis=1).all() and (edges[:, :10] < 0).all()
    with pytest.raises(ValueError, match="kind must be 'sketch' or 'photo', got 'poem'"):
        tc.condition_maps.edges_from_image(sketch, "poem", (24, 32))


def test_fit_map_says_what_it_did():
    wide = np.arange(32 * 64).reshape(32, 64)
    out, note = tc.condition_maps.fit_map(wide, (32, 32), "crop", "label map")
    assert np.array_equal(out, wide[:, 16:48])
    assert note == " The 64x32 label map was cropped to its centre 32x32 to fit 32x32."
    out, note = tc.condition_maps.fit_map(wide, (32, 32), "pad", "depth map", fill=-1)
    assert out.shape == (64, 64) and (out[:16] == -1).all() and note.endswith("padded to 64x64 to fit 32x32.")
    out, note = tc.condition_maps.fit_map(wide, (32, 32), "stretch", "sketch")
    assert out is wide and note == " The 64x32 sketch was stretched to fit 32x32."
    assert tc.condition_maps.fit_map(wide, (16, 32), "crop", "sketch") == (wide, "")  # the output's shape already
    with pytest.raises(tc.condition_maps.MapError, match=r"fit must be one of crop, pad, stretch, got 'squash'\."):
        tc.condition_maps.fit_map(wide, (32, 32), "squash", "sketch")


def test_grey_ids_count_from_zero_or_from_one():
    L = tc.labels
    space = L.COCO_STUFF_UNLABELLED
    values = np.array([[0, 156], [255, 123]])  # 0-based: person, sky-other, unlabelled, grass
    assert tc.condition_maps.grey_labels(values, space, "0-based") is values
    official = np.array([[1, 157], [0, 124]])  # the official PNGs: category ids, 0 = unlabelled
    assert tc.condition_maps.grey_labels(official, space, "1-based").tolist() == [[0, 156], [255, 123]]
    with pytest.raises(tc.condition_maps.MapError, match=r"Grey values 11 are no label in the 0-based COCO-Stuff ids"
                                                         r".*\(11 = fire hydrant\)"):
        tc.condition_maps.grey_labels(np.array([[11, 0]]), space, "0-based")
    with pytest.raises(tc.condition_maps.MapError, match="Grey values 12 are no COCO-Stuff label in the official "
                                                         "1-based ids either"):
        tc.condition_maps.grey_labels(np.array([[12, 1]]), space, "1-based")
    with pytest.raises(tc.condition_maps.MapError, match="1-based grey ids are the official COCO-Stuff encoding; "
                                                         "this model reads ADE20K"):
        tc.condition_maps.grey_labels(values, L.ADE20K_151, "1-based")
    assert tc.condition_maps.grey_labels(np.array([[11]]), L.ADE20K_151, "0-based").tolist() == [[11]]
    with pytest.raises(tc.condition_maps.MapError, match="grey_ids must be one of 0-based, 1-based, got '2-based'"):
        tc.condition_maps.check_grey_ids("2-based")


def test_labels_found_by_share_largest_first():
    space = tc.labels.COCO_STUFF_UNLABELLED
    labels = np.full((10, 10), 156)  # sky-other
    labels[6:] = 123  # grass
    labels[9, :5] = 255  # unlabelled
    labels[0, 0] = 0  # person
    assert tc.condition_maps.labels_found(labels, space) == "sky-other 59%, grass 35%, unlabelled 5%, person 1%"
    assert tc.condition_maps.labels_found(labels, space, skip=255, at_least=0.02, most=1) == "sky-other 59%"
    assert tc.condition_maps.labels_found(np.array([[200]]), space) == "id 200 100%"  # no name: its id


def test_label_map_reads_grey_and_colour_maps_at_the_output_size():
    L = tc.labels
    space = L.COCO_STUFF_UNLABELLED
    grey = np.full((32, 64), L.label_id("sea"), np.uint8)
    grey[:, :16] = L.label_id("sand")
    labels, note = tc.condition_maps.label_map(grey, (16, 16), "crop", space)
    assert labels.shape == (16, 16) and labels.dtype == np.int64 and (labels == L.label_id("sea")).all()
    assert note == " The 64x32 label map was cropped to its centre 32x32 to fit 16x16."
    labels, _ = tc.condition_maps.label_map(grey, (16, 16), "pad", space)
    assert (labels[:4] == 255).all() and (labels[4:12, 4:] == L.label_id("sea")).all()  # padded: unlabelled
    coloured = space.colourise(np.repeat(grey[:, :32], 2, axis=0))  # (64, 32, 3): sand left, sea right
    labels, note = tc.condition_maps.label_map(coloured, (8, 4), "stretch", space)
    assert note == "" and labels[:, :2].tolist() == [[L.label_id("sand")] * 2] * 8
    assert (labels[:, 2:] == L.label_id("sea")).all()
    # official ids, when asked
    labels, _ = tc.condition_maps.label_map(np.full((8, 8), 157, np.uint8), (8, 8), grey_ids="1-based")
    assert (labels == 156).all()


def test_label_map_refuses_photos_black_areas_and_padding_without_unlabelled():
    L = tc.labels
    photo = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)
    with pytest.raises(tc.condition_maps.LooksLikePhoto) as e:
        tc.condition_maps.label_map(photo, (32, 32))
    assert e.value.roughness > tc.condition_maps.PHOTO_ROUGHNESS and isinstance(e.value, ValueError)
    space = L.COCO_STUFF_182  # no unlabelled id
    painted = space.colourise(np.full((32, 32), L.label_id("sky-other"), np.uint8))
    assert (tc.condition_maps.label_map(painted, (32, 32), space=space)[0] == L.label_id("sky-other")).all()
    painted[:8] = 0  # a quarter left black
    with pytest.raises(tc.condition_maps.MapError, match=r"25% of the map is black .* \(COCO-Stuff"):
        tc.condition_maps.label_map(painted, (32, 32), space=space)
    with pytest.raises(tc.condition_maps.MapError, match="no \"unlabelled\" label to pad with"):
        tc.condition_maps.label_map(np.full((32, 64), 156, np.uint8), (32, 32), "pad", space)



def test_label_map_refuses_smooth_photos_and_noise_maps_and_snaps_to_real_labels_only():
    """A smooth photo (its labels change little between neighbours) was read as 'fog 45%, road 32%, ...'; an 8x8
    map of noise colours as the non-label 'unused-30': both are maps of other colours than the labels'."""
    L = tc.labels
    y, x = np.mgrid[0:64, 0:96] / 64.0
    smooth = np.stack([90 + 80 * y, 140 + 40 * x, 230 - 120 * y], -1).astype(np.uint8)  # a sky-to-ground blend
    with pytest.raises(tc.condition_maps.LooksLikePhoto, match=r"\d+% of its pixels are far from every label colour"):
        tc.condition_maps.label_map(smooth, (64, 96))
    noise = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    with pytest.raises(tc.condition_maps.LooksLikePhoto, match="far from every label colour"):
        tc.condition_maps.label_map(noise, (256, 256))
    # a colour near an unused id's (grid) colour snaps to a real label, never to "unused-..."
    near_unused = np.broadcast_to(L.COCO_STUFF_UNLABELLED.colours[L.COCO_UNUSED[0]], (8, 8, 3))
    with pytest.raises(tc.condition_maps.LooksLikePhoto):  # and, being no label's colour, is far from them all
        tc.condition_maps.label_map(np.ascontiguousarray(near_unused), (8, 8))
    named = [i for i in L.COCO_STUFF_UNLABELLED.ids if not L.COCO_STUFF_UNLABELLED.names[i].startswith("unused-")]
    snapped = tc.condition_maps.labels_from_image(np.ascontiguousarray(near_unused), named,
                                                  space=L.COCO_STUFF_UNLABELLED)
    assert not set(np.unique(snapped).tolist()) & set(L.COCO_UNUSED)

def test_read_depth_map_normalises_or_says_what_to_upload():
    ramp = (np.linspace(0, 65535, 40)[:, None] * np.ones((1, 30))).astype(np.uint16)  # 16-bit grey
    d = tc.condition_maps.read_depth_map(ramp)
    assert d.shape == (40, 30) and d.dtype == np.float32 and d.min() == -1 and d.max() == 1
    cutout = np.zeros((8, 8, 4), np.uint8)  # a photo with a transparent background
    cutout[2:6, 2:6] = (200, 180, 220, 255)
    with pytest.raises(tc.condition_maps.MapError, match="This image has transparency, so it was read as an "
                                                         "original float-in-RGBA depth PNG.*not a depth map"):
        tc.condition_maps.read_depth_map(cutout)
    with pytest.raises(tc.condition_maps.MapError, match=r"not a depth map the app can read \(the depth map holds "
                                                         r"NaN"):
        tc.condition_maps.read_depth_map(np.full((4, 4), np.nan, np.float32))
    # a colour photo given as depth was read as its brightness without a word; grey RGB maps still read
    photo = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    with pytest.raises(tc.condition_maps.MapError, match="This is a colour image, not a depth map"):
        tc.condition_maps.read_depth_map(photo)
    grey = np.repeat(ramp[:, :, None] // 256, 3, -1).astype(np.uint8)
    assert np.allclose(tc.condition_maps.read_depth_map(grey), d, atol=1e-2)
