"""The README's Python blocks run as written: the library ones on an original checkpoint (the shared reference
fixture, copied to `last.ckpt` with its yaml beside it)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = SHARED / "fixtures" / "reference" / "cond_transformer_seg"


def python_blocks(section: str) -> list[str]:
    """The ```python blocks of the README section whose title starts with `section`."""
    text = (ROOT / "README.md").read_text()
    part = text[text.index(f"## {section}"):]
    part = part[:part.index("\n## ", 3)] if "\n## " in part[3:] else part
    return re.findall(r"```python\n(.*?)```", part, flags=re.S)


def test_the_library_blocks_sample_from_an_original_checkpoint(tmp_path, monkeypatch):
    if not FIXTURE.is_dir():
        pytest.skip(f"{FIXTURE} not found")
    shutil.copy(FIXTURE / "model.ckpt", tmp_path / "last.ckpt")
    shutil.copy(FIXTURE / "config.yaml", tmp_path / "last.yaml")
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks("Using the library")
    assert len(blocks) == 2
    scope: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), scope)  # noqa: S102  (our own README)
    image = scope["image"]
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape == (16, 16, 3)
    assert scope["tokens"].shape == (1, 256)


def test_the_public_api_lists_what_users_call_and_internals_stay_in_their_modules():
    import taming_core as tc
    from taming_core.checkpoint import load_state_dict_strict
    from taming_core.gpt import KVCache

    assert all(hasattr(tc, name) for name in tc.__all__) and len(set(tc.__all__)) == len(tc.__all__)
    for used in ("load_model", "sample", "stream", "sample_sliding_window", "prepare_for_sampling", "to_image"):
        assert used in tc.__all__
    for internal in ("KVCache", "load_state_dict_strict", "LowBitLinear", "safe_load", "Encoder"):
        assert internal not in tc.__all__
    assert KVCache is tc.KVCache and load_state_dict_strict is tc.load_state_dict_strict  # still reachable
