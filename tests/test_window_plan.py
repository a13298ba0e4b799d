"""bench/window_plan.py: its layout score and adherence on synthetic maps, its plan names, and a run on one
held-out map at a small size (the samples come back at the size asked for, 128x128 is the reference)."""
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import window_plan as wp  # noqa: E402


def test_layout_scores_count_labelled_pixels_only():
    target = torch.tensor([[0, 1], [2, -1]])  # -1 = unlabelled: not counted
    layout = wp.Layout(n_classes=3)
    layout.add(torch.tensor([[0, 1], [2, 0]]), target)  # 3 of 3 labelled pixels right
    layout.add(torch.tensor([[0, 2], [1, 1]]), target)  # 1 of 3
    assert layout.per_sample() == pytest.approx([1.0, 1 / 3])
    assert layout.scores()["pixel_accuracy"] == pytest.approx(4 / 6)  # pooled over the samples' pixels
    assert layout.scores([1])["pixel_accuracy"] == pytest.approx(1 / 3)
    assert layout.scores()["miou"] < 1.0 and layout.scores([0])["miou"] == pytest.approx(1.0)
    assert wp.adherence(0.45, 0.5) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="positive"):
        wp.adherence(0.4, 0.0)


def test_maps_become_the_segmenters_classes():
    import numpy as np
    import taming_core as tc
    scorer = wp.Scorer(wp.ROOT / "checkpoints" / "segmenter")
    labels = list(scorer.seg.config.labels)
    ids = np.array([[tc.labels.label_id("sky-other"), tc.labels.label_id("grass")], [255, 0]])  # the data's ids
    classes = scorer.target(ids)
    assert classes.tolist() == [[labels.index("sky-other"), labels.index("grass")],
                                [-1, labels.index("person") if "person" in labels else len(labels)]]


def test_plans_and_sizes_parse():
    assert wp.parse_plan("fast") == wp.Plan("fast") and wp.Plan("fast").name == "fast (default 8x8)"
    assert wp.parse_plan("fast:4") == wp.Plan("fast", (4, 4)) and wp.parse_plan("fast:4").name == "fast 4x4"
    assert wp.parse_plan("exact").name == "exact"
    for bad in ("exact:4", "fast:x", "slow"):
        with pytest.raises(Exception, match="a plan is exact, fast or fast:S"):
            wp.parse_plan(bad)
    assert wp.parse_size("512x256") == (256, 512)


def test_photo_crop_keeps_the_centre_at_the_output_aspect():
    import numpy as np
    rgb = np.zeros((100, 300, 3), np.uint8)
    rgb[:, 100:200] = 255  # the centre third is white
    crop = wp.photo_crop(rgb, (32, 32))  # square: the centre 100x100
    assert crop.shape == (32, 32, 3) and (crop == 255).all()
    assert wp.photo_crop(rgb, (32, 64)).shape == (32, 64, 3)


@pytest.mark.slow
def test_window_plan_bench_runs_on_one_map(tmp_path):
    if not wp.held_out_maps():
        pytest.skip("../shared/data not found")
    out = tmp_path / "plan.json"
    threads = torch.get_num_threads()
    try:
        result = wp.main(["--maps", "1", "--sizes", "136x136", "--plans", "fast", "--json", str(out)])
    finally:
        torch.set_num_threads(threads)  # the script times on one thread
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    own, wide = result["rows"]
    assert (own["size"], wide["size"], wide["plan"]) == ("128x128", "136x136", "fast (default 8x8)")
    assert own["adherence"] == 1.0 and own["samples"] == wide["samples"] == 1
    assert wide["adherence"] == pytest.approx(wide["layout"]["pixel_accuracy"] / own["layout"]["pixel_accuracy"])
    assert 0 <= wide["floor"]["pixel_accuracy"] <= 1 and 0 < wide["ceiling"]["pixel_accuracy"] <= 1
    assert result["host"]["threads"] == 1 and "one torch thread" in result["timing"]
    assert len(result["maps"]) == 1 and result["maps"][0].startswith("coco/")


def test_window_plan_bench_through_the_app_handler(tmp_path):
    """--through-api: the app's handler gives the image at the size asked for, scored as the plans are."""
    pytest.importorskip("gradio")
    if not wp.held_out_maps():
        pytest.skip("../shared/data not found")
    from taming_app.batching import WINDOW_MODE, WINDOW_STRIDE
    threads = torch.get_num_threads()
    try:
        result = wp.main(["--maps", "2", "--sizes", "144x136", "--through-api", "1", "--json",
                          str(tmp_path / "a.json")])
    finally:
        torch.set_num_threads(threads)
    own, wide = result["rows"]
    assert own["image_shapes"] == [[128, 128, 3]] and wide["image_shapes"] == [[136, 144, 3]] and wide["exact_size"]
    assert wide["plan"] == wp.Plan(WINDOW_MODE, WINDOW_STRIDE).name and own["adherence"] == 1.0
    assert wide["samples"] == 1 and 0 < wide["adherence"]


