"""Learning-rate schedule shared by the training scripts: linear warmup, then cosine decay."""
from __future__ import annotations

import math


def warmup_cosine(step: int, peak: float, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """The rate of step `step` (0-based): rises linearly to `peak` over `warmup_steps`, then decays along a
    half cosine to `min_ratio * peak` at `total_steps`, and stays there."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
