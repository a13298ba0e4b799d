"""Hostile files and configs (issue 10): each is refused with one clear error, runs no code, and takes bounded
memory.

Every hostile file is generated here, from pickle opcodes and struct where torch would never write it. Loads
that would allocate gigabytes if a check failed run together in one child process under an address-space
limit (RLIMIT_AS: what torch itself maps + 1.5 GiB), which reports each error and its peak RSS.
"""
import io
import json
import pickle
import pickletools
import re
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

import taming_core as tc
from conftest import ORIGINAL_CONFIGS, ROOT, reference_case, tiny_vqgan_config

# ----------------------------------------------------------------------------------------------------------
# Pickle opcodes (pickletools documents each) and a minimal zip writer

PROTO2, PROTO4, STOP, POP, MARK, TUPLE, TUPLE1, REDUCE = b"\x80\x02", b"\x80\x04", b".", b"0", b"(", b"t", \
    b"\x85", b"R"
EMPTY_LIST, APPENDS, EMPTY_DICT, SETITEMS, NONE, NEWTRUE, BINPERSID = b"]", b"e", b"}", b"u", b"N", b"\x88", b"Q"


def global_(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def text(s: str) -> bytes:  # BINUNICODE
    return b"X" + struct.pack("<I", len(s.encode())) + s.encode()


def binbytes8(data: bytes) -> bytes:
    return b"\x8e" + struct.pack("<Q", len(data)) + data


def integer(n: int) -> bytes:  # BININT or LONG1, as pickle writes it
    return pickle.dumps(n, protocol=2)[2:-1]


def call(func: bytes, *args: bytes) -> bytes:
    return func + MARK + b"".join(args) + TUPLE + REDUCE


def system(command: str) -> bytes:
    """os.system(command): what a malicious __reduce__ pickles."""
    return call(global_("os", "system"), text(command))


LOAD_FROM_BYTES = global_("torch.storage", "_load_from_bytes")


def zip_archive(members: list[tuple[str, bytes, int, int, bool]]) -> bytes:
    """(name, stored bytes, crc32, size, deflated) per member -> a zip file, written by hand so that a member can
    hold a deflate stream built without materialising what it inflates to."""
    out, central = bytearray(), bytearray()
    for name, data, crc, size, deflated in members:
        method, n = 8 if deflated else 0, name.encode()
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, len(data), size,
                               len(n), 0, 0, 0, 0, 0, len(out)) + n
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(data), size, len(n), 0) + n
        out += data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(out), 0)
    return bytes(out + central + end)


