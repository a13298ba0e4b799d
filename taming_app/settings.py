"""The arguments of a generation: every number within its limits (LIMITS), checked by name, the measured
guidance defaults, and a class given by id or name."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

import taming_core as tc

from .refused import Refused

# Every number a generation takes: (lowest, highest, whole numbers only). API arguments are checked against
# these before any work; the sliders stay inside them.
LIMITS = {
    "seed": (0, 2**63 - 1, True),
    "temperature": (0.01, 10.0, False),
    "top_k": (0, 65536, True),  # 0 = off
    "top_p": (0.01, 1.0, False),  # 1 = off
    "width": (0, 16384, True),  # 0 = the model's size; output_size checks multiples and the scale
    "height": (0, 16384, True),
    "frames": (1, 64, True),
    # 1 = off; below 1 steers away from the condition (0 = the null condition alone: near-black images here)
    "guidance": (1.0, 10.0, False),
    "images": (1, 8, True),  # variations: samples of the one condition, drawn as one batch
}
# what a refusal adds for numbers whose range is not self-explaining
MEANING = {"guidance": "1 = off, higher follows the condition more closely; below 1 would steer away from it"}
# Classifier-free guidance of models trained with condition dropout (a null condition); others sample without.
# Each tab's default, measured on the bundled models' hold-out (checkpoints/README.md): segmentation 3 (the
# samples' layout matches the map in 51.6% of pixels against 36.1% at 1, and FID/KID do not worsen); edges 2
# (edge F-score 0.86 against 0.55 at 1, on drawn outlines 0.77 against 0.62, for KID 0.103 against 0.068; 3
# draws the edges more literally still at KID 0.128); depth and class 1 (not measured: the bundled depth model
# takes almost nothing from its 23 training maps, and no class model is bundled).
GUIDANCE_BY_MODE = {"segmentation": 3.0, "edges": 2.0, "depth": 1.0, "class": 1.0}
GUIDANCE = GUIDANCE_BY_MODE["segmentation"]  # the slider's value when the app opens on the Segmentation tab
MAX_SCALE = 8  # the largest output side, in multiples of the model's native size (1024x512 from 128)
FIT = "crop"  # a condition of another aspect ratio than the output: its centre part (or "pad", "stretch")


def checked_number(name: str, value) -> int | float:
    """An argument -> int or float within LIMITS[name], else a gr.Error that names it."""
    lo, hi, whole = LIMITS[name]
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if (not real or (isinstance(value, (float, np.floating)) and not math.isfinite(value))
            or (whole and value != int(value)) or not lo <= value <= hi):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        meaning = f" ({MEANING[name]})" if name in MEANING else ""
        raise Refused(f"{name} must be {'a whole number' if whole else 'a number'} from {lo} to {hi}{meaning}, "
                      f"got {shown}.")
    return int(value) if whole else float(value)


@dataclass
class Settings:
    """The numbers of one generation, as the handlers' and the API's arguments name them."""

    seed: int = 0
    temperature: float = 1.0
    top_k: int = 100
    top_p: float = 1.0
    width: int = 0  # 0 = the model's native size
    height: int = 0
    # previews (partial images) sent per run, at most: the page's "Previews per image" (a page stays smooth with
    # about 16-32 messages per image)
    frames: int = 16
    guidance: float = GUIDANCE
    images: int = 1

    @classmethod
    def checked(cls, **values) -> Settings:
        """Settings from API arguments, each checked against LIMITS."""
        return cls(**{name: checked_number(name, value) for name, value in values.items()})


def class_names(n_classes: int) -> tuple[str, ...]:
    """The names of a class-conditional model's classes: ImageNet's for 1000 classes, else "class i"."""
    return tc.labels.imagenet_classes() if n_classes == 1000 else tuple(f"class {i}" for i in range(n_classes))


def class_index(value, names: tuple[str, ...]) -> int:
    """A class id (a whole number, or its digits) or a class name -> its index in `names`, else a refusal."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, str):
        lowered = [n.lower() for n in names]
        if value.strip().lower() in lowered:
            return lowered.index(value.strip().lower())
        near = [n for n in names if value.strip().lower() in n.lower()][:5]
        raise Refused(f"No class is named {value[:40]!r}" + (f"; similar: {', '.join(near)}." if near else "."))
    whole = isinstance(value, (int, np.integer)) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or not 0 <= int(value) < len(names):
        raise Refused(f"class_id must be a class name or a whole number from 0 to {len(names) - 1}, got "
                      f"{str(value)[:40]!r}.")
    return int(value)
