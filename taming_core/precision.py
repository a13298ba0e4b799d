"""Mixed precision: bf16 autocast for training where the hardware has bf16 units, fp32 elsewhere; and the
fastest faithful way to sample on a device (`sampling_precision`).

On CUDA bf16 autocast is the usual choice. On a CPU with AVX-512 bf16 or AMX units (oneDNN) it also pays for
convolutions and matrix products. Depthwise convolutions get slower in bf16 on such a CPU, which is why
`losses.py` keeps the perceptual network (MobileNetV2) in fp32 on a CPU. Weights, optimiser states and the
codebook distances stay fp32 in every mode.
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

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


SAMPLING_PRECISIONS = ("auto", "fp32", "bf16", "int8")


@dataclass(frozen=True)
class SamplingPrecision:
    """How to sample: the GPT's weights ("fp32", or "int8" / "bf16" kept once through quantize_gpt, whose
    int8 prefill products run in `prefill_dtype`) and the autocast dtype of the first stage's decodes (previews
    and the final image; None: fp32). prepare_for_sampling(model, plan) applies the weights."""

    weights: str = "fp32"
    decode_dtype: torch.dtype | None = None
    prefill_dtype: torch.dtype = torch.float32  # int8 weights only: bf16 weights multiply in bf16

    @property
    def weight_dtype(self) -> torch.dtype | None:
        """The dtype to give quantize_gpt, None for the plain fp32 GPT."""
        return {"fp32": None, "int8": torch.int8, "bf16": torch.bfloat16}[self.weights]

    def describe(self) -> str:
        name = {None: "fp32", torch.float32: "fp32", torch.bfloat16: "bf16"}
        gpt = f"int8 weights ({name[self.prefill_dtype]} prefill)" if self.weights == "int8" else \
            f"{self.weights} weights"
        return f"GPT {gpt}, decode {name[self.decode_dtype]}"


def sampling_precision(precision: str, device: torch.device | str) -> SamplingPrecision:
    """'auto' | 'fp32' | 'bf16' | 'int8' -> how to sample on `device`.

    'auto' is the fastest measured path that keeps samples faithful (bench/sampling.py, bench/results):
    - on a CPU, int8 GPT weights: a decode step reads every weight once, and int8 reads 1/4 of the fp32 bytes,
      with next-token distributions close to fp32's (the KL is measured there); on CPUs with bf16 units also bf16
      decodes of the first stage and bf16 prefill products of the int8 GPT;
    - on CUDA, fp32: bf16 GPT weights (and bf16 autocast, which casts every weight at every step) measured
      many times slower per decode step on an H200 with torch 2.11 (bench/results/sampling_cuda.json), for a
      cause not found yet.
    'fp32' samples and decodes in fp32 everywhere; 'bf16' (bf16 weights and decodes) and 'int8' (int8 weights,
    CPU only) force those paths. The weights are applied by tc.prepare_for_sampling (or quantize_gpt); the
    decode dtype is tc.stream's decode_dtype."""
    if precision not in SAMPLING_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(SAMPLING_PRECISIONS)}, got {precision!r}")
    kind = torch.device(device).type
    if precision == "fp32":
        return SamplingPrecision()
    if precision == "auto" and kind == "cuda":
        return SamplingPrecision()
    if precision == "bf16":
        return SamplingPrecision("bf16", torch.bfloat16)
    int8 = kind == "cpu" and hasattr(torch, "_weight_int8pack_mm")  # the int8 kernel is a CPU one
    if precision == "int8" and not int8:
        raise ValueError(f"int8 weights need a CPU with torch's int8 kernel; this is {kind}")
    bf16 = precision == "auto" and kind == "cpu" and cpu_has_bf16()
    return SamplingPrecision("int8" if int8 else "fp32", torch.bfloat16 if bf16 else None,
                             torch.bfloat16 if bf16 and int8 else torch.float32)


def autocast_for(precision: str, device: torch.device | str) -> AbstractContextManager:
    """The context a training step runs its forward pass in: bf16 autocast, or nothing for fp32."""
    if resolve_precision(precision, device) == "fp32":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
