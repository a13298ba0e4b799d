"""The training scripts end to end on tiny generated data: loadable checkpoints, kill-and-resume, torchrun."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import taming_core as tc

ROOT = Path(__file__).resolve().parents[1]
VQGAN = ROOT / "train" / "train_vqgan.py"
TRANSFORMER = ROOT / "train" / "train_transformer.py"
# One thread per process: the scripts' results are then reproducible and CPU contention cannot stall them.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run(script: Path, *args, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script.name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def log(run_dir: Path) -> list[dict]:
    entries = []
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a killed process
            continue
    return entries


def make_images(folder: Path, n: int = 6, seed: int = 0) -> Path:
    """Random images of several modes and sizes in two class sub-folders (a/, b/)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        sub = folder / "ab"[i % 2]
        sub.mkdir(parents=True, exist_ok=True)
        h, w = 18 + i, 22
        rgb = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        if i % 3 == 0:
            Image.fromarray(rgb).save(sub / f"{i}.jpg")
        elif i % 3 == 1:
            Image.fromarray(rgb[..., 0]).save(sub / f"{i}.png")  # greyscale
        else:
            Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(sub / f"{i}.webp")  # RGBA webp
    return folder


def make_corrupt_images(folder: Path, n_good: int = 0) -> Path:
    """n_good readable images, a JPEG cut short (its header still reads) and a file that is no image."""
    rng = np.random.default_rng(2)
    folder.mkdir(parents=True)
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(folder / "whole.jpg")
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[:len(data) * 3 // 4])
    (folder / "whole.jpg").unlink()
    (folder / "garbage.png").write_bytes(b"not an image at all")
    for i in range(n_good):
        Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The line `error: ...` a script ends with on a bad input: exit status 2 and no traceback."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), proc.stderr[-3000:]
    return last


def make_segmentation_data(folder: Path, n: int = 5, n_labels: int = 5) -> Path:
    rng = np.random.default_rng(1)
    (folder / "images").mkdir(parents=True)
    (folder / "segmentations").mkdir()
    for i in range(n):
        Image.fromarray((rng.random((20, 22, 3)) * 255).astype(np.uint8)).save(folder / "images" / f"{i}.jpg")
        labels = rng.integers(0, n_labels, (20, 22)).astype(np.uint8)
        Image.fromarray(labels).save(folder / "segmentations" / f"{i}.png")
    return folder / "images"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("data") / "images")


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory, images) -> Path:
    """An uninterrupted tiny VQGAN run of 10 steps, a checkpoint every 2; unused codes restart from step 4 on
    (random draws: the resume test then checks that the RNG states are restored too)."""
    out = tmp_path_factory.mktemp("vq")
    run(VQGAN, "--preset", "tiny", "--data", images, "--out", out, "--steps", 10, "save_every=2",
        "model.dead_code_threshold=0.97")
    return out


def test_vqgan_writes_loadable_weights_and_logs(vq_run):
    model = tc.load_model(vq_run / "model")
    assert isinstance(model, tc.VQGAN) and model.config.ddconfig.resolution == 16
    steps = [int(p.stem.split("-")[1]) for p in tc.list_checkpoints(vq_run)]
    assert steps == [6, 8, 10]  # pruned to keep_last = 3
    entries = log(vq_run)
    assert [e["step"] for e in entries] == list(range(1, 11))
    assert all(0 < e["codes_used"] <= 1 and e["perplexity"] >= 1 for e in entries)
    assert entries[0]["g"] == 0 and entries[-1]["d"] > 0  # the discriminator starts at step 2
    assert (vq_run / "images" / "step-00000010.png").is_file()


