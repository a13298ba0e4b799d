"""Stopping a training run on request: SIGINT (Ctrl-C) or SIGTERM, a time budget; every DDP rank agrees.

The first signal only raises a flag: the loop finishes its step, every rank agrees to stop at the same step
(`agree`, as the time budget does, since the save that follows is collective), a resumable checkpoint is
written and the process exits with 128 + the signal's number. A second Ctrl-C exits at once, without saving:
the last checkpoint on disk stays the last complete one (saves are atomic). DataLoader workers ignore SIGINT
(`ignore_sigint`): a terminal's Ctrl-C reaches the whole process group, and a worker that quits on it would
break the batch the main process is waiting for.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

import torch
import torch.distributed as dist

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Catches SIGINT / SIGTERM while installed; `requested` is the first signal's name (None: none yet)."""

    def __init__(self):
        self.requested: str | None = None
        self.signum = 0
        self._previous = {}

    def install(self) -> "StopRequest":
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set handlers (a run started from a thread keeps the defaults)
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            print(f"\n{name} again: exiting now without saving (the last checkpoint on disk is complete)",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)
        if self.requested is None:
            self.requested, self.signum = name, signum
            print(f"\n{name}: stopping after this step and saving a checkpoint (Ctrl-C again: exit at once)",
                  file=sys.stderr, flush=True)

    def due(self, step: int, seconds: float, max_minutes: float, device: torch.device, main_process: bool) -> bool:
        """True on every rank when any rank was signalled or `seconds` of training passed `max_minutes` (> 0):
        the loop then saves `step` and stops (a collective: every rank calls it at every step)."""
        over = max_minutes > 0 and seconds > 60 * max_minutes
        if not agree(over or self.requested is not None, device):
            return False
        if main_process and self.requested is None:
            print(f"stopping at step {step}: max_minutes={max_minutes} reached (--resume continues)")
        return True

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def ignore_sigint(_worker_id: int) -> None:
    """DataLoader `worker_init_fn`: the main process decides when to stop, the workers keep serving it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def agree(mine: bool, device: torch.device) -> bool:
    """True on every rank if it is True on any (one collective; no-op without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return mine
    flag = torch.tensor(float(mine), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag)
