"""How many intra-op threads each part of a generation uses: a policy that survives a busy neighbour.

torch's OpenMP threads meet at a barrier after every op, and by default wait there spinning. When another
process holds one of the cores, the thread that shares it waits for the scheduler at each barrier: on a busy
2-core machine 2 threads took 1.5-140x the time of 1 for every part of a generation (bench/results/threads.json;
issue 28: 35-55x for the segmenter), 0.7-2.5x with OMP_WAIT_POLICY=PASSIVE (app.py sets it).
`ThreadPolicy("auto")` looks at how much of the CPUs other processes used over a short window (/proc/stat less
this process's own time, /proc/self/stat: cheap, once per generation) and gives a part no more threads than
there are free cores, and at most the measured best for that part (best_threads()). A number fixes the
threads of every part. torch.set_num_threads (OpenMP builds) sets the calling thread's threads and the default
of threads that have not run a parallel op yet: call `use` in the thread that does the work, one generation
(or one batch of them) at a time.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from typing import Iterator

import torch

PARTS = ("gpt", "prefill", "decode", "segmenter")  # a GPT decode step, the condition prefill, a first-stage
# decode (previews, the image), the photo segmenter
# The most threads each part is given when no other process holds a core: from bench/threads.py
# (bench/results/threads.json), measured so far only on a busy 2-core AMD EPYC (a training process on one core,
# other tests). With OpenMP's default (spinning) wait, 2 threads took 1.5-140x the time of 1 for every part. With
# OMP_WAIT_POLICY=PASSIVE (app.py sets it) 2 threads took 0.7-2.5x the time of 1: more for the GPT step, the
# prefill and the segmenter, never slower for the first-stage decode (4 conditions in 2 runs: 0.68-0.98x).
# A part gets 2 only where 2 was never slower in any measured condition.
BEST = {"gpt": 1, "prefill": 1, "decode": 1, "segmenter": 1}
BEST_PASSIVE = {**BEST, "decode": 2}


def best_threads() -> dict[str, int]:
    """BEST, or BEST_PASSIVE under OMP_WAIT_POLICY=PASSIVE (threads that sleep at a barrier)."""
    return dict(BEST_PASSIVE if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE" else BEST)
WINDOW_S = 0.05  # the shortest window the busy share is measured over (5 jiffies of a core at USER_HZ 100)
MAX_AGE_S = 2.0  # a window longer than this says little about now: a new one is measured


def cpu_times(stat: str) -> tuple[int, int]:
    """The aggregate 'cpu' line of /proc/stat's text -> (busy, total) jiffies since boot, over all cores.
    Idle and iowait are free; user, nice (a niced neighbour holds a core too), system, irq, softirq and steal
    (the hypervisor's) are busy; guest time is already inside user."""
    for line in stat.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in (fields[1:9] + ["0"] * 8)[:8])
            busy = user + nice + system + irq + softirq + steal
            return busy, busy + idle + iowait
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def own_time(stat: str) -> int:
    """/proc/self/stat's text -> this process's user + system jiffies (its threads included)."""
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of proc(5)


def others_busy_cores(before: tuple[int, int, int], after: tuple[int, int, int], cores: int) -> float:
    """Snapshots (busy, total, own) at the start and end of a window -> the cores other processes kept busy
    on average over it (0 .. cores)."""
    busy, total, own = (b - a for a, b in zip(before, after))
    if total <= 0:
        return 0.0
    return min(max((busy - own) / total * cores, 0.0), float(cores))


class ThreadPolicy:
    """Threads per part of a generation: mode "auto" (BEST, no more than the free cores; `measure` once per
    generation) or a number for every part."""

    def __init__(self, mode: str | int = "auto", best: dict[str, int] | None = None, cores: int | None = None,
                 proc: str = "/proc"):
        self.mode = parse_threads(mode) if isinstance(mode, str) else int(mode)
        if self.mode != "auto" and self.mode < 1:
            raise ValueError(f"threads must be auto or at least 1, got {mode!r}")
        self.best = best_threads() if best is None else dict(best)
        self.cores = cores or os.cpu_count() or 1
        self.proc = proc
        self.others_busy = 0.0  # cores other processes used in the last window measured
        self._last: tuple[float, tuple[int, int, int]] | None = None  # (when, snapshot)

    def snapshot(self) -> tuple[int, int, int]:
        """(busy, total, own) jiffies now."""
        with open(f"{self.proc}/stat") as f:
            busy, total = cpu_times(f.read())
        with open(f"{self.proc}/self/stat") as f:
            return busy, total, own_time(f.read())

    def measure(self, window_s: float = WINDOW_S) -> float:
        """The cores other processes keep busy, over the time since the last call when that lies between
        window_s and MAX_AGE_S, else over a new window of window_s (a sleep); stored in `others_busy`. A host
        without /proc counts as quiet."""
        if self.mode != "auto":
            return self.others_busy
        try:
            now = time.monotonic()
            if self._last is None or not window_s <= now - self._last[0] <= MAX_AGE_S:
                self._last = (now, self.snapshot())
                time.sleep(window_s)
            after = self.snapshot()
            self.others_busy = others_busy_cores(self._last[1], after, self.cores)
            self._last = (time.monotonic(), after)
        except (OSError, ValueError, IndexError):
            self.others_busy = 0.0
        return self.others_busy

    def threads_for(self, part: str) -> int:
        """Intra-op threads for `part` (PARTS) after the last `measure`: the fixed number, or in "auto" the
        measured best for the part, no more than the cores left free (a core counts as taken from a third of
        its time on: a barrier waits for the slowest thread)."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
        if self.mode != "auto":
            return self.mode
        free = max(1, math.floor(self.cores - self.others_busy + 1 / 3))
        return max(1, min(self.best.get(part, 1), free, self.cores))

    @contextmanager
    def use(self, part: str) -> Iterator[int]:
        """torch's intra-op threads set to threads_for(part) inside the block, restored after; yields them."""
        n = self.threads_for(part)
        with intra_op_threads(n):
            yield n

    def describe(self) -> str:
        if self.mode != "auto":
            return f"{self.mode} thread{'s' if self.mode != 1 else ''} for every part"
        return ("auto: " + ", ".join(f"{p} up to {n}" for p, n in self.best.items())
                + f", 1 while other processes keep a core busy ({self.cores} cores)")


@contextmanager
def intra_op_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to n inside the block (None: unchanged), the caller's restored after."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def parse_threads(text: str) -> str | int:
    """'auto' or a whole number >= 1 (the app's --threads) -> 'auto' or the number; ValueError otherwise."""
    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"threads must be auto or a whole number of at least 1, got {text!r}")
    return n