def test_vqgan_kill_and_resume_matches_uninterrupted(tmp_path, images, vq_run):
    out = tmp_path / "killed"
    cmd = [sys.executable, str(VQGAN), "--preset", "tiny", "--data", str(images), "--out", str(out),
           "--steps", "10", "save_every=2", "model.dead_code_threshold=0.97"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while tc.latest_checkpoint(out) is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = tc.load_checkpoint(tc.latest_checkpoint(out))["step"]
    if saved >= 10:
        pytest.skip("the run finished before it could be killed")
    last = tc.latest_checkpoint(out)
    proc = run(VQGAN, "--preset", "tiny", "--data", images, "--out", out, "--steps", 10, "--resume")
    assert f"resuming from step {saved}, {last}" in proc.stdout
    resumed = {e["step"]: e for e in log(out)[::-1]}  # the resumed run's entries win
    reference = {e["step"]: e for e in log(vq_run)}
    for step in range(saved + 1, 11):
        for key in ("loss", "rec", "perc", "d"):
            assert resumed[step][key] == pytest.approx(reference[step][key], rel=1e-5, abs=1e-7), (step, key)


def test_non_finite_loss_stops_with_a_message_and_keeps_the_checkpoint(tmp_path, images, vq_run):
    last = tc.latest_checkpoint(vq_run)
    proc = run(VQGAN, "--preset", "tiny", "--data", images, "--out", tmp_path, "--steps", 12, "--resume", last,
               "loss.codebook_weight=nan", check=False)
    assert proc.returncode != 0 and "non-finite loss at step 10" in proc.stderr
    assert tc.list_checkpoints(tmp_path) == [] and tc.load_checkpoint(last)["step"] == 10


def test_vqgan_skips_corrupt_files_and_counts_only_readable_images(tmp_path):
    data = make_corrupt_images(tmp_path / "images", n_good=3)
    proc = run(VQGAN, "--preset", "tiny", "--data", data, "--out", tmp_path / "out", "--steps", 4,
               "save_every=4", "image_every=4")
    assert "skipping unreadable file" in proc.stderr
    assert any(line.startswith("3 images (2 unreadable skipped), ") for line in proc.stdout.splitlines())
    assert tc.load_model(tmp_path / "out" / "model") is not None


def bad_input(case: str, tmp_path: Path, images: Path, vq_run: Path) -> tuple[Path, list, str]:
    """(script, arguments, start of the expected message) of one bad input."""
    vq = ["--preset", "tiny", "--data", images, "--out", tmp_path / "out"]
    gpt = [*vq, "--first-stage", vq_run / "model"]
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        return VQGAN, [*vq, "--data", tmp_path / "empty"], "error: no images (.jpg .jpeg .png .webp) found under"
    if case == "all files corrupt":
        return VQGAN, [*vq, "--data", make_corrupt_images(tmp_path / "bad")], "error: none of the 2 image files"
    if case == "all files corrupt, transformer":  # the JPEG header reads: found while encoding, in a worker
        return (TRANSFORMER, [*gpt, "--data", make_corrupt_images(tmp_path / "bad"), "num_workers=1"],
                "error: none of the 1 images under")
    if case == "resume without checkpoint":
        (tmp_path / "out").mkdir()
        return VQGAN, [*vq, "--resume"], "error: no checkpoint to resume from in"
    if case == "resume without checkpoint, transformer":
        return TRANSFORMER, [*gpt, "--resume"], "error: nothing to resume from:"
    if case == "truncated checkpoint":
        last = tc.latest_checkpoint(vq_run)
        (tmp_path / "cut.pt").write_bytes(last.read_bytes()[:5000])
        return VQGAN, [*vq, "--resume", tmp_path / "cut.pt"], "error: cannot read checkpoint"
    if case == "transformer checkpoint given to the vqgan":
        torch.save({"step": 1, "config": {}, "transformer": {}, "opt": {}, "rng": []}, tmp_path / "gpt.pt")
        return VQGAN, [*vq, "--resume", tmp_path / "gpt.pt"], "error: " + f"{tmp_path / 'gpt.pt'} is not a checkpoint"
    if case == "yaml with a python tag":
        (tmp_path / "run.yaml").write_text("steps: !!python/object/apply:os.system ['true']\n")
        return VQGAN, [*vq, "--config", tmp_path / "run.yaml"], f"error: {tmp_path / 'run.yaml'} is not valid yaml"
    if case == "override of the wrong type":
        return VQGAN, [*vq, "model.n_embed=many"], "error: key=value overrides (field model.n_embed)"
    if case == "hostile lpips weights":
        class Hostile:
            def __reduce__(self):
                return os.system, (f"touch {tmp_path / 'ran'}",)
        (tmp_path / "vgg.pth").write_bytes(pickle.dumps({"state_dict": Hostile()}))
        return VQGAN, [*vq, f"loss.lpips_weights={tmp_path / 'vgg.pth'}"], "error: "
    if case == "missing first stage":
        return TRANSFORMER, [*vq, "--first-stage", tmp_path / "nowhere"], "error: checkpoint not found:"
    raise KeyError(case)


@pytest.mark.parametrize("case", ["empty folder", "all files corrupt", "all files corrupt, transformer",
                                  "resume without checkpoint", "resume without checkpoint, transformer",
                                  "truncated checkpoint", "transformer checkpoint given to the vqgan",
                                  "yaml with a python tag", "override of the wrong type", "hostile lpips weights",
                                  "missing first stage"])
def test_bad_inputs_end_with_one_line(tmp_path, images, vq_run, case):
    script, args, message = bad_input(case, tmp_path, images, vq_run)
    assert one_line_error(run(script, *args, check=False)).startswith(message)
    assert not (tmp_path / "ran").exists() and tc.list_checkpoints(tmp_path / "out") == []


@pytest.mark.parametrize("cond", ["none", "class"])
def test_transformer_writes_loadable_net2net(tmp_path, images, vq_run, cond):
    out = tmp_path / cond
    run(TRANSFORMER, "--preset", "tiny", "--data", images, "--first-stage", vq_run / "model", "--cond", cond,
        "--out", out)
    net = tc.load_model(out / "model")
    assert isinstance(net, tc.Net2Net) and net.config.cond_stage.kind == cond
    entries = log(out)
    assert "val_bits_per_token" in entries[-1] and entries[-1]["val_bits_per_token"] > 0
    assert (out / "codes.pt").is_file() and (out / "images" / "step-00000006.png").is_file()


@pytest.mark.slow
def test_transformer_time_budget_stops_saves_and_resumes(tmp_path, images, vq_run):
    out = tmp_path / "budget"
    proc = run(TRANSFORMER, "--preset", "tiny", "--data", images, "--first-stage", vq_run / "model", "--out", out,
               "--steps", 50, "max_minutes=0.0001")
    assert "max_minutes=0.0001 reached (--resume continues)" in proc.stdout
    stopped = tc.list_checkpoints(out)
    assert stopped and int(stopped[-1].stem.split("-")[1]) < 50 and (out / "model").is_dir()
    proc = run(TRANSFORMER, "--out", out, "max_minutes=0", "--resume")
    assert "resuming from step" in proc.stdout and int(tc.list_checkpoints(out)[-1].stem.split("-")[1]) == 50


@pytest.mark.slow
def test_transformer_on_segmentation_condition_and_resume(tmp_path, vq_run):
    data = make_segmentation_data(tmp_path / "seg")
    seg = tmp_path / "seg_vq"
    run(VQGAN, "--preset", "tiny", "--data", data, "--kind", "segmentation", "data.n_labels=5", "--out", seg)
    stage = tc.load_model(seg / "model")
    assert stage.config.image_key == "segmentation" and stage.config.ddconfig.in_channels == 5
    full, part = tmp_path / "full", tmp_path / "part"
    common = ["--preset", "tiny", "--data", data, "--first-stage", vq_run / "model", "--cond", "segmentation",
              "--cond-stage", seg / "model"]
    run(TRANSFORMER, *common, "--out", full)
    net = tc.load_model(full / "model")
    assert net.config.cond_stage.kind == "segmentation" and net.config.transformer.block_size == 128
    # resume the full run's step-3 checkpoint in another folder: steps 4..6 must repeat exactly
    run(TRANSFORMER, *common, "--out", part, "--resume", full / "checkpoints" / "step-00000003.pt")
    a, b = log(full)[3:], log(part)
    assert [e["step"] for e in b] == [e["step"] for e in a] == [4, 5, 6]
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-6)


