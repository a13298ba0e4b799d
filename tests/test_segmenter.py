"""The photo -> label map segmenter: model, checkpoint, scores, training script, pseudo maps, evaluation."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import taming_core as tc
from taming_core.config_checks import model_size
from taming_core.labels import COCO_STUFF, label_id

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
pytestmark = pytest.mark.usefixtures("one_thread")


def run(script: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "train" / script), *map(str, args)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A photo-like (H, W, 3) uint8 image and its label map (H, W) uint8: sky above a random horizon, grass
    below, a grey rock; colours decide the labels, with noise; a strip of unlabelled (255) pixels."""
    horizon = int(rng.integers(h // 4, 3 * h // 4))
    labels = np.full((h, w), label_id("sky-other"), np.uint8)
    labels[horizon:] = label_id("grass")
    x0 = int(rng.integers(0, w // 2))
    labels[horizon - 4:horizon + 6, x0:x0 + w // 3] = label_id("rock")
    colours = {label_id("sky-other"): (110, 160, 240), label_id("grass"): (70, 150, 40), label_id("rock"): (120,) * 3}
    rgb = np.zeros((h, w, 3), np.float32)
    for k, c in colours.items():
        rgb[labels == k] = c
    rgb = np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
    labels[:, -2:] = 255
    return rgb, labels


def make_data(folder: Path, n: int, seed: int) -> Path:
    """<folder>/images/*.png with <folder>/segmentations/*.png (the shared layout)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "segmentations").mkdir()
    for i in range(n):
        rgb, labels = scene(rng, 72 + 4 * (i % 3), 80)
        Image.fromarray(rgb).save(folder / "images" / f"{i}.png")
        Image.fromarray(labels).save(folder / "segmentations" / f"{i}.png")
    return folder / "images"


@pytest.fixture(scope="module")
def small() -> tc.Segmenter:
    torch.manual_seed(0)
    return tc.Segmenter(tc.SegmenterConfig(labels=["sky-other", "grass", "rock"], width=16)).eval()


# ---- model ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 64), (50, 77), (8, 8), (1, 40)])
def test_logits_cover_every_pixel_for_any_size(small, size):
    x = torch.rand(2, 3, *size) * 2 - 1
    logits = small(x)
    assert logits.shape == (2, 4, *size)  # 3 labels + other
    ids = small.predict(x)
    assert ids.dtype == torch.uint8 and set(ids.unique().tolist()) <= {156, 123, 149, 255}


def test_class_table_maps_ids_to_classes(small):
    table = small.class_of_id()
    assert table[label_id("sky-other")] == 0 and table[label_id("grass")] == 1 and table[label_id("rock")] == 2
    assert table[255] == -1  # unlabelled: ignored
    assert table[label_id("person")] == 3 and (table >= -1).all() and (table <= 3).all()  # everything else: other
    assert small.class_ids.tolist() == [156, 123, 149, 255]


def test_segment_scales_predicts_and_scales_back(small):
    rgb = (np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)
    ids = small.segment(rgb, short_side=64)
    assert ids.shape == (90, 120) and ids.dtype == np.uint8
    import cv2
    x = torch.from_numpy(cv2.resize(rgb, (85, 64), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)[None]
    expected = small.predict(x.float() / 127.5 - 1)[0].numpy()
    assert np.array_equal(ids, cv2.resize(expected, (120, 90), interpolation=cv2.INTER_NEAREST))
    with pytest.raises(ValueError, match="uint8"):
        small.segment(rgb.astype(np.float32))


def test_backbone_is_the_imagenet_mobilenet():
    seg = tc.Segmenter(tc.SegmenterConfig(width=8))
    net = tc.load_mobilenet_v2()
    seg.backbone.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        ours = seg.eval().features(x)  # inputs in [-1, 1], normalised inside as ImageNet's were
        theirs = net.eval()(((x + 1) / 2 - torch.tensor(tc.mobilenet.IMAGENET_MEAN).view(1, 3, 1, 1))
                            / torch.tensor(tc.mobilenet.IMAGENET_STD).view(1, 3, 1, 1))
    assert [f.shape[1] for f in ours] == [24, 32, 96, 320]
    assert torch.allclose(ours[-1], theirs[-1], atol=1e-5)  # the stride-32 output of both


# ---- checkpoint ----------------------------------------------------------------------------------------------


def test_round_trip_in_our_format_and_size_from_config(tmp_path, small):
    tc.save_model(small, tmp_path / "seg")
    loaded = tc.load_model(tmp_path / "seg")
    assert isinstance(loaded, tc.Segmenter) and loaded.config == small.config
    x = torch.rand(1, 3, 40, 40) * 2 - 1
    assert torch.equal(loaded(x), small(x))
    held = lambda m: sum(t.numel() for t in (*m.parameters(), *m.buffers()))  # noqa: E731
    assert model_size("segmenter", small.config) == held(small)
    big = tc.SegmenterConfig(width=200, labels=COCO_STUFF[:100])
    assert model_size("segmenter", big) == held(tc.Segmenter(big))


@pytest.mark.parametrize("bad, match", [({"labels": ["sky-other", "skyy"]}, "skyy"),
                                        ({"labels": []}, "labels"), ({"labels": ["tree", "tree"]}, "labels"),
                                        ({"width": 0}, "width"), ({"width": 10**6}, "width")])
def test_bad_configs_are_refused_by_name(bad, match):
    with pytest.raises(tc.ConfigError, match=match):
        tc.build_model({"model": "segmenter", **bad})


# ---- scores --------------------------------------------------------------------------------------------------


def test_confusion_and_scores_by_hand():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, -1, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 0]])
    conf = tc.confusion_matrix(pred, target, 3)
    assert conf.tolist() == [[1, 1, 0], [1, 2, 0], [1, 0, 1]]  # the -1 pixel is not counted
    s = tc.segmentation_scores(conf, ["a", "b", "c"])
    assert s["pixel_accuracy"] == pytest.approx(4 / 7)
    iou = [1 / (2 + 3 - 1), 2 / (3 + 3 - 2), 1 / (2 + 1 - 1)]
    assert s["miou"] == pytest.approx(np.mean(iou))
    assert s["per_label"]["b"] == {"iou": round(iou[1], 4), "accuracy": round(2 / 3, 4), "pixels": 3}
    empty = tc.segmentation_scores(tc.confusion_matrix(pred, target, 4), list("abcd"))
    assert "d" not in empty["per_label"]  # a class in neither map does not count towards the mean


# ---- scripts -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("seg")
    train = make_data(root / "train", 6, seed=1)
    held = make_data(root / "held", 3, seed=2)
    out = root / "run"
    run("train_segmenter.py", "--data", train, "--holdout", held, "--out", out, "--steps", 4, "--batch-size", 2,
        "labels=[sky-other,grass,rock]", "width=16", "data.size=64", "eval_size=64", "freeze_steps=2",
        "warmup_steps=1", "eval_every=2", "save_every=2", "log_every=1", "num_workers=0")
    return train, held, out


def test_training_writes_a_loadable_segmenter_scores_and_resumes(seg_run):
    train, held, out = seg_run
    model = tc.load_model(out / "model")
    assert isinstance(model, tc.Segmenter) and model.config.labels == ["sky-other", "grass", "rock"]
    entries = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    scores = [e["holdout"] for e in entries if "holdout" in e]
    assert len(scores) == 2 and all(0 <= s["pixel_accuracy"] <= 1 for s in scores)
    assert set(scores[-1]["per_label"]) <= {"sky-other", "grass", "rock", "other"}
    proc = run("train_segmenter.py", "--out", out, "--resume", "--steps", 6)
    assert "resuming from step 4" in proc.stdout
    assert [e["step"] for e in map(json.loads, (out / "log.jsonl").read_text().splitlines())][-1] == 6


def test_training_refuses_a_folder_without_maps_in_one_line(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "images" / "a.png")
    proc = run("train_segmenter.py", "--data", tmp_path / "images", "--out", tmp_path / "run", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "segmentation maps not found" in proc.stderr.strip().splitlines()[-1]


def test_pseudo_maps_copy_real_maps_and_segment_the_rest(tmp_path, seg_run):
    train, _, out = seg_run
    photos = tmp_path / "photos"
    (photos / "set" / "images").mkdir(parents=True)
    (photos / "set" / "segmentations").mkdir()
    for i in range(2):  # one photo with a real map, one without, in the shared layout
        Image.open(train / f"{i}.png").save(photos / "set" / "images" / f"{i}.png")
    real = np.asarray(Image.open(train.parent / "segmentations" / "0.png"))
    Image.fromarray(real).save(photos / "set" / "segmentations" / "0.png")
    maps = tmp_path / "maps"
    proc = run("pseudo_labels.py", "--data", photos, "--out", maps, "--model", out / "model")
    assert "1 real maps copied, 1 predicted" in proc.stdout
    assert np.array_equal(np.asarray(Image.open(maps / "set" / "images" / "0.png")), real)
    pseudo = Image.open(maps / "set" / "images" / "1.png")
    assert pseudo.mode == "L" and pseudo.size == Image.open(train / "1.png").size
    assert set(np.unique(np.asarray(pseudo)).tolist()) <= {156, 123, 149, 255}
    # the maps are what the training data reads with data.maps=
    data = tc.ImageFolder(tc.DataConfig(root=str(photos / "set" / "images"), size=32, kind="segmentation",
                                        maps=str(maps / "set" / "images"), n_labels=256, label_offset=0))
    assert len(data) == 2 and data[0]["segmentation"].shape == (32, 32)
    again = run("pseudo_labels.py", "--data", photos, "--out", maps, "--model", out / "model")
    assert "2 already there" in again.stdout


def test_evaluate_segmenter_beside_a_colour_classifier(tmp_path, seg_run):
    train, held, out = seg_run
    result = json.loads(run("evaluate.py", "segmenter", "--model", out / "model", "--data", held, "--train", train,
                            "--size", 64).stdout)
    assert result["images"] == 3 and result["classes"] == 4
    # colour decides the label in this data, so the colour classifier is nearly perfect
    assert result["colour_classifier"]["pixel_accuracy"] > 0.95
    for key in ("segmenter", "colour_classifier", "majority_class"):
        assert 0 <= result[key]["pixel_accuracy"] <= 1 and 0 <= result[key]["miou"] <= 1
    assert result["majority_class"]["pixel_accuracy"] < 0.8
