"""Reads `torch.save` files (the original `.ckpt`) without executing any code from them.

A restricted unpickler rebuilds tensors, storages, OrderedDict, plain containers, numbers and strings.
Any other global named in the file becomes an inert placeholder class (PyTorch-Lightning 1.0 files key a
dict by a `pytorch_lightning` callback class, so unknown classes must not stop loading); calling such a
global (how a malicious `__reduce__` runs `os.system`) raises `UnsafeCheckpointError`. No module named in
the file is ever imported.
"""
from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch


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
    if not isinstance(storage, torch.Tensor):
        raise CheckpointError("malformed tensor record in checkpoint")
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _rebuild_parameter(data, *_ignored):
    return data


def _rebuild_from_type(func, new_type, args, state):
    return func(*args)  # func came from find_class: a safe rebuild function or a refusing placeholder


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


def _encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError("unexpected _codecs.encode call in checkpoint")
    return text.encode("latin1")


def _np_scalar(dtype, data):
    return np.frombuffer(data, dtype=dtype)[0]


def _np_dtype(name, align=False, copy=False):
    return np.dtype(name)


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch", "Size"): lambda *a: torch.Size(*a),
    ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("_codecs", "encode"): _encode,
    ("numpy.core.multiarray", "scalar"): _np_scalar, ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy", "dtype"): _np_dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, read_storage, legacy: bool = False):
        super().__init__(file)
        self._read_storage = read_storage
        self._legacy = legacy
        self._placeholders: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and name in _DTYPES:
            return _DTYPES[name]
        key = (module, name)
        if key not in self._placeholders:
            self._placeholders[key] = _PlaceholderMeta(name, (Placeholder,), {"__module__": module,
                                                                             "__qualname__": name})
        return self._placeholders[key]

    def persistent_load(self, pid):
        if self._read_storage is None or not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError("unexpected persistent record: not a torch checkpoint")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise UnsafeCheckpointError(f"unexpected storage type in checkpoint: {storage_type!r}")
        if not self._legacy:
            return self._read_storage(key, storage_type.dtype)
        storage = self._read_storage(key, storage_type.dtype, pid[4])  # (.., location, numel, view)
        if len(pid) > 5 and pid[5] is not None:
            _, offset, size = pid[5]
            storage = storage[offset: offset + size]
        return storage


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _load_legacy(f, name: str):
    """The pre-1.6 torch.save layout: magic, protocol, sys_info, the object, storage keys, raw storages."""
    try:
        protocol = pickle.load(f)  # plain ints and dicts: no globals involved
        _RestrictedUnpickler(f, None).load()  # sys_info
        storages: dict[str, torch.Tensor] = {}

        def read_storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
            if key not in storages:
                storages[key] = torch.empty(int(numel), dtype=dtype)  # filled once the data follows
            return storages[key]

        obj = _RestrictedUnpickler(f, read_storage, legacy=True).load()
        keys = _RestrictedUnpickler(f, None).load()
        for key in keys:
            t = storages[str(key)]
            n = int.from_bytes(f.read(8), "little")
            data = f.read(n * t.element_size())
            if n != t.numel() or len(data) != n * t.element_size():
                raise CheckpointError(f"{name} is truncated (storage {key})")
            if n:
                t.view(torch.uint8).view(-1).copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    except CheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{name} is truncated or corrupt (legacy torch format, protocol "
                              f"{locals().get('protocol')}): {e}") from None
    return obj


def _load_from_bytes(data: bytes):
    """Tensors pickled on their own (pickle.dumps(tensor)) embed a torch.save archive as bytes."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafeCheckpointError("unexpected torch.storage._load_from_bytes argument")
    return safe_load(io.BytesIO(data), name="embedded tensor")


_ALLOWED[("torch.storage", "_load_from_bytes")] = _load_from_bytes


def safe_load(path: str | Path | io.BytesIO, name: str | None = None):
    """Unpickle a torch.save file (zip format) or a plain pickle without running code from it."""
    if not isinstance(path, io.BytesIO):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
    name = name or str(path)
    if not zipfile.is_zipfile(path):
        with (open(path, "rb") if isinstance(path, Path) else path) as f:
            f.seek(0)
            try:
                obj = _RestrictedUnpickler(f, None).load()
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
                if isinstance(e, CheckpointError):
                    raise
                raise CheckpointError(f"{name} is not a checkpoint (or is truncated): {e}") from None
            if isinstance(obj, int) and obj == _LEGACY_MAGIC:
                return _load_legacy(f, name)
        return obj
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("data.pkl")]
            if not pkl:
                raise CheckpointError(f"{name} is a zip file but not a torch checkpoint (no data.pkl)")
            prefix = pkl[0][: -len("data.pkl")]
            cache: dict[str, torch.Tensor] = {}

            def read_storage(key: str, dtype: torch.dtype) -> torch.Tensor:
                if key not in cache:
                    raw = bytearray(zf.read(f"{prefix}data/{key}"))
                    cache[key] = (torch.frombuffer(raw, dtype=dtype) if raw
                                  else torch.empty(0, dtype=dtype))
                return cache[key]

            return _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), read_storage).load()
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, KeyError, EOFError, OSError, pickle.UnpicklingError, RuntimeError,
            ValueError, TypeError) as e:
        raise CheckpointError(f"{name} is truncated or corrupt: {e}") from None
