"""Hostile files, second round (issue 29): deep nesting, bytes-to-gigabytes tricks, messages that expand the
file, BUILD on tensors, rebuild calls, oversized configs and links, files that are not regular files.

Every file is generated (tests/hostile_files.py). The loads run together in one child process under an
address-space limit (what importing the library maps + 1 GiB): a case that crashed would kill the child (a
signal), one that allocated its gigabytes would fail inside it. The child resets its peak RSS before each case
(/proc/self/clear_refs) and reports each error and how far the case raised resident memory.
"""
import io
import json
import os
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import hostile_files as H
import taming_core as tc
from conftest import ROOT, reference_case

CHILD = r"""
import json, resource, sys
import taming_core as tc
from taming_core.checkpoint import main as convert

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":"))

limit = status("VmSize") + (1 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
results = {}
for name, how, path, config in json.loads(sys.argv[1]):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak RSS (VmHWM) restarts from the current RSS
    before = status("VmRSS")
    try:
        if how == "safe_load":
            tc.safe_load(path)
        elif how == "load_plain":
            tc.load_plain(path)
        elif how == "load_model":
            tc.load_model(path, config)
        else:
            tc.build_model(path)
        results[name] = ["loaded", "", 0]
    except Exception as e:
        results[name] = [type(e).__name__, str(e), 0]
    results[name][2] = status("VmHWM") - before
print(json.dumps(results))
"""

LOADER_CASES = {  # name: (generator, how, error, message pattern)
    "memo_long_binput": (H.memo_bomb, "safe_load", "CheckpointError", r"memo index 268435456 at opcode 2"),
    "memo_text_put": (H.memo_bomb_text, "safe_load", "CheckpointError", r"memo index 268435456"),
    "memo_in_zip": (lambda: H.with_data_pkl(H.memo_bomb()), "safe_load", "CheckpointError", "memo index"),
    "memo_in_header_slot": (lambda: H.legacy_file(H.PROTO2 + H.NONE + H.STOP, sys_info=H.memo_bomb()),
                            "safe_load", "CheckpointError", "memo index"),
    "tuple1_x1M_dict_key": (H.deep_tuple_key, "load_model", "CheckpointError", "nest deeper than 100 levels"),
    "tuple1_x1M_in_frozenset": (H.deep_frozenset, "safe_load", "CheckpointError", "nest deeper than 100"),
    "tuple1_x1M_in_header_slot": (lambda: H.legacy_file(H.PROTO2 + H.NONE + H.STOP, sys_info=H.deep_tuple_key()),
                                  "safe_load", "CheckpointError", "nest deeper than 100"),
    "tuple1_x1M_in_zip": (lambda: H.with_data_pkl(H.deep_tuple_key()), "load_plain", "CheckpointError",
                          "nest deeper than 100"),
    "slice_x300k": (H.deep_slices, "safe_load", "CheckpointError", "nest deeper than 100"),
    "frozenset_x100k": (H.deep_frozensets, "safe_load", "CheckpointError", "nest deeper than 100"),
    "shared_tuples_2**60_as_key": (H.shared_tuples, "safe_load", "CheckpointError",
                                   r"more than 1048576 values counted with their repeats"),
    "colliding_int_keys_50k": (H.colliding_keys, "safe_load", "CheckpointError",
                               r"colliding hashes could take more than 134217728 comparisons"),
    "expanding_storage_key": (H.expanding_key_zip, "load_model", "CheckpointError",
                              "storage record's key is a list of length 64, not a short string"),
    "expanding_storage_type": (H.expanding_storage_type_zip, "safe_load", "UnsafeCheckpointError",
                               "names a list of length 64 as its type"),
    "expanding_legacy_numel": (H.expanding_numel_legacy, "safe_load", "CheckpointError",
                               "declares a list of length 64 as its element count"),
    "expanding_header_slot": (H.expanding_header_slot, "safe_load", "CheckpointError",
                              "sys info slot holds a list of length 64"),
    "build_resizes_zip_storage": (H.build_resize_zip, "safe_load", "CheckpointError",
                                  r"BUILD acts on what torch._utils._rebuild_tensor_v2 returned"),
    "build_resizes_legacy_storage": (H.build_resize_legacy, "safe_load", "CheckpointError", "BUILD acts on"),
    "build_resizes_resume_storage": (H.build_resize_zip, "load_plain", "CheckpointError", "BUILD acts on"),
    "dtype_1M_fields_x6": (H.dtype_fields, "safe_load", "CheckpointError",
                           r"numpy.dtype is called with a str of length 3000000"),
    "dtype_syntax_error": (H.dtype_syntax_error, "load_model", "CheckpointError", "only single-type names"),
    "set_of_1.11M_code_points_x26": (H.set_of_code_points, "safe_load", "CheckpointError",
                                     "builtins.set is called with a str of length 1110000"),
    "zip_1M_members": (H.zip_many_members, "safe_load", "CheckpointError",
                       "a zip directory of 1000000 members .* decompression bomb"),
}


