"""Shared test helpers: paths to ../shared (read-only fixtures and data), small model configs, and the app's
tests' models, uploads and served app."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import taming_core as tc

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


def small_model(kind: str, n_labels: int = 5, layers: int = 2) -> dict:
    """A Net2Net config for the app's tests: f = 2 stages, 16x16 token grid (32 px), a GPT slow enough that a
    run takes a visible moment."""
    cfg = tiny_net2net_config(kind, n_labels=n_labels, n_layer=layers, n_embd=64, n_head=4, block_size=512)
    for stage in [cfg["first_stage"]] + ([cfg["cond_stage"]["vq"]] if "vq" in cfg["cond_stage"] else []):
        stage["ddconfig"].update(resolution=32, attn_resolutions=[])
    return cfg


# The app's tests (test_app_*.py) share these; `app` (and with it gradio) is imported by the fixtures only.


@pytest.fixture(scope="session")
def bank(tmp_path_factory):
    """A ModelBank of small untrained models, one per mode, and a segmenter."""
    import app as A

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    kinds = {"segmentation": ("segmentation", 183), "edges": ("edges", 0), "depth": ("depth", 0),
             "unconditional": ("none", 0), "class": ("class", 0)}
    for mode, (kind, n) in kinds.items():
        tc.save_model(tc.build_model(small_model(kind, n or 5, layers=6)),
                      root / mode)
    # an untrained segmenter over three labels: its maps differ from photo to photo, which is all the app needs
    tc.save_model(tc.Segmenter(tc.SegmenterConfig(labels=["sky-other", "grass", "sea"], width=8)), root / "seg")
    return A.ModelBank({**{m: (str(root / m), None) for m in A.MODES}, A.SEGMENTER: (str(root / "seg"), None)})


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """Uploads: label maps (grey ids, colours), a sketch, a 16-bit depth map, a corrupt PNG, a photo."""
    import app as A

    root = tmp_path_factory.mktemp("files")
    Image.fromarray(A.example_maps(32)["Beach"]).save(root / "labels.png")
    Image.fromarray(tc.labels.colourise(A.example_maps(64)["Forest river"])).save(root / "coloured.png")
    sketch = np.full((48, 48, 3), 255, np.uint8)
    sketch[10:12, 5:40] = 0
    Image.fromarray(sketch).save(root / "sketch.png")
    ramp = (np.linspace(0, 65535, 40)[:, None] * np.ones((1, 40))).astype(np.uint16)
    Image.fromarray(ramp).save(root / "depth16.png")
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    photo = np.random.default_rng(3).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    photo[:30] = (110, 160, 240)  # a sky-blue top half
    Image.fromarray(photo).save(root / "photo.jpg")
    return root


@pytest.fixture(scope="module")
def upload_folder(tmp_path_factory):
    """Gradio's upload folder for the served app: a fresh one, so tests can list what is left in it."""
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("gradio")
        mp.setenv("GRADIO_TEMP_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def served(bank, upload_folder):
    """The app on `bank`, served in this process at a free port: its URL."""
    import app as A
    from app_helpers import free_port

    demo = A.build_demo(bank)
    _, url, _ = A.launch(demo, server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                         quiet=True)
    yield url
    demo.close()