def test_transformer_aligned_condition_with_condition_dropout(tmp_path, vq_run):
    """cond_mode=aligned + cond_drop: a loadable model with a condition table, a null id, and guidance."""
    data = make_segmentation_data(tmp_path / "seg")
    seg = tmp_path / "seg_vq"
    run(VQGAN, "--preset", "tiny", "--data", data, "--kind", "segmentation", "data.n_labels=5", "--out", seg,
        "--steps", 2)
    out = tmp_path / "aligned"
    run(TRANSFORMER, "--preset", "tiny", "--data", data, "--first-stage", vq_run / "model", "--cond",
        "segmentation", "--cond-stage", seg / "model", "--out", out, "cond_mode=aligned", "cond_drop=0.5")
    net = tc.load_model(out / "model").eval()
    g, n_cond = net.config.transformer, net.cond_stage_model.n_codes
    assert net.config.cond_mode == "aligned" and net.config.null_token == n_cond
    assert g.cond_vocab_size == n_cond + 1 and g.block_size == 64 and g.vocab_size == net.first_stage_model.n_codes
    assert log(out)[-1]["val_bits_per_token"] > 0 and (out / "images" / "step-00000006.png").is_file()
    c = net.encode_cond(torch.randint(0, 5, (1, 16, 16)))  # (1, L)
    assert tc.sample(net, c, 64, greedy=True, guidance=2.0).shape == (1, 64)
    proc = run(TRANSFORMER, "--preset", "tiny", "--data", data, "--first-stage", vq_run / "model", "--out",
               tmp_path / "bad", "cond_mode=aligned", check=False)
    assert proc.returncode != 0 and "spatial condition" in proc.stderr


