"""PatchGAN discriminator D of the VQGAN (paper Sec. 3.1, Eq. 5; pix2pix's NLayerDiscriminator).

Shape legend: B batch, C channels, H,W image, H_p,W_p patch grid of logits.
D maps an image to one logit per overlapping patch; with n_layers = 3 a 256x256 input gives 30x30 logits,
each seeing a 70x70 receptive field. Layout, init and key names (`main.{i}`) follow the original (reference
F.1), so the `loss.discriminator.*` weights of an original checkpoint load into it.
"""
from __future__ import annotations

import torch
from torch import nn


class NLayerDiscriminator(nn.Module):
    """Conv4x4/s2 + LeakyReLU(0.2); (n_layers - 1) x [Conv4x4/s2 + BatchNorm + LeakyReLU], widths
    ndf * min(2^n, 8); Conv4x4/s1 + BatchNorm + LeakyReLU; Conv4x4/s1 to one channel.

    BatchNorm: in training its statistics are those of the local batch. `train/train_vqgan.py` feeds real and
    reconstructed images through D as one concatenated batch in both the generator and the discriminator
    step (the original calls D on reconstructions alone in the generator step and on each half separately
    in its own step), so both steps see D with the same normalisation, and DDP sees one forward per backward.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.n_layers = n_layers
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1, bias=False), nn.BatchNorm2d(ndf * mult),
                   nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)

    def patch_grid(self, size: int) -> int:
        """Side of the logit grid for a square input of side `size` (<= 0: the input is too small)."""
        for _ in range(self.n_layers):
            size = size // 2  # 4x4 stride 2 padding 1 halves (floor)
        return size - 2  # two 4x4 stride-1 padding-1 convs remove one pixel each

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [-1, 1] -> logits (B, 1, H_p, W_p); > 0 means 'real'."""
        return self.main(x)


def _init_weights(m: nn.Module) -> None:
    # As the original: conv weights N(0, 0.02) (biases keep PyTorch's default), BatchNorm scale N(1, 0.02).
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
