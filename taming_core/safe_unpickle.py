"""Reads `torch.save` files (the original `.ckpt`) without executing code from them, in bounded memory.

Three layouts are read: the zip format (torch >= 1.6), the legacy format (magic number, protocol version, sys
info, the object, storage keys, raw storages) and plain pickles (`pickle.dumps(tensor)` embeds a legacy archive
as bytes, rebuilt by `torch.storage._load_from_bytes`).

No code from the file runs. A restricted unpickler rebuilds tensors, storages, OrderedDict, plain containers,
numbers and strings. Any other global named in the file becomes an inert placeholder class (PyTorch-Lightning
1.0 files key a dict by a `pytorch_lightning` callback class, so unknown classes must not stop loading);
calling such a global (how a malicious `__reduce__` runs `os.system`) raises `UnsafeCheckpointError`. The
legacy header slots admit no globals at all; `load_plain` (resume checkpoints) admits only tensor rebuilds.
No module named in the file is ever imported.

Memory and the C stack are bounded. Every pickle is simulated opcode by opcode before it is unpickled
(pickle_scan.py: lengths within the file, every object and memo slot charged, memo indices within the opcode
count, tuples/frozensets/slices at most MAX_DEPTH deep, BUILD never on a tensor); every byte a load decodes
(pickled strings, zip members and the zip directory, legacy storages, embedded archives) and what every allowed
call returns is charged to one `_Budget` before it is allocated; zip members are read in chunks against their
declared sizes; embedded archives nest at most `MAX_NESTING` deep; the loaded object's containers nest at most
MAX_DEPTH deep (`_check_tree`). Messages quote the file's values by type and length only (`_kind`).
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import re
import stat
import zipfile
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

from .pickle_scan import MAX_DEPTH, PickleRefused, canonical, scan

EXPANSION = 4  # a load may decode EXPANSION x the file size (+ SLACK): legit files decode to 1-2x, see _Budget
SLACK = 64 << 20  # covers the objects of files of many tiny tensors (20,000 of 2 elements: 47 MB charged)
MAX_BYTES = 64 << 30  # absolute cap on the bytes one load decodes (a 5e9-parameter fp32 model plus Adam fits)
MAX_NESTING = 4  # embedded archives inside embedded archives; plain pickles of tensors need 1
_ZIP_MEMBER_COST = 768  # bytes charged per zip directory entry: zipfile keeps a ZipInfo (~650 B) per member
_NESTED_COST = 256  # bytes charged per embedded archive: the tensor object it becomes
_CHUNK = 1 << 20  # zip members are inflated this much at a time
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class CheckpointError(ValueError):
    """A file that is missing, truncated, or not a checkpoint we can read."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that tries to run code while loading."""


class _PlaceholderMeta(type):
    def __call__(cls, *args, **kwargs):
        raise UnsafeCheckpointError(f"the checkpoint tries to call {cls.__module__}.{cls.__qualname__}; "
                                    "refused (loading never runs code from a file)")


class Placeholder(metaclass=_PlaceholderMeta):
    """Stands for an unknown class; instances only record what the file stored."""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        return obj

    def __setstate__(self, state):
        self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<placeholder for {type(self).__module__}.{type(self).__qualname__}>"


_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
}
_DTYPES = {str(d).removeprefix("torch."): d for d in set(_STORAGE_DTYPES.values())}


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    if not isinstance(storage, torch.Tensor) or not all(isinstance(v, (tuple, list)) and len(v) <= 64
                                                        for v in (size, stride)):
        raise CheckpointError("malformed tensor record in checkpoint")
    return storage.as_strided(tuple(size), tuple(stride), offset)  # a view: torch checks the bounds


def _rebuild_parameter(data, *_ignored):
    return data


def _rebuild_from_type(func, new_type, args, state):
    if not isinstance(args, tuple):
        raise CheckpointError("malformed tensor record in checkpoint")
    return func(*args)  # func came from find_class: a safe rebuild function or a refusing placeholder


