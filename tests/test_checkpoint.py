"""Checkpoint formats: strict and safe loading of original files, our safetensors format, clear errors."""
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from safetensors import safe_open

import taming_core as tc
from conftest import reference_case, tiny_net2net_config, tiny_vqgan_config


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pytorch_lightning_layout_loads_without_lightning():
    folder, _ = reference_case("vqgan_tiny")
    raw = tc.safe_load(folder / "model.ckpt")
    assert "state_dict" in raw and any(k.startswith("loss.") for k in raw["state_dict"])
    callback_key = next(iter(raw["callbacks"]))  # keyed by the ModelCheckpoint CLASS: an inert placeholder
    assert "ModelCheckpoint" in repr(callback_key)
    with pytest.raises(tc.UnsafeCheckpointError):
        callback_key()  # placeholders refuse to be called


@pytest.mark.parametrize("how", ["torch_save", "plain_pickle"])
def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": {"w": torch.zeros(2)}, "x": Evil(marker)}
    if how == "torch_save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(tc.UnsafeCheckpointError, match="os.system|posix.system"):
        tc.load_model(path, config=tiny_vqgan_config())
    assert not marker.exists()


def test_loss_keys_are_dropped_by_name_other_extra_keys_are_not(tmp_path):
    model = tc.build_model(tiny_vqgan_config())
    state = dict(model.state_dict())
    state["loss.discriminator.main.0.weight"] = torch.zeros(3)
    torch.save({"state_dict": state}, tmp_path / "m.ckpt")
    OmegaConf.save(OmegaConf.create(tiny_vqgan_config()), tmp_path / "m.yaml")
    loaded = tc.load_model(tmp_path / "m.ckpt")  # finds m.yaml beside it
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    state["encoder.extra.weight"] = torch.zeros(3)
    torch.save({"state_dict": state}, tmp_path / "m.ckpt")
    with pytest.raises(tc.ConfigError, match="encoder.extra.weight"):
        tc.load_model(tmp_path / "m.ckpt")


def test_config_that_does_not_fit_names_key_and_shapes(tmp_path):
    folder, _ = reference_case("vqgan_tiny")
    cfg = OmegaConf.load(folder / "config.yaml")
    cfg.model.params.n_embed = 128
    with pytest.raises(tc.ConfigError, match=r"quantize.embedding.weight.*\(64, 16\).*\(128, 16\)"):
        tc.load_model(folder / "model.ckpt", config=OmegaConf.to_container(cfg))


