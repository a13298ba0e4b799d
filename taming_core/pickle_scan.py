"""A pickle's opcodes simulated before it is unpickled: what the C unpickler will allocate, how deep the values
it hashes or frees recursively nest, and what its calls, item opcodes and BUILDs act on.

`scan` walks the opcodes once with a model of the unpickler's stack and memo in which every value is a small
record (its kind, and for tuples, frozensets and slices its height). It refuses, before anything is built:
- a memo index larger than the number of opcodes read so far (the C unpickler sizes its memo to twice the
  largest index and zero-fills it: `LONG_BINPUT 2**28` in 11 bytes would take 4.3 GiB); the memo is charged;
- a tuple, frozenset or slice nested deeper than `MAX_DEPTH`: CPython hashes tuples and frozensets (as dict
  keys, set members) and frees slices by C recursion, which overflows the C stack at ~100,000 levels (a 1 MB
  file of TUPLE1 opcodes). Lists, dicts and sets break that recursion (unhashable; freed through CPython's
  trashcan); their nesting is bounded after loading (`safe_unpickle._check_tree`);
- BUILD on anything but an inert placeholder instance, an OrderedDict (a state dict's `_metadata`) or a
  numpy dtype record: BUILD on a rebuilt tensor calls `Tensor.__setstate__`, whose `set_` resizes its storage
  to a size the file chooses;
- APPEND/SETITEM/ADDITEMS on anything but a list, a dict and a set (on other objects the unpickler calls
  their `append`, `extend`, `__setitem__` or `add`), out-of-band buffers and extension codes (torch never
  writes them).
- dicts and sets whose number or tuple keys (hashes a file can choose) could take more than `MAX_HASH_WORK`
  comparisons if they all collided.
Each opcode is charged what the object it makes costs (`_COST`), so a pickle of a million empty dicts counts
its 240 MB, not its 2 MB. Calls are charged by `safe_unpickle` when they run (it sees the real arguments).
"""
from __future__ import annotations

import _compat_pickle
import pickletools
from typing import Callable

MAX_DEPTH = 100  # nesting of tuples/frozensets/slices (and, after loading, of all containers)
MAX_EXPANDED = 1 << 20  # items of a tuple/frozenset/slice counted with repeats: what hashing one visits
# Numbers and tuples hash to values a file can choose (hash(n) == n below 2**61): n colliding keys in one dict
# or set take n**2 / 2 comparisons. The comparisons all tables of a pickle could take are bounded (a few
# seconds at worst); strings and bytes hash with a random key, objects by identity.
MAX_HASH_WORK = 1 << 27  # ~3 s if every key collides; a dict of 16,000 int keys (optimizer states) fits
_CRAFTABLE = ("scalar", "tuple", "frozenset")
_MEMO_SLOT = 16  # bytes per memo index: the C unpickler grows its table to twice the largest index
_BATCH = 1 << 16  # charges are passed on in batches: one call per opcode would double the scan's time
_COST = {  # bytes the C unpickler allocates for the object an opcode makes (CPython 3.11, 64-bit), roughly
    "EMPTY_LIST": 64, "LIST": 64, "EMPTY_DICT": 240, "DICT": 240, "EMPTY_SET": 216, "FROZENSET": 216,
    "EMPTY_TUPLE": 48, "TUPLE": 48, "TUPLE1": 56, "TUPLE2": 64, "TUPLE3": 72, "BINFLOAT": 24, "FLOAT": 24,
    "NEWOBJ": 128, "NEWOBJ_EX": 128, "OBJ": 128, "INST": 128, "REDUCE": 64, "BUILD": 64,
}
_ITEM_COST = {"list": 8, "dict": 48, "odict": 104, "set": 32}  # per item added (table growth included)
_STR_COST, _INT_COST = 56, 32  # object headers of str/bytes and int


class PickleRefused(ValueError):
    """A pickle the scan refuses; the message says why (lengths and kinds only, never the file's values)."""


_IMMUTABLE = ("tuple", "frozenset", "slice")  # hashed (tuple, frozenset) or freed (slice) by C recursion


