"""Training data: a folder of images (recursive), optional paired maps or class folders, crops and flips.

Shape legend: S crop side (`size`), K labels. An example is a dict of tensors:
  "image" (3, S, S) float32 in [-1, 1]          "segmentation" (S, S) int64 label ids in [0, K)
  "depth" (1, S, S) float32 in [-1, 1]          "edges" (1, S, S) float32 in [-1, 1] (edge = 1)
  "class" () int64 (index of the sub-folder)    "index" () int64 (position in `files`)

Preprocessing follows the original (reference F.3): the short side is scaled to S (images with PIL bicubic,
label maps nearest-neighbour, depth bilinear), then a crop of S x S; here training crops are random and
also flipped at random. Randomness comes only from the per-example seed in the key, so an example is the
same in any worker, on any rank, before and after a resume. Unreadable images are found when the folder is
opened (`check_files`), dropped, counted and warned about once; a file that fails later is skipped (the next
file is used) and counted. Files that are not regular files (a FIFO named fifo.png) and images whose header
declares more than `max_pixels` pixels count as unreadable, found before anything is decoded (`open_image`).
No readable image, or a map that does not fit its image, is a `DataError`.
"""
from __future__ import annotations

import os
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch
from PIL import Image

from .condition_maps import depth_from_array, edges_from_photo, edges_from_sketch, edges_from_soft, resize_edges
from .conditioners import default_label_offset

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp")
KINDS = ("image", "class", "segmentation", "depth", "edges")
EDGE_SOURCES = ("canny", "given", "mixed")
CHECKS = ("decode", "header")
# Where maps are looked for when `maps` is not given: sibling folders of the image folder (shared/data layout).
MAP_FOLDERS = {"segmentation": ("segmentations", "segmentation", "labels"), "depth": ("depth16", "depth"),
               "edges": ("edges", "boundaries")}
# Images are checked from their header before they are decoded: a 421 KB PNG can declare 13000 x 13000 16-bit
# pixels. MAX_PIXELS (DataConfig.max_pixels) is 8000 x 4000; the decoded size (pixels x bytes per pixel of the
# mode, i.e. the bit depth) at most 4 bytes a pixel of that.
MAX_PIXELS = 32_000_000
_SAMPLE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4, "F": 4}
_CHUNK_PIXELS = 1 << 20  # 16-bit images are scaled to 8 bits this many pixels at a time


class UnusableImage(ValueError):
    """An image file that is not a regular file, or declares more pixels or bytes than a run decodes."""


class DataError(RuntimeError):
    """Data the run cannot use as given: empty folder, missing map, map that does not fit its image."""


_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)  # UnusableImage too


