"""train/README.md's recipe from one flat folder of photos to an unconditional, a segmentation and an edges
model, end to end with tiny models (the steps as written there, sizes shrunk)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import taming_core as tc
from test_train import ROOT, TRANSFORMER, VQGAN, run

PREPARE, PSEUDO, RELEASE = (ROOT / "train" / f"{n}.py" for n in ("prepare_data", "pseudo_labels", "release"))


@pytest.mark.slow
def test_flat_folder_to_three_models(tmp_path):
    rng = np.random.default_rng(5)
    photos = tmp_path / "my_photos"
    photos.mkdir()
    for i in range(8):  # a sky-over-grass layout the segmenter can read, with noise
        im = np.zeros((40, 52, 3), np.uint8)
        im[:20] = (110, 160, 230)
        im[20:] = (60, 140, 50)
        Image.fromarray(np.clip(im + rng.normal(0, 12, im.shape), 0, 255).astype(np.uint8)).save(
            photos / f"p{i}.jpg")
    (tmp_path / "src" / "mine").mkdir(parents=True)
    (tmp_path / "src" / "mine" / "images").symlink_to(photos)
    run(PREPARE, "--src", tmp_path / "src", "--out", tmp_path / "data", "--short-side", 20, "--holdout", 0.2)
    P = tmp_path / "data" / "train" / "mine" / "images"
    assert len(list(P.glob("*.png"))) >= 5
    tiny = ["--preset", "tiny", "--data", P]
    vq, first = tmp_path / "vq", ["--first-stage", tmp_path / "vq" / "model"]
    run(VQGAN, *tiny, "--out", vq, "data.scale_max=1.2")
    run(TRANSFORMER, *tiny, *first, "--out", tmp_path / "uncond")

    maps = tmp_path / "maps"
    run(PSEUDO, "--data", P, "--out", maps)
    assert sorted(m.stem for m in maps.glob("*.png")) == sorted(p.stem for p in P.glob("*.png"))
    seg = tmp_path / "seg"
    run(TRANSFORMER, *tiny, *first, "--out", seg, "--cond", "segmentation", f"data.maps={maps}", "data.n_labels=183",
        "cond_grid=2", "cond_mode=aligned", "cond_drop=0.1")
    assert tc.load_model(seg / "model").config.cond_stage.grid_factor == 2

    run(VQGAN, *tiny, "--kind", "edges", "--out", tmp_path / "edges_vq", "loss.reconstruction=bce",
        "loss.perceptual_weight=0", "loss.disc_factor=0")
    edges = tmp_path / "edges"
    run(TRANSFORMER, *tiny, *first, "--out", edges, "--cond", "edges", "--cond-stage",
        tmp_path / "edges_vq" / "model", "cond_mode=aligned", "cond_drop=0.1")

    run(RELEASE, vq / "model", tmp_path / "rel" / "vq")
    run(RELEASE, seg / "model-best", tmp_path / "rel" / "seg", "--first-stage", tmp_path / "rel" / "vq")
    for name, kind in (("uncond", "none"), ("edges", "edges")):
        assert tc.load_model(tmp_path / name / "model").config.cond_stage.kind == kind
    assert isinstance(tc.load_model(tmp_path / "rel" / "seg"), tc.Net2Net)