class _Rec:
    """One value on the simulated stack or in the memo. kind: see `_KIND_OF_CALL` and the opcodes below;
    height: nesting of immutables (0 for anything else); inner: the largest height among a container's items;
    size: the values hashing an immutable visits, shared items counted each time (1 for anything else);
    total: the sum of a container's items' sizes; name: a short string's value, a global's "module.name", or
    what made an opaque value; first: a tuple's first item (a call's first argument); keys: a container's
    items (a dict's keys) whose hash a file can choose (_CRAFTABLE)."""
    __slots__ = ("kind", "height", "inner", "size", "total", "name", "first", "keys")

    def __init__(self, kind: str, height: int = 0, inner: int = 0, name: str | None = None, first=None,
                 total: int = 0, keys: int = 0):
        self.kind, self.height, self.inner, self.name, self.first = kind, height, inner, name, first
        self.total, self.size, self.keys = total, 1 + total if kind in _IMMUTABLE else 1, keys


_SCALAR = _Rec("scalar")
_LEAF = {"str": _Rec("str"), "bytes": _Rec("bytes")}
_KIND_OF_CALL = {  # what a call of an allowed global returns; any other call: an opaque value
    "builtins.set": "set", "builtins.frozenset": "frozenset", "builtins.slice": "slice", "torch.Size": "tuple",
    "collections.OrderedDict": "odict", "numpy.dtype": "dtype", "builtins.complex": "scalar",
    "numpy.core.multiarray.scalar": "scalar", "numpy._core.multiarray.scalar": "scalar", "_codecs.encode": "bytes",
}
_BUILD_TARGETS = ("object", "odict", "dtype")  # placeholder instances record the state; see module docstring
_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
            "BINUNICODE8"}
_BYTES = {"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"}
_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GETS = {"GET", "BINGET", "LONG_BINGET"}
_REFUSED = {"NEXT_BUFFER": "an out-of-band buffer", "READONLY_BUFFER": "an out-of-band buffer",
            "EXT1": "an extension code", "EXT2": "an extension code", "EXT4": "an extension code"}