def test_positions_fed_counts_the_window_work():
    assert wp.positions_fed((16, 16), (16, 16), wp.Plan("exact")) == (1, 256)  # one window: plain sampling
    placements, positions = wp.positions_fed((32, 32), (16, 16), wp.Plan("exact"))
    assert placements == 17 * 17  # the window moves with every token except near the borders
    assert wp.positions_fed((32, 32), (16, 16), wp.Plan("fast"))[0] == 9  # half-window bands: 3 x 3
    fast4 = wp.positions_fed((32, 32), (16, 16), wp.Plan("fast", (4, 4)))
    fast8 = wp.positions_fed((32, 32), (16, 16), wp.Plan("fast"))
    assert fast8[1] < fast4[1] < positions and fast8[1] >= 32 * 32  # every token is fed at least once


@pytest.mark.slow
def test_window_plan_bench_times_in_rounds(tmp_path):
    if not wp.held_out_maps():
        pytest.skip("../shared/data not found")
    threads = torch.get_num_threads()
    try:
        result = wp.main(["--maps", "1", "--sizes", "136x136", "--plans", "fast", "--timing", "1",
                          "--json", str(tmp_path / "t.json")])
    finally:
        torch.set_num_threads(threads)
    rows = {(r["size"], r["plan"]): r for r in result["rows"]}
    assert set(rows) == {("128x128", "plain (the model's grid)"), ("136x136", "fast (default 8x8)")}
    assert all(len(r["seconds"]) == 1 and r["median_s"] > 0 for r in rows.values())
    assert rows["136x136", "fast (default 8x8)"]["placements"] == 2 * 2  # 17x17: two bands on each axis


def test_summary_pairs_each_plan_with_the_default_on_the_same_maps():
    def row(size, plan, acc, maps, **extra):
        return {"size": size, "plan": plan, "maps": maps, "per_sample_accuracy": acc, "adherence": 1.0,
                "layout": {"pixel_accuracy": sum(acc) / len(acc)}, "floor": {"pixel_accuracy": 0.3},
                "ceiling": {"pixel_accuracy": 0.6}, "seconds_per_image": 1.0, **extra}
    results = {"rows": [row("128x128", "plain (the model's grid)", [0.5, 0.5, 0.5], [0, 1, 2]),
                        row("256x128", "fast (default 8x8)", [0.6, 0.4, 0.8], [0, 1, 2]),
                        row("256x128", "exact", [0.7, 0.9], [0, 2], on_these_maps={"adherence": 1.6})]}
    table = wp.summary(results, {"rows": [{"size": "256x128", "plan": "exact", "median_s": 9.5}]})
    exact = table.splitlines()[-1]
    # maps 0 and 2: exact 0.7, 0.9 against the default's 0.6, 0.8: +10 points, no spread
    assert "| exact | 2 |" in exact and "| 1.60 |" in exact and "+10.0 ± 0.0 points" in exact and "| 9.5 |" in exact
    assert wp.paired_difference([0.5, 0.7], [0.4, 0.4]) == pytest.approx((0.2, 0.1))
    assert wp.plan_named("fast 4x4") == wp.Plan("fast", (4, 4)) and wp.plan_named("exact") == wp.Plan("exact")


def test_the_apps_window_plan_reaches_the_sampler(monkeypatch):
    """run_batch samples a grid larger than the model's with the plan named in taming_app.batching: the
    constant is what the app runs, not a label (the same tokens as tc.stream with that plan)."""
    pytest.importorskip("gradio")
    import taming_core as tc
    from taming_app import batching
    from test_conditioning import tiny_model, tokens

    model, c = tiny_model("aligned", null=True), tokens(1, 12, 12, seed=4)  # an 8x8 model, a 12x12 grid
    monkeypatch.setattr(batching, "WINDOW_MODE", "fast")
    monkeypatch.setattr(batching, "WINDOW_STRIDE", (2, 2))
    seen, real = [], tc.stream

    def stream(*args, **kw):  # the real sampler, its plan and its final tokens recorded
        seen.append((kw["mode"], kw["stride"]))
        for ev in real(*args, **kw):
            seen.append(ev.tokens)
            yield ev
    monkeypatch.setattr(batching.tc, "stream", stream)
    job = batching.Job("segmentation", model, c, (12, 12), tc.make_picker(1.0, None, None, False,
                                                                          torch.Generator().manual_seed(0)), 3.0)
    batching.run_batch([job])
    assert seen[0] == ("fast", (2, 2))
    expected = list(real(model, c, window=(8, 8), mode="fast", stride=(2, 2), guidance=3.0,
                              generator=torch.Generator().manual_seed(0)))[-1].tokens
    assert torch.equal(seen[-1], expected)
