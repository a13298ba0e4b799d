"""Decoder-only training of a released first stage (same codes, a sharper decoder) and its release."""
from __future__ import annotations

import pytest
import torch

import taming_core as tc
from test_train import ROOT, TRANSFORMER, VQGAN, images, log, one_line_error, run, vq_run  # noqa: F401

RELEASE = ROOT / "train" / "release.py"


def test_decoder_only_run_keeps_every_code_and_changes_the_decoder(tmp_path, images, vq_run):
    out = tmp_path / "dec"
    proc = run(VQGAN, "--preset", "tiny", "--data", images, "--out", out, "--size", 32, "--steps", 3,
               f"init_from={vq_run / 'model'}", "train_only=decoder", "loss.discriminator=projected",
               "loss.diffaug=color,translation,cutout", "loss.lecam_weight=0.1", "loss.disc_start=0",
               "base_lr=1e-3", "disc_lr_scale=4", "model.dead_code_threshold=100")  # a restart would fire at once
    assert "trained: decoder" in proc.stdout
    before, after = tc.load_model(vq_run / "model"), tc.load_model(out / "model")
    assert after.config.ddconfig.ch == before.config.ddconfig.ch and after.config.ddconfig.resolution == 16
    x = tc.ImageFolder(tc.DataConfig(root=str(images), size=32))
    x = torch.stack([x[i]["image"] for i in range(len(x))])
    with torch.no_grad():
        assert torch.equal(before.encode(x).indices, after.encode(x).indices)  # every code as it was
    b, a = before.state_dict(), after.state_dict()
    for k in b:
        frozen = not (k.startswith("decoder.") or k.startswith("post_quant_conv."))
        assert torch.equal(b[k], a[k]) == frozen, k  # frozen parts identical, every decoder tensor moved
    assert log(out)[-1]["d"] > 0 and log(out)[-1]["lambda"] > 0  # the projected GAN was on
    ckpt = tc.load_checkpoint(tc.latest_checkpoint(out))
    assert set(ckpt["disc"]) and all(k.startswith("heads.") for k in ckpt["disc"])  # heads only: backbone frozen
    assert ckpt["loss"]["lecam_ema"].abs().sum() > 0
    assert ckpt["opt_d"]["param_groups"][0]["lr"] == pytest.approx(4 * ckpt["opt_g"]["param_groups"][0]["lr"])
    resumed = run(VQGAN, "--preset", "tiny", "--data", images, "--out", out, "--size", 32, "--steps", 4, "--resume")
    assert "resuming from step 3" in resumed.stdout
    with torch.no_grad():
        assert torch.equal(before.encode(x).indices, tc.load_model(out / "model").encode(x).indices)


def test_decoder_noise_starts_as_the_donor_and_learns_its_strengths(tmp_path, images, vq_run):
    out = tmp_path / "dec"
    run(VQGAN, "--preset", "tiny", "--data", images, "--out", out, "--size", 32, "--steps", 3,
        f"init_from={vq_run / 'model'}", "train_only=decoder", "decoder_noise=true", "loss.disc_start=0",
        "base_lr=1e-3", "noise_lr_scale=10", "model.dead_code_threshold=100")
    before, after = tc.load_model(vq_run / "model"), tc.load_model(out / "model")
    assert after.config.ddconfig.noise and not before.config.ddconfig.noise
    noise_keys = [k for k in after.state_dict() if k.endswith(".noise.strength")]
    assert noise_keys == ["decoder.up.0.noise.strength"]  # the tiny preset: one level above the code grid
    assert after.state_dict()[noise_keys[0]].abs().sum() > 0  # trained away from 0
    groups = tc.load_checkpoint(tc.latest_checkpoint(out))["opt_g"]["param_groups"]
    assert [g["lr_scale"] for g in groups] == [1.0, 10.0] and groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])
    x = tc.ImageFolder(tc.DataConfig(root=str(images), size=32))
    x = torch.stack([x[i]["image"] for i in range(len(x))])
    with torch.no_grad():
        codes = before.encode(x).indices
        assert torch.equal(codes, after.encode(x).indices)
        assert torch.equal(after.decode_indices(codes), after.decode_indices(codes))  # eval: one fixed field
        after.train()
        assert not torch.equal(after.decode_indices(codes), after.decode_indices(codes))  # train: fresh noise
        after.decoder.up[0].noise.strength.zero_()
        after.eval()  # at strength 0 the noise decoder is the donor's decoder
        plain = {k: v for k, v in after.state_dict().items() if not k.endswith(".noise.strength")}
        tc.load_state_dict_strict(before, {**before.state_dict(), **plain})
        assert torch.allclose(before.decode_indices(codes), after.decode_indices(codes), atol=1e-6)


