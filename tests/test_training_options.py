"""Training options a researcher reaches for: presets, stage identity, TensorBoard, EMA, accumulation,
the VQGAN's validation split and best weights, checks before any data is read."""
from __future__ import annotations

import json
import sys

import pytest
import torch

import taming_core as tc
from test_train import (ROOT, TRANSFORMER, VQGAN, images, log, make_images, one_line_error, run,  # noqa: F401
                        vq_run)

sys.path.insert(0, str(ROOT / "train"))
import train_transformer  # noqa: E402
import train_vqgan  # noqa: E402

RELEASE = ROOT / "train" / "release.py"


def test_cpu_preset_is_the_bundled_shape_and_gpu_preset_the_papers():
    cfg = train_vqgan.build_config(train_vqgan.parse_args(["--preset", "cpu", "--data", "x"]))
    bundled = tc.load_model(ROOT / "checkpoints" / "vqgan").config
    assert cfg.model.ddconfig == bundled.ddconfig and cfg.data.size == 128
    assert (cfg.model.n_embed, cfg.model.embed_dim, cfg.model.l2_normalize) == (1024, 16, True) and cfg.tensorboard
    assert cfg.log_every <= 10 and cfg.image_every <= 100  # progress within minutes on 2 cores
    gpu = train_vqgan.build_config(train_vqgan.parse_args(["--preset", "gpu", "--data", "x"]))
    assert gpu.model.ddconfig.ch_mult == [1, 1, 2, 2, 4] and gpu.model.ddconfig.attn_resolutions == [16]
    assert gpu.data.size == 256 and tc.config_checks.model_size("vqgan", gpu.model) > 60e6
    gpt = train_transformer.build_config(train_transformer.parse_args(["--preset", "cpu"])).transformer
    bundled = tc.load_model(ROOT / "checkpoints" / "unconditional").config.transformer
    assert (gpt.n_layer, gpt.n_head, gpt.n_embd) == (bundled.n_layer, bundled.n_head, bundled.n_embd) == (4, 4, 256)
    gpt = train_transformer.build_config(train_transformer.parse_args(["--preset", "gpu"])).transformer
    assert (gpt.n_layer, gpt.n_head, gpt.n_embd) == (24, 16, 1024)


@pytest.mark.parametrize("script,args,message", [
    (VQGAN, ["--steps", "0"], "error: steps must be an integer >= 1, got 0"),
    (VQGAN, ["grad_accum=0"], "error: grad_accum must be an integer >= 1"),
    (VQGAN, ["ema=1.5"], "error: val_fraction and ema must lie in [0, 1)"),
    (VQGAN, ["model.ddconfig.ch=33"], "error: model: ddconfig.ch x ddconfig.ch_mult"),
    (VQGAN, ["--size", "4", "loss.disc_start=0"], "error: the patch discriminator needs crops larger than 4"),
    (TRANSFORMER, ["--first-stage", "FIRST", "--cond", "edges"], "error: an edges condition needs its VQ model"),
    (TRANSFORMER, ["--first-stage", "FIRST", "--size", "32"], "error: the first stage was trained at 16x16: use "
                                                               "--size 16"),
])
def test_bad_settings_are_refused_before_any_data_is_read(tmp_path, vq_run, script, args, message):
    """The data folder does not exist: each error must come from the settings, before the data is looked at."""
    args = [str(vq_run / "model") if a == "FIRST" else a for a in args]
    proc = run(script, "--preset", "tiny", "--data", tmp_path / "nowhere", "--out", tmp_path / "out", *args,
               check=False)
    assert one_line_error(proc).startswith(message) and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_transformer_as_first_stage_and_codes_of_another_first_stage_are_one_line(tmp_path, images, vq_run):
    gpt = tmp_path / "gpt"
    run(TRANSFORMER, "--preset", "tiny", "--data", images, "--first-stage", vq_run / "model", "--out", gpt,
        "--steps", 2, "eval_every=100", "sample_every=100")
    proc = run(TRANSFORMER, "--preset", "tiny", "--data", images, "--first-stage", gpt / "model", "--out",
               tmp_path / "x", check=False)
    assert one_line_error(proc) == f"error: {gpt / 'model'} is a Net2Net (a transformer: pass the first stage it " \
                                   "was trained on), not a VQGAN"
    other = tmp_path / "other_vq"  # the same shape, other weights
    run(VQGAN, "--preset", "tiny", "--data", images, "--out", other, "--steps", 1)
    codes = tc.load_checkpoint(gpt / "codes.pt")
    assert codes["first_stage_sha256"] == tc.weights_sha256(tc.load_model(vq_run / "model"))
    proc = run(TRANSFORMER, "--preset", "tiny", "--first-stage", other / "model", "--out", tmp_path / "y",
               f"cache={gpt / 'codes.pt'}", check=False)
    line = one_line_error(proc)
    assert line.startswith(f"error: the codes in {gpt / 'codes.pt'} used another first stage (weights "
                           "sha256 ") and "encode them again with --data" in line
    proc = run(TRANSFORMER, "--preset", "tiny", "--data", images, "--first-stage", other / "model", "--out", gpt,
               "--steps", 4, "--resume", check=False)
    assert one_line_error(proc).startswith(f"error: the run in {gpt / 'checkpoints' / 'step-00000002.pt'} "
                                           "used another first stage")
    assert [p.name for p in tc.list_checkpoints(gpt)] == ["step-00000002.pt"]
    refused = run(RELEASE, gpt / "model", tmp_path / "rel", "--first-stage", other / "model", check=False)
    assert "does not hold this model's first stage" in one_line_error(refused) and not (tmp_path / "rel").exists()
    # a resumed run with a mismatched GPT shape is refused before anything is encoded
    proc = run(TRANSFORMER, "--out", gpt, "--steps", 4, "--resume", "transformer.n_embd=64", check=False)
    assert "its transformer does not fit this run" in one_line_error(proc)


