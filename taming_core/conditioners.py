"""Conditioning stages: each turns a condition into a token sequence c (B, L_c) for the transformer.

Shape legend: B batch, H,W condition map, h,w its latent grid, L_c = h*w (or 1 for start/class tokens).
All conditioners implement one protocol, `encode(cond) -> LongTensor (B, L_c)`:
- `Unconditional`: a start-of-sequence token (original SOSProvider).
- `ClassLabel`: the class id is the token (original Labelator).
- `VQCondition`: a VQGAN over the condition map: segmentation (one-hot or label ids), depth, edges, or the
  first stage itself (original `__is_first_stage__`).
- `CoordCondition`: quantised coordinates (original CoordStage).
- `LabelGrid`: a segmentation map as the most frequent label of each f x f cell, no VQ stage (our addition,
  for aligned conditioning: the label under each image token, exactly).
Condition tokens share the transformer's vocabulary with image tokens (no offset), as in the original.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol

import torch
import torch.nn.functional as F

from .vqgan import VQGAN, VQGANConfig

KINDS = ("none", "class", "segmentation", "depth", "edges", "first_stage", "coord")


@dataclass
class ConditionerConfig:
    kind: str = "none"  # one of KINDS
    sos_token: int = 0  # none
    n_classes: int = 1000  # class
    n_labels: Optional[int] = None  # segmentation: 182 (S-FLCKR), 183 (COCO-Stuff), 151 (ADE20k)
    # Added to raw label ids modulo 256 before one-hot encoding. None picks the original's choice: 1 for 183
    # labels (COCO-Stuff, so 255 = unlabelled becomes 0), else 0.
    label_offset: Optional[int] = None
    vq: Optional[VQGANConfig] = None  # segmentation / depth / edges: the condition-stage VQGAN
    downsample_size: int = -1  # original downsample_cond_size: nearest resize to (s, s) before encoding
    n_embed: int = 1024  # coord
    # segmentation: > 0 codes the map as a grid of labels (LabelGrid: the most frequent label of each
    # grid_factor x grid_factor cell; n_labels condition ids) instead of a VQ stage (vq stays None)
    grid_factor: int = 0
    # label grid only: each cell's id also tells which of its four quarters have the cell's label as their
    # most frequent one (id = label * 16 + mask, bit q for quarter q in raster order; n_labels * 16 ids), so
    # a token knows where inside its cell a painted boundary runs. grid_factor must be even.
    grid_detail: bool = False
    down_factor: int = 16  # coord


class Conditioner(Protocol):
    def encode(self, cond) -> torch.Tensor:
        """Condition -> tokens (B, L_c) int64."""
        ...


def _batch_size(cond) -> int:
    return 1 if cond is None else int(cond) if isinstance(cond, int) else len(cond)


class Unconditional:
    """Every sequence starts with `sos_token`; `cond` is None (batch 1), a batch size, or any batch."""

    def __init__(self, sos_token: int, device_of):
        self.sos_token, self._device_of = sos_token, device_of

    def encode(self, cond=None) -> torch.Tensor:
        return torch.full((_batch_size(cond), 1), self.sos_token, dtype=torch.long, device=self._device_of())


class ClassLabel:
    """Class id c in [0, n_classes) -> the single token c."""

    def __init__(self, n_classes: int):
        self.n_classes = n_classes

    def encode(self, cond: torch.Tensor) -> torch.Tensor:
        cond = torch.as_tensor(cond)
        if cond.ndim != 1 or cond.is_floating_point():
            raise ValueError(f"class labels must be an int64 tensor of shape (B,), got {cond.dtype} "
                             f"{tuple(cond.shape)}")
        if cond.numel() and (int(cond.min()) < 0 or int(cond.max()) >= self.n_classes):
            raise ValueError(f"class labels must lie in [0, {self.n_classes}), got "
                             f"[{int(cond.min())}, {int(cond.max())}]")
        return cond.long()[:, None]


class CoordCondition:
    """Coordinate map (B, 1, H, W) in [0, 1] -> area-downsampled by `down_factor`, rounded to
    [0, n_embed - 1]. The original rounds c * n_embed, which yields the out-of-range token n_embed at c = 1;
    here it is clamped to n_embed - 1."""

    def __init__(self, n_embed: int, down_factor: int):
        self.n_embed, self.down_factor = n_embed, down_factor

    def encode(self, cond: torch.Tensor) -> torch.Tensor:
        if cond.ndim != 4 or cond.shape[1] != 1:
            raise ValueError(f"a coordinate map must be (B, 1, H, W), got {tuple(cond.shape)}")
        if float(cond.min()) < 0 or float(cond.max()) > 1:
            raise ValueError("a coordinate map must lie in [0, 1]")
        c = F.interpolate(cond.float(), scale_factor=1 / self.down_factor, mode="area").clamp(0, 1)
        return (c * self.n_embed).round().long().clamp_max(self.n_embed - 1).flatten(1)  # (B, h*w)


def default_label_offset(n_labels: int) -> int:
    """The original's shift of raw label ids: 1 for the 183 labels of COCO-Stuff (so 255 = unlabelled becomes
    0), else 0."""
    return int(n_labels == 183)


class LabelGrid:
    """Label map -> the most frequent label of each f x f cell, raster order (B, (H/f) * (W/f)); ties go to the
    lower id. Input as VQCondition takes it: raw label ids (B, H, W) (shifted by label_offset) or one-hot
    (B, n_labels, H, W). H and W must be multiples of f. With `detail`, id = label * 16 + mask, where bit q of
    mask says that quarter q of the cell (raster order: top left, top right, bottom left, bottom right) has
    that label as its most frequent one too (15: every quarter's most frequent label is the cell's)."""

    QUARTERS = 16  # masks per label with detail

    def __init__(self, n_labels: int, label_offset: Optional[int], factor: int, detail: bool = False):
        if detail and factor % 2:
            raise ValueError(f"a label grid with detail needs an even cell size, got {factor}")
        self.n_labels, self.factor, self.detail = n_labels, factor, detail
        self.label_offset = label_offset if label_offset is not None else default_label_offset(n_labels)

    @property
    def n_ids(self) -> int:
        """Condition ids this grid produces (the null condition comes after them)."""
        return self.n_labels * (self.QUARTERS if self.detail else 1)

    def labels_to_onehot(self, labels: torch.Tensor) -> torch.Tensor:
        """Raw label ids (B, H, W) -> one-hot (B, n_labels, H, W), as VQCondition.labels_to_onehot."""
        return labels_to_onehot(labels, self.n_labels, self.label_offset)

    def label_ids(self, labels: torch.Tensor) -> torch.Tensor:
        """Raw label ids (B, H, W) -> the model's ids (B, H, W), checked (conditioners.label_ids)."""
        return label_ids(labels, self.n_labels, self.label_offset)

    def encode(self, cond: torch.Tensor) -> torch.Tensor:
        if not isinstance(cond, torch.Tensor):
            raise TypeError(f"a segmentation condition must be a torch.Tensor, got {type(cond).__name__}")
        onehot = cond.is_floating_point()
        if onehot and (cond.ndim != 4 or cond.shape[1] != self.n_labels):
            raise ValueError(f"expected a one-hot map (B, {self.n_labels}, H, W), got {tuple(cond.shape)}")
        cond = cond if onehot else self.label_ids(cond)  # (B, n_labels, H, W) or (B, H, W)
        f = self.factor
        if cond.shape[-2] % f or cond.shape[-1] % f:
            raise ValueError(f"a label map of {cond.shape[-2]}x{cond.shape[-1]} pixels does not divide into "
                             f"{f}x{f} cells")

        def majority(size: int) -> torch.Tensor:  # (B, H / size, W / size)
            if onehot:
                return F.avg_pool2d(cond.float(), size).argmax(1)  # label shares -> the majority
            return cell_majority(cond, self.n_labels, size)
        cell = majority(f)  # (B, h, w)
        if not self.detail:
            return cell.flatten(1)
        quarter = majority(f // 2)  # (B, 2h, 2w)
        same = quarter == cell.repeat_interleave(2, 1).repeat_interleave(2, 2)  # (B, 2h, 2w)
        B, h, w = cell.shape
        bits = same.view(B, h, 2, w, 2).permute(0, 1, 3, 2, 4).reshape(B, h, w, 4).long()  # (B, h, w, 4)
        mask = (bits * torch.tensor([1, 2, 4, 8], device=bits.device)).sum(-1)  # (B, h, w)
        return (cell * self.QUARTERS + mask).flatten(1)  # (B, h*w)


def label_ids(labels: torch.Tensor, n_labels: int, label_offset: int) -> torch.Tensor:
    """Raw label ids (B, H, W) (dataset ids; COCO-Stuff: 0..181 and 255 = unlabelled) -> the model's ids
    (B, H, W) int64 in [0, n_labels): shifted by label_offset modulo 256, checked."""
    if labels.is_floating_point() or labels.ndim != 3:
        raise ValueError(f"a label map must be an integer tensor (B, H, W), got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    ids = (labels.long() + label_offset) % 256 if label_offset else labels.long()
    bad = (ids < 0) | (ids >= n_labels)
    if bool(bad.any()):
        raw = sorted(set(labels[bad].unique().tolist()))[:8]
        raise ValueError(f"label ids {raw} are unknown to this model ({n_labels} labels"
                         f"{', ids shifted by %d' % label_offset if label_offset else ''})")
    return ids


def labels_to_onehot(labels: torch.Tensor, n_labels: int, label_offset: int) -> torch.Tensor:
    """Raw label ids (B, H, W) -> one-hot (B, n_labels, H, W) float32 (label_ids, then one channel per id)."""
    return F.one_hot(label_ids(labels, n_labels, label_offset), n_labels).permute(0, 3, 1, 2).float()


def cell_majority(ids: torch.Tensor, n_labels: int, f: int) -> torch.Tensor:
    """ids (B, H, W) in [0, n_labels), H and W multiples of f -> the most frequent id of each f x f cell
    (B, H/f, W/f), ties to the lower id: avg_pool2d of the one-hot map then argmax, counted without the
    one-hot map (at 256x256 and 183 labels that map is 96 MB of int64)."""
    B, H, W = ids.shape
    h, w = H // f, W // f
    cell = (torch.arange(H, device=ids.device) // f)[:, None] * w + torch.arange(W, device=ids.device) // f  # (H, W)
    flat = (torch.arange(B, device=ids.device)[:, None, None] * (h * w) + cell) * n_labels + ids  # (B, H, W)
    counts = torch.bincount(flat.flatten(), minlength=B * h * w * n_labels).view(B, h, w, n_labels)
    return counts.argmax(-1)  # the first of equal counts: the lower id


class VQCondition:
    """A VQGAN over the condition map; tokens are its code indices in raster order (B, h*w)."""

    def __init__(self, stage: VQGAN, kind: str, n_labels: int | None = None, label_offset: int | None = None,
                 downsample_size: int = -1):
        self.stage, self.kind = stage, kind
        self.n_labels = n_labels if n_labels is not None else stage.config.ddconfig.in_channels
        self.label_offset = label_offset if label_offset is not None else default_label_offset(self.n_labels)
        self.downsample_size = downsample_size

    def labels_to_onehot(self, labels: torch.Tensor) -> torch.Tensor:
        """Raw label ids (B, H, W) (dataset ids; COCO-Stuff: 0..181 and 255 = unlabelled) ->
        one-hot (B, n_labels, H, W) float32."""
        return labels_to_onehot(labels, self.n_labels, self.label_offset)

    def label_ids(self, labels: torch.Tensor) -> torch.Tensor:
        """Raw label ids (B, H, W) -> the model's ids (B, H, W), checked (conditioners.label_ids)."""
        return label_ids(labels, self.n_labels, self.label_offset)

    def prepare(self, cond: torch.Tensor) -> torch.Tensor:
        """The stage's input (B, C_in, H, W) in [-1, 1] (one-hot maps in {0, 1})."""
        if not isinstance(cond, torch.Tensor):
            raise TypeError(f"the {self.kind} condition must be a torch.Tensor, got {type(cond).__name__}")
        if self.kind == "segmentation" and not cond.is_floating_point():
            cond = self.labels_to_onehot(cond)
        elif self.kind in ("depth", "edges") and cond.ndim == 3:
            cond = cond[:, None]  # (B, H, W) -> (B, 1, H, W)
        if self.downsample_size > 0:
            cond = F.interpolate(cond, size=(self.downsample_size, self.downsample_size), mode="nearest")
        return cond

    def encode(self, cond: torch.Tensor) -> torch.Tensor:
        return self.stage.encode(self.prepare(cond)).indices.flatten(1)  # (B, h*w)