def _ordered_dict(*args):
    if args and args != ([],):  # torch pickles an OrderedDict empty, then sets its items (SETITEMS)
        raise CheckpointError(f"collections.OrderedDict is called with {_kind(args[0])}; checkpoints call it "
                              "empty")
    return collections.OrderedDict()


def _encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError("unexpected _codecs.encode call in checkpoint")
    return text.encode("latin1")


class NumpyDtype:
    """A numpy dtype named in a checkpoint (as numpy pickles one: `numpy.dtype(name)`, then BUILD with its
    byte order). Only single-type names (`f8`, `<i4`, `U5`) are accepted: a field string such as `"u1," * 10**6`
    would make numpy build a million-field type. BUILD reaches this record, never a real numpy dtype."""

    def __init__(self, name: str):
        self.name, self.byteorder = name, "="

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 8 and state[1] in ("<", ">", "|", "=")
                and state[2:5] == (None, None, None)):
            raise CheckpointError(f"numpy dtype {self.name}: a state of an unsupported form (structured, "
                                  "sub-array or datetime types are not read)")
        self.byteorder = state[1]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.name).newbyteorder(self.byteorder) if self.byteorder in "<>" else np.dtype(self.name)


def _np_dtype(name, align=False, copy=False):
    if not (isinstance(name, str) and _DTYPE_NAME.fullmatch(name)):
        raise CheckpointError(f"numpy.dtype is called with {_kind(name)}; only single-type names (f8, <i4, U5) "
                              "are read")
    try:
        np.dtype(name)
    except TypeError:
        raise CheckpointError(f"numpy.dtype: {name!r} is not a numpy type name") from None
    return NumpyDtype(name)


def _np_scalar(dtype, data=None):
    if not isinstance(dtype, NumpyDtype) or dtype.dtype.hasobject or not isinstance(data, bytes) \
            or len(data) != dtype.dtype.itemsize:
        raise CheckpointError("a numpy scalar record holds other than a plain type and its bytes")
    return np.frombuffer(data, dtype=dtype.dtype)[0]


def _container_arg(what: str, per_item: int):
    """set / frozenset of a list, tuple or set (never of a string: set(str) makes one object per character),
    charged per item."""
    kind = {"set": set, "frozenset": frozenset}[what]

    def make(*args):
        if len(args) > 1 or (args and not isinstance(args[0], (list, tuple, set, frozenset))):
            raise CheckpointError(f"builtins.{what} is called with {_kind(args[0]) if args else 'nothing'}; "
                                  "checkpoints pass it a list")
        return kind(*args)
    make.per_item = per_item
    return make


def _complex(real=0.0, imag=0.0):
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (real, imag)):
        raise CheckpointError("builtins.complex is called with other than two numbers")
    return complex(real, imag)


def _size(dims=()):
    if not (isinstance(dims, tuple) and len(dims) <= 64 and all(type(d) is int for d in dims)):
        raise CheckpointError("torch.Size is called with other than a short tuple of integers")
    return torch.Size(dims)


_DTYPE_NAME = re.compile(r"[<>|=]?[a-zA-Z][0-9]{0,3}")
_TENSOR_REBUILDS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
}
_ALLOWED = {  # what a call may allocate beyond its arguments is charged in _RestrictedUnpickler._charged
    **_TENSOR_REBUILDS,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch", "Size"): _size,
    ("builtins", "set"): _container_arg("set", 64), ("builtins", "frozenset"): _container_arg("frozenset", 64),
    ("builtins", "complex"): _complex, ("builtins", "slice"): slice,
    ("_codecs", "encode"): _encode,
    ("numpy.core.multiarray", "scalar"): _np_scalar, ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy", "dtype"): _np_dtype,
}
_CALL_COST = 128  # bytes charged per call for the object it returns (a tensor view, a slice, a dtype record)


def _kind(value) -> str:
    """How a message quotes a value from the file: its type and length, never its text (str() of a nested
    list that repeats memoised parts can expand a 2 KB file to gigabytes)."""
    size = f" of length {len(value)}" if isinstance(value, (str, bytes, bytearray, list, tuple, dict)) else ""
    return f"a {type(value).__name__}{size}"