@pytest.mark.slow
def test_transformer_random_crops_codes_alone_best_weights_and_release_from_a_pack(tmp_path, vq_run):
    """crops=N encodes N random crops per image besides the centre crop and its mirror; a run with cache=FILE
    and no --data trains from those codes alone; model-best holds the lowest validation loss; release.py puts
    one run's GPT from a pack of several into a Net2Net."""
    from safetensors.torch import save_file
    data = make_segmentation_data(tmp_path / "seg", n=8)
    seg = tmp_path / "seg_vq"
    run(VQGAN, "--preset", "tiny", "--data", data, "--kind", "segmentation", "data.n_labels=5", "--out", seg,
        "--steps", 2)
    stages = ["--first-stage", vq_run / "model", "--cond", "segmentation", "--cond-stage", seg / "model",
              "cond_mode=aligned"]
    enc = tmp_path / "enc"
    proc = run(TRANSFORMER, "--preset", "tiny", "--data", data, *stages, "--out", enc, "--steps", 0, "crops=3",
               "data.scale_max=1.3")
    assert "x 5 variant(s)" in proc.stdout
    codes = tc.load_checkpoint(enc / "codes.pt")
    assert codes["z"].shape[:2] == codes["c"].shape[:2] == (8, 5) and codes["z"].dtype == torch.int16
    assert any(not torch.equal(codes["c"][:, 0], codes["c"][:, v]) for v in (2, 3, 4))  # crops are not the centre

    out = tmp_path / "from_codes"
    proc = run(TRANSFORMER, "--preset", "tiny", *stages, "--out", out, f"cache={enc / 'codes.pt'}", "eval_every=1",
               "--steps", 4)
    assert f"training from the codes in {enc / 'codes.pt'} alone (made from {data})" in proc.stdout
    vals = {e["step"]: e["val_bits_per_token"] for e in log(out) if "val_bits_per_token" in e}
    best = json.loads((out / "model-best" / "best.json").read_text())
    assert len(vals) == 4 and best == {"step": min(vals, key=vals.get), "val_bits_per_token": min(vals.values())}
    conv = tmp_path / "conv"  # condition convolutions added to a trained aligned model start as that model
    proc = run(TRANSFORMER, "--preset", "tiny", *stages, "--out", conv, f"cache={enc / 'codes.pt'}", "--steps", 1,
               "lr=0", "eval_every=100", "transformer.cond_layers=2", f"init_from={out / 'model'}")
    assert "condition convolutions (cond_layers) start at zero" in proc.stdout
    donor, grown = tc.load_model(out / "model").eval(), tc.load_model(conv / "model").eval()
    assert grown.config.transformer.cond_layers == 2
    z, c = codes["z"][:2, 0].long(), codes["c"][:2, 0].long()
    with torch.no_grad():
        assert torch.equal(grown(z, c), donor(z, c))
    frozen = tmp_path / "frozen"  # train_only=condition: the image prior stays, the condition pathway learns
    run(TRANSFORMER, "--preset", "tiny", *stages, "--out", frozen, f"cache={enc / 'codes.pt'}", "--steps", 2,
        "lr=1e-2", "warmup_steps=0", "eval_every=100", "transformer.cond_layers=2", "train_only=condition",
        f"init_from={conv / 'model'}")
    before, after = grown.transformer.state_dict(), tc.load_model(frozen / "model").transformer.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(("cond_emb.", "cond_conv.")) for k in moved), moved
    assert any(k.startswith("cond_conv.") for k in moved)
    refused = run(TRANSFORMER, "--preset", "tiny", *stages, "--out", tmp_path / "nodonor", "--steps", 1,
                  f"cache={enc / 'codes.pt'}", "train_only=condition", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "train_only=condition needs cond_mode=aligned and init_from=" in refused.stderr
    missing = run(TRANSFORMER, "--preset", "tiny", *stages, "--out", tmp_path / "none", check=False)
    assert one_line_error(missing).startswith("error: pass the training images (--data) or a codes file")

    gpt = tc.load_model(out / "model-best").transformer.state_dict()
    other = {k: torch.zeros_like(v) for k, v in gpt.items()}
    save_file({**{f"best/{k}": v.half().contiguous() for k, v in gpt.items()},
               **{f"zero/{k}": v.half().contiguous() for k, v in other.items()}},
              str(tmp_path / "pack.safetensors"))
    release = ROOT / "train" / "release.py"
    run(release, out / "model", tmp_path / "rel", "--transformer", tmp_path / "pack.safetensors", "--run", "best",
        "--dtype", "float32")
    got = tc.load_model(tmp_path / "rel").transformer.state_dict()
    assert all(torch.equal(got[k], gpt[k].half().float()) for k in gpt)
    refused = run(release, out / "model", tmp_path / "rel2", "--transformer", tmp_path / "pack.safetensors",
                  "--run", "nosuchrun", check=False)
    assert refused.returncode != 0 and "does not fit the source's GPT" in refused.stderr
    assert not (tmp_path / "rel2").exists()


def test_transformer_encodes_a_truncated_cache_again_and_says_it_resumed(tmp_path, images, vq_run):
    args = ["--preset", "tiny", "--data", images, "--first-stage", vq_run / "model", "--out", tmp_path,
            "eval_every=100", "sample_every=100"]
    run(TRANSFORMER, *args, "--steps", 1)
    cache = tmp_path / "codes.pt"
    whole = tc.load_checkpoint(cache)
    cache.write_bytes(cache.read_bytes()[:1000])
    proc = run(TRANSFORMER, *args, "--steps", 2, "--resume")
    assert f"codes cache unusable, encoding again: cannot read checkpoint {cache}" in proc.stdout
    assert f"resuming from step 1, {tmp_path / 'checkpoints' / 'step-00000001.pt'}" in proc.stdout
    assert "6 images (2 held out)" in proc.stdout
    assert torch.equal(tc.load_checkpoint(cache)["z"], whole["z"])
    assert [e["step"] for e in log(tmp_path)] == [1, 2]


def torchrun(*args, timeout: int = 300) -> tuple[int, str, str]:
    """2 processes on the CPU (gloo); on a hang the launcher and its workers are killed together."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *map(str, args)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun hung for {timeout} s:\n{err[-3000:]}")
    return proc.returncode, out, err


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path, images, vq_run):
    out = tmp_path / "ddp_vq"
    code, stdout, stderr = torchrun(VQGAN, "--preset", "tiny", "--data", images, "--out", out,
                                    "model.dead_code_threshold=0.97")  # restarts broadcast from rank 0
    assert code == 0, stderr[-3000:]
    assert "2 process(es)" in stdout
    assert isinstance(tc.load_model(out / "model"), tc.VQGAN)
    out = tmp_path / "ddp_gpt"
    code, stdout, stderr = torchrun(TRANSFORMER, "--preset", "tiny", "--data", images, "--first-stage",
                                    vq_run / "model", "--cond", "class", "--out", out)
    assert code == 0, stderr[-3000:]
    assert isinstance(tc.load_model(out / "model"), tc.Net2Net)
    assert log(out)[-1]["val_bits_per_token"] > 0


@pytest.mark.slow
def test_evaluate_cli_reconstruction_and_fid(tmp_path, images, vq_run):
    from taming_core.evaluation import inception_path
    try:
        inception_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    out = tmp_path / "rec.json"
    run(ROOT / "train" / "evaluate.py", "reconstruction", "--model", vq_run / "model", "--data", images, "--json", out)
    rec = json.loads(out.read_text())
    assert rec["images"] == 6 and rec["size"] == 16 and 0 < rec["codebook_fraction_used"] <= 1
    assert rec["psnr"] > 0 and -1 <= rec["ssim"] <= 1 and rec["perceptual"] > 0
    assert rec["sharpness_ratio"] > 0 and rec["kid"] == rec["kid"] and rec["fid"] > 0  # KID/FID against the crops
    out = tmp_path / "fid.json"
    run(ROOT / "train" / "evaluate.py", "fid", "--real", images / "a", "--fake", images / "b", "--kid-subset-size", 3,
        "--json", out)
    fid = json.loads(out.read_text())
    assert fid["real_images"] == 3 and fid["fake_images"] == 3 and fid["fid"] > 0


def test_prepare_data_splits_by_name_scales_and_keeps_maps_exact(tmp_path):
    rng = np.random.default_rng(3)
    src = tmp_path / "src"
    for name in ("alpha", "beta"):
        for d in ("images", "segmentations", "depth16", "boundaries"):
            (src / name / d).mkdir(parents=True)
        for i in range(10):
            Image.fromarray((rng.random((60, 90, 3)) * 255).astype(np.uint8)).save(src / name / "images" / f"{i}.jpg")
            labels = np.full((60, 90), 255, np.uint8)
            labels[:, :45] = 7
            Image.fromarray(labels).save(src / name / "segmentations" / f"{i}.png")
            Image.fromarray(np.tile(np.linspace(0, 65535, 90).astype(np.uint16), (60, 1))).save(
                src / name / "depth16" / f"{i}.png")
            outline = np.zeros((60, 90), np.uint8)
            outline[30, 10:80] = 255  # a white line on black (BSDS boundary style)
            Image.fromarray(outline).save(src / name / "boundaries" / f"{i}.png")
    out = tmp_path / "out"
    run(ROOT / "train" / "prepare_data.py", "--src", src, "--out", out, "--short-side", 20, "--holdout", 0.3)
    files = sorted(out.glob("*/*/images/*.png"))
    assert len(files) == 20 and {f.parts[-4] for f in files} == {"train", "holdout"}
    split = {(f.parts[-3], f.stem): f.parts[-4] for f in files}
    with Image.open(files[0]) as im:
        assert im.size == (30, 20)  # short side 20, aspect kept
    for f in files:
        folder = f.parent.parent
        assert set(np.unique(np.asarray(Image.open(folder / "segmentations" / f.name))).tolist()) == {7, 255}
        depth = Image.open(folder / "depth16" / f.name)
        assert depth.mode.startswith("I") and np.asarray(depth).max() > 60000  # still 16-bit
        line = np.asarray(Image.open(folder / "boundaries" / f.name)) > 0
        assert line.any() and line.sum(0).max() <= 2  # a thin line survives the downscaling
    # A rerun with one more image keeps every earlier image on its side.
    Image.fromarray((rng.random((60, 90, 3)) * 255).astype(np.uint8)).save(src / "alpha" / "images" / "new.jpg")
    run(ROOT / "train" / "prepare_data.py", "--src", src, "--out", out, "--short-side", 20, "--holdout", 0.3)
    again = {(f.parts[-3], f.stem): f.parts[-4] for f in out.glob("*/*/images/*.png")}
    assert len(again) == 21 and all(again[k] == v for k, v in split.items())


def test_release_halves_weights_and_sets_resolution_only_without_attention(tmp_path, vq_run):
    out = tmp_path / "rel"
    run(ROOT / "train" / "release.py", vq_run / "model", out)
    src, rel = tc.load_model(vq_run / "model"), tc.load_model(out)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():  # fp16 weights, fp32 compute: the same decoder output for the same codes ...
        idx = src.encode(x).indices  # (B, h, w)
        assert (src.decode_indices(idx) - rel.decode_indices(idx)).abs().max() < 0.05
        # ... and nearly the same codes (a code near the boundary of two may flip with rounded weights)
        assert (rel.encode(x).indices == idx).float().mean() > 0.9
    refused = run(ROOT / "train" / "release.py", vq_run / "model", tmp_path / "r2", "--resolution", 32, check=False)
    assert refused.returncode != 0 and "attention" in refused.stderr
    from conftest import tiny_vqgan_config
    cfg = tiny_vqgan_config()
    cfg["ddconfig"]["attn_resolutions"] = []
    plain = tc.build_model(cfg)
    tc.save_model(plain, tmp_path / "plain")
    run(ROOT / "train" / "release.py", tmp_path / "plain", tmp_path / "r3", "--resolution", 32, "--dtype", "float32")
    wide = tc.load_model(tmp_path / "r3")
    assert wide.config.ddconfig.resolution == 32
    y = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(wide(y)[0], plain.eval()(y)[0])


@pytest.mark.slow
def test_evaluate_cli_transformer_on_edges(tmp_path, images, vq_run):
    stage = tmp_path / "edges_vq"
    run(VQGAN, "--preset", "tiny", "--data", images, "--kind", "edges", "--out", stage)
    gpt = tmp_path / "gpt"
    run(TRANSFORMER, "--preset", "tiny", "--data", images, "--first-stage", vq_run / "model", "--cond", "edges",
        "--cond-stage", stage / "model", "--out", gpt)
    ev = tmp_path / "ev"
    run(ROOT / "train" / "evaluate.py", "transformer", "--model", gpt / "model", "--data", images, "--out", ev,
        "--samples", 5, "--batch-size", 2, "--no-fid")
    res = json.loads((ev / "result.json").read_text())
    assert res["images"] == 6 and res["samples"] == 5 and res["condition"] == "edges"
    assert res["bits_per_token"] > 0 and res["bits_per_token_shuffled"] > 0
    assert 0 <= res["edge_fscore"] <= 1 and 0 <= res["edge_fscore_shuffled"] <= 1
    assert len(list((ev / "samples").glob("*.png"))) == 5
    with Image.open(ev / "sheet.png") as sheet:  # 4 rows (condition, photo, 2 samples) of 5 columns of 16 px
        assert sheet.size == (5 * 18 + 2, 4 * 18 + 2)


@pytest.mark.slow
def test_transformer_init_from_copies_a_trained_gpt_and_refuses_other_shapes(tmp_path, images, vq_run):
    donor = tmp_path / "donor"
    run(TRANSFORMER, "--preset", "tiny", "--data", images, "--first-stage", vq_run / "model", "--out", donor)
    out = tmp_path / "started"
    run(TRANSFORMER, "--preset", "tiny", "--data", images, "--first-stage", vq_run / "model", "--out", out,
        "--steps", 1, "lr=0", "eval_every=100", "sample_every=100", f"init_from={donor / 'model'}")
    a, b = tc.load_model(donor / "model"), tc.load_model(out / "model")
    for k, v in a.transformer.state_dict().items():
        assert torch.equal(v, b.transformer.state_dict()[k]), k  # lr 0: still the donor's weights
    bad = run(TRANSFORMER, "--preset", "tiny", "--data", images, "--first-stage", vq_run / "model",
              "--out", tmp_path / "bad", "transformer.n_embd=64", f"init_from={donor / 'model'}", check=False)
    assert bad.returncode != 0 and "GPT shape" in bad.stderr


def test_vqgan_cosine_schedule_time_budget_and_weights_before_the_gan(tmp_path, images):
    out = tmp_path / "budget"
    # a budget of 0.1 s: the run stops after a step or a few, saves, and says how to continue
    proc = run(VQGAN, "--preset", "tiny", "--data", images, "--out", out, "--steps", 8, "lr_schedule=cosine",
               "warmup_steps=2", "min_lr_ratio=0.1", "precision=fp32", "max_minutes=0.0017", "--disc-start", 5)
    assert "max_minutes=0.0017 reached" in proc.stdout and "(fp32)" in proc.stdout
    stopped = tc.load_checkpoint(tc.latest_checkpoint(out))["step"]
    assert 1 <= stopped < 8
    # (the preset comes after the saved config: --disc-start is given again)
    run(VQGAN, "--preset", "tiny", "--data", images, "--out", out, "--steps", 8, "max_minutes=0", "--disc-start", 5,
        "--resume")
    entries = [e for e in log(out) if e["step"] > stopped]
    assert entries[-1]["step"] == 8 and all(e["sec_per_step"] > 0 for e in entries)
    lrs = {e["step"]: e["lr"] for e in log(out)}  # the rate of the last step of each logged interval
    peak = 1e-4 * 2  # base_lr * batch_size of the tiny preset
    assert lrs[1] == pytest.approx(peak / 2)  # warmup: step index 0 of 2
    after = [lrs[s] for s in range(3, 9)]
    assert after == sorted(after, reverse=True) and after[-1] == pytest.approx(
        peak * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * 5 / 6))))
    # the weights of the step before the GAN terms switch on are kept beside the final ones
    before = tc.load_model(out / "model-before-gan")
    assert isinstance(before, tc.VQGAN)
    assert not all(torch.equal(a, b) for a, b in zip(before.state_dict().values(),
                                                    tc.load_model(out / "model").state_dict().values()))


def test_a_detailed_label_grid_starts_from_a_plain_one_with_each_labels_row():
    """init_from a plain label-grid model into a detailed one (cond_grid_detail): id label * 16 + mask starts
    as the donor's row of that label, so the new model predicts as the donor did at the start."""
    sys.path.insert(0, str(ROOT / "train"))
    from train_transformer import _detailed_table
    from conftest import tiny_net2net_config

    def grid_model(detail: bool) -> tc.Net2Net:
        cfg = tiny_net2net_config(block_size=64)
        cfg["cond_stage"] = {"kind": "segmentation", "n_labels": 5, "grid_factor": 2, "grid_detail": detail}
        n = 5 * (16 if detail else 1)
        cfg.update(cond_mode="aligned", null_token=n)
        cfg["transformer"]["cond_vocab_size"] = n + 1
        return tc.build_model(cfg).eval()

    torch.manual_seed(0)
    donor, net = grid_model(False), grid_model(True)
    table = _detailed_table(donor, net)
    assert table.shape == (81, 32)
    net.transformer.load_state_dict({**donor.transformer.state_dict(), "cond_emb.weight": table})
    seg = torch.randint(0, 5, (2, 16, 16), generator=torch.Generator().manual_seed(1))
    c_plain, c_detail = donor.encode_cond(seg), net.encode_cond(seg)
    assert torch.equal(c_detail // 16, c_plain) and (c_detail % 16 != 15).any()
    z = torch.randint(0, 32, (2, 64), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(net(z, c_detail), donor(z, c_plain))
        null = torch.full_like(c_plain, 5)
        assert torch.equal(net(z, torch.full_like(c_plain, 80)), donor(z, null))  # the null row moved last
    assert _detailed_table(net, donor) is None and _detailed_table(donor, donor) is None  # only plain -> detail

