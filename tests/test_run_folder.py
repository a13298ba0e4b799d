"""A run folder is never lost: no clobbering, one writer at a time, Ctrl-C saves, resume errors in one line."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import taming_core as tc
from test_train import ENV, ROOT, TRANSFORMER, VQGAN, images, log, one_line_error, run, vq_run  # noqa: F401

sys.path.insert(0, str(ROOT / "train"))
import train_vqgan  # noqa: E402


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its size, mtime and content digest."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns,
                                         hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_rerun_without_resume_is_refused_and_changes_nothing(tmp_path, images, vq_run):
    before = snapshot(vq_run)
    proc = run(VQGAN, "--preset", "tiny", "--data", images, "--out", vq_run, "--steps", 12, check=False)
    line = one_line_error(proc)
    assert "already holds a run" in line and "--resume" in line and "--force" in line
    assert snapshot(vq_run) == before and not (vq_run / ".lock").exists()
    proc = run(TRANSFORMER, "--preset", "tiny", "--data", images, "--first-stage", vq_run / "model", "--out", vq_run,
               check=False)
    assert "--resume" in one_line_error(proc) and snapshot(vq_run) == before


@pytest.mark.slow
def test_force_starts_over_and_a_failed_start_leaves_nothing(tmp_path, images):
    out = tmp_path / "run"
    run(VQGAN, "--preset", "tiny", "--data", images, "--out", out, "--steps", 3)
    run(VQGAN, "--preset", "tiny", "--data", images, "--out", out, "--steps", 2, "--force")
    assert [e["step"] for e in log(out)] == [1, 2] and tc.load_checkpoint(tc.latest_checkpoint(out))["step"] == 2
    assert [p.name for p in tc.list_checkpoints(out)] == ["step-00000002.pt"]
    # a bad argument is found before anything is written; a start that fails later removes what it made
    fresh = tmp_path / "fresh"
    proc = run(VQGAN, "--preset", "cpu", "--data", images, "--out", fresh, "--size", 100, check=False)
    assert one_line_error(proc) == "error: --size 100 is not a multiple of the model's downsampling factor 8: use " \
                                   "96 or 104"
    (tmp_path / "empty").mkdir()
    proc = run(VQGAN, "--preset", "tiny", "--data", tmp_path / "empty", "--out", fresh, check=False)
    assert one_line_error(proc).startswith("error: no images") and not fresh.exists()


def test_resume_takes_no_override_as_its_path_and_paths_are_stored_absolute(tmp_path, images):
    out = tmp_path / "run"
    rel = os.path.relpath(images, ROOT)  # the run starts in ROOT with a relative data folder ...
    run(VQGAN, "--preset", "tiny", "--data", rel, "--out", out, "--steps", 2)
    saved = tc.load_checkpoint(tc.latest_checkpoint(out))["config"]
    assert saved["data"]["root"] == str(images) and saved["out"] == str(out)
    assert f"root: {images}" in (out / "config.yaml").read_text()
    # ... and is resumed from another directory, with an override right after --resume
    proc = subprocess.run([sys.executable, str(VQGAN), "--resume", "save_every=1", "--out", str(out), "--steps", "4"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming from step 2" in proc.stdout
    assert [int(p.stem.split("-")[1]) for p in tc.list_checkpoints(out)] == [2, 3, 4]  # save_every=1 applied


def test_a_second_writer_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken_over(tmp_path, images):
    out = tmp_path / "run"
    lock = tc.RunLock(out)  # this test process holds the folder
    proc = run(VQGAN, "--preset", "tiny", "--data", images, "--out", out, "--steps", 2, check=False)
    line = one_line_error(proc)
    assert f"pid {os.getpid()} on host" in line and "is being written by another training run" in line
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
    lock.release()
    assert not (out / ".lock").exists()
    (out / ".lock").write_text('{"pid": 999999999, "host": "gone", "since": "then"}')  # killed: no flock held
    run(VQGAN, "--preset", "tiny", "--data", images, "--out", out, "--steps", 2)
    assert not (out / ".lock").exists() and tc.load_checkpoint(tc.latest_checkpoint(out))["step"] == 2


@pytest.mark.parametrize("script,sig", [(VQGAN, signal.SIGINT), (TRANSFORMER, signal.SIGTERM)])
def test_a_signal_saves_the_current_step_and_resume_continues_from_it(tmp_path, images, vq_run, script, sig):
    out = tmp_path / "run"
    rare = ["save_every=100000"] + (["--first-stage", str(vq_run / "model"), "sample_every=100000", "eval_every="
                                     "100000"] if script == TRANSFORMER else ["image_every=100000"])
    cmd = [sys.executable, str(script), "--preset", "tiny", "--data", str(images), "--out", str(out), "--steps",
           "100000", *rare]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not ((out / "log.jsonl").is_file() and len(log(out)) >= 3) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig and "Traceback" not in stderr, stderr[-2000:]
    saved = tc.load_checkpoint(tc.latest_checkpoint(out))["step"]
    assert 3 <= saved < 100000 and f"{sig.name}: stopped at step {saved}" in stdout
    assert [e["step"] for e in log(out)][-1] == saved  # every step it ran is in the checkpoint
    resumed = run(script, "--out", out, "--steps", saved + 2, "--resume")
    assert f"resuming from step {saved}" in resumed.stdout
    assert [e["step"] for e in log(out) if "loss" in e][-2:] == [saved + 1, saved + 2]


def test_saved_interpolations_are_refused_not_resolved(tmp_path, images, vq_run):
    ckpt = tc.load_checkpoint(tc.latest_checkpoint(vq_run))
    ckpt["config"]["out"] = str(tmp_path / "${oc.env:HOME,nohome}")
    torch.save(ckpt, tmp_path / "hostile.pt")
    with pytest.raises(tc.ConfigError, match="interpolation"):
        train_vqgan.main(["--resume", str(tmp_path / "hostile.pt")])
    with pytest.raises(tc.ConfigError, match="interpolation"):
        train_vqgan.main(["--data", str(images), "--out", str(tmp_path / "x"), "out=${oc.env:HOME}"])
    assert not any(tmp_path.glob("*nohome*")) and not (tmp_path / "x").exists()


def resume_case(case: str, ckpt: dict) -> tuple[dict, list[str], str]:
    """(damaged checkpoint, extra arguments, expected words of the error) of one bad resume."""
    if case in ("rng", "usage"):
        del ckpt[case]
        return ckpt, [], f"it lacks {case}"
    if case == "bad rng":
        ckpt["rng"] = [{"cpu": torch.zeros(3, dtype=torch.uint8)}]
        return ckpt, [], "RNG state is not one torch saved"
    if case in ("abc", -1):
        ckpt["step"] = case
        return ckpt, [], "step must be a count of steps"
    if case == "optimizer":
        ckpt["opt_g"] = {"state": {}, "param_groups": []}
        return ckpt, [], "its generator optimizer state does not fit this run"
    if case == "n_embed":
        return ckpt, ["model.n_embed=64"], "its model does not fit this run (size mismatch for quantize.embedding"
    if case == "size":
        return ckpt, ["--size", "32"], "its model does not fit this run"
    raise KeyError(case)


@pytest.mark.parametrize("case", ["rng", "usage", "bad rng", "abc", -1, "optimizer", "n_embed", "size"])
def test_a_damaged_or_mismatched_resume_checkpoint_is_one_line(tmp_path, vq_run, case):
    ckpt, extra, words = resume_case(case, tc.load_checkpoint(tc.latest_checkpoint(vq_run)))
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(tc.RUN_ERRORS) as e:
        train_vqgan.main(["--resume", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "out"), *extra])
    assert words in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_disk_full_is_one_line_naming_the_file_and_the_intact_checkpoint(tmp_path, images):
    out = tmp_path / "run"
    run(VQGAN, "--preset", "tiny", "--data", images, "--out", out, "--steps", 3)
    last = tc.latest_checkpoint(out)
    limit = last.stat().st_size // 2  # every later checkpoint is larger than a file may grow (RLIMIT_FSIZE)

    def small_files():
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    proc = subprocess.run([sys.executable, str(VQGAN), "--out", str(out), "--steps", "6", "--resume"], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    line = one_line_error(proc)
    assert line.startswith(f"error: could not write {out / 'checkpoints' / 'step-00000006.pt'} (")
    assert line.endswith(f"the last checkpoint, {last}, is intact")
    assert tc.load_checkpoint(last)["step"] == 3 and tc.list_checkpoints(out) == [last]


def test_a_second_ctrl_c_exits_at_once_without_saving():
    code = ("import os, signal, time\nfrom taming_core.interrupt import StopRequest\n"
            "stop = StopRequest().install()\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(0.2)\n"
            "print('flag', stop.requested, flush=True)\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(5)\n"
            "print('not reached')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 130 and proc.stdout.split() == ["flag", "SIGINT"], proc.stderr
    assert "SIGINT again: exiting now without saving" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ctrl_c_under_torchrun_saves_one_step_agreed_by_every_rank(tmp_path, images):
    """Ctrl-C reaches the launcher and both workers (one process group); the ranks stop at the same step and
    save it (the launcher itself reports the signal with its own traceback: torchrun's, not the script's)."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(VQGAN),
           "--preset", "tiny", "--data", str(images), "--out", str(out), "--steps", "100000", "save_every=100000",
           "image_every=100000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 180
    while not ((out / "log.jsonl").is_file() and len(log(out)) >= 3) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=180)
    ckpt = tc.load_checkpoint(tc.latest_checkpoint(out))
    assert f"SIGINT: stopped at step {ckpt['step']}" in stdout, stderr[-2000:]
    assert len(ckpt["rng"]) == 2 and log(out)[-1]["step"] == ckpt["step"] >= 3
    assert not (out / ".lock").exists()