def torch_bytes(obj, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def legacy_slots(data: bytes) -> list[bytes]:
    """A legacy torch.save file -> its five pickles (magic, protocol, sys info, object, storage keys) and the
    raw storages after them."""
    f, slots = io.BytesIO(data), []
    for _ in range(5):
        start = f.tell()
        for _ in pickletools.genops(f):  # stops after STOP
            pass
        slots.append(data[start:f.tell()])
    return slots + [data[f.tell():]]


# ----------------------------------------------------------------------------------------------------------
# Code in a legacy header slot


def hostile_slot(slot: str, command: str) -> bytes:
    """A header slot that runs `command` and still evaluates to what the format expects, so an unrestricted
    loader would carry on as if nothing happened: protocol = max(os.system(...), 1001); sys info = a dict with
    one more key."""
    if slot == "protocol":
        return PROTO2 + call(global_("builtins", "max"), system(command), integer(1001)) + STOP
    return PROTO2 + EMPTY_DICT + MARK + text("protocol_version") + integer(1001) + text("little_endian") + \
        NEWTRUE + text("x") + system(command) + SETITEMS + STOP


@pytest.fixture(scope="module")
def legacy_reference(tmp_path_factory) -> tuple[Path, list[bytes]]:
    """The reference VQGAN's state dict in the legacy (pre-1.6) format, and its slots."""
    folder, _ = reference_case("vqgan_tiny")
    state = tc.safe_load(folder / "model.ckpt")["state_dict"]
    path = tmp_path_factory.mktemp("legacy") / "model.ckpt"
    path.write_bytes(torch_bytes({"state_dict": state}, legacy=True))
    return path, legacy_slots(path.read_bytes())


def test_untampered_legacy_file_loads(legacy_reference):
    folder, _ = reference_case("vqgan_tiny")
    model = tc.load_model(legacy_reference[0], config=folder / "config.yaml")
    expected = tc.load_model(folder / "model.ckpt")
    assert all(torch.equal(v, expected.state_dict()[k]) for k, v in model.state_dict().items())


def test_hostile_slot_is_a_valid_pickle_of_the_expected_value():
    assert pickle.loads(hostile_slot("protocol", "true")) == 1001  # `true`: a harmless command


@pytest.mark.parametrize("slot", ["protocol", "sys_info"])
def test_code_in_a_legacy_header_slot_never_runs(tmp_path, legacy_reference, slot):
    folder, _ = reference_case("vqgan_tiny")
    marker = tmp_path / "pwned"
    slots = legacy_reference[1]
    i = 1 if slot == "protocol" else 2
    path = tmp_path / "hostile.ckpt"
    path.write_bytes(b"".join(slots[:i]) + hostile_slot(slot, f"touch {marker}") + b"".join(slots[i + 1:]))
    with pytest.raises(tc.UnsafeCheckpointError, match=r"legacy header slot names (builtins.max|os.system)"):
        tc.load_model(path, config=folder / "config.yaml")
    with pytest.raises(tc.UnsafeCheckpointError):
        tc.safe_load(path)  # what load_lpips and train_vqgan's lpips_weights= use
    assert not marker.exists()


def test_taming_convert_prints_one_line_and_runs_nothing(tmp_path, legacy_reference):
    folder, _ = reference_case("vqgan_tiny")
    marker, path = tmp_path / "pwned", tmp_path / "hostile.ckpt"
    slots = legacy_reference[1]
    path.write_bytes(slots[0] + hostile_slot("protocol", f"touch {marker}") + b"".join(slots[2:]))
    run = subprocess.run([sys.executable, "-c", "from taming_core.checkpoint import main; main()", str(path),
                          str(tmp_path / "out"), "--config", str(folder / "config.yaml")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode != 0 and not marker.exists()
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("taming-convert: error:"), run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------
# Memory bombs and absurd configs, in a child process with an address-space limit

CHILD = r"""
import json, resource, sys
import taming_core as tc  # torch maps about 1 GB of address space by itself: the limit counts from here

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":"))

def vm_size():
    return status("VmSize")

limit = vm_size() + (3 << 29)  # + 1.5 GiB
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
results = {"baseline_rss": status("VmHWM"), "peaks": {}}
for name, how, path, config in json.loads(sys.argv[1]):
    before = status("VmHWM")
    try:
        if how == "safe_load":
            tc.safe_load(path)
        elif how == "load_model":
            tc.load_model(path, config)
        else:
            tc.build_model(path)
        results[name] = ["loaded", ""]
    except Exception as e:
        results[name] = [type(e).__name__, str(e)]
    results["peaks"][name] = status("VmHWM") - before  # how far this case raised the high-water mark
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking process (here pytest, which may
# hold a gigabyte after other tests), while VmHWM counts this program only
results["peak_rss"] = status("VmHWM")
print(json.dumps(results))
"""


def nested_bomb(depth: int, fanout: int = 16) -> bytes:
    """A 1.2 MB file that calls _load_from_bytes `fanout` times per level on the same (memoised) bytes: 16**3
    decodes of 1.2 MB at depth 3 (4.4 GB of RSS before the budget). The innermost bytes are what
    pickle.dumps(tensor) embeds: a legacy-format archive."""
    data = torch_bytes(torch.zeros(300_000), legacy=True)
    for _ in range(depth):
        fan = (b"h\x00h\x01" + TUPLE1 + REDUCE) * fanout  # BINGET func, BINGET data, call
        data = PROTO2 + LOAD_FROM_BYTES + b"q\x00" + POP + binbytes8(data) + b"q\x01" + POP + EMPTY_LIST + \
            MARK + fan + APPENDS + STOP
    return data


def deflate_bomb(gib: int = 2) -> bytes:
    """A torch zip whose one storage is `gib` GiB of zeros, deflated to ~1 MB per GiB: the declared size is
    refused before a byte is inflated."""
    archive = torch_bytes(torch.zeros(4))
    members = []
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        for info in zf.infolist():
            data = zf.read(info)
            members.append((info.filename, data, zlib.crc32(data), len(data), False))
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)  # self-contained: repeatable
    stream = block * (gib << 10) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc, mib = 0, bytes(1 << 20)
    for _ in range(gib << 10):
        crc = zlib.crc32(mib, crc)
    name = next(m[0] for m in members if m[0].endswith("data/0"))
    members = [m for m in members if m[0] != name] + [(name, stream, crc, gib << 30, True)]
    return zip_archive(members)


def legacy_storage_bomb() -> bytes:
    """A legacy file whose one storage declares 2**38 floats (1 TiB) and holds none."""
    sys_info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    record = MARK + text("storage") + global_("torch", "FloatStorage") + text("0") + text("cpu") + \
        integer(2 ** 38) + NONE + TUPLE
    return b"".join(pickle.dumps(v, protocol=2) for v in (0x1950A86A20F9469CFC6C, 1001, sys_info)) + \
        PROTO2 + record + BINPERSID + STOP + pickle.dumps(["0"], protocol=2) + struct.pack("<q", 2 ** 38)


def nested_deep(levels: int = 2000) -> bytes:
    data = PROTO2 + NONE + STOP
    for _ in range(levels):
        data = PROTO2 + call(LOAD_FROM_BYTES, binbytes8(data)) + STOP
    return data


def original_yaml(name: str, edit) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(ORIGINAL_CONFIGS / name))
    edit(cfg["model"]["params"])
    return cfg


def ours_with_metadata(folder: Path, config_text: str) -> Path:
    folder.mkdir()
    save_file({"w": torch.zeros(1)}, str(folder / "model.safetensors"), metadata={"taming_core.config": config_text})
    return folder


BOMBS = {  # case -> (error type, message pattern)
    "nested16_depth3": ("CheckpointError", r"storage \d+ \(1200000 bytes\).*decompression bomb"),
    "nested16_depth4": ("CheckpointError", r"storage \d+ \(1200000 bytes\).*decompression bomb"),
    "deflate_2gib": ("CheckpointError", r"zip member .*data/0 \(2147483648 bytes\).*decompression bomb"),
    "binbytes8_1tib": ("CheckpointError", "not a checkpoint.*bytes8"),
    "nested_2000": ("CheckpointError", "nest deeper than 4"),
    "legacy_storage_1tib": ("CheckpointError", r"storage 0 \(1099511627776 bytes\).*decompression bomb"),
    "yaml_n_layer_10000": ("ConfigError", r"transformer.n_layer = 10000"),
    "yaml_ch_1e9": ("ConfigError", r"ddconfig.ch = 1000000000"),
    "yaml_num_res_blocks_1000": ("ConfigError", r"ddconfig.num_res_blocks = 1000"),
    "metadata_ch_1e9": ("ConfigError", r"first_stage.ddconfig.ch = 1000000000"),
    "metadata_12e9_params": ("ConfigError", r"12.\d\de9 parameters .* limit of 5.00e9"),
}


@pytest.fixture(scope="module")
def bomb_results(tmp_path_factory) -> dict:
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux (/proc, RLIMIT_AS)")
    d = tmp_path_factory.mktemp("bombs")
    files = {"nested16_depth3": nested_bomb(3), "nested16_depth4": nested_bomb(4), "deflate_2gib": deflate_bomb(),
             "binbytes8_1tib": PROTO4 + b"\x8e" + struct.pack("<Q", 1 << 40) + bytes(5),
             "nested_2000": nested_deep(), "legacy_storage_1tib": legacy_storage_bomb()}
    cases = []
    for name, data in files.items():
        (d / name).write_bytes(data)
        cases.append((name, "safe_load", str(d / name), None))
    assert len(files["binbytes8_1tib"]) == 16 and len(files["deflate_2gib"]) < 3 << 20
    yamls = {"yaml_n_layer_10000": ("sflckr_transformer.yaml",
                                    lambda p: p["transformer_config"]["params"].update(n_layer=10000)),
             "yaml_ch_1e9": ("imagenet_vqgan.yaml", lambda p: p["ddconfig"].update(ch=1_000_000_000)),
             "yaml_num_res_blocks_1000": ("imagenet_vqgan.yaml", lambda p: p["ddconfig"].update(num_res_blocks=1000))}
    for name, (base, edit) in yamls.items():
        OmegaConf.save(OmegaConf.create(original_yaml(base, edit)), d / f"{name}.yaml")
        cases.append((name, "build_model", str(d / f"{name}.yaml"), None))
    big = {"model": "net2net", "first_stage": {k: v for k, v in tiny_vqgan_config().items() if k != "model"},
           "transformer": {"vocab_size": 32, "block_size": 512, "n_layer": 48, "n_head": 16, "n_embd": 4608}}
    absurd = json.loads(json.dumps(big))
    absurd["first_stage"]["ddconfig"]["ch"] = 1_000_000_000
    for name, cfg in (("metadata_ch_1e9", absurd), ("metadata_12e9_params", big)):
        cases.append((name, "load_model", str(ours_with_metadata(d / name, json.dumps(cfg))), None))
    run = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cases)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", list(BOMBS))