@dataclass
class DataConfig:
    root: str = ""  # folder of images, searched recursively for .jpg .jpeg .png .webp
    size: int = 256  # crop side S
    kind: str = "image"  # besides the image: one of KINDS
    maps: Optional[str] = None  # folder of .png maps (same relative path or same stem); default MAP_FOLDERS
    n_labels: Optional[int] = None  # segmentation: number of labels K
    # Added to raw label ids modulo 256 (COCO-Stuff: 1, so 255 = unlabelled becomes 0). None: 1 when
    # n_labels == 183, else 0 -- the same rule as ConditionerConfig.label_offset.
    label_offset: Optional[int] = None
    # "canny": computed from each crop (condition_maps.edges_from_photo, as the app does); "given": edge or
    # boundary PNGs from `maps`, turned into one-pixel strokes by condition_maps.edges_from_sketch; "mixed":
    # soft edge maps from `maps` or Canny, per training crop (hed_share below)
    edges: str = "canny"
    # Training crops with edges="canny": the low Canny threshold is drawn from [low, high] of this range
    # (the high one is twice the low), so maps as sparse as sketches and as busy as textures are seen;
    # None: the app's fixed thresholds. Centre crops (encoding, evaluation) always use the app's.
    canny_range: Optional[tuple[float, float]] = None
    # edges="mixed": `maps` holds soft edge maps (8-bit PNGs of edge probability, e.g. HED's from
    # train/hed_edges.py); a training crop takes them with probability hed_share, thresholded at a value drawn
    # from hed_range and thinned to one-pixel strokes, else Canny as above. Centre crops: Canny, as the app.
    hed_share: float = 0.5
    hed_range: tuple[float, float] = (0.5, 0.8)
    resize: str = "short_side"  # "short_side": short side scaled to S (original); "upscale": only if < S
    flip: bool = True  # random horizontal flips in training crops
    # Training crops only: the resized image is scaled again by a random factor in [1, scale_max] (a zoom-in
    # augmentation; keep images at least scale_max * size on their short side so that it never upsamples)
    scale_max: float = 1.0
    with_image: bool = True  # False: only the map is decoded (condition-stage training)
    # Images and maps of more pixels than this (read from the header) are skipped as unreadable, before decoding
    max_pixels: int = MAX_PIXELS
    # How images are checked when the folder is opened, so that unreadable ones are dropped and counted before
    # training: "decode" decodes each once (JPEG at 1/8 scale; a truncated file is found), "header" only
    # opens it (fast on millions of files; a truncated file is then skipped when it is read).
    check_files: str = "decode"