def size_cases(d: Path) -> list[tuple[str, str, str, str | None]]:
    """Item 6: files and configs that are checked by size before they are read or built."""
    import numpy as np
    from omegaconf import OmegaConf
    from safetensors.torch import save_file
    from conftest import tiny_net2net_config
    cases = []
    (d / "block.yaml").write_bytes(H.yaml_block_list())
    cases.append(("yaml_16mib_block_list", "build_model", str(d / "block.yaml"), None))
    remap = {**{k: v for k, v in H.big_gpt_config(0)["first_stage"].items()}, "model": "vqgan",
             "remap": list(range(999_000)), "n_embed": 1 << 20}
    for codes in (999_000, 200_000):  # 7.9 MB: past the header limit; 1.4 MB: past the config limit
        name = f"metadata_inline_remap_{codes // 1000}k"
        (d / name).mkdir()
        save_file({"w": torch.zeros(1)}, str(d / name / "model.safetensors"),
                  metadata={"taming_core.config": json.dumps({**remap, "remap": list(range(codes))})})
        cases.append((name, "load_model", str(d / name), None))
    (d / "header").mkdir()
    (d / "header" / "model.safetensors").write_bytes(H.safetensors_big_metadata())
    cases.append(("safetensors_95mb_header", "load_model", str(d / "header"), None))
    for name, params in (("config_1.07e9_ours", 1.07e9), ("config_4.3e9_ours", 4.3e9)):
        (d / name).mkdir()
        save_file({"w": torch.zeros(1)}, str(d / name / "model.safetensors"),
                  metadata={"taming_core.config": json.dumps(H.big_gpt_config(params))})
        cases.append((name, "load_model", str(d / name), None))
    OmegaConf.save(OmegaConf.create(H.big_gpt_config()), d / "big.yaml")
    (d / "tiny.ckpt").write_bytes(H.torch_bytes({"state_dict": {"w": torch.zeros(1)}}))
    cases.append(("config_1.07e9_original_ckpt", "load_model", str(d / "tiny.ckpt"), str(d / "big.yaml")))
    # a linked first stage replaced by a 6 GiB sparse file
    net = tc.build_model(tiny_net2net_config())
    tc.save_model(net.first_stage_model, d / "vq")
    tc.save_model(net, d / "linked", first_stage=d / "vq")
    os.truncate(d / "vq" / "model.safetensors", 6 << 30)
    cases.append(("linked_first_stage_6gib", "load_model", str(d / "linked"), None))
    # a remap .npy cut short
    np.save(d / "codes.npy", np.arange(16, dtype=np.int64))
    (d / "codes.npy").write_bytes((d / "codes.npy").read_bytes()[:-40])
    OmegaConf.save(OmegaConf.create({**remap, "remap": str(d / "codes.npy"), "n_embed": 32}), d / "npy.yaml")
    cases.append(("remap_npy_truncated", "build_model", str(d / "npy.yaml"), None))
    return cases


SIZE_CASES = {  # name: (error, message pattern)
    "yaml_16mib_block_list": ("ConfigError", r"block.yaml is 16777\d+ bytes, more than a config holds .* before parsing"),
    "metadata_inline_remap_999k": ("CheckpointError", r"header declares 78\d{5} bytes .* at most 4 MiB"),
    "metadata_inline_remap_200k": ("ConfigError", r"is 1\d{6} characters, more than a config holds"),
    "safetensors_95mb_header": ("CheckpointError", r"header declares 95000\d+ bytes"),
    "config_1.07e9_ours": ("ConfigError", r"describes 10\d\d\.\dM parameters .* stores 0.0M"),
    "config_4.3e9_ours": ("ConfigError", r"describes 4\d\d\d\.\dM parameters .* stores 0.0M"),
    "config_1.07e9_original_ckpt": ("ConfigError", r"describes 10\d\d\.\dM parameters .*tiny.ckpt stores 0.0M"),
    "linked_first_stage_6gib": ("CheckpointError", r"is 6442450944 bytes, more than the first stage"),
    "remap_npy_truncated": ("ConfigError", r"codes.npy' is \d+ bytes, but its header declares 16 codes"),
}