@pytest.mark.slow
def test_tensorboard_ema_accumulation_and_the_vqgan_validation_split(tmp_path):
    data = make_images(tmp_path / "images", n=9)
    out = tmp_path / "vq"
    proc = run(VQGAN, "--preset", "tiny", "--data", data, "--out", out, "--steps", 4, "val_fraction=0.34",
               "tensorboard=true",
               "eval_every=2", "ema=0.9", "grad_accum=2", "lr_schedule=cosine", "warmup_steps=8")
    assert "9 images, 3 held out" in proc.stdout and "warning: warmup_steps=8 is not below --steps 4" in proc.stdout
    assert "lr 4.00e-04" in proc.stdout  # base_lr 1e-4 x batch 2 x 2 accumulated batches
    vals = {e["step"]: e["val_loss"] for e in log(out) if "val_loss" in e}
    best = json.loads((out / "model-best" / "best.json").read_text())
    assert sorted(vals) == [2, 4] and best == {"step": min(vals, key=vals.get), "val_loss": min(vals.values())}
    assert isinstance(tc.load_model(out / "model-best"), tc.VQGAN)
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(out / "tensorboard")).Reload()
    tags = acc.Tags()
    assert {"train/rec", "train/lr", "codebook/codes_used", "val/loss"} <= set(tags["scalars"])
    assert "reconstructions" in tags["images"]
    assert [e.step for e in acc.Scalars("train/rec")] == [1, 2, 3, 4]
    # EMA: kept in the checkpoint, differs from the last weights, released by release.py --ema
    ckpt = tc.load_checkpoint(tc.latest_checkpoint(out))
    ema = ckpt["ema"]["weights"]
    assert ckpt["ema"]["updates"] == 4 and set(ema) == set(ckpt["model"])
    assert not torch.equal(ema["decoder.conv_out.weight"], ckpt["model"]["decoder.conv_out.weight"])
    run(RELEASE, out / "model", tmp_path / "rel", "--ema", "--dtype", "float32")
    released = tc.load_model(tmp_path / "rel").state_dict()
    assert torch.equal(released["decoder.conv_out.weight"], ema["decoder.conv_out.weight"])
    refused = run(RELEASE, ROOT / "checkpoints" / "vqgan", tmp_path / "rel2", "--ema", check=False)
    assert one_line_error(refused).startswith("error: --ema: no checkpoint of a run in")
    # the accumulated run resumes where it stopped: 2 batches per step in the data order
    run(VQGAN, "--out", out, "--steps", 5, "--resume")
    assert log(out)[-1]["step"] == 5 and tc.load_checkpoint(tc.latest_checkpoint(out))["ema"]["updates"] == 5