def _brief(e: BaseException) -> str:
    """An exception's message when its arguments are already strings or numbers, else its type only."""
    if all(isinstance(a, (str, int, float)) for a in e.args):
        text = " ".join(" ".join(str(a) for a in e.args).split())
        return text[:200] + ("..." if len(text) > 200 else "")
    return type(e).__name__


class _Budget:
    """The bytes one load may decode, charged before each allocation.

    The limit is EXPANSION x the file size + SLACK, and at most `max_bytes`. Legit files stay well inside:
    torch stores zip members uncompressed and legacy storages raw (1x), a plain pickle holds each tensor's
    archive as bytes and then its storage (2x). Converting fp16 weights into an fp32 model happens after
    loading, in memory bounded by the config's size limit, and is not charged here."""

    def __init__(self, name: str, file_size: int, max_bytes: int):
        self.name, self.file_size, self.used = name, file_size, 0
        self.limit = min(int(max_bytes), EXPANSION * file_size + SLACK)

    def charge(self, n: int, what: str) -> None:
        self.used += n
        if self.used > self.limit:
            raise CheckpointError(f"{self.name}: {what} would take the bytes decoded from this {self.file_size}-"
                                  f"byte file past {self.limit} ({EXPANSION}x its size + {SLACK >> 20} MiB, at most "
                                  "max_bytes); refused as a decompression bomb")


class _Bounded:
    """A seekable binary stream whose read(n) never asks for more than what is left: a plain file's
    read(2**40) allocates 1 TiB before it finds out the file is short."""

    def __init__(self, f):
        self._f = f
        self.size = f.seek(0, os.SEEK_END)
        f.seek(0)

    def read(self, n: int | None = -1) -> bytes:
        left = self.size - self._f.tell()
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def readline(self, n: int | None = -1) -> bytes:
        return self._f.readline(-1 if n is None else n)

    def readinto(self, buffer) -> int:
        return self._f.readinto(buffer)

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True


class _RestrictedUnpickler(pickle.Unpickler):
    """find_class hands out only the rebuild functions of `_ALLOWED` (and inert placeholders); with
    `header=True` (legacy header slots) it hands out nothing, with `plain=True` (resume checkpoints) only the
    tensor rebuilds and OrderedDict."""

    def __init__(self, file, reader: _Reader, read_storage=None, legacy: bool = False, header: bool = False):
        super().__init__(file)
        self._reader, self._read_storage = reader, read_storage
        self._legacy, self._header = legacy, header
        self._placeholders: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        module, name = canonical(module, name)  # as pickle.Unpickler.find_class does for protocols < 3
        where = f"{module[:100]}.{name[:100]}"
        if self._header:
            raise UnsafeCheckpointError(f"a legacy header slot names {where}; header slots hold plain "
                                        "numbers, strings and dicts only (refused, nothing was run)")
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if self._reader.plain and (module, name) not in _TENSOR_REBUILDS:
            raise UnsafeCheckpointError(f"{self._reader.budget.name} names {where}; a resume checkpoint holds "
                                        "tensors and plain containers only (refused, nothing was run)")
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return self._reader.load_from_bytes
        if (module, name) in _ALLOWED:
            return self._charged(_ALLOWED[(module, name)], where)
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        key = (module, name)
        if key not in self._placeholders:
            self._placeholders[key] = _PlaceholderMeta(name[:100], (Placeholder,), {"__module__": module[:100],
                                                                                  "__qualname__": name[:100]})
        return self._placeholders[key]

    def _charged(self, fn, what: str):
        """`fn` behind a wrapper made for this load: each call charges what its arguments may copy and what it
        returns (a file can call a rebuild function many times on one memoised object), and a pickle's BUILD
        opcode, which can set attributes on what find_class returns, reaches only this wrapper, never the
        shared function."""
        budget, per_item = self._reader.budget, getattr(fn, "per_item", 8)

        def call(*args):
            budget.charge(_CALL_COST + sum(_copy_cost(a, per_item) for a in args), f"a call of {what}")
            return fn(*args)
        return call

    def persistent_load(self, pid):
        if self._read_storage is None or not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError("unexpected persistent record: not a torch checkpoint")
        storage_type, key = pid[1], pid[2]
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"a storage record names {_kind(storage_type)} as its type")
        if not (isinstance(key, str) and 0 < len(key) <= 64):
            raise CheckpointError(f"a storage record's key is {_kind(key)}, not a short string")
        if not self._legacy:
            return self._read_storage(key, storage_type.dtype)
        storage = self._read_storage(key, storage_type.dtype, pid[4])  # (.., location, numel, view)
        if len(pid) > 5 and pid[5] is not None:
            view = pid[5]
            if not (isinstance(view, tuple) and len(view) == 3 and all(type(v) is int for v in view[1:])):
                raise CheckpointError(f"storage {key}: its view record is {_kind(view)}, not (key, offset, size)")
            storage = storage[view[1]: view[1] + view[2]]
        return storage


