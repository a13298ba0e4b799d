"""Hostile training images (issue 29, item 9): a small PNG that declares gigabytes of 16-bit or RGBA pixels, and
a FIFO named fifo.png, in the data folder. Each is skipped as unreadable (counted, warned once), checked from the
header before decoding, in bounded memory and without hanging; 16-bit images decode without float64 copies of
the whole image.
"""
import json
import os
import subprocess
import sys
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hostile_files as H
import taming_core as tc
from conftest import ROOT
from taming_core.data import UnusableImage, open_image

CHILD = r"""
import json, resource, sys, warnings
from PIL import Image
import taming_core as tc

def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":"))

limit = status("VmSize") + (1 << 30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
before = status("VmRSS")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    data = tc.ImageFolder(tc.DataConfig(root=sys.argv[1], size=32, check_files=sys.argv[2]))
    examples = [tuple(data[k]["image"].shape) for k in [(i, 7) for i in range(len(data.files))]]
print(json.dumps({"files": [p.rsplit("/", 1)[-1] for p in map(str, data.files)],
                  "unreadable": sorted(p.name for p in data.unreadable), "skipped": sorted(data.skipped),
                  "examples": examples, "pillow_bomb_warnings": sum(w.category is Image.DecompressionBombWarning
                                                                    for w in caught),
                  "warnings": [str(w.message) for w in caught if w.category is not Image.DecompressionBombWarning],
                  "peak": status("VmHWM") - before}))
"""


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data") / "images"
    d.mkdir()
    (d / "grey16_13000.png").write_bytes(H.png_of_zeros(13000, 13000, 16, 0))  # 334 KB -> 4.6 GiB before
    (d / "rgba_9000.png").write_bytes(H.png_of_zeros(9000, 9000, 8, 6))  # 321 KB, 81 MP RGBA
    os.mkfifo(d / "fifo.png")
    Image.fromarray(np.full((40, 48, 3), 200, np.uint8)).save(d / "good.png")
    return d


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux (/proc, RLIMIT_AS)")
@pytest.mark.parametrize("check_files", ["decode", "header"])
def test_hostile_images_are_skipped_in_bounded_memory(hostile_folder, check_files):
    run = subprocess.run([sys.executable, "-c", CHILD, str(hostile_folder), check_files], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)  # a FIFO opened for reading would block: timeout
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["files"] == ["good.png"], got
    assert got["unreadable"] == ["fifo.png", "grey16_13000.png", "rgba_9000.png"]
    assert got["examples"] == [[3, 32, 32]]
    assert len(got["warnings"]) == 1 and "and 2 more" in got["warnings"][0], got["warnings"]
    assert got["pillow_bomb_warnings"] <= 1  # Pillow's own, for the 169 MP image (over its 89 MP warning limit)
    print(f"peak RSS increase ({check_files}): {got['peak'] >> 20} MiB")
    assert got["peak"] < 256 << 20


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_open_image_names_why(hostile_folder, tmp_path, monkeypatch):
    # Pillow's default limit, as in a training process (the app lowers it for its uploads, and may be imported
    # earlier in this test session)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 89_478_485)
    with pytest.raises(UnusableImage, match=r"13000x13000 I;16 \(169.0 MP, 322 MiB decoded\) is more than "
                                             r"max_pixels = 32.0 MP"):
        open_image(hostile_folder / "grey16_13000.png")
    with pytest.raises(UnusableImage, match="not a regular file"):
        open_image(hostile_folder / "fifo.png")
    with pytest.raises(UnusableImage, match="81.0 MP"):
        open_image(hostile_folder / "rgba_9000.png")
    with open_image(hostile_folder / "rgba_9000.png", max_pixels=100_000_000) as im:  # the limit is a setting
        assert im.size == (9000, 9000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000_000)  # Pillow's limit below ours: still one line
    with pytest.raises(UnusableImage, match="more than twice Pillow's limit of 10.0 MP"):
        open_image(hostile_folder / "rgba_9000.png", max_pixels=100_000_000)


def test_a_file_that_becomes_a_fifo_later_is_skipped(tmp_path):
    d = tmp_path / "images"
    d.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((40, 48, 3), 100, np.uint8)).save(d / name)
    data = tc.ImageFolder(tc.DataConfig(root=str(d), size=32))
    (d / "a.png").unlink()
    os.mkfifo(d / "a.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert int(data[0]["index"]) == 1  # the next file is used, as for any file that fails later
    assert data.skipped == {str(d / "a.png")} and "not a regular file" in str(caught[0].message)


def test_16_bit_images_decode_without_float64_copies(tmp_path):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 65536, (37, 23), dtype=np.uint16)
    Image.fromarray(small).save(tmp_path / "small.png")
    with Image.open(tmp_path / "small.png") as im:
        assert im.mode == "I;16"
        rgb = tc.pil_to_rgb(im)
    expected = np.clip(small.astype(np.float64) / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)  # as before
    assert rgb.shape == (37, 23, 3) and (rgb == expected[:, :, None]).all()
    big = np.zeros((3000, 4000), np.uint16)  # 12 MP: float64 copies of it would be 96 MB each
    big[::7] = 40000
    Image.fromarray(big).save(tmp_path / "big.png")
    with Image.open(tmp_path / "big.png") as im:
        im.load()
        tracemalloc.start()
        rgb = tc.pil_to_rgb(im)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert rgb[0, 0, 0] == 156 and rgb[1, 0, 0] == 0
    # the output (36 MB) and the 16-bit array (24 MB), plus a chunk: no whole-image float64 (96 MB)
    assert peak < 36e6 + 24e6 + 40e6, peak / 1e6


def test_pil_to_rgb_converts_a_strip_at_a_time_as_the_whole_image(monkeypatch):
    """Alpha compositing and mode conversions run on strips of rows (a 32 MP RGBA image peaks at ~480 MiB
    instead of ~920 MiB); the pixels are what converting the whole image gives."""
    from taming_core import data
    monkeypatch.setattr(data, "_CHUNK_PIXELS", 1000)  # 16 rows of 61 pixels a strip
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (97, 61, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P")
    palette.info["transparency"] = 5
    images = [Image.fromarray(rng.integers(0, 256, (97, 61, 4), dtype=np.uint8), "RGBA"),
              Image.fromarray(rng.integers(0, 256, (97, 61, 2), dtype=np.uint8), "LA"), palette,
              Image.fromarray(rgb).convert("CMYK"), Image.fromarray(rgb[..., 0]), Image.fromarray(rgb)]
    for im in images:
        whole = im.convert("RGBA") if im.mode in ("RGBA", "LA") or "transparency" in im.info else None
        if whole is not None:
            whole = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), whole)
        expected = np.asarray((whole or im).convert("RGB"))
        assert np.array_equal(tc.pil_to_rgb(im), expected), im.mode
