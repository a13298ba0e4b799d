"""VQGAN training losses (paper Sec. 3.1, Eq. 4-7; the original VQLPIPSWithDiscriminator, reference F.1).

Shape legend: B batch, C channels, H,W image, H_p,W_p discriminator patch grid, K labels (segmentation).

Generator step:  L = L_rec + lambda * f(step) * L_GAN + codebook_weight * L_VQ, with
  L_rec  = pixel_weight * |x - x_hat| + perceptual_weight * d_perc(x, x_hat)        (images, depth, edges)
         = BCE-with-logits(x_hat, onehot(x)) or cross-entropy                       (segmentation)
  L_GAN  = -mean D(x_hat)
  lambda = disc_weight * ||grad_GL L_rec|| / (||grad_GL L_GAN|| + delta), clamped to [0, adaptive_max]
  (Eq. 7; G_L = the decoder's last conv weight; delta = 1e-4 as the original: it keeps lambda finite when
  the GAN gradient at G_L vanishes, e.g. for a saturated D; the clamp caps it at 1e4 in that case).
Discriminator step: f(step) * (hinge (or vanilla) loss on D(x) and D(sg[x_hat]) + lecam_weight * R_LC), with
  R_LC = mean (D(x) - ema_fake)^2 + mean (D(x_hat) - ema_real)^2  (LeCam regulariser, Tseng et al. 2021:
  keeps D's outputs near the running means of the other side's, which limits how far D can overfit a small
  real set; ema_* are moving averages of the mean logits).
A discriminator with several scales (discriminator.ProjectedDiscriminator) gives a list of logit maps; every
term above is then the mean over scales of that term, each scale's term a mean over its positions.
f(step) = 0 before `disc_start`; then, unlike the original's hard switch, it rises linearly to
`disc_factor` over `disc_ramp` steps (0 = the original's switch), so the first GAN gradients do not wreck
the reconstructions a small data set has just learnt.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from .diffaug import parse_policy
from .discriminator import KINDS as DISCRIMINATORS, Logits, scales
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
    disc_ndf: int = 64  # width of the patch discriminator's first layer, or of the projected one's heads
    discriminator: str = "patch"  # "patch" (the original's PatchGAN) | "projected" (heads on frozen MobileNetV2)
    # DiffAugment policies applied to every image D sees (diffaug.py), e.g. "color,translation,cutout"; "" = none
    diffaug: str = ""
    lecam_weight: float = 0.0  # weight of the LeCam regulariser in D's loss (0: off)
    lecam_decay: float = 0.99
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
        self.check_config(cfg)
        self.cfg = cfg
        # LeCam's moving averages of the mean real / generated logits (saved with resume checkpoints)
        self.register_buffer("lecam_ema", torch.zeros(2))
        self.perceptual: torch.nn.Module | None = None  # (x, y) -> (B,) distances
        if cfg.reconstruction == "l1" and cfg.perceptual_weight > 0:
            self.perceptual = (load_lpips(cfg.lpips_weights) if cfg.lpips_weights
                               else PerceptualDistance(cfg.perceptual_weights))

    @staticmethod
    def check_config(cfg: VQGANLossConfig) -> None:
        """Raise ValueError, with the reason, for options this loss does not know."""
        if cfg.reconstruction not in ("l1", "bce", "ce"):
            raise ValueError(f"reconstruction must be 'l1', 'bce' or 'ce', got {cfg.reconstruction!r}")
        if cfg.disc_loss not in ("hinge", "vanilla"):
            raise ValueError(f"disc_loss must be 'hinge' or 'vanilla', got {cfg.disc_loss!r}")
        if cfg.discriminator not in DISCRIMINATORS:
            raise ValueError(f"discriminator must be one of {DISCRIMINATORS}, got {cfg.discriminator!r}")
        if cfg.lecam_weight < 0 or not 0 <= cfg.lecam_decay < 1:
            raise ValueError(f"lecam_weight must be >= 0 and lecam_decay in [0, 1), got {cfg.lecam_weight}, "
                             f"{cfg.lecam_decay}")
        parse_policy(cfg.diffaug)

    @property
    def uses_discriminator(self) -> bool:
        return self.cfg.reconstruction == "l1" and self.cfg.disc_factor > 0

    def generator(self, x: torch.Tensor, x_hat: torch.Tensor, codebook_loss: torch.Tensor, step: int,
                  logits_fake: Logits | None = None,
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
            gan = -torch.stack([t.float().mean() for t in scales(logits_fake)]).mean()
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

    def state_dict_for_resume(self) -> dict[str, torch.Tensor]:
        """What a resume checkpoint keeps of the loss (the LeCam averages; the perceptual net is fixed)."""
        return {"lecam_ema": self.lecam_ema.detach().cpu().clone()}

    def load_resume_state(self, state: dict[str, torch.Tensor]) -> None:
        if "lecam_ema" in state:
            self.lecam_ema.copy_(state["lecam_ema"])

    def discriminator(self, logits_real: Logits, logits_fake: Logits, step: int) -> DiscriminatorLoss:
        """logits_real = D(x), logits_fake = D(sg[x_hat]): each (B, 1, H_p, W_p) or a list over scales."""
        cfg = self.cfg
        d_loss = hinge_d_loss if cfg.disc_loss == "hinge" else vanilla_d_loss
        real, fake = [t.float() for t in scales(logits_real)], [t.float() for t in scales(logits_fake)]
        loss = torch.stack([d_loss(r, f) for r, f in zip(real, fake)]).mean()
        mean_real = torch.stack([r.detach().mean() for r in real]).mean()
        mean_fake = torch.stack([f.detach().mean() for f in fake]).mean()
        if cfg.lecam_weight > 0:
            ema_real, ema_fake = self.lecam_ema.unbind()
            lecam = torch.stack([(r - ema_fake).pow(2).mean() + (f - ema_real).pow(2).mean()
                                 for r, f in zip(real, fake)]).mean()
            loss = loss + cfg.lecam_weight * lecam
            if torch.is_grad_enabled():  # a training step: move the averages
                self.lecam_ema.lerp_(torch.stack([mean_real, mean_fake]).to(self.lecam_ema), 1 - cfg.lecam_decay)
        factor = disc_factor_at(step, cfg)
        return DiscriminatorLoss(factor * loss, mean_real, mean_fake)