def run_child(cases: list) -> dict:
    run = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cases)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert run.returncode == 0, f"the child died ({run.returncode}): {run.stderr[-2000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux (/proc, RLIMIT_AS)")
    d = tmp_path_factory.mktemp("hostile")
    config = str(reference_case("vqgan_tiny")[0] / "config.yaml")
    cases = []
    for name, (make, how, _, _) in LOADER_CASES.items():
        path = d / f"{name}.ckpt"
        path.write_bytes(make())
        cases.append((name, how, str(path), config if how == "load_model" else None))
    return run_child(cases)


@pytest.fixture(scope="module")
def size_results(tmp_path_factory) -> dict:
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux (/proc, RLIMIT_AS)")
    return run_child(size_cases(tmp_path_factory.mktemp("sizes")))


@pytest.mark.parametrize("case", list(LOADER_CASES))
def test_loader_case_is_one_clear_error(results, case):
    _, _, error, pattern = LOADER_CASES[case]
    got, message, _ = results[case]
    assert got == error, f"{case}: {got}: {message}"
    assert re.search(pattern, message), message
    assert "\n" not in message and len(message) < 400, message


@pytest.mark.parametrize("case", list(SIZE_CASES))
def test_size_is_checked_before_reading(size_results, case):
    error, pattern = SIZE_CASES[case]
    got, message, _ = size_results[case]
    assert got == error, f"{case}: {got}: {message}"
    assert re.search(pattern, message), message
    assert "\n" not in message and len(message) < 500, message


def test_loader_cases_stay_in_bounded_memory(results, size_results):
    peaks = {name: r[2] >> 20 for name, r in {**results, **size_results}.items()}  # MiB above the RSS before
    print("peak RSS increase per case (MiB):", peaks)
    assert max(peaks.values()) < 256, peaks