def test_accumulating_two_batches_equals_one_batch_of_twice_the_size(tmp_path, images, vq_run):
    """The transformer's update from grad_accum=2 of batch 2 matches one step of batch 4 (same examples)."""
    common = ["--preset", "tiny", "--data", images, "--first-stage", vq_run / "model", "--steps", 1, "lr=1e-2",
              "warmup_steps=0", "pkeep=1", "eval_every=100", "sample_every=100", "val_fraction=0", "grad_clip=0",
              "transformer.embd_pdrop=0", "transformer.resid_pdrop=0", "transformer.attn_pdrop=0"]
    run(TRANSFORMER, *common, "--out", tmp_path / "a", "--batch-size", 4)
    run(TRANSFORMER, *common, "--out", tmp_path / "b", "--batch-size", 2, "grad_accum=2", "ema=0.5")
    a = tc.load_model(tmp_path / "a" / "model").transformer.state_dict()
    b = tc.load_model(tmp_path / "b" / "model").transformer.state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert "ema" in tc.load_checkpoint(tc.latest_checkpoint(tmp_path / "b"))


def test_ema_averages_parameters_copies_buffers_and_warms_up():
    model = torch.nn.BatchNorm1d(3)  # weight, bias (parameters); running stats (buffers)
    ema = tc.EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(2.0)
        model.running_mean.fill_(5.0)
    ema.update(model)  # first update: decay min(0.9, 1/10) = 0.1
    assert torch.allclose(ema.shadow["weight"], torch.full((3,), 0.1 * 1.0 + 0.9 * 2.0))
    assert torch.equal(ema.shadow["running_mean"], model.running_mean)
    for _ in range(200):
        ema.update(model)
    assert torch.allclose(ema.shadow["weight"], model.weight, atol=1e-6)
    copy = tc.EMA(torch.nn.BatchNorm1d(3), decay=0.9)
    copy.load_state_dict(ema.state_dict())
    assert copy.updates == 201 and torch.equal(copy.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError):
        copy.load_state_dict({"weights": {"weight": torch.zeros(4)}})


def test_a_log_that_cannot_be_written_is_a_save_error(tmp_path):
    (tmp_path / "log.jsonl").mkdir()  # stands for a full disk: the write fails
    with pytest.raises(tc.SaveError, match="could not write .*log.jsonl .*no checkpoint had been saved yet"):
        tc.RunLog(tmp_path).scalars(1, {"loss": 1.0})


def test_a_resumed_log_drops_what_a_killed_run_wrote_after_its_checkpoint(tmp_path):
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, 7)] + ["not json"]
    (tmp_path / "log.jsonl").write_text("\n".join(lines) + "\n")
    log = tc.RunLog(tmp_path, purge_step=4, tensorboard=False)  # resumed from the checkpoint of step 3
    log.scalars(4, {"loss": 0.5})
    steps = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()
             if line != "not json"]
    assert steps == [1, 2, 3, 4]
    assert "not json" in (tmp_path / "log.jsonl").read_text()  # what it cannot read, it keeps
    tc.RunLog(tmp_path, tensorboard=False).scalars(5, {"loss": 0.4})  # a fresh log appends, drops nothing
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 6


def test_a_run_saved_before_the_validation_split_resumes_on_every_image(vq_run):
    saved = dict(tc.load_checkpoint(tc.latest_checkpoint(vq_run))["config"])
    args = train_vqgan.parse_args(["--out", str(vq_run)])
    assert train_vqgan.build_config(args, saved).val_fraction == 0.05
    del saved["val_fraction"]  # as checkpoints written before it existed
    assert train_vqgan.build_config(args, saved).val_fraction == 0.0