def test_fixed_noise_is_top_left_aligned():
    from taming_core.autoencoder import fixed_noise
    big = fixed_noise(300, 520)
    assert big.shape == (1, 1, 300, 520)
    assert torch.equal(fixed_noise(40, 64), big[..., :40, :64])  # a preview's rows see the final image's noise
    assert torch.equal(big[..., :256, 256:512], big[..., :256, :256]) and big.std() > 0.9


@pytest.mark.parametrize("args,message", [
    (["train_only=decoder"], "error: train_only=decoder keeps the encoder and codebook as they are: it needs"),
    (["train_only=encoder"], "error: train_only must be one of"),
    (["loss.discriminator=stylegan"], "error: discriminator must be one of"),
    (["loss.diffaug=color,rotate"], "error: unknown DiffAugment policy"),
    (["disc_lr_scale=0"], "error: disc_lr_scale and noise_lr_scale must be > 0"),
    (["decoder_noise=true"], "error: decoder_noise adds noise inputs to a released decoder (init_from=)"),
])
def test_decoder_training_options_are_checked(tmp_path, images, args, message):
    proc = run(VQGAN, "--preset", "tiny", "--data", images, "--out", tmp_path / "out", *args, check=False)
    assert one_line_error(proc).startswith(message)


def test_init_from_refuses_a_transformer(tmp_path, images, vq_run):
    gpt = tmp_path / "gpt"
    run(TRANSFORMER, "--preset", "tiny", "--data", images, "--first-stage", vq_run / "model", "--out", gpt,
        "--steps", 1)
    proc = run(VQGAN, "--preset", "tiny", "--data", images, "--out", tmp_path / "out", f"init_from={gpt / 'model'}",
               check=False)
    assert one_line_error(proc).startswith(f"error: init_from={gpt / 'model'} is a Net2Net, not a first stage")


@pytest.mark.slow
def test_swap_decoder_releases_the_stage_and_relinks_its_transformers(tmp_path, images, vq_run):
    stage, gpt = tmp_path / "rel" / "vqgan", tmp_path / "rel" / "gpt"
    run(RELEASE, vq_run / "model", stage)
    run(TRANSFORMER, "--preset", "tiny", "--data", images, "--first-stage", stage, "--out", tmp_path / "t",
        "--steps", 1)
    run(RELEASE, tmp_path / "t" / "model", gpt, "--first-stage", stage)
    run(VQGAN, "--preset", "tiny", "--data", images, "--out", tmp_path / "dec", "--steps", 2, f"init_from={stage}",
        "train_only=decoder", "loss.disc_start=0", "base_lr=1e-3")
    old_net = tc.load_model(gpt)
    proc = run(ROOT / "train" / "swap_decoder.py", tmp_path / "dec" / "model", stage, gpt)
    assert "relinked" in proc.stdout
    net, new = tc.load_model(gpt), tc.load_model(tmp_path / "dec" / "model")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(net.encode_image(x), old_net.encode_image(x))  # same codes
        z = net.encode_image(x)
        assert torch.allclose(net.decode_indices(z), new.decode_indices(new.encode(x).indices), atol=1e-2)
        assert not torch.allclose(net.decode_indices(z), old_net.decode_indices(z), atol=1e-3)  # the new decoder
    for k, v in old_net.transformer.state_dict().items():
        assert torch.equal(v, net.transformer.state_dict()[k])
    other = tmp_path / "other"  # a stage whose encoder moved: refused, nothing replaced
    run(VQGAN, "--preset", "tiny", "--data", images, "--out", other, "--steps", 2, f"init_from={stage}")
    before = (stage / "model.safetensors").read_bytes()
    bad = run(ROOT / "train" / "swap_decoder.py", other / "model", stage, gpt, check=False)
    assert bad.returncode != 0 and "code-deciding tensor" in bad.stderr
    assert (stage / "model.safetensors").read_bytes() == before and isinstance(tc.load_model(gpt), tc.Net2Net)
