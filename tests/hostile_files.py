"""Generators of the hostile files of issue 29 (each a few bytes to a few MB, built from pickle opcodes, struct
and zlib), shared by tests/test_hostile_files.py and its child processes."""
import io
import pickle
import struct
import zipfile
import zlib

import torch

PROTO2, STOP, POP, MARK, TUPLE, TUPLE1, REDUCE, BUILD = b"\x80\x02", b".", b"0", b"(", b"t", b"\x85", b"R", b"b"
EMPTY_LIST, APPENDS, EMPTY_DICT, EMPTY_TUPLE, SETITEM, NONE, BINPERSID = b"]", b"e", b"}", b")", b"s", b"N", b"Q"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def global_(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def text(s: str) -> bytes:  # BINUNICODE
    return b"X" + struct.pack("<I", len(s.encode())) + s.encode()


def integer(n: int) -> bytes:
    return pickle.dumps(n, protocol=2)[2:-1]


def binput(i: int) -> bytes:  # LONG_BINPUT
    return b"r" + struct.pack("<I", i)


def binget(i: int) -> bytes:  # LONG_BINGET
    return b"j" + struct.pack("<I", i)


def torch_bytes(obj, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def with_data_pkl(pkl: bytes, extra: dict[str, bytes] | None = None) -> bytes:
    """A torch zip archive whose data.pkl is `pkl` (and more members under data/)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pkl)
        for name, data in (extra or {}).items():
            zf.writestr(f"archive/data/{name}", data)
        zf.writestr("archive/version", "3\n")
    return out.getvalue()


def legacy_file(obj_pickle: bytes, keys: list[str] = (), sys_info: bytes | None = None) -> bytes:
    """A legacy-format file: magic, protocol, sys info (or the given slot), the object's pickle, storage keys."""
    info = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    head = pickle.dumps(LEGACY_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
    return head + (sys_info or pickle.dumps(info, protocol=2)) + obj_pickle + pickle.dumps(list(keys), protocol=2)


# ----------------------------------------------------------------------------------------------------------
# Item 1: deep nesting; 2: the memo; 3: messages that expand; 4: BUILD on tensors; 5: rebuild calls


def memo_bomb() -> bytes:
    """NONE; LONG_BINPUT 2**28; POP; EMPTY_DICT: 11 bytes, a 4.3 GiB memo table in the C unpickler."""
    return bytes.fromhex("80024e72000000103" "07d2e")


def memo_bomb_text() -> bytes:
    return b"Np268435456\n0}."  # the text PUT of protocol 0


def deep_tuple_key(levels: int = 1_000_000) -> bytes:
    """{((((...),),),): None}: hashing the key recurses `levels` deep in C."""
    return PROTO2 + EMPTY_DICT + EMPTY_TUPLE + TUPLE1 * levels + NONE + SETITEM + STOP


def deep_frozenset(levels: int = 1_000_000) -> bytes:
    """frozenset([((((...),),),)])."""
    return PROTO2 + global_("builtins", "frozenset") + EMPTY_LIST + MARK + EMPTY_TUPLE + TUPLE1 * levels + \
        APPENDS + TUPLE1 + REDUCE + STOP


def deep_slices(levels: int = 300_000) -> bytes:
    """slice(slice(...slice(None)...)): each level stores the previous slice in the memo, pushes the memoised
    builtins.slice and the previous value, and calls it (BINGET, TUPLE1, REDUCE)."""
    out = [PROTO2, global_("builtins", "slice"), binput(0), POP, NONE]
    for i in range(1, levels + 1):
        out.append(binput(i) + POP + binget(0) + binget(i) + TUPLE1 + REDUCE)
    return b"".join(out) + STOP


def deep_frozensets(levels: int = 100_000) -> bytes:
    """frozenset([frozenset([...])]) through the memoised builtins.frozenset (REDUCE), `levels` deep: hashing a
    frozenset hashes its members, recursively."""
    out = [PROTO2, global_("__builtin__", "frozenset"), binput(0), POP, EMPTY_LIST]  # protocol 2 names
    for i in range(1, levels + 1):
        out.append(binput(i) + POP + binget(0) + EMPTY_LIST + binget(i) + b"a" + TUPLE1 + REDUCE)
    return b"".join(out) + STOP


def shared_tuples(levels: int = 60) -> bytes:
    """{t: None} where t = (t', t'), t' = (t'', t''), ... `levels` deep: 60 levels of 2 memo references each,
    ~500 bytes; hashing t visits 2**60 tuples (the hash is not cached)."""
    out = PROTO2 + EMPTY_DICT + EMPTY_TUPLE + binput(0)
    for i in range(1, levels + 1):
        out += POP + binget(i - 1) + binget(i - 1) + b"\x86" + binput(i)  # TUPLE2
    return out + NONE + SETITEM + STOP


def expanding_list(levels: int = 5, fanout: int = 64) -> bytes:
    """A list nested `levels` deep whose every level holds `fanout` memo references to the level below: ~2 KB
    of opcodes; str() of it would be fanout**levels items (5.7 GiB)."""
    out = EMPTY_LIST + binput(0) + POP
    for i in range(1, levels + 1):
        out += EMPTY_LIST + MARK + binget(i - 1) * fanout + APPENDS + binput(i) + POP
    return out + binget(levels)


def persistent(key: bytes, storage_type: bytes = global_("torch", "FloatStorage"), numel: bytes = integer(4)) -> bytes:
    return MARK + text("storage") + storage_type + key + text("cpu") + numel + TUPLE + BINPERSID


def expanding_key_zip() -> bytes:
    return with_data_pkl(PROTO2 + persistent(expanding_list()) + STOP)


def expanding_storage_type_zip() -> bytes:
    return with_data_pkl(PROTO2 + persistent(text("0"), storage_type=expanding_list()) + STOP)


def expanding_numel_legacy() -> bytes:
    return legacy_file(PROTO2 + persistent(text("0"), numel=expanding_list()) + STOP, ["0"])


def expanding_header_slot() -> bytes:
    return legacy_file(PROTO2 + NONE + STOP, sys_info=PROTO2 + expanding_list() + STOP)


def tensor_record(key: str = "0", numel: int = 4) -> bytes:
    """_rebuild_tensor_v2(storage key, offset 0, size (numel,), stride (1,), False, OrderedDict())."""
    return global_("torch._utils", "_rebuild_tensor_v2") + MARK + persistent(text(key), numel=integer(numel)) + \
        integer(0) + integer(numel) + TUPLE1 + integer(1) + TUPLE1 + b"\x89" + \
        global_("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + TUPLE + REDUCE


def _set_state(numel: int) -> bytes:
    """(tensor, offset 0, size (numel,), stride (1,)): what Tensor.__setstate__ passes to set_."""
    return MARK + binget(0) + integer(0) + integer(numel) + TUPLE1 + integer(1) + TUPLE1 + TUPLE


def build_resize_zip() -> bytes:
    """A tensor over a 0-byte member, then BUILD with a state whose set_ would resize its storage to 3 GiB."""
    return with_data_pkl(PROTO2 + tensor_record(numel=0) + binput(0) + _set_state(3 << 30) + BUILD + STOP,
                         {"0": b""})


def build_resize_legacy() -> bytes:
    return legacy_file(PROTO2 + tensor_record(numel=4) + binput(0) + _set_state(3 << 30) + BUILD + STOP, ["0"]) + \
        struct.pack("<q", 4) + bytes(16)


def dtype_fields(calls: int = 6, fields: int = 1_000_000) -> bytes:
    """numpy.dtype("u1,u1,...") with a million fields, called `calls` times on one memoised string."""
    return PROTO2 + global_("numpy", "dtype") + binput(0) + POP + text("u1," * fields) + binput(1) + POP + \
        EMPTY_LIST + MARK + (binget(0) + binget(1) + TUPLE1 + REDUCE) * calls + APPENDS + STOP


def dtype_syntax_error() -> bytes:
    return PROTO2 + global_("numpy", "dtype") + text("[('a', 'u1'") + TUPLE1 + REDUCE + STOP


def set_of_code_points(calls: int = 26, chars: int = 1_110_000) -> bytes:
    """builtins.set(<a string of `chars` distinct code points>) `calls` times: one object per character."""
    s = "".join(chr(c) for c in range(0x20, 0x20 + chars + 2048) if not 0xD800 <= c < 0xE000)[:chars]
    return PROTO2 + global_("builtins", "set") + binput(0) + POP + text(s) + binput(1) + POP + EMPTY_LIST + \
        MARK + (binget(0) + binget(1) + TUPLE1 + REDUCE) * calls + APPENDS + STOP


def zip_many_members(members: int = 1_000_000) -> bytes:
    """A zip directory of `members` entries (each 0 bytes, no local headers needed before they are read)."""
    entries, name_len = [], 8
    for i in range(members):
        name = f"{i:08x}".encode()
        entries.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, 0, 0, 0, name_len, 0, 0,
                                   0, 0, 0, 0) + name)
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    central = b"".join(entries)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, len(central), len(local), 0)
    zip64_end = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, members, members, len(central),
                            len(local))
    locator = struct.pack("<IIQI", 0x07064B50, 0, len(local) + len(central), 1)
    return local + central + zip64_end + locator + end


