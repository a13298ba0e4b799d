"""Differentiable augmentation for training a discriminator on few images (DiffAugment, Zhao et al. 2020).

Shape legend: B batch, C channels, H,W image.

With ~800 photos a discriminator memorises the real set within a few hundred steps and its gradients stop
meaning anything. DiffAugment applies the same *kind* of random transform to every image that D sees, real
and generated, in both the generator and the discriminator step; since each transform is differentiable, the
generator is still trained through it, and since reals are never seen unaugmented, the generator has no
reason to produce augmented-looking images. The paper's three policies, with its parameters:
  color:       brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5) (per image)
  translation: shift by up to 1/8 of each side, zero padding (per image)
  cutout:      one zeroed square of half the side at a random place (per image)
Images are in [-1, 1] here (the paper's are too).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); '' -> (); unknown names are refused."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}: use a comma-separated subset of {POLICIES}")
    return names


def _color(x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    rand = lambda: torch.rand(b, 1, 1, 1, dtype=x.dtype, device=x.device)  # noqa: E731
    x = x + (rand() - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (rand() * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (rand() + 0.5) + mean  # contrast


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1) + dy  # (B, H, 1) source row of each output row
    xs = torch.arange(w, device=x.device).view(1, 1, w) + dx  # (B, 1, W)
    padded = F.pad(x, (1, 1, 1, 1))  # one zero border: out-of-range sources read it
    ys, xs = (ys + 1).clamp(0, h + 1), (xs + 1).clamp(0, w + 1)
    flat = padded.flatten(2)  # (B, C, (H+2)(W+2))
    index = (ys * (w + 2) + xs).flatten(1)  # (B, H*W)
    out = flat.gather(2, index.unsqueeze(1).expand(-1, x.shape[1], -1))  # (B, C, H*W)
    return out.view_as(x)


def _cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)  # square centre
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    top, left = cy - ch // 2, cx - cw // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)  # (B, H, W)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(x: torch.Tensor, policy: tuple[str, ...] | str) -> torch.Tensor:
    """x (B, C, H, W) -> the same shape, each image transformed at random by the policies in order."""
    if isinstance(policy, str):
        policy = parse_policy(policy)
    for name in policy:
        x = _OPS[name](x)
    return x.contiguous()
