"""LPIPS-VGG (Zhang et al. 2018), the original's perceptual loss, for users who bring its weights.

Shape legend: B batch, H,W image, C_l / H_l,W_l channels and grid of VGG16 layer l.

Nothing is downloaded: the caller passes a file holding the whole LPIPS state dict with the original key
names (`scaling_layer.*`, `net.slice{1..5}.{i}.*` = torchvision VGG16 `features.{i}`, `lin{0..4}.model.1.weight`),
optionally under the prefix `loss.perceptual_loss.` -- so an original VQGAN training checkpoint (`.ckpt`, read
with the restricted unpickler) works as it is. Loading is strict. Without such a file, training uses the
download-free MobileNetV2 distance of perceptual.py.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .safe_unpickle import safe_load

# torchvision VGG16 `features` indices of the five slices, ending at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_SLICES = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]
_CHANNELS = [64, 128, 256, 512, 512]
_PREFIX = "loss.perceptual_loss."


def _vgg16_features() -> list[nn.Module]:
    """torchvision's VGG16 `features[0:30]`: 3x3 convs with ReLU, 2x2 max-pools between blocks."""
    layers: list[nn.Module] = []
    cin = 3
    for block, (cout, n) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]):
        if block:
            layers.append(nn.MaxPool2d(2, 2))
        for _ in range(n):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=False)]
            cin = cout
    return layers


class _Slices(nn.Module):
    def __init__(self):
        super().__init__()
        layers = _vgg16_features()
        for k, (a, b) in enumerate(_SLICES, start=1):
            s = nn.Sequential()
            for i in range(a, b):
                s.add_module(str(i), layers[i])  # keep torchvision's index as the key: net.slice2.5.weight
            setattr(self, f"slice{k}", s)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for k in range(1, 6):
            x = getattr(self, f"slice{k}")(x)
            out.append(x)  # (B, C_l, H_l, W_l)
        return out


class _Lin(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class _ScalingLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))


class LPIPS(nn.Module):
    """d(x, y) = sum_l mean_{h,w} w_l . (n_l(x) - n_l(y))^2 with learned per-channel weights w_l (`lin{l}`);
    frozen and always in eval mode. Images (B, 3 or 1, H, W) in [-1, 1] -> (B,)."""

    def __init__(self, eps: float = 1e-10):
        super().__init__()
        self.scaling_layer = _ScalingLayer()
        self.net = _Slices()
        for k, c in enumerate(_CHANNELS):
            setattr(self, f"lin{k}", _Lin(c))
        self.eps = eps
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert x.shape == y.shape, f"shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}"
        if x.shape[1] == 1:  # depth / edge maps (the original broadcasts them against the 3-channel shift)
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        s = self.scaling_layer
        feats = self.net(torch.cat([(x - s.shift) / s.scale, (y - s.shift) / s.scale]))
        total = x.new_zeros(x.shape[0], dtype=torch.float32)
        for k, f in enumerate(feats):
            f = f.float()
            f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + self.eps)
            fx, fy = f.chunk(2)  # (B, C_l, H_l, W_l)
            total = total + getattr(self, f"lin{k}").model((fx - fy).pow(2)).mean(dim=(1, 2, 3))
        return total


def load_lpips(path: str | Path) -> LPIPS:
    """LPIPS from a file with its whole state dict: a torch.save file or an original `.ckpt` (read without
    running code), keys optionally prefixed `loss.perceptual_loss.`, or a .safetensors file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = safe_load(path)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    if any(k.startswith(_PREFIX) for k in state):
        state = {k[len(_PREFIX):]: v for k, v in state.items() if k.startswith(_PREFIX)}
    model = LPIPS()
    missing = sorted(set(model.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise ValueError(f"{path} is not an LPIPS-VGG state dict: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.load_state_dict(state)
    return model