# ----------------------------------------------------------------------------------------------------------
# Item 6: sizes checked before reading


def yaml_block_list(mib: int = 16) -> bytes:
    """An original-schema yaml whose remap is a block list of `mib` MiB (PyYAML: ~180 MB a MiB)."""
    head = b"model:\n  target: taming.models.vqgan.VQModel\n  params:\n    remap:\n"
    return head + b"    - 1\n" * ((mib << 20) // 8)


def safetensors_with_header(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def safetensors_big_metadata(mb: int = 95) -> bytes:
    """A safetensors file whose header is `mb` MB of `[[],[],...]` (the library parses it into 2.5 GiB)."""
    body = b"[]," * ((mb * 10**6) // 3)
    return safetensors_with_header(b'{"__metadata__":{"x":"' + b'"},"y":[' + body + b"[]]}")


def big_gpt_config(params: float = 1.07e9) -> dict:
    """Our net2net schema with a tiny first stage and a GPT of about `params` parameters."""
    from conftest import tiny_vqgan_config
    stage = {k: v for k, v in tiny_vqgan_config().items() if k != "model"}
    n_embd = 2048
    n_layer = max(1, round(params / (12 * n_embd * n_embd)))
    return {"model": "net2net", "first_stage": stage, "cond_stage": {"kind": "none"},
            "transformer": {"vocab_size": 32, "block_size": 256, "n_layer": n_layer, "n_head": 16, "n_embd": n_embd},
            "permuter": {"name": "identity"}}


# ----------------------------------------------------------------------------------------------------------
# Item 9: training images


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_of_zeros(width: int, height: int, bit_depth: int = 16, color_type: int = 0) -> bytes:
    """A valid PNG of `width` x `height` zero pixels (grey: color_type 0, RGBA: 6), its IDAT built from one
    compressed block of rows repeated (Z_FULL_FLUSH blocks stand alone), so that a 13000 x 13000 16-bit image
    takes 421 KB and a second to make, without ever holding its pixels."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = bytes(1 + width * channels * bit_depth // 8)  # filter byte 0, then the samples
    rows_per_block = max(1, (1 << 20) // len(row))
    blocks, rest = divmod(height, rows_per_block)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(row * rows_per_block) + c.flush(zlib.Z_FULL_FLUSH)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = c.compress(row * rest) + c.flush()
    adler = 1
    for _ in range(blocks):
        adler = zlib.adler32(row * rows_per_block, adler)
    adler = zlib.adler32(row * rest, adler)
    idat = b"\x78\xda" + block * blocks + tail + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def colliding_keys(keys: int = 50_000) -> bytes:
    """{k * (2**61 - 1): None for k in 1..keys}: every key hashes to 0, so each insertion compares with all the
    earlier keys (keys**2 / 2 comparisons: 1.25e9 for 50,000 keys, ~600 KB)."""
    out = [PROTO2, EMPTY_DICT, MARK]
    for k in range(1, keys + 1):
        out.append(integer(k * (2 ** 61 - 1)) + NONE)
    return b"".join(out) + b"u" + STOP  # SETITEMS