def test_bomb_is_refused_clearly(bomb_results, case):
    error, pattern = BOMBS[case]
    got, message = bomb_results[case]
    assert got == error, f"{case}: {got}: {message}"
    assert re.search(pattern, message), message


def test_repeated_calls_on_one_stored_object_are_charged(tmp_path):
    """A 1 MiB string stored once and handed to _codecs.encode 300 times (each call copies it) and 1 MiB of
    BYTEARRAY8 data count against the budget (4x the file + 64 MiB) like any decoded bytes."""
    s = "a" * (1 << 20)
    encode = PROTO4 + global_("_codecs", "encode") + b"\x94" + text(s) + b"\x94" + POP + POP + EMPTY_LIST + MARK + \
        (b"h\x00h\x01" + TUPLE1 + REDUCE) * 300 + APPENDS + STOP  # MEMOIZE, BINGET: one string, 300 copies
    (tmp_path / "encode").write_bytes(encode)
    with pytest.raises(tc.CheckpointError, match="_codecs.encode"):
        tc.safe_load(tmp_path / "encode")
    array = PROTO4 + b"\x96" + struct.pack("<Q", 1 << 20) + bytes(1 << 20) + STOP  # BYTEARRAY8
    (tmp_path / "array").write_bytes(array)
    assert len(tc.safe_load(tmp_path / "array")) == 1 << 20
    with pytest.raises(tc.CheckpointError, match="decompression bomb"):
        tc.safe_load(tmp_path / "array", max_bytes=1 << 20)