def test_unknown_target_and_parameter_are_named():
    cfg = {"model": {"target": "taming.models.vqgan.VQModelXL", "params": {}}}
    with pytest.raises(tc.ConfigError, match="VQModelXL"):
        tc.build_model(cfg)
    folder, _ = reference_case("vqgan_tiny")
    cfg = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"))
    cfg["model"]["params"]["legacy"] = False
    with pytest.raises(tc.ConfigError, match="legacy"):
        tc.build_model(cfg)
    with pytest.raises(tc.ConfigError, match="n_embd_typo"):
        tc.build_model(tiny_net2net_config(n_embd_typo=3))


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        tc.load_model(tmp_path / "nope.ckpt")
    folder, _ = reference_case("vqgan_tiny")
    data = (folder / "model.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(tc.CheckpointError, match="truncated"):
        tc.load_model(tmp_path / "cut.ckpt", config=folder / "config.yaml")
    (tmp_path / "text.ckpt").write_text("hello, I am not a checkpoint\n")
    with pytest.raises(tc.CheckpointError, match="not a checkpoint"):
        tc.load_model(tmp_path / "text.ckpt", config=folder / "config.yaml")
    with zipfile.ZipFile(tmp_path / "other.ckpt", "w") as zf:
        zf.writestr("readme.txt", "zip, but no data.pkl")
    with pytest.raises(tc.CheckpointError, match="data.pkl"):
        tc.load_model(tmp_path / "other.ckpt", config=folder / "config.yaml")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(tc.CheckpointError):
        tc.load_model(tmp_path / "bad.safetensors", config=tiny_vqgan_config())


def test_our_format_round_trip_and_conversion(tmp_path):
    folder, e = reference_case("cond_transformer_seg")
    original = tc.load_model(folder)
    tc.checkpoint.main([str(folder / "model.ckpt"), str(tmp_path / "ours"), "--config",
                        str(folder / "config.yaml")])
    assert (tmp_path / "ours" / "model.safetensors").is_file() and (tmp_path / "ours" / "config.yaml").is_file()
    ours = tc.load_model(tmp_path / "ours")
    assert isinstance(ours, tc.Net2Net) and not ours.training
    for k, v in original.state_dict().items():
        assert torch.equal(v, ours.state_dict()[k]), k
    c = torch.from_numpy(e["c_indices"])
    np.testing.assert_array_equal(tc.sample(ours, c, 256, greedy=True).numpy(), e["greedy"])
    # the config stored in the safetensors metadata suffices on its own
    (tmp_path / "ours" / "config.yaml").unlink()
    assert isinstance(tc.load_model(tmp_path / "ours" / "model.safetensors"), tc.Net2Net)


@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_shared_first_stage_round_trips_stored_once(tmp_path, dtype):
    cfg = tiny_net2net_config()
    cfg["cond_stage"] = {"kind": "first_stage"}
    model = tc.build_model(cfg)
    tc.save_model(model, tmp_path / "m", dtype=dtype)
    stored = safe_open(str(tmp_path / "m" / "model.safetensors"), "pt").keys()
    assert any(k.startswith("first_stage_model.") for k in stored)
    assert not any(k.startswith("cond_stage_model.") for k in stored)  # the shared stage is written once
    loaded = tc.load_model(tmp_path / "m")
    assert loaded.cond_stage_model is loaded.first_stage_model
    for k, v in model.state_dict().items():
        w = loaded.state_dict()[k]
        assert w.dtype == v.dtype and (torch.equal(w, v) if dtype is None else torch.allclose(w, v, atol=1e-3)), k


def test_remap_path_resolves_against_the_yaml_folder(tmp_path, monkeypatch):
    used = np.array([3, 5, 7, 11, 13], dtype=np.int64)
    folder = tmp_path / "release"
    folder.mkdir()
    np.save(folder / "used_codes.npy", used)
    cfg = {"model": {"target": "taming.models.vqgan.VQModel", "params": {
        "embed_dim": 8, "n_embed": 32, "remap": "used_codes.npy", "sane_index_shape": True,
        "ddconfig": {"double_z": False, "z_channels": 8, "resolution": 16, "in_channels": 3, "out_ch": 3,
                     "ch": 32, "ch_mult": [1], "num_res_blocks": 0, "attn_resolutions": [], "dropout": 0.0},
        "lossconfig": {"target": "taming.modules.losses.DummyLoss"}}}}
    OmegaConf.save(OmegaConf.create(cfg), folder / "model.yaml")
    monkeypatch.chdir(tmp_path)  # not the yaml's folder
    model = tc.build_model(folder / "model.yaml")
    assert model.quantize.used.tolist() == used.tolist() and model.n_codes == 5
    torch.save({"state_dict": model.state_dict()}, folder / "model.ckpt")
    loaded = tc.load_model(folder / "model.ckpt")
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    q = loaded.encode(x)
    assert int(q.indices.max()) < 5
    tc.save_model(loaded, tmp_path / "ours")  # the used codes travel in our config
    shutil.rmtree(folder)
    assert torch.equal(tc.load_model(tmp_path / "ours").quantize.used, torch.from_numpy(used))


def test_legacy_torch_format_and_plain_pickled_tensors(tmp_path):
    model = tc.build_model(tiny_vqgan_config())
    state = {"state_dict": model.state_dict(), "view": torch.arange(10.0).view(2, 5)[:, 1:]}
    torch.save(state, tmp_path / "legacy.ckpt", _use_new_zipfile_serialization=False)
    (tmp_path / "plain.ckpt").write_bytes(pickle.dumps(state))
    for name in ("legacy.ckpt", "plain.ckpt"):
        raw = tc.safe_load(tmp_path / name)
        assert torch.equal(raw["view"], state["view"])
        loaded = tc.load_model(tmp_path / name, config=tiny_vqgan_config())
        assert torch.equal(loaded.decoder.conv_out.weight, model.decoder.conv_out.weight)


def test_first_stage_stored_once_by_reference(tmp_path):
    net = tc.build_model(tiny_net2net_config()).eval()
    tc.save_model(net.first_stage_model, tmp_path / "vq", dtype=torch.float16)
    net.first_stage_model.load_state_dict(tc.load_model(tmp_path / "vq").state_dict())  # as stored (fp16)
    tc.save_model(net, tmp_path / "full", dtype=torch.float16)
    tc.save_model(net, tmp_path / "linked", dtype=torch.float16, first_stage=tmp_path / "vq")
    size = lambda name: (tmp_path / name / "model.safetensors").stat().st_size  # noqa: E731
    assert size("linked") + size("vq") < size("full") + 4096
    a, b = tc.load_model(tmp_path / "full"), tc.load_model(tmp_path / "linked")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    # the pair moves together: the link is relative
    shutil.copytree(tmp_path / "vq", tmp_path / "moved" / "vq")
    shutil.copytree(tmp_path / "linked", tmp_path / "moved" / "linked")
    assert isinstance(tc.load_model(tmp_path / "moved" / "linked"), tc.Net2Net)
    # a changed first stage is refused, a missing one named
    other = tc.build_model(tiny_vqgan_config())
    tc.save_model(other, tmp_path / "moved" / "vq", dtype=torch.float16)
    with pytest.raises(tc.CheckpointError, match="different first stage"):
        tc.load_model(tmp_path / "moved" / "linked")
    shutil.rmtree(tmp_path / "moved" / "vq")
    with pytest.raises(FileNotFoundError, match="missing"):
        tc.load_model(tmp_path / "moved" / "linked")
    with torch.no_grad():
        net.first_stage_model.decoder.conv_out.bias.add_(0.5)
    with pytest.raises(ValueError, match="does not hold this model's first stage"):
        tc.save_model(net, tmp_path / "bad", dtype=torch.float16, first_stage=tmp_path / "vq")


@pytest.mark.parametrize("layout", ["zip", "legacy", "plain", "plain_fp16"])
def test_legit_files_fit_the_decode_budget(tmp_path, layout):
    """Real checkpoints decode to 1-2.2x their size; the budget allows 4x + 16 MiB (see test_hostile.py)."""
    folder, _ = reference_case("cond_transformer_seg")
    state = tc.safe_load(folder / "model.ckpt")["state_dict"]
    if layout == "plain_fp16":
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path / "m.ckpt"
    if layout.startswith("plain"):
        path.write_bytes(pickle.dumps({"state_dict": state}))
    else:
        torch.save({"state_dict": state}, path, _use_new_zipfile_serialization=layout == "zip")
    loaded = tc.safe_load(path)["state_dict"]
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    with pytest.raises(tc.CheckpointError, match="decompression bomb"):
        tc.safe_load(path, max_bytes=path.stat().st_size // 2)  # the absolute cap applies too