def _copy_cost(arg, per_item: int = 8) -> int:
    """Bytes a rebuild function may allocate from one argument: its length for bytes and strings, `per_item`
    per item for containers (their items were charged when they were built), 8 for anything else."""
    if isinstance(arg, (bytes, bytearray, str)):
        return len(arg)
    if isinstance(arg, (list, tuple, dict, set, frozenset)):
        return per_item * (len(arg) + 1)
    return 8


def _check_tree(obj, name: str, plain: bool) -> None:
    """Refuse a loaded object whose containers nest deeper than MAX_DEPTH (code that walks it recursively,
    deepcopy in Optimizer.load_state_dict among it, would fail), or cyclic; with `plain`, one that holds other
    than tensors, numbers, strings, None and lists, tuples and dicts of them. Iterative; an object reached
    again is walked again only when reached deeper, so the walk costs at most MAX_DEPTH x the objects."""
    deepest: dict[int, int] = {}
    stack = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{name}: its containers nest deeper than {MAX_DEPTH} levels (or refer to "
                                  "themselves); refused")
        if isinstance(value, dict):
            items = [*value.keys(), *value.values()]
        elif isinstance(value, (list, tuple, set, frozenset)):
            items = list(value)
        elif isinstance(value, slice):
            items = [value.start, value.stop, value.step]
        elif isinstance(value, Placeholder):
            items = list(value.__dict__.values())
        else:
            if plain and not isinstance(value, (torch.Tensor, str, bytes, int, float, complex, type(None))):
                raise CheckpointError(f"{name} holds {_kind(value)}; a resume checkpoint holds tensors, numbers, "
                                      "strings and lists, tuples and dicts of them only")
            continue
        if plain and not isinstance(value, (dict, list, tuple)):
            raise CheckpointError(f"{name} holds {_kind(value)}; a resume checkpoint holds lists, tuples and "
                                  "dicts only")
        if deepest.get(id(value), -1) >= depth:
            continue
        deepest[id(value)] = depth
        stack.extend((v, depth + 1) for v in items)


@contextmanager
def _corrupt(name: str, what: str):
    """Turn the errors a malformed file raises deep inside pickle, zipfile or torch into one CheckpointError."""
    try:
        yield
    except CheckpointError as e:
        if str(e).startswith(name):
            raise
        raise type(e)(f"{name}: {e}") from None  # raised by a rebuild function, which does not know the file
    except PickleRefused as e:
        raise CheckpointError(f"{name} is {what}: {e}") from None
    except (MemoryError, RecursionError) as e:
        raise CheckpointError(f"{name}: {type(e).__name__} while decoding it") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            RuntimeError, OverflowError, SyntaxError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{name} is {what}: {type(e).__name__}: {_brief(e)}") from None


def _is_plain(obj, depth: int = 0) -> bool:
    """Numbers, strings, and lists/dicts of them: all a legacy header slot may hold."""
    if isinstance(obj, (bool, int, str)):
        return True
    if depth < 4 and isinstance(obj, list):
        return all(_is_plain(v, depth + 1) for v in obj)
    if depth < 4 and isinstance(obj, dict):
        return all(isinstance(k, str) and _is_plain(v, depth + 1) for k, v in obj.items())
    return False


