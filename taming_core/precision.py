"""Mixed precision for training: bf16 autocast where the hardware has bf16 units, fp32 elsewhere.

On CUDA bf16 autocast is the usual choice. On a CPU with AVX-512 bf16 or AMX units (oneDNN) it also pays for
convolutions and matrix products: measured on a 2-core AVX-512-bf16 VM with torch 2.13, the bundled VQGAN's
forward + backward went from 1,219 ms to 533 ms per batch of 16 64-px crops. Depthwise convolutions get slower
in bf16 on that CPU (MobileNetV2 145 -> 280 ms), which is why `losses.py` keeps the perceptual network in fp32
on a CPU. Weights, optimiser states and the codebook distances stay fp32 in every mode.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX-512 bf16 or AMX tiles) that oneDNN uses."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(p() for p in probes if p is not None)
    except RuntimeError:  # a build without these probes
        return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """'auto' | 'fp32' | 'bf16' -> 'fp32' or 'bf16' for `device`. 'auto': bf16 on CUDA and on CPUs with bf16
    units, fp32 elsewhere; 'bf16' on a CPU without such units is allowed (emulated, slow) but never chosen."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    kind = torch.device(device).type
    return "bf16" if kind == "cuda" or (kind == "cpu" and cpu_has_bf16()) else "fp32"


def autocast_for(precision: str, device: torch.device | str) -> AbstractContextManager:
    """The context a training step runs its forward pass in: bf16 autocast, or nothing for fp32."""
    if resolve_precision(precision, device) == "fp32":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
