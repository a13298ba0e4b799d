"""VQGAN training losses (paper Sec. 3.1, Eq. 4-7; the original VQLPIPSWithDiscriminator, reference F.1).

Shape legend: B batch, C channels, H,W image, H_p,W_p discriminator patch grid, K labels (segmentation).

Generator step:  L = L_rec + lambda * f(step) * L_GAN + codebook_weight * L_VQ, with
  L_rec  = pixel_weight * |x - x_hat| + perceptual_weight * d_perc(x, x_hat)        (images, depth, edges)
         = BCE-with-logits(x_hat, onehot(x)) or cross-entropy                       (segmentation)
  L_GAN  = -mean D(x_hat)
  lambda = disc_weight * ||grad_GL L_rec|| / (||grad_GL L_GAN|| + delta), clamped to [0, adaptive_max]
  (Eq. 7; G_L = the decoder's last conv weight; delta = 1e-4 as the original: it keeps lambda finite when
  the GAN gradient at G_L vanishes, e.g. for a saturated D; the clamp caps it at 1e4 in that case).
Discriminator step: f(step) * hinge (or vanilla) loss on D(x) and D(sg[x_hat]).
f(step) = 0 before `disc_start`; then, unlike the original's hard switch, it rises linearly to
`disc_factor` over `disc_ramp` steps (0 = the original's switch), so the first GAN gradients do not wreck
the reconstructions a small data set has just learnt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .lpips import load_lpips
from .perceptual import PerceptualDistance


@dataclass
class VQGANLossConfig:
    reconstruction: str = "l1"  # "l1" (images, depth, edges) | "bce" (segmentation, the original; edges) | "ce"
    pixel_weight: float = 1.0  # the original stores `pixelloss_weight` but never uses it (= 1 here)
    perceptual_weight: float = 1.0  # 0 switches the perceptual term (and its network) off
    perceptual_weights: Optional[str] = None  # path to mobilenet_v2-b0353104.pth; None: the installed package
    # LPIPS-VGG state dict (lpips.py; e.g. an original VQGAN .ckpt): real LPIPS instead of the MobileNetV2 distance
    lpips_weights: Optional[str] = None
    codebook_weight: float = 1.0
    disc_start: int = 10_000  # step at which the GAN terms start (the original configs: 10k-250k)
    disc_ramp: int = 1_000  # steps over which f rises from 0 to disc_factor (0: switch on at once)
    disc_factor: float = 1.0
    disc_weight: float = 0.8  # multiplies the adaptive weight lambda (the original configs use 0.75-0.8)
    disc_loss: str = "hinge"  # "hinge" | "vanilla"
    disc_layers: int = 3
    disc_ndf: int = 64
    adaptive_delta: float = 1e-4
    adaptive_max: float = 1e4


@dataclass
class GeneratorLoss:
    total: torch.Tensor  # () what the generator step back-propagates
    reconstruction: torch.Tensor  # () L1 (or BCE / CE), weighted by pixel_weight
    perceptual: torch.Tensor  # () mean perceptual distance, unweighted (0 when switched off)
    codebook: torch.Tensor  # () quantizer loss, unweighted
    gan: torch.Tensor  # () -mean D(x_hat), unweighted (0 before disc_start)
    adaptive_weight: torch.Tensor  # () lambda, detached (0 before disc_start)
    disc_factor: float  # f(step)


@dataclass
class DiscriminatorLoss:
    total: torch.Tensor  # () f(step) * hinge/vanilla loss
    logits_real: torch.Tensor  # () mean D(x), detached
    logits_fake: torch.Tensor  # () mean D(x_hat), detached


def disc_factor_at(step: int, cfg: VQGANLossConfig) -> float:
    """f(step): 0 before disc_start, then a linear ramp over disc_ramp steps up to disc_factor."""
    if step < cfg.disc_start:
        return 0.0
    if cfg.disc_ramp <= 0:
        return cfg.disc_factor
    return cfg.disc_factor * min(1.0, (step - cfg.disc_start + 1) / cfg.disc_ramp)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


def adaptive_weight(rec_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                    delta: float = 1e-4, max_weight: float = 1e4) -> torch.Tensor:
    """lambda = ||grad_GL L_rec|| / (||grad_GL L_GAN|| + delta) (Eq. 7), clamped and detached.

    Gradients are those of this process's batch (in DDP each rank computes its own lambda, as the original).
    """
    g_rec = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True)[0]
    lam = g_rec.float().norm() / (g_gan.float().norm() + delta)
    return lam.clamp(0.0, max_weight).detach()


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """logits (B, K, H, W), labels (B, H, W) int64 in [0, K) -> () mean loss.

    "bce": BCE-with-logits against the one-hot map (the original BCELossWithQuant); "ce": cross-entropy.
    """
    if kind == "ce":
        return F.cross_entropy(logits.float(), labels)
    onehot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).float()  # (B, K, H, W)
    return F.binary_cross_entropy_with_logits(logits.float(), onehot)


class VQGANLoss(torch.nn.Module):
    """Holds the frozen perceptual network; computes the generator and discriminator objectives above.

    Training-only: never part of a released model (checkpoint.py drops the original's `loss.*` keys).
    """

    def __init__(self, cfg: VQGANLossConfig):
        super().__init__()
        if cfg.reconstruction not in ("l1", "bce", "ce"):
            raise ValueError(f"reconstruction must be 'l1', 'bce' or 'ce', got {cfg.reconstruction!r}")
        if cfg.disc_loss not in ("hinge", "vanilla"):
            raise ValueError(f"disc_loss must be 'hinge' or 'vanilla', got {cfg.disc_loss!r}")
        self.cfg = cfg
        self.perceptual: torch.nn.Module | None = None  # (x, y) -> (B,) distances
        if cfg.reconstruction == "l1" and cfg.perceptual_weight > 0:
            self.perceptual = (load_lpips(cfg.lpips_weights) if cfg.lpips_weights
                               else PerceptualDistance(cfg.perceptual_weights))

    @property
    def uses_discriminator(self) -> bool:
        return self.cfg.reconstruction == "l1" and self.cfg.disc_factor > 0

    def generator(self, x: torch.Tensor, x_hat: torch.Tensor, codebook_loss: torch.Tensor, step: int,
                  logits_fake: torch.Tensor | None = None,
                  last_layer: torch.Tensor | None = None) -> GeneratorLoss:
        """x: target (B, C, H, W) in [-1, 1], or labels (B, H, W) for segmentation; x_hat (B, C, H, W) (logits
        for 'bce'/'ce': of each label, or of x > 0 for a binary map such as edges, where L1 is slow to leave
        the all-background answer);
        logits_fake = D(x_hat) (B, 1, H_p, W_p), needed once f(step) > 0, with last_layer = G_L."""
        cfg = self.cfg
        zero = x_hat.new_zeros((), dtype=torch.float32)
        if cfg.reconstruction == "l1":
            rec = cfg.pixel_weight * (x.float() - x_hat.float()).abs().mean()
        elif x.is_floating_point():  # a binary map in [-1, 1] (edges): x_hat are logits of "x > 0"
            if cfg.reconstruction != "bce":
                raise ValueError("maps in [-1, 1] take reconstruction 'l1' or 'bce'")
            rec = F.binary_cross_entropy_with_logits(x_hat.float(), (x > 0).float())
        else:
            rec = segmentation_loss(x_hat, x, cfg.reconstruction)
        perc = self._perceptual(x, x_hat) if self.perceptual is not None else zero
        nll = rec + cfg.perceptual_weight * perc
        factor = disc_factor_at(step, cfg) if self.uses_discriminator else 0.0
        gan, lam = zero, zero
        if factor > 0:
            if logits_fake is None or last_layer is None:
                raise ValueError("the GAN term is on: pass logits_fake = D(x_hat) and last_layer")
            gan = -logits_fake.float().mean()
            lam = cfg.disc_weight * adaptive_weight(nll, gan, last_layer, cfg.adaptive_delta, cfg.adaptive_max)
        total = nll + lam * factor * gan + cfg.codebook_weight * codebook_loss.float()
        return GeneratorLoss(total, rec.detach(), perc.detach(), codebook_loss.detach().float(), gan.detach(),
                             lam, factor)

    def _perceptual(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """() mean perceptual distance. On a CPU it runs in fp32 even inside bf16 autocast: MobileNetV2's
        depthwise convolutions are about 2x slower in bf16 there (precision.py); on CUDA autocast applies."""
        if x_hat.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return self.perceptual(x.float(), x_hat.float()).mean()
        return self.perceptual(x, x_hat).mean()

    def discriminator(self, logits_real: torch.Tensor, logits_fake: torch.Tensor, step: int) -> DiscriminatorLoss:
        """logits_real = D(x), logits_fake = D(sg[x_hat]), each (B, 1, H_p, W_p)."""
        d_loss = hinge_d_loss if self.cfg.disc_loss == "hinge" else vanilla_d_loss
        factor = disc_factor_at(step, self.cfg)
        total = factor * d_loss(logits_real.float(), logits_fake.float())
        return DiscriminatorLoss(total, logits_real.detach().float().mean(), logits_fake.detach().float().mean())