class _Reader:
    """One safe_load call: its budget, the nesting depth of embedded archives, and the three layouts."""

    def __init__(self, budget: _Budget, plain: bool = False):
        self.budget, self.depth, self.plain = budget, 0, plain

    def load(self, stream, name: str):
        is_zip = stream.read(4) == b"PK\x03\x04"  # as torch.load decides; an EOCD near the end is not enough
        stream.seek(0)
        if is_zip:
            with _corrupt(name, "truncated or corrupt"):
                return self._zip(stream, name)
        with _corrupt(name, "not a checkpoint (or is truncated)"):
            obj = self._unpickle(stream)
        if type(obj) is int and obj == _LEGACY_MAGIC:
            with _corrupt(name, "truncated or corrupt (legacy torch format)"):
                return self._legacy(stream, name)
        return obj

    def load_from_bytes(self, data):
        """`torch.storage._load_from_bytes`: a tensor pickled on its own embeds a torch.save archive as bytes."""
        if not isinstance(data, (bytes, bytearray)):
            raise UnsafeCheckpointError("unexpected torch.storage._load_from_bytes argument")
        if self.depth >= MAX_NESTING:
            raise CheckpointError(f"{self.budget.name}: embedded archives nest deeper than {MAX_NESTING} "
                                  "levels; refused")
        self.budget.charge(_NESTED_COST, "an embedded archive")
        self.depth += 1
        try:
            return self.load(io.BytesIO(data), f"{self.budget.name} (embedded archive)")
        finally:
            self.depth -= 1

    def _unpickle(self, stream, read_storage=None, legacy: bool = False, header: bool = False):
        """Scan the pickle at the stream's position (pickle_scan: every length it claims must fit in what is
        left, every object and memo slot is charged, nesting and BUILD targets are checked), then unpickle it."""
        start = stream.tell()
        scan(stream, self.budget.charge)
        stream.seek(start)
        return _RestrictedUnpickler(stream, self, read_storage, legacy, header).load()

    def _member(self, zf: zipfile.ZipFile, name: str) -> bytearray:
        """A zip member, its declared size charged before anything is read, inflated a chunk at a time."""
        info = zf.getinfo(name)
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(f"{self.budget.name}: zip member {name} uses compression "
                                  f"{info.compress_type}; torch checkpoints are stored or deflated")
        self.budget.charge(info.file_size, f"zip member {name} ({info.file_size} bytes)")
        data, got = bytearray(info.file_size), 0
        with zf.open(info) as f:
            view = memoryview(data)
            while got < len(data):
                chunk = f.read(min(_CHUNK, len(data) - got))
                if not chunk:
                    break
                view[got: got + len(chunk)] = chunk
                got += len(chunk)
        if got != len(data):
            raise CheckpointError(f"{self.budget.name}: zip member {name} is truncated")
        return data

    def _zip(self, stream, name: str):
        end = zipfile._EndRecData(stream)  # the central directory's size and entry count, read from its end
        if end is None:
            raise CheckpointError(f"{name} starts as a zip file but has no zip directory (truncated?)")
        members = end[zipfile._ECD_ENTRIES_TOTAL]
        self.budget.charge(end[zipfile._ECD_SIZE] + _ZIP_MEMBER_COST * members,
                           f"a zip directory of {members} members")
        with zipfile.ZipFile(stream) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("data.pkl")]
            if not pkl:
                raise CheckpointError(f"{name} is a zip file but not a torch checkpoint (no data.pkl)")
            prefix = pkl[0][: -len("data.pkl")]
            cache: dict[str, torch.Tensor] = {}

            def read_storage(key: str, dtype: torch.dtype) -> torch.Tensor:
                if key not in cache:
                    raw = self._member(zf, f"{prefix}data/{key}")
                    cache[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
                return cache[key]

            return self._unpickle(io.BytesIO(self._member(zf, pkl[0])), read_storage)

    def _header(self, stream, slot: str, valid) -> object:
        value = self._unpickle(stream, header=True)
        if not valid(value):
            raise CheckpointError(f"{self.budget.name}: the legacy {slot} slot holds {_kind(value)}, not what the "
                                  "format defines")
        return value

    def _legacy(self, stream, name: str):
        """The pre-1.6 layout after the magic number. Storages are declared (dtype, numel) in the object's
        pickle and filled from the raw bytes that follow the storage keys."""
        self._header(stream, "protocol version", lambda v: type(v) is int and v == _LEGACY_PROTOCOL)
        self._header(stream, "sys info", lambda v: isinstance(v, dict) and _is_plain(v))
        storages: dict[str, torch.Tensor] = {}

        def read_storage(key: str, dtype: torch.dtype, numel) -> torch.Tensor:
            if key not in storages:
                if type(numel) is not int or numel < 0:
                    raise CheckpointError(f"{name}: storage {key} declares {_kind(numel)} as its element count")
                nbytes = numel * dtype.itemsize
                self.budget.charge(nbytes, f"storage {key} ({nbytes} bytes)")
                # over a bytearray: a storage torch cannot resize (filled below; every one must be)
                storages[key] = torch.frombuffer(bytearray(nbytes), dtype=dtype) if nbytes else \
                    torch.empty(0, dtype=dtype)
            return storages[key]

        obj = self._unpickle(stream, read_storage, legacy=True)
        keys = self._header(stream, "storage keys", lambda v: isinstance(v, list) and
                            all(isinstance(k, str) for k in v))
        if set(keys) != set(storages):
            raise CheckpointError(f"{name}: the storage keys do not match the storages the object uses")
        for key in keys:
            t = storages[key]
            n = int.from_bytes(stream.read(8), "little")
            if n != t.numel():
                raise CheckpointError(f"{name} is truncated or corrupt (storage {key}: {n} elements, "
                                      f"declared {t.numel()})")
            if n and stream.readinto(memoryview(t.view(torch.uint8).numpy())) != t.numel() * t.element_size():
                raise CheckpointError(f"{name} is truncated (storage {key})")
        return obj


def regular_file(path: str | Path, what: str = "checkpoint", error: type[Exception] | None = None) -> int:
    """The size of the regular file at `path` (symlinks followed); FileNotFoundError if there is none,
    `error` (default CheckpointError) for a FIFO, device, directory or a file of /proc, /sys or /dev (their sizes
    are not what reading them returns, and reading some blocks or fails)."""
    error = error or CheckpointError
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except OSError as e:
        raise error(f"{what} {path} cannot be read: {e.strerror}") from None
    real = os.path.realpath(path)
    if not stat.S_ISREG(st.st_mode) or real.startswith(("/proc/", "/sys/", "/dev/")):
        raise error(f"{what} {path} is not a regular file (it is {real}); refused")
    return st.st_size


def safe_load(path: str | Path | io.BytesIO, name: str | None = None, max_bytes: int = MAX_BYTES,
              plain: bool = False):
    """Unpickle a torch.save file (zip or legacy format) or a plain pickle without running code from it.

    Raises CheckpointError (UnsafeCheckpointError for code) for anything malformed, hostile, nested deeper than
    MAX_DEPTH, or decoding to more than EXPANSION x its size (at most `max_bytes`). plain: see load_plain."""
    if isinstance(path, io.BytesIO):
        name, size, opened = name or "checkpoint", len(path.getbuffer()), nullcontext(path)
    else:
        size = regular_file(path)
        name, opened = name or str(path), open(path, "rb")
    with opened as f:
        reader = _Reader(_Budget(name, size, max_bytes), plain)
        obj = reader.load(_Bounded(f), name)
    _check_tree(obj, name, plain)
    return obj


def load_plain(path: str | Path | io.BytesIO, name: str | None = None, max_bytes: int = MAX_BYTES):
    """A resume checkpoint (torch.save of tensors, numbers, strings, None and lists, tuples and dicts of
    them) -> that object, with safe_load's guarantees; any other global it names (numpy, a class) is refused
    (UnsafeCheckpointError). Use it instead of torch.load(weights_only=True), which lets a file resize a
    tensor's storage to any size (BUILD) and hash tuples nested a million deep."""
    return safe_load(path, name, max_bytes, plain=True)
