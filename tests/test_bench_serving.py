"""bench/serving.py: its arithmetic (images per minute, p50/p95), its clients against a served app, the busy
core, the host's CPU fields, the app's options it follows, and (slow) a whole --quick run on the bundled
models."""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
pytest.importorskip("gradio")

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))
import serving  # noqa: E402
import serving_clients as sc  # noqa: E402


def test_summary_gives_images_per_minute_and_percentiles():
    load = sc.summary([1.0, 4.0, 2.0, 3.0], wall_s=8.0, clients=2, images=2)
    assert load.images_per_min == pytest.approx(30.0)  # 4 images in 8 s
    assert load.p50_s == pytest.approx(2.5) and load.mean_s == pytest.approx(2.5)
    assert load.p95_s == pytest.approx(3.85)  # rank 0.95 * 3 = 2.85: 3 + 0.85 * (4 - 3)
    one = sc.summary([2.0], wall_s=2.0, clients=1, images=1)
    assert one.p50_s == one.p95_s == 2.0 and one.images_per_min == pytest.approx(30.0)
    with pytest.raises(ValueError, match="3 latencies for 2 x 2 images"):
        sc.summary([1.0, 2.0, 3.0], wall_s=5.0, clients=2, images=2)  # a lost request is not averaged away


def test_clients_each_connect_and_run_together(served, files):
    """2 clients x 1 image: each its own session, both requests counted, the wall time spanning them."""
    sessions = []
    request = sc.segmentation_request(files / "labels.png", 32, 2, 1.0)

    def recorded(client, seed):
        sessions.append(client.session_hash)
        request(client, seed)
    load = sc.run_clients(served, clients=2, images=1, request=recorded, timeout=120)
    assert len(set(sessions)) == 2 and load.clients == 2 and load.images == 1
    assert 0 < load.p50_s <= load.p95_s <= load.wall_s + 0.01  # the app queues one generation at a time
    assert load.images_per_min == pytest.approx(120.0 / load.wall_s)


def test_a_refused_request_fails_the_run_with_its_message(served, files):
    request = sc.segmentation_request(files / "labels.png", 33, 2, 1.0)  # not a multiple of the token size
    with pytest.raises(RuntimeError, match="2 of 2 clients failed; the first: .*multiples of"):
        sc.run_clients(served, clients=2, images=1, request=request, timeout=120)


def test_an_app_that_cannot_start_is_reported_with_its_words(tmp_path):
    with pytest.raises(RuntimeError, match="ended .* before serving: .*invalid choice: 'fp8'"):
        with sc.served_app(["--precision", "fp8"], log=tmp_path / "app.log"):
            pass


def test_the_busy_core_spins_until_the_block_ends():
    with sc.busy_core() as spinner:
        cpu = Path(f"/proc/{spinner.pid}/stat").read_text().split()
        before = int(cpu[13]) + int(cpu[14])  # utime + stime, clock ticks
        time.sleep(0.5)
        cpu = Path(f"/proc/{spinner.pid}/stat").read_text().split()
        assert spinner.poll() is None and int(cpu[13]) + int(cpu[14]) > before
    assert spinner.poll() is not None


def test_host_adds_the_load_to_the_hosts_cpu():
    import taming_core as tc

    machine = sc.host()
    assert {k: machine[k] for k in tc.host_info()} == tc.host_info()  # the CPU model and flags, cores, torch
    assert 0 <= machine["load_1min"] and machine["quiet"] == (machine["load_1min"] < sc.QUIET_LOAD)


def test_the_in_process_layers_follow_the_apps_options():
    opts = serving.app_options(["--max-batch", "8", "--threads", "1", "--precision", "fp32"])  # others ignored
    assert (opts.policy.mode, opts.precision) == (1, "fp32") and opts.policy.threads_for("gpt") == 1
    opts = serving.app_options([])
    assert (opts.policy.mode, opts.precision) == ("auto", "auto")  # the app's defaults
    assert opts.segmentation.endswith("checkpoints/segmentation")
    with pytest.raises(ValueError, match="auto or a whole number"):
        serving.app_options(["--threads", "gpt=1"])


def test_the_label_map_and_the_ratios(tmp_path):
    labels = np.asarray(Image.open(serving.two_label_map(64, tmp_path / "m.png")))
    assert labels.shape == (64, 64) and (labels[:32] == serving.SKY).all() and (labels[32:] == serving.GRASS).all()
    layer = {"size": 128, "e2e_s": 3.0, "sampler_s": 1.5}
    loads = [{"size": 128, "clients": 1, "busy_core": False, "images_per_min": 20.0, "p50_s": 3.0, "p95_s": 3.0},
             {"size": 128, "clients": 4, "busy_core": False, "images_per_min": 50.0, "p50_s": 4.0, "p95_s": 6.0},
             {"size": 128, "clients": 1, "busy_core": True, "images_per_min": 10.0, "p50_s": 4.5, "p95_s": 5.0}]
    assert serving.ratios([layer], loads) == pytest.approx({
        "128 px end to end / sampler": 2.0, "128 px 4 clients / 1 client, images per minute": 2.5,
        "128 px 4 clients / 1 client, p95 latency": 2.0, "128 px busy core / alone, p50 latency": 1.5})


@pytest.mark.slow
def test_a_quick_run_on_the_bundled_models_writes_every_figure(tmp_path):
    """The whole script, --quick at 128 px with 1 and 2 clients: the app started from app.py, every layer
    timed, the results file with the host beside the figures (over a minute on a busy 2-core machine)."""
    if not (serving.ROOT / "checkpoints" / "segmentation").is_dir():
        pytest.skip("the bundled segmentation model is missing")
    out = serving.main(["--quick", "--sizes", "128", "--clients", "1", "2", "--json", str(tmp_path / "s.json"),
                        "--note", "a test", "--app-args", "--precision", "fp32"])
    assert json.loads((tmp_path / "s.json").read_text()) == out
    assert out["note"] == "a test" and out["commit"]
    assert out["app_args"] == ["--precision", "fp32"] and any("--precision fp32" in p for p in out["app_plan"])
    (layer,) = out["layers"]
    assert layer["size"] == 128 and layer["yields"] >= 2
    for key in ("sampler_s", "handler_s", "e2e_s", "read_and_label_checks_s", "condition_encoding_s",
                "png_encoding_s", "upload_s"):
        assert layer[key] > 0, key
    assert layer["handler_overhead_s"] == pytest.approx(layer["handler_s"] - layer["sampler_s"])
    assert [(r["clients"], r["busy_core"]) for r in out["clients"]] == [(1, False), (2, False), (1, True)]
    assert all(r["threads"] == out["threads"] == "--threads auto" for r in out["clients"]) and out["host"]["cpu"]
    assert any(line.startswith("threads:") for line in out["app_plan"])
    assert set(out["ratios"]) == {"128 px end to end / sampler", "128 px busy core / alone, p50 latency"}