def canonical(module: str, name: str) -> tuple[str, str]:
    """Python 2 names as the unpickler maps them for protocols < 3 (`__builtin__.set` is `builtins.set`)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _made(rec: _Rec) -> _Rec:
    if rec.height > MAX_DEPTH:
        raise PickleRefused(f"its tuples, frozensets or slices nest deeper than {MAX_DEPTH} levels (hashing or "
                            "freeing them would recurse in C and crash the process)")
    if rec.size > MAX_EXPANDED:
        raise PickleRefused(f"a tuple, frozenset or slice of it holds more than {MAX_EXPANDED} values counted "
                            "with their repeats (shared parts): hashing it would visit every one")
    return rec


def _immutable(kind: str, items: list) -> _Rec:
    inner = _tallest(items)
    return _made(_Rec(kind, inner + 1, inner, first=items[0] if items else None, total=_sizes(items),
                      keys=_craftable(items)))


def _craftable(items: list) -> int:
    return sum([r.kind in _CRAFTABLE for r in items])


def _table(n: int) -> int:
    """Comparisons a table of n keys with one hash can take."""
    return n * (n - 1) // 2


def _tallest(items: list) -> int:
    return max([r.height for r in items]) if items else 0


def _sizes(items: list) -> int:
    return sum([r.size for r in items])


def _call_result(func: _Rec, args: _Rec) -> _Rec:
    name = func.name if func.kind == "global" else None
    kind = _KIND_OF_CALL.get(name or "", "opaque")
    if kind in ("set", "frozenset"):  # one level above the items of the iterable, the first argument
        iterable = args.first if args.kind == "tuple" and args.first is not None else _SCALAR
        return _made(_Rec(kind, iterable.inner + 1 if kind == "frozenset" else 0, iterable.inner,
                          total=iterable.total, keys=iterable.keys))
    if kind in ("slice", "tuple"):  # slice(*args), Size(args): above the arguments
        return _made(_Rec(kind, args.height, args.inner, total=args.total))
    return _SCALAR if kind == "scalar" else _LEAF["bytes"] if kind == "bytes" else _Rec(kind, name=name)


def _pop_mark(stack: list, marks: list) -> list:
    if not marks:
        raise PickleRefused("an opcode pops to a MARK that was never pushed")
    at = marks.pop()
    items = stack[at:]
    del stack[at:]
    return items


def _pop(stack: list, marks: list, n: int = 1) -> list:
    if len(stack) - n < (marks[-1] if marks else 0):  # the C unpickler never pops below the last MARK
        raise PickleRefused("an opcode pops more values than the stack holds")
    items = stack[len(stack) - n:]
    del stack[len(stack) - n:]
    return items


def _target(stack: list, kinds: tuple, op: str) -> _Rec:
    if stack and stack[-1].kind in kinds:
        return stack[-1]
    if stack and stack[-1].kind == "opaque" and stack[-1].name:  # a rebuilt tensor is the dangerous case
        raise PickleRefused(f"{op} acts on what {stack[-1].name} returned (setting a rebuilt tensor's state "
                            "can resize its storage to any size)")
    what = f"a {stack[-1].kind} value" if stack else "nothing"
    raise PickleRefused(f"{op} acts on {what}; torch pickles apply it to a {' or '.join(kinds)} only")




_CATEGORY = {  # opcode name -> branch of scan, the most frequent first
    **dict.fromkeys(("BINPUT", "LONG_BINPUT", "PUT", "MEMOIZE"), 0), **dict.fromkeys(_GETS, 1),
    **dict.fromkeys(_STRINGS, 2), **dict.fromkeys(_BYTES, 3),
    **dict.fromkeys(("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"), 4),
    **dict.fromkeys(("NONE", "NEWTRUE", "NEWFALSE", "FLOAT", "BINFLOAT"), 5), "MARK": 6,
    **dict.fromkeys(("TUPLE1", "TUPLE2", "TUPLE3"), 7), **dict.fromkeys(("EMPTY_TUPLE", "TUPLE", "FROZENSET"), 8),
    "REDUCE": 9, **dict.fromkeys(("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS"), 10),
    **dict.fromkeys(("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET"), 11), **dict.fromkeys(("LIST", "DICT"), 12),
    "GLOBAL": 13, "STACK_GLOBAL": 14, "BUILD": 15, **dict.fromkeys(("PERSID", "BINPERSID"), 16), "POP": 17,
    "POP_MARK": 18, "DUP": 19, **dict.fromkeys(("NEWOBJ", "NEWOBJ_EX", "OBJ", "INST"), 20),
    **dict.fromkeys(("PROTO", "FRAME"), 21), "STOP": 22,
}
_CONTAINER = {"EMPTY_LIST": "list", "EMPTY_DICT": "dict", "EMPTY_SET": "set"}


def scan(stream, charge: Callable[[int, str], None]) -> None:
    """Simulate the pickle at the stream's position up to its STOP; `charge(n, what)` is called with the bytes
    it will allocate (in batches), and raises to stop. Raises PickleRefused (see the module docstring), or
    ValueError from pickletools for a malformed opcode or a length that runs past the end."""
    stack: list = []
    marks: list[int] = []
    memo: list = []
    cost, top_index, work = 0, -1, 0
    for count, (op, arg, _) in enumerate(pickletools.genops(stream)):
        name = op.name
        cost += _COST.get(name, 8)
        branch = _CATEGORY.get(name, -1)
        if branch == 0:  # PUT, MEMOIZE
            index = len(memo) if name == "MEMOIZE" else arg
            if index > count:
                raise PickleRefused(f"memo index {index} at opcode {count}: a pickler numbers its memo entries "
                                    "in order, and the C unpickler would zero-fill a table that large")
            if len(stack) <= (marks[-1] if marks else 0):
                raise PickleRefused(f"{name} with an empty stack")
            if index >= len(memo):
                memo.extend([None] * (index + 1 - len(memo)))
            memo[index] = stack[-1]
            top_index = max(top_index, index)
        elif branch == 1:  # GET
            if not 0 <= arg < len(memo) or memo[arg] is None:
                raise PickleRefused(f"{name} of memo index {arg}, which was never set")
            stack.append(memo[arg])
        elif branch == 2:
            cost += _STR_COST + len(arg)
            stack.append(_Rec("str", name=arg) if len(arg) <= 256 else _LEAF["str"])
        elif branch == 3:
            cost += _STR_COST + len(arg)
            stack.append(_LEAF["bytes"])
        elif branch == 4:
            cost += _INT_COST + (arg.bit_length() // 8 if isinstance(arg, int) else 0)
            stack.append(_SCALAR)
        elif branch == 5:
            stack.append(_SCALAR)
        elif branch == 6:
            marks.append(len(stack))
        elif branch == 7:  # TUPLE1-3
            stack.append(_immutable("tuple", _pop(stack, marks, int(name[-1]))))
        elif branch == 8:  # EMPTY_TUPLE, TUPLE, FROZENSET
            items = _pop_mark(stack, marks) if name != "EMPTY_TUPLE" else []
            cost += (_ITEM_COST["set"] if name == "FROZENSET" else 8) * len(items)
            stack.append(_immutable("frozenset" if name == "FROZENSET" else "tuple", items))
            work += _table(stack[-1].keys) if name == "FROZENSET" else 0
        elif branch == 9:
            func, args = _pop(stack, marks, 2)
            stack.append(_call_result(func, args))
            work += _table(stack[-1].keys) if stack[-1].kind in ("set", "frozenset") else 0
        elif branch == 10:  # APPEND(S), SETITEM(S), ADDITEMS
            items = _pop_mark(stack, marks) if name.endswith("S") else _pop(stack, marks, 2 if name == "SETITEM" else 1)
            kinds = ("list",) if name.startswith("APPEND") else ("set",) if name == "ADDITEMS" else \
                ("dict", "odict")
            target = _target(stack, kinds, name)
            cost += _ITEM_COST[target.kind] * len(items)
            target.inner = max(target.inner, _tallest(items))
            target.total += _sizes(items)
            added = _craftable(items[0::2] if name.startswith("SETITEM") else items)
            if target.kind != "list":  # each new key may be compared with every earlier one
                work += _table(target.keys + added) - _table(target.keys)
            target.keys += added
        elif branch == 11:
            stack.append(_Rec(_CONTAINER[name]))
        elif branch == 12:  # LIST, DICT
            items = _pop_mark(stack, marks)
            cost += _ITEM_COST["list" if name == "LIST" else "dict"] * len(items)
            keys = _craftable(items if name == "LIST" else items[0::2])
            stack.append(_Rec(name.lower(), 0, _tallest(items), total=_sizes(items), keys=keys))
            work += _table(keys) if name == "DICT" else 0
        elif branch == 13:
            module, _, attr = arg.partition(" ")
            stack.append(_Rec("global", name=".".join(canonical(module, attr))))
        elif branch == 14:
            module, attr = _pop(stack, marks, 2)
            named = module.kind == attr.kind == "str" and module.name is not None and attr.name is not None
            stack.append(_Rec("global", name=".".join(canonical(module.name, attr.name)) if named else None))
        elif branch == 15:
            _pop(stack, marks)
            _target(stack, _BUILD_TARGETS, "BUILD")
        elif branch == 16:
            if name == "BINPERSID":
                _pop(stack, marks)
            stack.append(_Rec("opaque", name="a persistent id"))
        elif branch == 17:
            if marks and marks[-1] == len(stack):  # the C unpickler's POP right after a MARK pops the mark
                marks.pop()
            else:
                _pop(stack, marks)
        elif branch == 18:
            _pop_mark(stack, marks)
        elif branch == 19:
            stack.extend(_pop(stack, marks) * 2)
        elif branch == 20:  # NEWOBJ, NEWOBJ_EX, OBJ, INST: an instance of what find_class returned
            if name in ("OBJ", "INST"):
                _pop_mark(stack, marks)
            else:
                _pop(stack, marks, 3 if name == "NEWOBJ_EX" else 2)
            stack.append(_Rec("object"))
        elif branch == 22:
            break
        elif branch != 21:
            what = _REFUSED.get(name)
            raise PickleRefused(f"it holds {what} ({name}), which torch never writes" if what else
                                f"unsupported opcode {name}")
        if cost > _BATCH:
            charge(cost, "a pickle")
            cost = 0
        if work > MAX_HASH_WORK:
            raise PickleRefused(f"its dicts and sets hold so many number or tuple keys that colliding hashes "
                                f"could take more than {MAX_HASH_WORK} comparisons (hashes of numbers are "
                                "chosen by the file); refused")
    charge(cost + _MEMO_SLOT * (top_index + 1), "a pickle and its memo")
