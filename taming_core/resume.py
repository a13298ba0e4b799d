"""Resume checkpoints of a training run: model, optimizers, step and RNG states, written atomically.

Resume checkpoints are separate from release weights (`save_model`): they hold everything needed to continue
a run exactly, are read with `torch.load(weights_only=True)` (tensors and plain containers only, no code),
and live as `<run>/checkpoints/step-<step>.pt`. A file is written under a temporary name, flushed to disk and
renamed, so a process killed during a save leaves the previous checkpoint as the latest valid one; only the
last `keep_last` are kept.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

_NAME = re.compile(r"^step-(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    """This process's torch RNG states (CPU, and every CUDA device when present)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_rng_states() -> list[dict[str, Any]]:
    """The RNG states of every rank, in rank order (a collective: every rank must call it)."""
    mine = rng_state()
    if not (dist.is_available() and dist.is_initialized()):
        return [mine]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, mine)
    return states


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary files of interrupted saves are ignored)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(state: dict[str, Any], run_dir: str | Path, step: int, keep_last: int = 3) -> Path:
    """Write `state` as checkpoints/step-<step>.pt atomically, then delete all but the last `keep_last`."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:08d}.pt"
    tmp = folder / f".step-{step:08d}.pt.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic on POSIX: readers see the old set of files or the new one
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        old.unlink(missing_ok=True)
    return path


def resolve_resume(resume: str | Path, run_dir: str | Path) -> Path:
    """`--resume` value -> checkpoint file: a .pt file, a run folder (its latest), or "latest" (of run_dir)."""
    target = Path(run_dir) if str(resume) == "latest" else Path(resume)
    if target.is_file():
        return target
    found = latest_checkpoint(target)
    if found is None:
        raise FileNotFoundError(f"no checkpoint to resume from in {checkpoint_dir(target)}")
    return found


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a resume checkpoint (tensors and plain containers only)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError) as e:  # truncated or not a torch.save file
        raise RuntimeError(f"cannot read checkpoint {path}: {e}") from None


def merge_run_config(schema, layers: list, flags: dict[str, Any]):
    """A training run's config: the dataclass `schema`'s defaults, then each layer (a dict, a DictConfig or
    None: saved run config, preset, --config yaml, key=value overrides), then the flags that were given
    (dotted keys; None = not given). Returns the dataclass instance."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(schema)
    for layer in layers:
        if layer is not None:
            cfg = OmegaConf.merge(cfg, layer)
    for key, value in flags.items():
        if value is not None:
            OmegaConf.update(cfg, key, value)
    return OmegaConf.to_object(cfg)
