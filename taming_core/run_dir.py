"""The run folder of a training script: never clobbered, written by one process at a time, paths absolute.

A fresh start refuses a folder that already holds a run (checkpoints, release weights or a log): `--resume`
continues it, `--force` starts over in it (the earlier run's files are removed first), or another `--out` is
chosen. While a run lives its folder is locked: `<out>/.lock` holds the writer's pid and host, and the writer
holds an exclusive `flock` on it, which the kernel drops when the process ends however it ends -- so the lock
of a killed run is taken over by the next one, and a second writer is refused in one line naming the first.
A start that fails before its first step leaves nothing behind: no lock file, no config.yaml, and no folder
if it created an empty one.
"""
from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import shutil
import socket
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

from .checkpoint import ConfigError

LOCK_NAME = ".lock"
# Files that mean "a run has made progress here": a start without --resume must not touch them.
PROGRESS = ("checkpoints", "model", "model-best", "model-before-gan", "log.jsonl")
# Everything a run writes (removed by --force). A transformer's codes cache stays: its key says when it is stale.
RUN_FILES = (*PROGRESS, "images", "tensorboard", "config.yaml")


class RunDirError(ConfigError):
    """The run folder cannot be used as asked: it holds another run, or another process is writing it."""


class SaveError(RuntimeError):
    """A checkpoint, weights, image or log could not be written (full disk, I/O error); names the file."""


def intact(out: str | Path) -> str:
    """What survives a failed write: the run's last complete checkpoint."""
    folder = Path(out) / "checkpoints"
    found = sorted(folder.glob("step-*.pt")) if folder.is_dir() else []
    return f"the last checkpoint, {found[-1]}, is intact" if found else "no checkpoint had been saved yet"


@contextmanager
def writing(path: str | Path, out: str | Path):
    """Writes inside become SaveError (one line naming `path` and the last intact checkpoint) on an I/O error."""
    try:
        yield
    except (OSError, RuntimeError) as e:  # torch/safetensors report a full disk as RuntimeError
        text = " ".join(str(e).split())[:200] or type(e).__name__
        raise SaveError(f"could not write {path} ({text}); {intact(out)}") from None


def best_so_far(folder: str | Path, metric: str) -> float:
    """The metric stored with the best weights so far (`<folder>/best.json`), inf if none (a resumed run
    keeps its best)."""
    path = Path(folder) / "best.json"
    try:
        return float(json.loads(path.read_text())[metric]) if path.is_file() else math.inf
    except (OSError, ValueError, KeyError, TypeError):
        return math.inf


def save_best(model, folder: str | Path, out: str | Path, step: int, **metrics: float) -> None:
    """Release weights of the best validation so far, with best.json {"step": ..., **metrics}."""
    from .checkpoint import save_model

    folder = Path(folder)
    with writing(folder, out):
        save_model(model, folder)
        (folder / "best.json").write_text(json.dumps({"step": step, **metrics}))


def holds_run(out: str | Path) -> list[str]:
    """The names of run progress in `out` (checkpoints, weights, log); [] for a new or empty folder."""
    out = Path(out)
    if not out.is_dir():
        return []
    return [name for name in PROGRESS if (out / name).exists()]


def check_out(out: str | Path, resume: bool, force: bool) -> None:
    """Refuse a fresh start (no --resume, no --force) in a folder that holds a run; read-only."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {out} is a file, not a run folder")
    found = holds_run(out)
    if found and not resume and not force:
        raise RunDirError(f"{out} already holds a run ({', '.join(found)}): continue it with --resume, start "
                          f"over in it with --force (its checkpoints, weights and log are removed), or pick a new "
                          f"--out; nothing was changed")


class RunLock:
    """An exclusive lock on a run folder, held until `release()` or the end of the process."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self.made_folder = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise RunDirError(f"cannot lock {self.path}: {e.strerror}") from None
                raise RunDirError(f"{self.out} is being written by another training run ({holder(self.path)}); "
                                  "two runs must not share a folder: wait for it, stop it, or pick another "
                                  "--out") from None
            try:  # the file may have been removed and made again by its last holder while we waited for it
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        os.fsync(fd)
        self.fd = fd
        self._finalizer = weakref.finalize(self, _release, fd, str(self.path), str(self.out), self.made_folder)

    def release(self, keep_folder: bool = True) -> None:
        """Drop the lock and its file; an empty folder this lock created goes too unless `keep_folder`."""
        self._finalizer.detach()
        _release(self.fd, str(self.path), str(self.out), self.made_folder and not keep_folder)

    def abandon(self) -> None:
        """A start that failed: release, and remove the folder if the lock made it and it stayed empty."""
        self.release(keep_folder=False)


def _release(fd: int, path: str, out: str, remove_empty: bool) -> None:
    try:
        os.unlink(path)  # while still holding the flock: a waiter then retries on a fresh file
    except OSError:
        pass
    try:
        os.close(fd)
    except OSError:
        pass
    if remove_empty:
        try:
            os.rmdir(out)  # only if empty
        except OSError:
            pass


def holder(path: Path) -> str:
    """'pid 123 on host x, since ...' from a lock file (best effort: the file may be half written)."""
    try:
        info = json.loads(path.read_text()[:1000])
        return f"pid {int(info['pid'])} on host {str(info['host'])[:100]}, since {str(info['since'])[:40]}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"see {path}"


def claim(out: str | Path, resume: bool, force: bool) -> RunLock:
    """Lock `out` for this run, then check again under the lock that a fresh start clobbers nothing; with
    `force` (and no resume) remove the earlier run's files. Returns the lock (keep it for the run's life)."""
    check_out(out, resume, force)  # before the lock: a refused start leaves the folder as it was
    lock = RunLock(out)
    try:
        check_out(out, resume, force)  # again under the lock: another start may have come in between
        if force and not resume:
            for name in RUN_FILES:
                p = Path(out) / name
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.exists() or p.is_symlink():
                    p.unlink()
    except BaseException:
        lock.abandon()
        raise
    return lock


def absolute_paths(cfg, fields: tuple[str, ...]) -> None:
    """Make the dotted path fields of a config absolute (a resumed run may start in another directory)."""
    for dotted in fields:
        *parents, name = dotted.split(".")
        obj = cfg
        for p in parents:
            obj = getattr(obj, p)
        value = getattr(obj, name)
        if value:
            setattr(obj, name, os.path.abspath(os.path.expanduser(str(value))))


def save_config(cfg, out: str | Path) -> Path:
    """Write the run's typed config as `<out>/config.yaml` (atomically; values literally, never resolved)."""
    from omegaconf import OmegaConf

    path = Path(out) / "config.yaml"
    tmp = path.with_name(".config.yaml.tmp")
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=False))
    os.replace(tmp, path)
    return path
