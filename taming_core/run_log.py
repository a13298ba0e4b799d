"""What a training run reports: `<out>/log.jsonl` (one JSON object per logged step) and TensorBoard event
files under `<out>/tensorboard/` (the same scalars, plus sample images), read with
`tensorboard --logdir <out>/tensorboard` (the `tensorboard` package; no TensorFlow).

A resumed run appends to both, after dropping what a killed run wrote past its last checkpoint (the steps
from `purge_step` on), so each step appears once in each.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import torch

from .run_dir import writing


class RunLog:
    """log.jsonl + TensorBoard of one run (the main process only: other ranks pass enabled=False)."""

    def __init__(self, out: str | Path, enabled: bool = True, purge_step: int | None = None,
                 tensorboard: bool = True):
        self.out, self.enabled, self.writer = Path(out), enabled, None
        if enabled and purge_step is not None:
            self._drop_lines_from(purge_step)
        if not (enabled and tensorboard):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the package is in requirements.txt; a run without it still logs log.jsonl
            warnings.warn("TensorBoard logging is off: pip install tensorboard", RuntimeWarning, stacklevel=2)
            return
        # purge_step: a resumed run drops events a killed run wrote after its last checkpoint
        self.writer = SummaryWriter(str(self.out / "tensorboard"), purge_step=purge_step)

    def _drop_lines_from(self, step: int) -> None:
        """Rewrite log.jsonl without the lines of `step` and later (written atomically; unreadable lines kept)."""
        path = self.out / "log.jsonl"
        if not path.is_file():
            return
        kept = [line for line in path.read_text().splitlines(keepends=True) if _step_of(line) < step]
        tmp = path.with_name(path.name + ".tmp")
        with writing(path, self.out):
            tmp.write_text("".join(kept))
            os.replace(tmp, path)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One log.jsonl line {"step": step, **values}; each number also as a TensorBoard scalar."""
        if not self.enabled:
            return
        with writing(self.out / "log.jsonl", self.out), open(self.out / "log.jsonl", "a") as f:  # a full disk: 1 line
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.writer.add_scalar(_tag(k), v, step)
            self.writer.flush()

    def image(self, tag: str, step: int, grid_png: str | Path) -> None:
        """A PNG already written (e.g. by save_grid) -> a TensorBoard image."""
        if self.writer is None:
            return
        import numpy as np
        from PIL import Image

        with Image.open(grid_png) as im:
            pixels = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)  # (3, H, W) uint8
        self.writer.add_image(tag, pixels, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _step_of(line: str) -> float:
    try:
        return float(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -math.inf


_GROUPS = {"lr": "train", "sec_per_step": "time"}


def _tag(key: str) -> str:
    """Scalar names grouped in TensorBoard: val_* under val/, codebook numbers under codebook/, the rest train/."""
    if key.startswith("val_"):
        return f"val/{key[4:]}"
    if key in ("codes_used", "perplexity", "dead_codes"):
        return f"codebook/{key}"
    return f"{_GROUPS.get(key, 'train')}/{key}"
