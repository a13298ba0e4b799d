"""Which fp32 products a GPT's decode steps are fastest with on this host, measured at load and cached per host.

Shape legend: B batch (rows of a decode step), E width, T context.

oneDNN-packed weight copies (packed.py) were faster than plain F.linear on the AMD EPYC host this project was
first measured on, and slower on an Intel Xeon with AMX (issue 28: 17.1 ms against 13.4 ms per decode step of a
12 x 512 GPT). Which one wins also changes with the rows of a product. `calibrate_matmul` times one decode step
of the model's own shapes at batch 1, 2 and 4 (batch 1 with guidance is 2 rows) on both paths, rounds
interleaved so that load changes hit both alike, and gives the row count from which packing pays. Both paths
compute the same sums in fp32 (to float rounding), so the choice changes speed, not samples.
The choice is cached in $XDG_CACHE_HOME/taming-core/calibration.json (default ~/.cache/taming-core/), keyed by
CPU model, flags, torch version, threads and the GPT's shapes; a cache that cannot be read or written costs a
warning and a new measurement, never an error.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .gpt import GPT
from .host import host_info
from .net2net import Net2Net
from .packed import pack_gpt, set_packed_from_rows
from .sampling import gpt_of

MATMULS = ("auto", "packed", "plain")
BATCHES = (1, 2, 4)  # decode-step rows calibrated: one image, one guided image (or two), four
BUDGET_S = 0.25  # timed steps of a calibration take about this long (the bundled GPT: ~2 ms a step here)
ROUNDS = (3, 15)  # at least, at most
# Packed copies are used where they are this much faster: they cost the weights' bytes once more, and
# differences of a few percent are within the noise of a shared CPU
MARGIN = 0.03

# (path, batch) -> seconds of one decode step; a fake one in tests
StepTimer = Callable[[str, int], float]


@dataclass
class MatmulChoice:
    """The products a GPT samples with: packed copies from `packed_from_rows` rows of a product on (None:
    plain products only), why (`how`: forced, measured, cached), and the fastest ms per decode step of each
    path by batch when measured."""

    packed_from_rows: int | None
    how: str
    step_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # path -> {batch: ms}
    key: str = ""

    def describe(self) -> str:
        use = ("plain products" if self.packed_from_rows is None else "packed products" if self.packed_from_rows
               == 1 else f"packed products from {self.packed_from_rows} rows on, plain below")
        times = "; ".join(f"{path} " + ", ".join(f"B{b} {ms:.2f} ms" for b, ms in by.items())
                          for path, by in self.step_ms.items())
        return f"{use} ({self.how}{': ' + times if times else ''})"


def cache_path() -> Path:
    """$XDG_CACHE_HOME/taming-core/calibration.json, ~/.cache/taming-core/ when XDG_CACHE_HOME is unset."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "taming-core" / "calibration.json"


def cache_key(gpt: GPT, batches: tuple[int, ...] = BATCHES) -> str:
    """What a measurement holds for: CPU model and flags, torch version and threads, the GPT's shapes."""
    host, c = host_info(), gpt.config
    flags = ",".join(f for f, on in host["flags"].items() if on) or "-"
    return (f"{host['cpu']} | {flags} | torch {host['torch']} | {torch.get_num_threads()} threads | "
            f"GPT L{c.n_layer} E{c.n_embd} nh{c.n_head} V{c.vocab_size} T{c.block_size} | "
            f"B{','.join(map(str, batches))}")


