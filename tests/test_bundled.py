"""The bundled models in checkpoints/: they load, fit the size budget, reconstruct held-out photos, sample."""
from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import taming_core as tc
from conftest import ROOT, SHARED

CKPT = ROOT / "checkpoints"
MODES = {"segmentation": "segmentation", "edges": "edges", "depth": "depth", "unconditional": "none"}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def vqgan() -> tc.VQGAN:
    return tc.load_model(CKPT / "vqgan")


def test_bundled_weights_fit_the_budget_and_share_the_first_stage(vqgan):
    total = sum(f.stat().st_size for f in CKPT.glob("*/model.safetensors"))
    assert total < 80e6
    assert isinstance(vqgan, tc.VQGAN) and vqgan.config.ddconfig.resolution == 128
    assert vqgan.downsample_factor in (8, 16) and 512 <= vqgan.n_codes <= 4096
    # the four transformers read their first stage from ../vqgan: the same tensors
    for name, kind in MODES.items():
        net = tc.load_model(CKPT / name)
        assert isinstance(net, tc.Net2Net) and net.config.cond_stage.kind == kind and net.grid == (16, 16)
        assert (net.config.cond_mode, net.config.null_token is not None) == (
            ("aligned", True) if kind != "none" else ("prefix", False))  # guidance on the conditional ones
        for k, v in vqgan.state_dict().items():
            assert torch.equal(v, net.first_stage_model.state_dict()[k]), (name, k)


def held_out_crops(n: int = 6) -> torch.Tensor:
    """Centre 128 px crops (B, 3, 128, 128) of the first n held-out COCO photos (the fixed 10% hold-out)."""
    sys.path.insert(0, str(ROOT / "train"))
    from prepare_data import split_of
    photos = sorted((SHARED / "data" / "coco" / "images").glob("*.jpg"))
    held = [p for p in photos if split_of("coco", p.stem, 0.1) == "holdout"][:n]
    if not held:
        pytest.skip("../shared/data not found")
    crops = []
    for p in held:
        rgb = np.asarray(Image.open(p).convert("RGB"))
        s = 128 / min(rgb.shape[:2])
        small = cv2.resize(rgb, (max(128, round(rgb.shape[1] * s)), max(128, round(rgb.shape[0] * s))),
                           interpolation=cv2.INTER_AREA)
        top, left = (small.shape[0] - 128) // 2, (small.shape[1] - 128) // 2
        crops.append(small[top:top + 128, left:left + 128])
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, 3, 128, 128)


def test_bundled_vqgan_reconstructs_held_out_photos_without_specks(vqgan):
    x = held_out_crops()
    with torch.no_grad():
        x_hat = vqgan(x)[0].clamp(-1, 1)
    # all 81 held-out photos: 23.2 dB, 33 specks per million pixels (checkpoints/README.md); these 6: 21.8 dB, 0
    assert tc.psnr(x, x_hat).mean() > 20.5
    assert tc.psnr(x, x_hat).mean() > tc.psnr(x, x.roll(1, 0)).mean() + 8  # not a blur of any photo
    # the first first stage (v1, now gone) left 3,306 per million on these photos: red/white/blue dots
    assert tc.specks(x, x_hat).mean() < 300


@pytest.mark.parametrize("name", list(MODES))
def test_bundled_transformer_samples_an_image(name):
    net = tc.load_model(CKPT / name)
    kind = net.config.cond_stage.kind
    if kind == "segmentation":
        labels = np.full((128, 128), tc.labels.label_id("sky-other"), np.int64)
        labels[64:] = tc.labels.label_id("grass")
        cond = torch.from_numpy(labels)[None]  # raw COCO-Stuff ids, as the app passes them (offset applied inside)
    elif kind in ("edges", "depth"):
        cond = -torch.ones(1, 1, 128, 128)
        cond[..., 60:68, :] = 1.0
    else:
        cond = 1
    c = net.encode_cond(cond)
    g = torch.Generator().manual_seed(0)
    tokens = tc.sample(net, c, steps=256, top_k=100, generator=g)
    again = tc.sample(net, c, steps=256, top_k=100, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, again) and tokens.shape == (1, 256)
    image = net.decode_indices(tokens)
    assert image.shape == (1, 3, 128, 128) and torch.isfinite(image).all()
    assert image.std() > 0.05  # a picture, not a flat colour


@pytest.mark.parametrize("below", ["grass", "sea"])
def test_bundled_segmentation_model_paints_the_layout_it_is_given(below):
    """A painted map of sky over grass (or sea) becomes that scene: the segmenter reads sky (or clouds) in the
    top half of the samples and the painted label in the bottom half (guidance 3, the app's default; four
    seeds, mean fractions; measured 0.97 / 0.69 for grass, 0.86 / 0.87 for sea)."""
    net, seg = tc.load_model(CKPT / "segmentation").eval(), tc.load_model(CKPT / "segmenter")
    sky = [tc.labels.label_id("sky-other"), tc.labels.label_id("clouds")]
    labels = np.full((128, 128), sky[0], np.int64)
    labels[64:] = tc.labels.label_id(below)
    c = net.encode_cond(torch.from_numpy(labels)[None]).expand(4, -1)  # (4, 256)
    with torch.no_grad():
        tokens = tc.sample(net, c, 256, top_k=100, generator=torch.Generator().manual_seed(0), guidance=3.0)
        images = ((net.decode_indices(tokens).clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    read = np.stack([seg.segment(im, short_side=128) for im in images])  # (4, 128, 128) raw label ids
    top_sky = np.isin(read[:, :64], sky).mean()
    bottom = (read[:, 64:] == tc.labels.label_id(below)).mean()
    assert top_sky > 0.6 and bottom > 0.5 and np.isin(read[:, 64:], sky).mean() < 0.3, (top_sky, bottom)


def test_bundled_segmenter_reads_held_out_photos():
    """checkpoints/segmenter on the 19 held-out COCO + S-FLCKR photos (centre squares at 256 px): most pixels
    get their map's label (palette labels, everything else "other"), well above the most frequent class."""
    sys.path.insert(0, str(ROOT / "train"))
    from prepare_data import split_of
    seg = tc.load_model(CKPT / "segmenter")
    assert isinstance(seg, tc.Segmenter) and (CKPT / "segmenter" / "model.safetensors").stat().st_size < 15e6
    table = seg.class_of_id()
    conf = torch.zeros(seg.n_classes, seg.n_classes, dtype=torch.int64)
    n = 0
    for data_set in ("coco", "sflckr"):
        for photo in sorted((SHARED / "data" / data_set / "images").glob("*.jpg")):
            if split_of(data_set, photo.stem, 0.1) != "holdout":
                continue
            rgb = tc.condition_maps.centre_square(np.asarray(Image.open(photo).convert("RGB")))
            truth = tc.condition_maps.centre_square(np.asarray(Image.open(
                SHARED / "data" / data_set / "segmentations" / f"{photo.stem}.png")))
            pred = seg.segment(rgb)  # (S, S) ids at the photo's size; 255 = "other" here, not unlabelled
            pred = np.where(pred == 255, seg.n_classes - 1, table[pred])
            conf += tc.confusion_matrix(torch.from_numpy(pred), torch.from_numpy(table[truth]), seg.n_classes)
            n += 1
    scores = tc.segmentation_scores(conf, list(seg.config.labels) + ["other"])
    majority = conf.sum(1).max().item() / conf.sum().item()
    assert n == 19
    assert scores["pixel_accuracy"] > 0.58 and scores["pixel_accuracy"] > majority + 0.08, (scores, majority)
