"""Resume checkpoints of a training run: model, optimizers, step and RNG states, written atomically.

Resume checkpoints are separate from release weights (`save_model`): they hold everything needed to continue
a run exactly, are read with `safe_unpickle.load_plain` (tensors and plain containers only, no code, memory and
nesting bounded),
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
from .config_checks import check_plain
from .data import DataError
from .run_dir import RunDirError, SaveError, intact
from .safe_unpickle import CheckpointError, load_plain

_NAME = re.compile(r"^step-(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    """This process's torch RNG states (CPU, and every CUDA device when present)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore rng_state()'s output; CheckpointError (one line) for anything else."""
    try:
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, RuntimeError, ValueError, IndexError) as e:
        raise CheckpointError(f"the checkpoint's RNG state is not one torch saved ({type(e).__name__}: "
                              f"{_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    return (" ".join(str(e).split()) or type(e).__name__)[:200]


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
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old set of files or the new one
    except (OSError, RuntimeError) as e:  # a full disk reaches torch.save's zip writer as a RuntimeError
        tmp.unlink(missing_ok=True)
        raise SaveError(f"could not write {path} ({_first_line(e)}); {intact(run_dir)}") from None
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
    """Read a resume checkpoint (tensors, numbers, strings and containers only: safe_unpickle.load_plain, with
    its bounds on memory and nesting), a dict holding the `required` keys; CheckpointError (one line) if it is
    missing, truncated, or not such a file."""
    try:
        state = load_plain(path)
    except FileNotFoundError:
        raise CheckpointError(f"cannot read checkpoint {path}: file not found") from None
    except (CheckpointError, OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        reason = " ".join(str(e).split()).replace(f"{path}: ", "").replace(str(path), "the file")
        raise CheckpointError(f"cannot read checkpoint {path}: {reason[:300] or type(e).__name__}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a checkpoint (a {type(state).__name__}, not a dict)")
    missing = [k for k in required if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint of this kind: it lacks {', '.join(missing)}")
    if "step" in state and (not isinstance(state["step"], int) or isinstance(state["step"], bool)
                            or state["step"] < 0):
        raise CheckpointError(f"{path}: step must be a count of steps (an integer >= 0), got a "
                              f"{type(state['step']).__name__}" + (f" {state['step']}" if isinstance(
                                  state["step"], int) else ""))
    if "rng" in state and not (isinstance(state["rng"], list) and all(isinstance(r, dict) for r in state["rng"])):
        raise CheckpointError(f"{path}: rng must be a list of per-process RNG states, got a "
                              f"{type(state['rng']).__name__}")
    if "rng" in state:  # tried now, so a bad state is refused before the run touches anything
        mine = rng_state()
        try:
            for r in state["rng"]:
                set_rng_state(r)
        except CheckpointError as e:
            raise CheckpointError(f"{path}: {e}") from None
        finally:
            set_rng_state(mine)
    if "config" in state and not isinstance(state["config"], dict):
        raise CheckpointError(f"{path}: config must be a mapping, got a {type(state['config']).__name__}")
    return state


def load_resume_part(target, state: Any, what: str, path: str | Path) -> None:
    """`target.load_state_dict(state)` (a module, optimizer or EMA) -> CheckpointError in one line when the
    checkpoint's part does not fit this run (another model shape, a damaged optimizer state)."""
    try:
        target.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        text = _first_line(e)
        if "size mismatch" in text or "Missing key" in text or "Unexpected key" in text:
            text = text.split(". ")[0] if "size mismatch" not in text else text[text.index("size mismatch"):]
            text = text.split(" in current model")[0] + (" in this run" if "size mismatch" in text else "")
        raise CheckpointError(f"{path}: its {what} does not fit this run ({text[:200]}); a resumed run keeps "
                              "the model settings it was started with (drop the model.* or --size overrides)") \
            from None


def resume_flag_fixed(args):
    """`--resume key=value`: argparse gives the override to --resume as its path; it is an override (and the
    run to resume is the latest in --out) unless a file of that name exists."""
    if args.resume and "=" in args.resume and not Path(args.resume).exists():
        args.overrides.append(args.resume)
        args.resume = "latest"
    return args


def check_run_numbers(cfg, positive: tuple[str, ...] = (), non_negative: tuple[str, ...] = ()) -> None:
    """ConfigError unless each dotted field is an integer > 0 (`positive`) or >= 0 (`non_negative`)."""
    for names, low in ((positive, 1), (non_negative, 0)):
        for dotted in names:
            value = cfg
            for part in dotted.split("."):
                value = getattr(value, part)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{dotted} must be an integer >= {low}, got {value!r}")


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
            if layer is not None:  # values are taken literally: an ${...} interpolation is refused, not resolved
                plain = _lists(OmegaConf.to_container(layer, resolve=False) if isinstance(layer, DictConfig)
                               else layer)
                check_plain(plain, where)
                cfg = OmegaConf.merge(cfg, plain)
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


def _lists(data):
    """A copy of plain config data with tuples as lists (a saved run config holds `betas` as a tuple);
    iterative, so a deeply nested hostile config cannot overflow the stack here (check_plain bounds it)."""
    root = [data]
    stack = [(root, 0)]
    while stack:
        parent, key = stack.pop()
        value = parent[key]
        if isinstance(value, dict):
            parent[key] = value = dict(value)
            stack.extend((value, k) for k in value)
        elif isinstance(value, (list, tuple)):
            parent[key] = value = list(value)
            stack.extend((value, i) for i in range(len(value)))
    return root[0]


# Errors of the run's inputs (config, checkpoint, data, a path that does not exist) rather than of the code:
# one line, no traceback.
RUN_ERRORS = (ConfigError, CheckpointError, DataError, FileNotFoundError, SaveError, RunDirError)


def run_main(main: Callable[[], Any]) -> None:
    """Run a training script's `main`: a RUN_ERRORS exception ends the process with `error: <message>` on
    stderr (one line) and exit status 2; anything else keeps its traceback."""
    try:
        main()
    except KeyboardInterrupt:  # before the training loop catches signals (setup, encoding): nothing to save
        print("error: interrupted before training started; nothing was saved", file=sys.stderr)
        raise SystemExit(130) from None
    except RUN_ERRORS as e:
        from tqdm import tqdm
        for bar in list(getattr(tqdm, "_instances", ())):  # a progress bar closed at exit would print after us
            bar.close()
        message = str(e).strip()
        if "Original Traceback" in message:  # re-raised from a DataLoader worker: its last line is the error
            message = message.splitlines()[-1].partition(": ")[2]
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        raise SystemExit(2) from None