def list_images(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    files, seen = [], set()
    for folder, dirs, names in os.walk(root, followlinks=True):  # symlinked data folders are common
        real = os.path.realpath(folder)
        if real in seen:  # a link cycle
            dirs.clear()
            continue
        seen.add(real)
        files += [Path(folder) / n for n in names if Path(n).suffix.lower() in IMAGE_EXTS]
    files.sort()
    if not files:
        raise DataError(f"no images (.jpg .jpeg .png .webp) found under {root}")
    return files


def open_image(path: Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Image.open for training data: only a regular file (a FIFO named fifo.png would block forever), and
    only an image whose header declares at most `max_pixels` pixels and `4 * max_pixels` decoded bytes (its
    bit depth counted). Raises UnusableImage (a ValueError), OSError or what Pillow raises for a bad file."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise UnusableImage(f"cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(mode):
        raise UnusableImage("not a regular file (a FIFO, device or folder)")
    try:
        im = Image.open(path)
    except Image.DecompressionBombError:  # Pillow's own limit (Image.MAX_IMAGE_PIXELS), lower than ours
        raise UnusableImage(f"more than twice Pillow's limit of {Image.MAX_IMAGE_PIXELS / 1e6:.1f} MP "
                            "(PIL.Image.MAX_IMAGE_PIXELS); not decoded") from None
    w, h = im.size
    nbytes = w * h * len(im.getbands()) * _SAMPLE_BYTES.get(im.mode, 1)
    if w * h > max_pixels or nbytes > 4 * max_pixels:
        im.close()
        raise UnusableImage(f"{w}x{h} {im.mode} ({w * h / 1e6:.1f} MP, {nbytes >> 20} MiB decoded) is more than "
                            f"max_pixels = {max_pixels / 1e6:.1f} MP ({4 * max_pixels >> 20} MiB); not decoded")
    return im


def read_error(path: Path, decode: bool = True, max_pixels: int = MAX_PIXELS) -> Optional[Exception]:
    """The error that opening (and, with `decode`, decoding) the image at `path` raises; None if it reads."""
    try:
        with open_image(path, max_pixels) as im:
            if decode:
                if im.format == "JPEG":
                    im.draft(im.mode, (1, 1))  # 1/8 scale: every byte of the stream is still decoded
                im.load()
    except _UNREADABLE as e:
        return e
    return None


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """Any PIL image -> (H, W, 3) uint8: 16-bit and 32-bit grey scaled to 8 bits, alpha composited on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im)  # (H, W) uint16, int32 or float32: no float64 copy of the whole image
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        out = np.empty((*a.shape, 3), np.uint8)  # (H, W, 3)
        rows = max(1, _CHUNK_PIXELS // max(1, a.shape[1]))
        for r in range(0, a.shape[0], rows):  # float64 a chunk at a time: the same rounding as the whole image
            out[r:r + rows] = np.clip(a[r:r + rows] / top * 255.0 + 0.5, 0, 255).astype(np.uint8)[:, :, None]
        return out
    if im.mode == "RGB":
        return np.asarray(im)  # (H, W, 3): one copy of the decoded pixels
    alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    out = np.empty((im.height, im.width, 3), np.uint8)  # (H, W, 3)
    rows = max(1, _CHUNK_PIXELS // max(1, im.width))
    for r in range(0, im.height, rows):  # a strip at a time: Pillow's per-pixel conversions, no whole-image copies
        strip = im.crop((0, r, im.width, min(im.height, r + rows)))
        if alpha:
            strip = Image.alpha_composite(Image.new("RGBA", strip.size, (255, 255, 255, 255)), strip.convert("RGBA"))
        out[r:r + strip.height] = np.asarray(strip.convert("RGB"))
    return out


def read_depth(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A depth PNG -> (H, W) float32 in [-1, 1], nearer = larger, min-max normalised per image, decoded as the
    app decodes it (condition_maps.depth_from_array): 16-bit or 8-bit grey, or the original float-in-RGBA."""
    with open_image(path, max_pixels) as im:
        if im.mode not in ("I;16", "I;16L", "I;16B", "I", "L", "RGBA"):
            raise DataError(f"{path}: depth maps must be 16-bit grey, 8-bit grey or float-in-RGBA PNGs, "
                            f"got mode {im.mode}")
        return depth_from_array(np.asarray(im))


class ImageFolder(torch.utils.data.Dataset):
    """Images under `cfg.root` with their maps or class labels. Keys: an int (centre crop, no flip: for
    evaluation and encoding) or (index, seed) from `ResumableSampler` (random crop and flip)."""

    def __init__(self, cfg: DataConfig):
        if cfg.kind not in KINDS:
            raise DataError(f"unknown data kind {cfg.kind!r}; choose one of {', '.join(KINDS)}")
        if cfg.check_files not in CHECKS:
            raise DataError(f"unknown check_files {cfg.check_files!r}; choose one of {', '.join(CHECKS)}")
        self.cfg = cfg
        self.root = Path(cfg.root)
        self.files, self.unreadable = self._readable(list_images(self.root))
        self.classes: list[str] = []
        self.maps: list[Path] = []
        if cfg.kind == "class":
            rel = [p.relative_to(self.root).parts for p in self.files]
            if any(len(r) < 2 for r in rel):
                raise DataError(f"class labels come from sub-folder names: put every image of {self.root} in "
                                "a sub-folder named after its class")
            self.classes = sorted({r[0] for r in rel})
        if cfg.kind == "segmentation":
            if not cfg.n_labels:
                raise DataError("segmentation data needs n_labels (the number of label ids)")
            offset = cfg.label_offset if cfg.label_offset is not None else default_label_offset(cfg.n_labels)
            self.label_offset = offset
        if cfg.kind == "edges" and cfg.edges not in EDGE_SOURCES:
            raise DataError(f"unknown edges source {cfg.edges!r}; choose one of {', '.join(EDGE_SOURCES)}")
        if cfg.kind == "edges" and cfg.edges == "mixed" and not (
                0 <= cfg.hed_share <= 1 and 0 < cfg.hed_range[0] <= cfg.hed_range[1] < 1):
            raise DataError(f"edges=mixed needs hed_share in [0, 1] and 0 < hed_range low <= high < 1, got "
                            f"{cfg.hed_share}, {tuple(cfg.hed_range)}")
        if cfg.kind in ("segmentation", "depth") or (cfg.kind == "edges" and cfg.edges in ("given", "mixed")):
            self.maps = self._find_maps()
        self.skipped: set[str] = set()  # files of `files` that failed when read

    def __len__(self) -> int:
        return len(self.files)

    def _readable(self, files: list[Path]) -> tuple[list[Path], list[Path]]:
        """files -> (readable, unreadable) per `check_files`; DataError when none can be read."""
        decode = self.cfg.check_files == "decode"
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without holding the GIL
            errors = list(pool.map(lambda f: read_error(f, decode, self.cfg.max_pixels), files))
        bad = [(f, e) for f, e in zip(files, errors) if e is not None]
        first = f"{bad[0][0]} ({type(bad[0][1]).__name__}: {bad[0][1]})" if bad else ""
        if len(bad) == len(files):
            raise DataError(f"none of the {len(files)} image files under {self.root} can be read; first: {first}")
        if bad:
            more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
            warnings.warn(f"skipping unreadable file {first}{more}", RuntimeWarning, stacklevel=3)
        return [f for f, e in zip(files, errors) if e is None], [f for f, _ in bad]

    def _find_maps(self) -> list[Path]:
        kind = self.cfg.kind
        folder = Path(self.cfg.maps) if self.cfg.maps else next(
            (self.root.parent / n for n in MAP_FOLDERS[kind] if (self.root.parent / n).is_dir()), None)
        if folder is None or not folder.is_dir():
            raise DataError(f"{kind} maps not found: pass their folder (maps=...); looked for "
                            f"{folder or ', '.join(str(self.root.parent / n) for n in MAP_FOLDERS[kind])}")
        out, missing = [], []
        for f in self.files:
            mirrored = folder / f.relative_to(self.root).with_suffix(".png")
            flat = folder / (f.stem + ".png")
            found = mirrored if mirrored.is_file() else flat if flat.is_file() else None
            out.append(found)
            if found is None:
                missing.append(f)
        if missing:
            raise DataError(f"{len(missing)} of {len(self.files)} images have no {kind} map in {folder}, first: "
                            f"{missing[0].name} (expected {missing[0].stem}.png)")
        return out

    def class_of(self, i: int) -> int:
        return self.classes.index(self.files[i].relative_to(self.root).parts[0])

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index, seed = (key, None) if isinstance(key, int) else (int(key[0]), int(key[1]))
        for attempt in range(len(self.files)):
            i = (index + attempt) % len(self.files)
            try:
                return self._load(i, np.random.default_rng(seed) if seed is not None else None)
            except _UNREADABLE as e:
                self._skip(i, e)
        raise DataError(f"none of the {len(self.files)} images under {self.root} can be read")

    def _skip(self, i: int, err: Exception) -> None:
        path = str(self.files[i])
        if not self.skipped:
            warnings.warn(f"skipping unreadable file {path} ({type(err).__name__}: {err}); further unreadable "
                          f"files are skipped and counted without a warning", RuntimeWarning, stacklevel=3)
        self.skipped.add(path)

    def _load(self, i: int, rng: Optional[np.random.Generator]) -> dict[str, torch.Tensor]:
        cfg, S = self.cfg, self.cfg.size
        ex: dict[str, torch.Tensor] = {"index": torch.tensor(i)}
        soft = cfg.kind == "edges" and cfg.edges == "mixed"
        need_image = cfg.with_image or (cfg.kind == "edges" and cfg.edges in ("canny", "mixed"))
        with open_image(self.files[i], cfg.max_pixels) as im:
            w, h = im.size
            scale = S / min(w, h) if cfg.resize == "short_side" or min(w, h) < S else 1.0
            if rng is not None and cfg.scale_max > 1:  # drawn only then: other runs keep their crops
                scale *= float(rng.uniform(1.0, cfg.scale_max))
            W, H = max(S, round(w * scale)), max(S, round(h * scale))  # (W, H) after resizing
            rgb = None
            if need_image:
                if not self.maps and im.format == "JPEG" and scale < 1:
                    im.draft("RGB", (W, H))  # decode at a reduced JPEG scale, still >= (W, H)
                rgb = pil_to_rgb(im)  # (h', w', 3) uint8
        # One crop window (top, left) and flip for the image and its map.
        top = int(rng.integers(0, H - S + 1)) if rng is not None else (H - S) // 2
        left = int(rng.integers(0, W - S + 1)) if rng is not None else (W - S) // 2
        flip = bool(rng is not None and cfg.flip and rng.random() < 0.5)
        # edges="mixed": this crop's soft-map threshold, or None for Canny (drawn after the crop and the flip)
        soft_threshold = None
        if soft and rng is not None and rng.random() < cfg.hed_share:
            soft_threshold = float(rng.uniform(*cfg.hed_range))

        def fit(a: np.ndarray, interp: int | None = None) -> np.ndarray:  # resize to (H, W), crop, flip
            if a.shape[:2] != (H, W) and interp is not None:
                a = cv2.resize(a, (W, H), interpolation=interp)
            a = a[top:top + S, left:left + S]
            return np.array(a[:, ::-1] if flip else a)  # a writable, contiguous copy

        if rgb is not None:
            # INTER_AREA when shrinking (anti-aliased, like SmallestMaxSize on photos), bicubic when growing
            img = fit(rgb, cv2.INTER_AREA if rgb.shape[0] > H else cv2.INTER_CUBIC)  # (S, S, 3) uint8
            if cfg.with_image:
                ex["image"] = torch.from_numpy(img).permute(2, 0, 1).contiguous().float() / 127.5 - 1.0  # (3, S, S)
            if cfg.kind == "edges" and (cfg.edges == "canny" or (soft and soft_threshold is None)):
                thresholds = ()
                if rng is not None and cfg.canny_range:  # drawn after the crop: other runs keep their crops
                    low = float(rng.uniform(*cfg.canny_range))
                    thresholds = (low, 2 * low)
                ex["edges"] = torch.from_numpy(edges_from_photo(img, *thresholds))[None]  # (1, S, S) in {-1, 1}
        if self.maps and not (soft and soft_threshold is None):
            ex.update(self._load_map(i, (w, h), (H, W), fit, soft_threshold))
        if cfg.kind == "class":
            ex["class"] = torch.tensor(self.class_of(i))
        return ex

    def _load_map(self, i: int, image_size: tuple[int, int], resized: tuple[int, int],
                  fit, soft_threshold: float | None = None) -> dict[str, torch.Tensor]:
        """The map of image i: checked against the image's (w, h), resized to `resized` (H, W), cropped.
        soft_threshold: an edge-probability map (edges="mixed"), thresholded there and thinned."""
        kind, path = self.cfg.kind, self.maps[i]
        if kind == "depth":
            d = read_depth(path, self.cfg.max_pixels)  # (h, w) float32 in [-1, 1]
            self._check_size(path, d.shape[::-1], image_size)
            return {"depth": torch.from_numpy(fit(d, cv2.INTER_LINEAR))[None]}  # (1, S, S)
        with open_image(path, self.cfg.max_pixels) as m:
            if kind == "segmentation" and m.mode not in ("L", "P", "I;16", "I;16L", "I"):
                raise DataError(f"{path}: label maps must be single-channel PNGs (mode L, P or I;16) of label "
                                f"ids, got mode {m.mode}")
            self._check_size(path, m.size, image_size)
            a = np.asarray(m if kind == "segmentation" else m.convert("L"))
        if kind == "edges":  # strokes thinned at full size, then resized so that thin lines survive
            e = (edges_from_soft(a, soft_threshold) if soft_threshold is not None
                 else edges_from_sketch(a))  # (h, w) in {-1, 1}
            e = resize_edges(e, resized) if e.shape != resized else e
            return {"edges": torch.from_numpy(fit(e))[None]}  # (1, S, S)
        ids = a.astype(np.int32)  # (h, w); int64 only after the crop: a full-size int64 copy is 8 bytes a pixel
        if self.label_offset:
            ids += self.label_offset
            ids %= 256
        if ids.max() >= self.cfg.n_labels or ids.min() < 0:
            bad = np.unique(a[(ids >= self.cfg.n_labels) | (ids < 0)])[:8].tolist()
            raise DataError(f"{path}: label values {bad} lie outside the {self.cfg.n_labels} labels"
                            f"{f' (after adding offset {self.label_offset})' if self.label_offset else ''}")
        ids = fit(ids, cv2.INTER_NEAREST)  # nearest-neighbour only: ids are not values
        return {"segmentation": torch.from_numpy(ids.astype(np.int64))}  # (S, S)

    @staticmethod
    def _check_size(path: Path, map_size, image_size) -> None:
        if tuple(map_size) != tuple(image_size):
            raise DataError(f"{path} is {map_size[0]}x{map_size[1]} but its image is "
                            f"{image_size[0]}x{image_size[1]}: a map must have its image's size")


class ResumableSampler(torch.utils.data.Sampler):
    """Endless stream of keys (index, seed) for one rank; the k-th key is a pure function of
    (seed, rank, world_size, k), so a run resumed at step s continues with `start = s * batch_size`.

    Each epoch is a fresh permutation (padded by wrapping so every rank gets the same count); the seed of
    an example fixes its crop and flip.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1, start: int = 0,
                 shuffle: bool = True):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world_size
        self.start, self.shuffle = start, shuffle
        self.per_rank = -(-n // world_size)

    def order(self, epoch: int) -> torch.Tensor:
        """Permutation of epoch `epoch`, padded to per_rank * world_size entries."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g)
        else:
            perm = torch.arange(self.n)
        pad = self.per_rank * self.world - self.n
        return torch.cat([perm, perm.repeat(pad // self.n + 1)[:pad]]) if pad else perm

    def __iter__(self):
        k, epoch, perm = self.start, None, None
        while True:
            e, j = divmod(k, self.per_rank)
            if e != epoch:
                epoch, perm = e, self.order(e)
            pos = j * self.world + self.rank
            seed = int(np.random.SeedSequence([self.seed, e, pos]).generate_state(1)[0])
            yield int(perm[pos]), seed
            k += 1


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> Path:
    """images (B, C, H, W) in [-1, 1], C = 1 or 3 -> one PNG with nrow images per row, 2-pixel gaps."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    b, _, h, w = x.shape
    ncol = min(nrow, b)
    nrows = -(-b // ncol)
    grid = torch.full((3, nrows * (h + 2) + 2, ncol * (w + 2) + 2), 255, dtype=torch.uint8)
    for k in range(b):
        r, c = divmod(k, ncol)
        grid[:, 2 + r * (h + 2): 2 + r * (h + 2) + h, 2 + c * (w + 2): 2 + c * (w + 2) + w] = x[k]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    return path


class WithRandomCrops(torch.utils.data.Dataset):
    """Image i -> its centre-crop example with `crops` random-crop examples (keys (i, seed)) stacked on a new
    dim 1 of every tensor; a random crop that reads another file (i unreadable) repeats the centre crop."""

    def __init__(self, dataset: ImageFolder, crops: int, seed: int):
        self.dataset, self.crops, self.seed = dataset, crops, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        centre = self.dataset[i]
        examples = [centre]
        for j in range(self.crops):
            ex = self.dataset[(i, int(np.random.SeedSequence([self.seed, i, j]).generate_state(1)[0]))]
            examples.append(ex if int(ex["index"]) == int(centre["index"]) else centre)
        out = {k: torch.stack([e[k] for e in examples]) for k in centre if k not in ("index", "class")}
        return {**out, "index": centre["index"], **({"class": centre["class"]} if "class" in centre else {})}