def test_taming_convert_on_a_deep_tuple_is_one_line(tmp_path):
    folder, _ = reference_case("vqgan_tiny")
    path = tmp_path / "deep.ckpt"
    path.write_bytes(H.deep_tuple_key())
    run = subprocess.run([sys.executable, "-c", "from taming_core.checkpoint import main; main()", str(path),
                          str(tmp_path / "out"), "--config", str(folder / "config.yaml")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 1 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("taming-convert: error:") and "nest deeper than 100" in run.stderr


# ----------------------------------------------------------------------------------------------------------
# load_plain: resume checkpoints


def resume_like_state() -> dict:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), betas=(0.5, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return {"step": 7, "config": {"lr": 1e-4, "size": [32, 32], "name": "run", "flag": None},
            "model": model.state_dict(), "opt": opt.state_dict(), "rng": [{"cpu": torch.get_rng_state()}],
            "usage": torch.zeros(0)}


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("legacy", [False, True])
def test_load_plain_reads_what_torch_save_wrote(tmp_path, legacy):
    state = resume_like_state()
    path = tmp_path / "step.pt"
    path.write_bytes(H.torch_bytes(state, legacy=legacy))
    loaded = tc.load_plain(path)
    assert same(loaded, torch.load(path, weights_only=True)) and same(loaded, state)
    assert isinstance(loaded["model"], OrderedDict)


def test_load_plain_refuses_other_globals_and_objects(tmp_path):
    import numpy as np
    path = tmp_path / "np.pt"
    path.write_bytes(H.torch_bytes({"step": np.int64(3)}))
    with pytest.raises(tc.UnsafeCheckpointError, match=r"names numpy.*resume checkpoint holds tensors"):
        tc.load_plain(path)
    assert tc.safe_load(path)["step"] == 3  # the original-checkpoint loader still reads numpy scalars
    path.write_bytes(H.torch_bytes({"slice": slice(1, 2)}))
    with pytest.raises(tc.CheckpointError, match="names builtins.slice"):
        tc.load_plain(path)


def test_containers_nested_deeper_than_the_bound_are_refused(tmp_path):
    deep = []
    for _ in range(150):
        deep = [deep]
    path = tmp_path / "deep.pt"
    path.write_bytes(H.torch_bytes({"x": deep}))
    for load in (tc.safe_load, tc.load_plain):
        with pytest.raises(tc.CheckpointError, match="nest deeper than 100 levels"):
            load(path)
    cyclic = []
    cyclic.append(cyclic)
    path.write_bytes(H.torch_bytes({"x": cyclic}))
    with pytest.raises(tc.CheckpointError, match="refer to themselves"):
        tc.load_plain(path)


def test_numpy_scalars_and_dtypes_still_load(tmp_path):
    import numpy as np
    path = tmp_path / "np.ckpt"
    values = {"f": np.float64(0.25), "i": np.int32(-3), "be": np.dtype(">i4").type(5), "u": np.str_("ab")}
    path.write_bytes(H.torch_bytes(values))
    loaded = tc.safe_load(path)
    assert all(loaded[k] == v and loaded[k].dtype == v.dtype for k, v in values.items())


# ----------------------------------------------------------------------------------------------------------
# Files that are not regular files; one-line errors (item 7)


@pytest.mark.skipif(not Path("/proc/self/pagemap").exists(), reason="needs Linux /proc")
def test_a_link_to_proc_or_a_fifo_is_refused(tmp_path):
    folder, _ = reference_case("vqgan_tiny")
    link = tmp_path / "model.ckpt"
    link.symlink_to("/proc/self/pagemap")
    with pytest.raises(tc.CheckpointError, match="not a regular file"):
        tc.load_model(link, config=folder / "config.yaml")
    fifo = tmp_path / "fifo.ckpt"
    os.mkfifo(fifo)
    with pytest.raises(tc.CheckpointError, match="not a regular file"):
        tc.safe_load(fifo)  # would block forever in open()


@pytest.mark.skipif(not Path("/proc/self/pagemap").exists(), reason="needs Linux /proc")
def test_configs_and_weights_that_are_not_regular_files(tmp_path):
    (tmp_path / "config.yaml").symlink_to("/proc/self/pagemap")
    with pytest.raises(tc.ConfigError, match="config .*config.yaml is not a regular file"):
        tc.build_model(tmp_path / "config.yaml")
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "model.safetensors").symlink_to("/proc/self/pagemap")
    with pytest.raises(tc.CheckpointError, match="model.safetensors is not a regular file"):
        tc.load_model(tmp_path / "ours")
    os.mkfifo(tmp_path / "codes.npy")
    cfg = {"model": "vqgan", "n_embed": 32, "embed_dim": 8, "remap": str(tmp_path / "codes.npy"),
           "ddconfig": {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
                        "in_channels": 3, "out_ch": 3, "resolution": 16, "z_channels": 8}}
    with pytest.raises(tc.ConfigError, match="remap .*codes.npy is not a regular file"):
        tc.build_model(cfg)


def test_a_non_string_state_dict_key_is_a_checkpoint_error(tmp_path):
    folder, _ = reference_case("vqgan_tiny")
    state = tc.safe_load(folder / "model.ckpt")["state_dict"]
    state[7] = torch.zeros(1)
    path = tmp_path / "model.ckpt"
    path.write_bytes(H.torch_bytes({"state_dict": state}))
    with pytest.raises(tc.CheckpointError, match="state_dict key of type int"):
        tc.load_model(path, config=folder / "config.yaml")


def test_a_model_that_rebuilds_masks_loads_without_the_slack(tmp_path, monkeypatch):
    """The stored-size check allows what the checkpoint stores twice over (causal masks are rebuilt, not
    stored): a model whose masks are not covered by the fixed slack still loads."""
    from conftest import tiny_net2net_config
    net = tc.build_model(tiny_net2net_config(block_size=256))
    masks = sum(b.numel() for k, b in net.state_dict().items() if k.endswith(".attn.mask"))
    assert masks > 0
    tc.save_model(net, tmp_path / "net")
    monkeypatch.setattr(tc.checkpoint, "_DERIVED_SLACK", 0)
    assert isinstance(tc.load_model(tmp_path / "net"), tc.Net2Net)
