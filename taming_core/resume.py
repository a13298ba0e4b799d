"""Resume checkpoints of a training run: model, optimizers, step and RNG states, written atomically.

Resume checkpoints are separate from release weights (`save_model`): they hold everything needed to continue
a run exactly, are read with `torch.load(weights_only=True)` (tensors and plain containers only, no code),
and live as `<run>/checkpoints/step-<step>.pt`. A file is written under a temporary name, flushed to disk and
renamed, so a process killed during a save leaves the previous checkpoint as the latest valid one; only the
last `keep_last` are kept.
"""
from __future__ import annotations

import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from .checkpoint import ConfigError
from .data import DataError
from .safe_unpickle import CheckpointError

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
    if not target.exists():
        raise CheckpointError(f"nothing to resume from: {target} does not exist")
    found = latest_checkpoint(target)
    if found is None:
        raise CheckpointError(f"no checkpoint to resume from in {checkpoint_dir(target)}")
    return found


def load_checkpoint(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a resume checkpoint (tensors and plain containers only), a dict holding the `required` keys;
    CheckpointError if it is missing, truncated, or not such a file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
        text = " ".join(str(e).split())
        if isinstance(e, FileNotFoundError):
            reason = "file not found"
        elif isinstance(e, pickle.UnpicklingError):  # without torch's advice to load with weights_only=False
            detail = text.partition("WeightsUnpickler error:")[2].split(" Check the documentation")[0]
            detail = detail.split(". ")[0].strip()
            reason = "it holds more than tensors and plain containers" + (f" ({detail})" if detail else "")
        else:
            reason = f"truncated or not a torch.save file ({type(e).__name__}: {text.split('. ')[0] or 'no data'})"
        raise CheckpointError(f"cannot read checkpoint {path}: {reason}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a checkpoint (a {type(state).__name__}, not a dict)")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint of this kind: it lacks {', '.join(missing)}")
    return state


def merge_run_config(schema, layers: list, flags: dict[str, Any]):
    """A training run's config: the dataclass `schema`'s defaults, then each layer, then the flags that were
    given (dotted keys; None = not given). A layer is None, a dict or DictConfig (saved run config, preset), a
    yaml path (--config) or a list of "key=value" strings (overrides). Returns the dataclass instance;
    ConfigError names the file or field of an unreadable yaml, unknown key or wrong type."""
    import yaml
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    where = "run config"
    try:
        cfg = OmegaConf.structured(schema)
        for layer in layers:
            if isinstance(layer, (str, Path)):
                where = str(layer)
                layer = OmegaConf.load(layer)
                if not isinstance(layer, DictConfig):
                    raise ConfigError(f"{where}: a run config is a mapping of fields, got a list")
            elif isinstance(layer, list):
                where = "key=value overrides"
                layer = OmegaConf.from_dotlist(layer)
            if layer is not None:
                cfg = OmegaConf.merge(cfg, layer)
            where = "run config"
        for key, value in flags.items():
            if value is not None:
                OmegaConf.update(cfg, key, value)
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        at = f" (field {e.full_key})" if getattr(e, "full_key", None) else ""
        raise ConfigError(f"{where}{at}: {str(e).splitlines()[0]}") from None
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {where}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where} is not valid yaml: {' '.join(str(e).split())}") from None


# Errors of the run's inputs (config, checkpoint, data, a path that does not exist) rather than of the code:
# one line, no traceback.
RUN_ERRORS = (ConfigError, CheckpointError, DataError, FileNotFoundError)


def run_main(main: Callable[[], Any]) -> None:
    """Run a training script's `main`: a RUN_ERRORS exception ends the process with `error: <message>` on
    stderr (one line) and exit status 2; anything else keeps its traceback."""
    try:
        main()
    except RUN_ERRORS as e:
        message = str(e).strip()
        if "Original Traceback" in message:  # re-raised from a DataLoader worker: its last line is the error
            message = message.splitlines()[-1].partition(": ")[2]
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(2) from None