def test_a_file_cannot_change_the_loader_for_later_loads(tmp_path):
    """BUILD may set attributes on what find_class returns: only this load's wrapper, not the shared function."""
    from taming_core import safe_unpickle
    before = safe_unpickle._encode.__defaults__
    build = PROTO2 + global_("_codecs", "encode") + MARK + NONE + EMPTY_DICT + text("__defaults__") + MARK + \
        text("utf-8") + TUPLE + b"s" + TUPLE + b"b" + STOP  # BUILD with (None, {"__defaults__": ("utf-8",)})
    (tmp_path / "build").write_bytes(build)
    try:
        tc.safe_load(tmp_path / "build")
    except tc.CheckpointError:
        pass  # refusing the file is fine too; what matters is below
    assert safe_unpickle._encode.__defaults__ == before == ("latin1",)
    (tmp_path / "utf8").write_bytes(PROTO2 + call(global_("_codecs", "encode"), text("x"), text("utf-8")) + STOP)
    with pytest.raises(tc.UnsafeCheckpointError):  # and a non-latin1 encode is still refused
        tc.safe_load(tmp_path / "utf8")


def test_bombs_stay_in_bounded_memory(bomb_results):
    # torch alone is ~0.25 GB; the bombs asked for 4 GB to 1 TiB. Each case may raise the child's high-water
    # mark of resident memory by at most 256 MiB beyond what importing the library took.
    peaks = bomb_results["peaks"]
    assert max(peaks.values()) < 256 << 20, peaks
    assert bomb_results["peak_rss"] - bomb_results["baseline_rss"] < 512 << 20, bomb_results


