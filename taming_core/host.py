"""The host a figure was measured on: CPU model, the instruction sets the CPU paths depend on, cores, torch.

Benchmarks print `host_line()` at the top and store `host_info()` beside their figures, and the calibration
cache (calibration.py) is keyed by it: a speed measured on an AMD EPYC says little about an Intel Xeon with AMX.
"""
from __future__ import annotations

import os
import platform

import torch

# The CPU flags our CPU paths depend on (oneDNN's packed products, bf16 units, AMX tiles)
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def _cpuinfo(path: str = "/proc/cpuinfo") -> tuple[str | None, set[str]]:
    """(model name, flags) of the first processor in a Linux cpuinfo file; (None, empty) where there is none."""
    model, flags = None, set()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:  # x86, ARM
                    flags = set(value.split())
                if model is not None and flags:
                    break
    except OSError:
        pass
    return model, flags


def host_info(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """{cpu, flags {name: bool} for FLAGS, cores, torch, threads, machine}: the host a figure was measured on."""
    model, flags = _cpuinfo(cpuinfo)
    return {"cpu": model or platform.processor() or platform.machine() or "unknown CPU",
            "flags": {name: name in flags for name in FLAGS},
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.machine()}


def host_line(info: dict | None = None) -> str:
    """One line: 'AMD EPYC, 2 cores (avx2; no avx512f avx512_bf16 amx_tile amx_bf16), torch 2.13.0, 1 thread'."""
    info = info or host_info()
    have = [f for f, on in info["flags"].items() if on]
    lack = [f for f, on in info["flags"].items() if not on]
    flags = "; ".join(part for part in (" ".join(have), "no " + " ".join(lack) if lack else "") if part)
    threads = info["threads"]
    return (f"{info['cpu']}, {info['cores']} cores ({flags}), torch {info['torch']}, "
            f"{threads} thread{'s' if threads != 1 else ''}")
