"""Token orders for the transformer (the original permuters): raster (identity), subsample, z-curve,
spirals, random, alternate (boustrophedon).

A permuter maps raster-ordered tokens (B, L) to transformer order: forward(x) = x[:, forward_shuffle_idx];
reverse(x) = x[:, backward_shuffle_idx]. The int64 buffers are saved in checkpoints as `permuter.*` keys.
Deliberate difference: the original ZCurve stores the Morton codes themselves as the inverse, which is
wrong unless the grid is a power-of-two square; here the inverse is always argsort(forward).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

NAMES = ("identity", "subsample", "zcurve", "spiral_out", "spiral_in", "random", "alternate")


@dataclass
class PermuterConfig:
    name: str = "identity"
    H: int = 16  # latent grid the order is defined on (unused by identity)
    W: int = 16


def _subsample(H: int, W: int) -> np.ndarray:
    idx, c = np.arange(H * W).reshape(1, H, W), 1
    while min(H, W) > 1:  # recursive 2x2 subsampling: each step splits every channel into 4 phases
        idx = idx.reshape(c, H // 2, 2, W // 2, 2).transpose(0, 2, 4, 1, 3).reshape(c * 4, H // 2, W // 2)
        H, W, c = H // 2, W // 2, c * 4
    if H != 1 or W != 1:
        raise ValueError("subsample order needs a square power-of-two grid")
    return idx.ravel()


def _morton(i: int, j: int) -> int:
    code = 0
    for bit in range(32):  # column bits on even positions, row bits on odd positions
        code |= ((j >> bit) & 1) << (2 * bit) | ((i >> bit) & 1) << (2 * bit + 1)
    return code


def _spiral_out(H: int, W: int) -> np.ndarray:
    if H != W:
        raise ValueError("spiral orders need a square grid")
    grid = np.arange(H * W).reshape(H, W)
    i, j = H // 2, W // 2 - 1  # starts left of the centre, then up, right, down, left with growing arms
    order, arm = [grid[i, j]], 0
    for ring in range(1, H // 2 + 1):
        arm += 1
        for _ in range(arm):
            i -= 1
            order.append(grid[i, j])
        for _ in range(arm):
            j += 1
            order.append(grid[i, j])
        arm += 1
        if ring < H // 2:
            for _ in range(arm):
                i += 1
                order.append(grid[i, j])
            for _ in range(arm):
                j -= 1
                order.append(grid[i, j])
        else:
            for _ in range(arm - 1):
                i += 1
                order.append(grid[i, j])
    return np.array(order)


def permutation(name: str, H: int, W: int) -> np.ndarray:
    """The forward order: position t of the transformer sequence holds raster token order[t]."""
    if name == "subsample":
        return _subsample(H, W)
    if name == "zcurve":
        return np.argsort([_morton(i, j) for i in range(H) for j in range(W)])
    if name == "spiral_out":
        return _spiral_out(H, W)
    if name == "spiral_in":
        return _spiral_out(H, W)[::-1].copy()
    if name == "random":
        return np.random.RandomState(1).permutation(H * W)
    if name == "alternate":
        grid = np.arange(H * W).reshape(H, W)
        grid[1::2] = grid[1::2, ::-1]
        return grid.ravel()
    raise ValueError(f"unknown permuter {name!r}; choose one of {', '.join(NAMES)}")


class Permuter(nn.Module):
    def __init__(self, cfg: PermuterConfig):
        super().__init__()
        self.name = cfg.name
        if cfg.name != "identity":
            order = torch.as_tensor(permutation(cfg.name, cfg.H, cfg.W), dtype=torch.long)
            self.register_buffer("forward_shuffle_idx", order)
            self.register_buffer("backward_shuffle_idx", torch.argsort(order))

    @property
    def is_identity(self) -> bool:
        return self.name == "identity"

    def forward(self, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """(B, L) raster -> (B, L) transformer order (or back with reverse=True)."""
        if self.is_identity:
            return x
        if x.shape[1] != self.forward_shuffle_idx.numel():
            raise ValueError(f"the {self.name} order is defined for {self.forward_shuffle_idx.numel()} tokens, "
                             f"got {x.shape[1]}")
        return x[:, self.backward_shuffle_idx if reverse else self.forward_shuffle_idx]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if not self.is_identity:  # never trust a stored inverse (see the module docstring)
            self.backward_shuffle_idx.copy_(torch.argsort(self.forward_shuffle_idx))