# ----------------------------------------------------------------------------------------------------------
# Configs: refused before anything is built, naming the field


def write_original(tmp_path: Path, edit) -> Path:
    path = tmp_path / "project.yaml"
    OmegaConf.save(OmegaConf.create(original_yaml("imagenet_vqgan.yaml", edit)), path)
    return path


@pytest.mark.parametrize("edit, field", [
    (lambda p: p.update(n_embed=0), "n_embed = 0"),
    (lambda p: p["ddconfig"].update(ch=-128), "ddconfig.ch = -128"),
    (lambda p: p["ddconfig"].update(ch_mult=[]), "ddconfig.ch_mult"),
    (lambda p: p["ddconfig"].update(ch=100), r"ddconfig.ch x ddconfig.ch_mult .* multiple of 32"),
    (lambda p: p["ddconfig"].update(dropout=float("nan")), "ddconfig.dropout = nan"),
    (lambda p: p.update(n_embed=True), "n_embed"),
    (lambda p: p.update(ddconfig=[1, 2]), "malformed original config"),
])
def test_bad_sizes_are_named(tmp_path, edit, field):
    with pytest.raises(tc.ConfigError, match=field):
        tc.build_model(write_original(tmp_path, edit))


def test_yaml_tags_are_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"model: vqgan\nn_embed: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(tc.ConfigError, match=r"evil.yaml, line 2: .*python/object/apply:os.system"):
        tc.build_model(path)
    assert not marker.exists()


def test_environment_is_never_interpolated(tmp_path, monkeypatch):
    monkeypatch.setenv("TAMING_SECRET", "hunter2")
    cfg = tiny_vqgan_config(image_key="${oc.env:TAMING_SECRET}")
    OmegaConf.save(OmegaConf.create(cfg), tmp_path / "config.yaml")  # written literally
    for config in (tmp_path / "config.yaml", cfg, OmegaConf.create(cfg)):
        with pytest.raises(tc.ConfigError, match=r"image_key = '\$\{oc.env:TAMING_SECRET\}' is an OmegaConf "
                                                 "interpolation") as e:
            tc.build_model(config)
        assert "hunter2" not in str(e.value)


def test_metadata_config_that_is_not_json(tmp_path):
    folder = ours_with_metadata(tmp_path / "ours", "{'model': 'vqgan',")
    with pytest.raises(tc.ConfigError, match="not valid JSON"):
        tc.load_model(folder)


def test_parameter_limit_is_a_keyword_and_a_flag(tmp_path):
    folder, _ = reference_case("vqgan_tiny")
    with pytest.raises(tc.ConfigError, match="limit of 0.00e9.*max_params"):
        tc.load_model(folder / "model.ckpt", max_params=1000)
    assert isinstance(tc.load_model(folder / "model.ckpt", max_params=None), tc.VQGAN)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        tc.checkpoint.main([str(folder / "model.ckpt"), str(out), "--max-params", "1000"])
    assert str(e.value.code).startswith("taming-convert: error: the vqgan config") and "\n" not in str(e.value.code)
    tc.checkpoint.main([str(folder / "model.ckpt"), str(out), "--max-params", "2e6"])
    assert (out / "model.safetensors").is_file()


def test_taming_convert_config_error_is_one_line(tmp_path):
    folder, _ = reference_case("vqgan_tiny")
    cfg = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"))
    cfg["model"]["params"]["n_embed"] = "many"  # OmegaConf's own message spans several lines
    OmegaConf.save(OmegaConf.create(cfg), tmp_path / "bad.yaml")
    with pytest.raises(SystemExit) as e:
        tc.checkpoint.main([str(folder / "model.ckpt"), str(tmp_path / "out"), "--config", str(tmp_path / "bad.yaml")])
    assert "n_embed" in str(e.value.code) and "\n" not in str(e.value.code)
