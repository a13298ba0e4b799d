"""Photo -> label map: a small semantic segmenter (MobileNetV2 backbone + a light FPN head).

Shape legend: B batch, H,W image, K classes (the config's labels, then "other"), E head width,
H_l,W_l the grid of backbone layer l (strides 4, 8, 16, 32).

It serves the app ("Start from a photo": a photo becomes a label map to repaint), training data (pseudo
maps for photos without one) and evaluation (does a generated image follow its map?). Its classes are
COCO-Stuff labels (`labels.COCO_STUFF` names, by default the painter's `SCENE_LABELS`) plus a last class
"other" for everything else; predicted maps use the data's encoding: COCO-Stuff id - 1 per pixel, and
255 (unlabelled) where the segmenter says "other".

Head (our design, FPN-style, after LR-ASPP's gated top feature): the stride-32 feature is projected to E
channels and scaled by a sigmoid gate from its global average; it is upsampled and added to 1x1 projections
of the stride-16, -8 and -4 features in turn, each sum smoothed by a depthwise-separable 3x3 block; a 1x1
classifier at stride 4 gives the logits, upsampled bilinearly to the input size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .labels import COCO_STUFF, SCENE_LABELS, UNLABELLED
from .mobilenet import IMAGENET_MEAN, IMAGENET_STD, MobileNetV2Features

# features[i] outputs used by the head: strides 4, 8, 16, 32 with 24, 32, 96, 320 channels
SEG_TAPS = (3, 6, 13, 17)
_TAP_CHANNELS = (24, 32, 96, 320)
STRIDE = 32  # inputs are padded to a multiple of this


@dataclass
class SegmenterConfig:
    labels: list[str] = field(default_factory=lambda: list(SCENE_LABELS))  # COCO-Stuff names; class K-1 = other
    width: int = 96  # E, channels of the head
    short_side: int = 256  # `segment` scales a photo to this short side before predicting


def _separable(c: int) -> nn.Sequential:
    """3x3 depthwise + 1x1 pointwise, each with BatchNorm and ReLU."""
    return nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                         nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))


class Segmenter(nn.Module):
    """Images (B, 3, H, W) in [-1, 1] -> class logits (B, K, H, W); `segment` maps a photo to label ids."""

    def __init__(self, config: SegmenterConfig):
        super().__init__()
        self.config = config
        unknown = [n for n in config.labels if n not in COCO_STUFF]
        if unknown or not config.labels or len(set(config.labels)) != len(config.labels):
            raise ValueError(f"segmenter labels must be distinct COCO-Stuff names; unknown: {unknown[:4]}")
        E, K = config.width, len(config.labels) + 1
        self.backbone = MobileNetV2Features()
        self.top = nn.Sequential(nn.Conv2d(320, E, 1, bias=False), nn.BatchNorm2d(E), nn.ReLU(inplace=True))
        self.gate = nn.Conv2d(320, E, 1)
        self.lateral = nn.ModuleList(nn.Conv2d(c, E, 1) for c in _TAP_CHANNELS[:3][::-1])  # strides 16, 8, 4
        self.smooth = nn.ModuleList(_separable(E) for _ in range(3))
        self.classifier = nn.Conv2d(E, K, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # class index -> COCO-Stuff id (other -> 255), and COCO-Stuff id (0..255) -> class index
        ids = [COCO_STUFF.index(n) for n in config.labels] + [UNLABELLED]
        self.register_buffer("class_ids", torch.tensor(ids, dtype=torch.uint8), persistent=False)

    @property
    def n_classes(self) -> int:
        return len(self.config.labels) + 1

    def class_of_id(self) -> np.ndarray:
        """(256,) int64: the class of every COCO-Stuff id (labels outside the config -> other, K-1), and -1 for
        255 = unlabelled (ignored in training and evaluation)."""
        table = np.full(256, self.n_classes - 1, np.int64)
        table[self.class_ids[:-1].cpu().numpy()] = np.arange(self.n_classes - 1)
        table[UNLABELLED] = -1
        return table

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, H, W) in [-1, 1], H and W multiples of 32 -> [(B, C_l, H_l, W_l)] at strides 4..32."""
        x = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.backbone.features):
            x = layer(x)
            if i in SEG_TAPS:
                out.append(x)
            if i == SEG_TAPS[-1]:
                break
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) in [-1, 1] -> logits (B, K, H, W); any H, W (padded to a multiple of 32 inside)."""
        H, W = x.shape[-2:]
        ph, pw = -H % STRIDE, -W % STRIDE
        if ph or pw:  # reflect where possible; replicate for inputs too small to reflect
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < H and pw < W else "replicate")
        f4, f8, f16, f32 = self.features(x)
        y = self.top(f32) * torch.sigmoid(self.gate(f32.mean((2, 3), keepdim=True)))  # (B, E, H/32, W/32)
        for lateral, smooth, f in zip(self.lateral, self.smooth, (f16, f8, f4)):
            y = F.interpolate(y, size=f.shape[-2:], mode="bilinear", align_corners=False)
            y = smooth(y + lateral(f))  # (B, E, H_l, W_l)
        logits = self.classifier(y)  # (B, K, H/4, W/4)
        logits = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
        return logits[..., :H, :W]  # (B, K, H, W)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) in [-1, 1] -> label ids (B, H, W) uint8 (COCO-Stuff id - 1; 255 where "other")."""
        return self.class_ids[self(x).argmax(1)]

    @torch.no_grad()
    def segment(self, rgb: np.ndarray, short_side: int | None = None) -> np.ndarray:
        """A photo (H, W, 3) uint8 -> label ids (H, W) uint8 (COCO-Stuff id - 1; 255 where "other").

        The photo is scaled to `short_side` (default: the config's) on its short side, segmented, and the map
        scaled back to (H, W) with nearest neighbour."""
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"segment takes an (H, W, 3) uint8 photo, got {rgb.shape} {rgb.dtype}")
        H, W = rgb.shape[:2]
        s = (short_side or self.config.short_side) / min(H, W)
        size = (max(1, round(W * s)), max(1, round(H * s)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        p = next(self.parameters())
        x = torch.from_numpy(small).to(p.device).permute(2, 0, 1)[None].float() / 127.5 - 1  # (1, 3, h, w)
        ids = self.predict(x.to(p.dtype))[0].cpu().numpy()  # (h, w)
        return cv2.resize(ids, (W, H), interpolation=cv2.INTER_NEAREST)
