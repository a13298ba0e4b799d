"""Shared test helpers: paths to ../shared (read-only fixtures and data) and small model configs."""
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "fixtures" / "reference"
ORIGINAL_CONFIGS = ROOT / "configs" / "original"


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): on a shared,
    busy CPU more threads make small ops many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reference_case(name: str) -> tuple[Path, dict]:
    folder = REFERENCE / name
    if not folder.is_dir():
        pytest.skip(f"reference fixtures not found at {folder}")
    return folder, dict(np.load(folder / "expected.npz", allow_pickle=False))


def tiny_vqgan_config(**overrides) -> dict:
    cfg = {"model": "vqgan", "n_embed": 32, "embed_dim": 8,
           "ddconfig": {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
                        "in_channels": 3, "out_ch": 3, "resolution": 16, "z_channels": 8}}
    cfg.update(overrides)
    return cfg


def tiny_net2net_config(kind: str = "segmentation", n_labels: int = 5, **gpt) -> dict:
    stage = tiny_vqgan_config()
    del stage["model"]
    cond = {"kind": kind}
    if kind in ("segmentation", "depth", "edges"):
        ch = n_labels if kind == "segmentation" else 1
        cond["vq"] = {**stage, "image_key": kind}
        cond["vq"]["ddconfig"] = {**stage["ddconfig"], "in_channels": ch, "out_ch": ch}
        cond["n_labels"] = n_labels if kind == "segmentation" else None
    elif kind == "class":
        cond["n_classes"] = 10
    transformer = {"vocab_size": 32, "block_size": 128, "n_layer": 2, "n_head": 2, "n_embd": 32, **gpt}
    return {"model": "net2net", "first_stage": stage, "cond_stage": cond, "transformer": transformer,
            "permuter": {"name": "identity"}}