def read_cache(path: Path) -> dict:
    """key -> stored choice; {} (with a warning where the file exists) when the file cannot be read."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except (FileNotFoundError, NotADirectoryError):  # nothing stored yet (or nowhere to store it: write_cache says)
        return {}
    except (OSError, ValueError) as e:
        warnings.warn(f"calibration cache {path} ignored ({e}); measuring again", stacklevel=3)
        return {}


def write_cache(path: Path, key: str, choice: MatmulChoice) -> None:
    """Store `choice` under `key`; a failure is a warning (the choice still holds for this run)."""
    try:
        data = read_cache(path) if path.exists() else {}
        data[key] = asdict(choice)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(path)  # whole files only: two apps starting at once never leave half a file
    except OSError as e:
        warnings.warn(f"calibration cache {path} not written ({e})", stacklevel=3)


def _cached(path: Path, key: str) -> MatmulChoice | None:
    entry = read_cache(path).get(key)
    try:
        rows = entry["packed_from_rows"]
        if rows is not None and not (isinstance(rows, int) and rows >= 1):
            raise ValueError(rows)
        return MatmulChoice(rows, "cached", entry.get("step_ms", {}), key)
    except (TypeError, KeyError, ValueError):
        if entry is not None:
            warnings.warn(f"calibration cache {path}: entry for this host unreadable; measuring again", stacklevel=3)
        return None


@torch.no_grad()
def step_timer(gpt: GPT) -> StepTimer:
    """A StepTimer of real decode steps of `gpt` (packed by this call, copies kept): one new token after half
    the block of cached positions (random keys and values: the time does not depend on them)."""
    pack_gpt(gpt, 1)
    caches = {}

    def time_step(path: str, batch: int) -> float:
        if batch not in caches:
            cache = caches[batch] = gpt.new_cache(batch)
            gpt(torch.zeros(batch, 1, dtype=torch.long, device=cache.k.device), cache)  # the cache's first call
            cache.k.normal_(), cache.v.normal_()
        cache = caches[batch]
        cache.length = gpt.config.block_size // 2
        set_packed_from_rows(gpt, 1 if path == "packed" else None)
        tok = torch.zeros(batch, 1, dtype=torch.long, device=cache.k.device)
        t = time.perf_counter()
        gpt(tok, cache, last_only=True)
        return time.perf_counter() - t
    return time_step


def calibrate_matmul(gpt: GPT, timer: StepTimer | None = None, batches: tuple[int, ...] = BATCHES,
                     budget_s: float = BUDGET_S) -> MatmulChoice:
    """Time a decode step at each batch on packed and plain products (rounds interleaved, the fastest of each) -> the
    smallest row count from which packed is faster (by MARGIN) at that and every larger batch measured (None:
    plain everywhere). Steps of more rows than measured (a prefill) follow the largest batch measured."""
    timer = timer or step_timer(gpt)
    paths = ("packed", "plain")
    warm = {(p, b): timer(p, b) for b in batches for p in paths}  # first calls: caches, copies, allocations
    per_round = sum(timer(p, b) for b in batches for p in paths) or 1e-9
    rounds = max(ROUNDS[0], min(ROUNDS[1], int(budget_s / per_round)))
    times = {k: [] for k in warm}
    for _ in range(rounds):
        for b in batches:
            for p in paths:
                times[p, b].append(timer(p, b))
    ms = {k: 1e3 * min(v) for k, v in times.items()}  # other work only ever adds time: the fastest round
    rows = None
    for b in sorted(batches, reverse=True):  # packed from the smallest batch on which it keeps winning
        if ms["packed", b] > (1 - MARGIN) * ms["plain", b]:
            break
        rows = b
    step_ms = {p: {str(b): round(ms[p, b], 3) for b in batches} for p in paths}
    return MatmulChoice(rows, f"measured, {rounds} rounds", step_ms)


def choose_matmul(model: Net2Net | GPT, matmul: str = "auto", cache: Path | None | bool = True,
                  timer: StepTimer | None = None) -> MatmulChoice:
    """'auto' | 'packed' | 'plain' -> the MatmulChoice for the fp32 GPT of `model` on this CPU (give it to
    prepare_for_sampling). 'auto': the cached measurement for this host and shapes, else calibrate_matmul (the
    GPT is packed by it) and cache it. cache: True for cache_path(), a path, or False/None for no cache."""
    gpt = gpt_of(model)
    if matmul not in MATMULS:
        raise ValueError(f"matmul must be one of {', '.join(MATMULS)}, got {matmul!r}")
    if matmul != "auto":
        return MatmulChoice(1 if matmul == "packed" else None, "forced")
    path = cache_path() if cache is True else Path(cache) if cache else None
    key = cache_key(gpt)
    found = _cached(path, key) if path is not None else None
    if found is not None:
        return found
    choice = calibrate_matmul(gpt, timer)
    choice.key = key
    if path is not None:
        write_cache(path, key, choice)
    return choice
