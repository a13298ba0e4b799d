"""Invariants of the training-only library parts: losses, discriminator, perceptual distance, data, evaluation,
resume checkpoints."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import taming_core as tc
from conftest import SHARED


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def perceptual():
    try:
        return tc.PerceptualDistance()
    except FileNotFoundError as e:
        pytest.skip(str(e))


# ---- perceptual distance ----------------------------------------------------------------------------------


def test_perceptual_distance_is_zero_on_equal_images_and_grows_with_noise(perceptual):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    noise = torch.randn(2, 3, 32, 32, generator=g)
    d = [perceptual(x, (x + s * noise).clamp(-1, 1)) for s in (0.0, 0.05, 0.3)]
    assert torch.allclose(d[0], torch.zeros(2), atol=1e-6)
    assert (d[1] > 0).all() and (d[2] > d[1]).all()
    assert torch.allclose(perceptual(x, x.flip(0)), perceptual(x.flip(0), x), atol=1e-6)  # symmetric
    grey = x[:, :1]
    assert perceptual(grey, grey).shape == (2,)  # one-channel maps are repeated to three


def test_perceptual_network_is_frozen_and_stays_in_eval_mode(perceptual):
    perceptual.train()
    assert not perceptual.training and not perceptual.net.training
    assert not any(p.requires_grad for p in perceptual.parameters())
    x = torch.zeros(1, 3, 16, 16, requires_grad=True)
    perceptual(x, torch.ones(1, 3, 16, 16)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients still reach the images


def test_lpips_loads_original_key_names_strictly(tmp_path):
    ref = tc.LPIPS()
    for k in range(5):  # positive channel weights, as trained LPIPS has
        getattr(ref, f"lin{k}").model[1].weight.data.uniform_(0.1, 1.0)
    state = {f"loss.perceptual_loss.{k}": v for k, v in ref.state_dict().items()}
    torch.save({"state_dict": {**state, "encoder.conv_in.weight": torch.zeros(1)}}, tmp_path / "last.ckpt")
    lpips = tc.load_lpips(tmp_path / "last.ckpt")  # an original training checkpoint: the prefix is stripped
    keys_file = SHARED / "notes" / "reference-keys.txt"  # the original's key names and shapes, if at hand
    if keys_file.is_file():
        lines = [ln.split() for ln in keys_file.read_text().splitlines() if ln.startswith("loss.perceptual_loss.")]
        expected = {name: [int(d) for d in shape.strip("[]").split(",") if d] for name, shape, *_ in
                    [(ln[0], "".join(ln[1:-1])) for ln in lines]}
        assert {k: list(v.shape) for k, v in state.items()} == expected
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (x + 0.2 * torch.randn_like(x)).clamp(-1, 1)
    assert torch.allclose(lpips(x, x), torch.zeros(2), atol=1e-6) and (lpips(x, y) > 0).all()
    assert torch.allclose(lpips(x, y), ref(x, y))
    torch.save({k: v for k, v in ref.state_dict().items() if not k.startswith("lin4")}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="lin4"):
        tc.load_lpips(tmp_path / "bad.pt")
    loss = tc.VQGANLoss(tc.VQGANLossConfig(lpips_weights=str(tmp_path / "last.ckpt")))
    assert isinstance(loss.perceptual, tc.LPIPS)


# ---- discriminator and losses -----------------------------------------------------------------------------


@pytest.mark.parametrize("layers,size", [(3, 256), (3, 64), (2, 16)])
def test_discriminator_patch_grid(layers, size):
    d = tc.NLayerDiscriminator(3, 8, layers)
    assert d(torch.zeros(1, 3, size, size)).shape == (1, 1, d.patch_grid(size), d.patch_grid(size))
    assert d.patch_grid(256) == 30 or layers != 3  # the original's 30x30 patches at 256


def test_disc_factor_switches_on_and_ramps():
    cfg = tc.VQGANLossConfig(disc_start=10, disc_ramp=4, disc_factor=1.0)
    assert [tc.disc_factor_at(s, cfg) for s in (0, 9, 10, 11, 13, 100)] == [0, 0, 0.25, 0.5, 1.0, 1.0]
    assert tc.disc_factor_at(10, tc.VQGANLossConfig(disc_start=10, disc_ramp=0)) == 1.0  # the original switch


def test_adaptive_weight_is_the_ratio_of_gradient_norms():
    w = torch.randn(4, 3, requires_grad=True)
    x = torch.randn(5, 4)
    rec, gan = (x @ w).abs().mean(), -(x @ w).sum() * 3
    g_rec = torch.autograd.grad(rec, w, retain_graph=True)[0].norm()
    g_gan = torch.autograd.grad(gan, w, retain_graph=True)[0].norm()
    lam = tc.adaptive_weight(rec, gan, w, delta=1e-4)
    assert lam.item() == pytest.approx((g_rec / (g_gan + 1e-4)).item(), rel=1e-5)
    assert not lam.requires_grad
    dead = (x @ w).sum() * 0  # a vanishing GAN gradient: delta keeps lambda finite, the clamp caps it
    assert tc.adaptive_weight(rec, dead, w, delta=1e-4, max_weight=1e4).item() <= 1e4


def test_hinge_loss_is_zero_for_a_confident_discriminator():
    assert tc.hinge_d_loss(torch.full((2, 1, 3, 3), 2.0), torch.full((2, 1, 3, 3), -2.0)).item() == 0
    assert tc.hinge_d_loss(torch.zeros(1), torch.zeros(1)).item() == pytest.approx(1.0)


def test_generator_loss_before_and_after_disc_start():
    loss = tc.VQGANLoss(tc.VQGANLossConfig(perceptual_weight=0, disc_start=5, disc_ramp=0))
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    last = torch.nn.Parameter(torch.full((8, 8), 0.1))
    x_hat = torch.tanh(x @ last)  # (B, 3, 8, 8) through a stand-in for the decoder's last layer
    early = loss.generator(x, x_hat, torch.tensor(0.5), step=0)
    assert early.gan == 0 and early.adaptive_weight == 0
    assert early.total.item() == pytest.approx(early.reconstruction.item() + 0.5, rel=1e-6)
    with pytest.raises(ValueError, match="logits_fake"):
        loss.generator(x, x_hat, torch.tensor(0.5), step=5)
    late = loss.generator(x, x_hat, torch.tensor(0.5), step=5, logits_fake=x_hat.mean(1, keepdim=True),
                          last_layer=last)
    assert late.disc_factor == 1.0 and late.adaptive_weight > 0


def test_segmentation_losses_match_torch():
    logits, labels = torch.randn(2, 4, 5, 5), torch.randint(0, 4, (2, 5, 5))
    onehot = torch.nn.functional.one_hot(labels, 4).permute(0, 3, 1, 2).float()
    assert tc.segmentation_loss(logits, labels, "bce").item() == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(logits, onehot).item())
    assert tc.segmentation_loss(logits, labels, "ce").item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item())


# ---- data -------------------------------------------------------------------------------------------------


def _save(path, array, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, **kw).save(path)


def test_image_modes_and_small_images_become_rgb_crops(tmp_path):
    rng = np.random.default_rng(0)
    _save(tmp_path / "rgb.jpg", (rng.random((40, 50, 3)) * 255).astype(np.uint8))
    _save(tmp_path / "grey.png", (rng.random((30, 30)) * 255).astype(np.uint8))
    _save(tmp_path / "rgba.png", (rng.random((30, 30, 4)) * 255).astype(np.uint8))
    Image.fromarray((rng.random((30, 30)) * 65535).astype(np.uint16)).save(tmp_path / "deep.png")  # 16-bit
    _save(tmp_path / "sub" / "small.webp", (rng.random((6, 9, 3)) * 255).astype(np.uint8))  # < size
    ds = tc.ImageFolder(tc.DataConfig(root=str(tmp_path), size=16))
    assert len(ds) == 5
    for i in range(len(ds)):
        for key in (i, (i, 123)):
            x = ds[key]["image"]
            assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    deep = ds[[p.name for p in ds.files].index("deep.png")]["image"]
    assert deep.std() > 0.1  # 16-bit values are scaled, not clipped to white
    assert torch.equal(ds[(0, 7)]["image"], ds[(0, 7)]["image"])  # the key's seed fixes crop and flip


def _corrupt_folder(folder, n_good: int = 1):
    """n_good readable images, one truncated JPEG (its header reads) and one file that is no image."""
    rng = np.random.default_rng(0)
    for i in range(max(n_good, 1)):
        _save(folder / f"good{i}.jpg", (rng.random((40, 50, 3)) * 255).astype(np.uint8))
    jpeg = (folder / "good0.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    (folder / "bad.png").write_bytes(b"nope")
    if n_good == 0:
        (folder / "good0.jpg").unlink()
    return folder


def test_unreadable_files_are_dropped_at_startup_counted_and_warned_once(tmp_path):
    _corrupt_folder(tmp_path, n_good=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = tc.ImageFolder(tc.DataConfig(root=str(tmp_path), size=16))
        examples = [ds[i] for i in range(len(ds))]
    assert [p.name for p in ds.files] == ["good0.jpg", "good1.jpg"] and len(ds) == 2
    assert sorted(p.name for p in ds.unreadable) == ["bad.png", "truncated.jpg"] and not ds.skipped
    assert [int(e["index"]) for e in examples] == [0, 1]
    assert len([w for w in caught if "unreadable" in str(w.message)]) == 1


def test_header_check_drops_non_images_and_skips_truncated_files_when_read(tmp_path):
    _corrupt_folder(tmp_path)
    with pytest.warns(RuntimeWarning, match="bad.png"):
        ds = tc.ImageFolder(tc.DataConfig(root=str(tmp_path), size=16, check_files="header"))
    assert [p.name for p in ds.unreadable] == ["bad.png"] and len(ds) == 2  # the JPEG header reads
    with pytest.warns(RuntimeWarning, match="unreadable"):
        examples = [ds[i] for i in range(len(ds))]
    good = [p.name for p in ds.files].index("good0.jpg")
    assert all(int(e["index"]) == good for e in examples)  # the next readable file stands in
    assert [Path(p).name for p in ds.skipped] == ["truncated.jpg"]


def test_folder_without_a_readable_image_is_a_clear_error(tmp_path):
    _corrupt_folder(tmp_path / "all", n_good=0)
    with pytest.raises(tc.DataError, match="none of the 2 image files .* can be read"):
        tc.ImageFolder(tc.DataConfig(root=str(tmp_path / "all"), size=16))
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "a.png").write_bytes(b"nope")
    with pytest.raises(tc.DataError, match="none of the 1 image files .* can be read"):
        tc.ImageFolder(tc.DataConfig(root=str(tmp_path / "none"), size=16, check_files="header"))


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(tc.DataError, match="no images"):
        tc.ImageFolder(tc.DataConfig(root=str(tmp_path)))


def test_segmentation_maps_checked_for_size_and_label_range(tmp_path):
    _save(tmp_path / "images" / "a.jpg", np.zeros((20, 24, 3), np.uint8))
    _save(tmp_path / "segmentations" / "a.png", np.full((20, 24), 3, np.uint8))
    cfg = tc.DataConfig(root=str(tmp_path / "images"), size=16, kind="segmentation", n_labels=5)
    ex = tc.ImageFolder(cfg)[(0, 1)]
    assert ex["segmentation"].shape == (16, 16) and ex["segmentation"].dtype == torch.int64
    assert (ex["segmentation"] == 3).all()
    with pytest.raises(tc.DataError, match="outside the 3 labels"):
        tc.ImageFolder(tc.DataConfig(**{**cfg.__dict__, "n_labels": 3}))[0]
    _save(tmp_path / "segmentations" / "a.png", np.zeros((10, 24), np.uint8))
    with pytest.raises(tc.DataError, match="its image's size"):
        tc.ImageFolder(cfg)[0]
    # COCO-Stuff: 183 labels shift 255 (unlabelled) to 0
    _save(tmp_path / "segmentations" / "a.png", np.full((20, 24), 255, np.uint8))
    coco = tc.ImageFolder(tc.DataConfig(**{**cfg.__dict__, "n_labels": 183}))[0]
    assert (coco["segmentation"] == 0).all()


def test_depth_float_in_rgba_and_16_bit(tmp_path):
    d = np.linspace(-3, 5, 20 * 24, dtype=np.float32).reshape(20, 24)
    _save(tmp_path / "images" / "a.jpg", np.zeros((20, 24, 3), np.uint8))
    _save(tmp_path / "depth" / "a.png", d.view(np.uint8).reshape(20, 24, 4), mode="RGBA")
    ex = tc.ImageFolder(tc.DataConfig(root=str(tmp_path / "images"), size=20, kind="depth",
                                      resize="upscale"))[0]
    expected = (d - d.min()) / (d.max() - d.min()) * 2 - 1
    assert torch.allclose(ex["depth"][0], torch.from_numpy(expected[:, 2:22]), atol=1e-5)


def test_canny_edges_are_binary_maps(tmp_path):
    img = np.zeros((32, 32, 3), np.uint8)
    img[:, 16:] = 255
    _save(tmp_path / "a.png", img)
    e = tc.ImageFolder(tc.DataConfig(root=str(tmp_path), size=32, kind="edges"))[0]["edges"]
    assert e.shape == (1, 32, 32) and set(e.unique().tolist()) == {-1.0, 1.0}


def test_canny_range_varies_training_edges_only(tmp_path):
    """data.canny_range draws the Canny thresholds of training crops (after the crop: same window and flip);
    centre crops keep the app's thresholds."""
    x = np.arange(48)[None, :].repeat(40, 0)
    steps = ((x // 6) % 2 * 24 + (x // 24) * 150).astype(np.uint8)  # weak (24) and strong (150) grey steps
    Image.fromarray(np.dstack([steps] * 3)).save(tmp_path / "steps.png")
    plain = tc.ImageFolder(tc.DataConfig(root=str(tmp_path), size=32, kind="edges", with_image=True))
    varied = tc.ImageFolder(tc.DataConfig(root=str(tmp_path), size=32, kind="edges", with_image=True,
                                          canny_range=(5, 10)))
    assert torch.equal(plain[0]["edges"], varied[0]["edges"]) and torch.equal(plain[0]["image"], varied[0]["image"])
    for seed in range(3):
        a, b = plain[(0, seed)], varied[(0, seed)]
        assert torch.equal(a["image"], b["image"])  # the same crop and flip
        assert int((b["edges"] > 0).sum()) > int((a["edges"] > 0).sum())  # weak steps are edges at low thresholds


def test_sampler_resumes_mid_stream_and_shards_ranks():
    full = iter(tc.ResumableSampler(10, seed=3))
    keys = [next(full) for _ in range(25)]
    later = iter(tc.ResumableSampler(10, seed=3, start=17))
    assert [next(later) for _ in range(8)] == keys[17:]
    assert sorted(k[0] for k in keys[:10]) == list(range(10))  # an epoch is a permutation
    ranks = [iter(tc.ResumableSampler(10, seed=3, rank=r, world_size=2)) for r in range(2)]
    epoch = [next(it)[0] for it in ranks for _ in range(5)]
    assert sorted(epoch) == list(range(10))  # the two ranks share one epoch without overlap


# ---- evaluation -------------------------------------------------------------------------------------------


def test_psnr_and_ssim():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert tc.ssim(x, x).allclose(torch.ones(2), atol=1e-5)
    assert (tc.psnr(x, x) > 100).all()
    y = (x + 0.1).clamp(-1, 1)
    assert (tc.psnr(x, y) < 30).all() and (tc.ssim(x, -x) < tc.ssim(x, y)).all()


def test_frechet_distance_matches_a_general_eigen_solver():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 8, generator=g, dtype=torch.float64)
    b = torch.randn(150, 8, generator=g, dtype=torch.float64) @ torch.randn(8, 8, generator=g, dtype=torch.float64)
    s1, s2 = np.cov(a.numpy().T), np.cov(b.numpy().T)
    tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(0)).sum()
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum().item() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert tc.frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    assert abs(tc.frechet_distance(a, a)) < 1e-8
    kid, _ = tc.kernel_inception_distance(a, a[torch.randperm(200, generator=g)], subsets=3, subset_size=100)
    assert abs(kid) < 0.2 < tc.kernel_inception_distance(a, b + 3, subsets=3, subset_size=100)[0]


def test_usage_from_counts():
    u = tc.usage_from_counts(torch.tensor([5.0, 5.0, 0.0, 0.0]))
    assert u.fraction_used == 0.5 and u.dead_codes == 2 and u.perplexity == pytest.approx(2.0)


# ---- resume checkpoints -----------------------------------------------------------------------------------


def test_checkpoints_are_atomic_pruned_and_ignore_leftover_temporaries(tmp_path):
    for step in (1, 2, 3, 4):
        tc.save_checkpoint({"step": step, "w": torch.ones(2) * step}, tmp_path, step, keep_last=2)
    (tmp_path / "checkpoints" / ".step-00000005.pt.tmp").write_bytes(b"half written")  # killed during a save
    assert [p.name for p in tc.list_checkpoints(tmp_path)] == ["step-00000003.pt", "step-00000004.pt"]
    state = tc.load_checkpoint(tc.resolve_resume("latest", tmp_path))
    assert state["step"] == 4 and torch.equal(state["w"], torch.full((2,), 4.0))
    assert math.isclose(float(tc.load_checkpoint(tc.resolve_resume(tmp_path, tmp_path))["w"][0]), 4.0)


def test_resume_errors_are_checkpoint_errors(tmp_path):
    with pytest.raises(tc.CheckpointError, match="no checkpoint to resume from in"):
        tc.resolve_resume("latest", tmp_path)
    with pytest.raises(tc.CheckpointError, match="does not exist"):
        tc.resolve_resume(tmp_path / "step-00000009.pt", tmp_path)
    path = tc.save_checkpoint({"step": 3, "w": torch.ones(100)}, tmp_path, 3)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 2, len(data) - 5):  # truncated anywhere
        path.write_bytes(data[:cut])
        with pytest.raises(tc.CheckpointError, match="cannot read checkpoint"):
            tc.load_checkpoint(path)
    path.write_bytes(data)
    with pytest.raises(tc.CheckpointError, match="lacks model, opt"):
        tc.load_checkpoint(path, required=("step", "model", "opt"))
    torch.save([1, 2], path)
    with pytest.raises(tc.CheckpointError, match="not a dict"):
        tc.load_checkpoint(path)


def test_run_config_errors_name_the_file_or_field(tmp_path):
    from dataclasses import dataclass

    @dataclass
    class Run:
        steps: int = 1
        out: str = "runs/x"

    assert tc.merge_run_config(Run, [{"steps": 2}, None, ["out=o"]], {"steps": 5}) == Run(5, "o")
    bad = tmp_path / "bad.yaml"
    cases = {"steps: !!python/object/apply:os.system ['true']\n": "bad.yaml is not valid yaml",
             "- 1\n": "bad.yaml: a run config is a mapping", "steps: many\n": r"bad.yaml \(field steps\)",
             "stepz: 3\n": r"bad.yaml \(field stepz\)"}
    for text, message in cases.items():
        bad.write_text(text)
        with pytest.raises(tc.ConfigError, match=message):
            tc.merge_run_config(Run, [bad], {})
    with pytest.raises(tc.ConfigError, match="config file not found"):
        tc.merge_run_config(Run, [tmp_path / "missing.yaml"], {})
    with pytest.raises(tc.ConfigError, match=r"overrides \(field steps\)"):
        tc.merge_run_config(Run, [["steps=x"]], {})


# ---- transformer evaluation ---------------------------------------------------------------------------------


def test_edge_fscore_tolerance_and_empty_maps():
    target = torch.zeros(1, 32, 32, dtype=torch.bool)
    target[0, 10, 4:28] = True  # a horizontal line
    near = target.roll(2, dims=1)  # two pixels lower: inside the tolerance
    far = target.roll(8, dims=1)
    assert tc.edge_fscore(target, target).item() == pytest.approx(1.0)
    assert tc.edge_fscore(near, target, tolerance=2).item() == pytest.approx(1.0)
    assert tc.edge_fscore(near, target, tolerance=1).item() == 0.0
    assert tc.edge_fscore(far, target).item() == 0.0
    half = target.clone()
    half[0, 10, 16:] = False  # half the line: precision 1, recall about 1/2 (tolerance reaches 2 more pixels)
    assert tc.edge_fscore(half, target, tolerance=0).item() == pytest.approx(2 * 0.5 / 1.5)
    assert tc.edge_fscore(torch.zeros_like(target), target).item() == 0.0


def test_bits_per_token_is_the_mean_cross_entropy_in_bits():
    from conftest import tiny_net2net_config
    net = tc.build_model(tiny_net2net_config(kind="none")).eval()
    g = torch.Generator().manual_seed(0)
    z = torch.randint(0, 32, (5, 16), generator=g)
    c = net.encode_cond(5)  # (5, 1) start tokens
    with torch.no_grad():
        logits = net(z, c)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), z.flatten()).item() / math.log(2)
    assert tc.bits_per_token(net, z, c, batch_size=2) == pytest.approx(expected, rel=1e-5)


def test_binary_maps_take_bce_on_logits_of_x_above_zero():
    loss = tc.VQGANLoss(tc.VQGANLossConfig(reconstruction="bce"))
    x = torch.where(torch.rand(2, 1, 8, 8) > 0.9, 1.0, -1.0)  # sparse edges in {-1, 1}
    logits = torch.randn(2, 1, 8, 8)
    g = loss.generator(x, logits, torch.tensor(0.0), step=0)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, (x > 0).float())
    assert g.reconstruction.item() == pytest.approx(expected.item(), rel=1e-6) and not loss.uses_discriminator
    with pytest.raises(ValueError, match="'l1' or 'bce'"):
        tc.VQGANLoss(tc.VQGANLossConfig(reconstruction="ce")).generator(x, logits, torch.tensor(0.0), step=0)


def test_specks_count_isolated_bright_outliers_only():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.5 - 0.5  # in [-0.5, 0]
    assert tc.specks(x, x).tolist() == [0.0, 0.0]
    dot = x.clone()
    dot[0, 1, 10, 10] = 1.0  # one green dot brighter than its whole 5x5 input neighbourhood by > 0.5
    assert tc.specks(x, dot).tolist() == [1e6 / 1024, 0.0]  # per million pixels
    near = x.clone()
    near[0, :, 10, 10] = x[0, :, 8:13, 8:13].amax(dim=(1, 2)) + 0.45  # within the margin
    smooth = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)  # a blur stays in its local range
    dark = x.clone()
    dark[1, :, 5, 5] = -1.0  # dark dots are not counted
    for y in (near, smooth, dark):
        assert tc.specks(x, y).sum() == 0
    assert tc.specks(x, dot, margin=2.0).sum() == 0


# ---- mixed precision, zoom augmentation ---------------------------------------------------------------------

def test_precision_resolves_per_device_and_autocast_follows_it():
    assert tc.resolve_precision("auto", "cpu") == ("bf16" if tc.cpu_has_bf16() else "fp32")
    assert tc.resolve_precision("auto", "cuda") == "bf16"
    assert tc.resolve_precision("fp32", "cuda") == "fp32" and tc.resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision must be one of"):
        tc.resolve_precision("fp16", "cpu")
    with tc.autocast_for("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with tc.autocast_for("bf16", "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16


def test_perceptual_term_stays_fp32_under_cpu_autocast(perceptual):
    loss = tc.VQGANLoss(tc.VQGANLossConfig())
    loss.perceptual = perceptual
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(2, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    plain = loss.generator(x, y, torch.zeros(()), step=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss.generator(x, y, torch.zeros(()), step=0)
    assert mixed.perceptual.dtype == torch.float32 and torch.equal(mixed.perceptual, plain.perceptual)


def test_zoom_augmentation_changes_only_training_crops(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((48, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / "a.png")
    plain = tc.ImageFolder(tc.DataConfig(root=str(tmp_path), size=32))
    zoom = tc.ImageFolder(tc.DataConfig(root=str(tmp_path), size=32, scale_max=1.5))
    assert torch.equal(plain[0]["image"], zoom[0]["image"])  # centre crops (evaluation): no zoom
    keys = [(0, seed) for seed in range(8)]
    assert not all(torch.equal(plain[k]["image"], zoom[k]["image"]) for k in keys)
    again = tc.ImageFolder(tc.DataConfig(root=str(tmp_path), size=32, scale_max=1.5))
    assert all(torch.equal(zoom[k]["image"], again[k]["image"]) for k in keys)  # a pure function of the key


def test_mixed_edges_take_soft_maps_or_canny_per_training_crop(tmp_path):
    """data.edges=mixed: a training crop's edges are the soft map thresholded at a drawn level and thinned
    (hed_share of the crops) or Canny; centre crops are Canny, as in the app; the crop is the same either way."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)  # Canny finds edges everywhere here
    _save(tmp_path / "images" / "a.png", photo)
    soft = np.zeros((40, 48), np.uint8)
    soft[10:13, :] = 240  # one strong horizontal outline, three pixels wide
    soft[25, :] = 150  # a weak one: kept at low thresholds only
    _save(tmp_path / "hed" / "a.png", soft, mode="L")
    cfg = dict(root=str(tmp_path / "images"), size=32, kind="edges", maps=str(tmp_path / "hed"), edges="mixed",
               resize="upscale")  # crops of the photo as it is: the lines stay one pixel wide
    canny = tc.ImageFolder(tc.DataConfig(root=str(tmp_path / "images"), size=32, kind="edges", resize="upscale"))
    mixed = tc.ImageFolder(tc.DataConfig(**cfg))
    assert torch.equal(mixed[0]["edges"], canny[0]["edges"])  # centre crop: the app's Canny
    kinds = set()
    for seed in range(12):
        ex = mixed[(0, seed)]
        assert torch.equal(ex["image"], canny[(0, seed)]["image"])  # the same crop and flip
        rows = (ex["edges"][0] > 0).sum(1)  # (S,) edge pixels per row
        if int(rows.sum()) < 100:  # soft map: one or two one-pixel lines across the crop
            kinds.add("soft")
            assert int((rows > 0).sum()) in (1, 2) and int(rows.max()) == 32
        else:
            kinds.add("canny")
            assert torch.equal(ex["edges"], canny[(0, seed)]["edges"])
    assert kinds == {"soft", "canny"}
    only_soft = tc.ImageFolder(tc.DataConfig(**cfg, hed_share=1.0, hed_range=(0.3, 0.4)))
    assert all(int(((only_soft[(0, s)]["edges"][0] > 0).sum(1) > 0).sum()) == 2 for s in range(4))  # both lines
    with pytest.raises(tc.DataError, match="hed_range"):
        tc.ImageFolder(tc.DataConfig(**cfg, hed_range=(0.8, 0.5)))
    with pytest.raises(tc.DataError, match="unknown edges source"):
        tc.ImageFolder(tc.DataConfig(**{**cfg, "edges": "hed"}))


# ---- few-data GAN parts: DiffAugment, projected discriminator, LeCam, sharpness ---------------------------


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_diff_augment_keeps_shapes_passes_gradients_and_differs_per_image(policy):
    torch.manual_seed(0)
    x = (torch.rand(6, 3, 16, 16) * 2 - 1).requires_grad_(True)
    y = tc.diff_augment(x, policy)
    assert y.shape == x.shape and not torch.equal(y, x)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    same = torch.ones(6, 3, 16, 16)
    z = tc.diff_augment(same, policy)
    assert len({round(float(v), 4) for v in z.flatten(1).sum(1)}) > 1  # each image its own transform


def test_diff_augment_translation_moves_content_and_cutout_zeroes_a_square():
    torch.manual_seed(1)
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(8, 1, 1, 1)
    moved = tc.diff_augment(x, "translation")
    for img in moved[:, 0]:  # each output is a shifted copy of the input with zeros where nothing came in
        nz = img[img != 0]
        assert set(nz.tolist()) <= set(range(64))
    holes = tc.diff_augment(torch.ones(8, 1, 8, 8), "cutout")[:, 0]
    assert ((holes == 0).flatten(1).sum(1) >= 4).all() and ((holes == 0).flatten(1).sum(1) <= 16).all()
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        tc.parse_policy("color,blur")


def test_projected_discriminator_trains_heads_only_and_sees_the_input():
    d = tc.ProjectedDiscriminator(width=8)
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    logits = d(x)
    assert [t.shape for t in logits] == [(2, 1, 8, 8), (2, 1, 4, 4), (2, 1, 2, 2)]
    assert d.patch_grid(64) == 2 and d.patch_grid(16) == 0
    assert all(k.startswith("heads.") for k in d.state_dict())
    assert all(p.requires_grad for p in d.parameters())  # the backbone is not among its parameters
    sum(t.mean() for t in logits).backward()
    assert x.grad.abs().sum() > 0  # the generator is trained through the frozen features
    grey = d(torch.zeros(2, 1, 64, 64))  # 1-channel maps are repeated
    assert grey[0].shape == (2, 1, 8, 8)
    d2 = tc.ProjectedDiscriminator(width=8)
    d2.load_state_dict(d.state_dict())
    with torch.no_grad():
        assert all(torch.allclose(a, b) for a, b in zip(d(x), d2(x)))  # the projections come from the seed


def test_losses_average_scales_and_lecam_pulls_towards_the_other_side():
    cfg = tc.VQGANLossConfig(perceptual_weight=0, disc_start=0, disc_ramp=0, lecam_weight=1.0, lecam_decay=0.5)
    loss = tc.VQGANLoss(cfg)
    real = [torch.full((2, 1, 4, 4), 2.0), torch.full((2, 1, 2, 2), 0.0)]
    fake = [torch.full((2, 1, 4, 4), -2.0), torch.full((2, 1, 2, 2), 0.0)]
    d = loss.discriminator(real, fake, step=0)  # hinge: 0 on the first scale, 1 on the second; LeCam: 8, 0
    assert d.total.item() == pytest.approx(0.5 * (0 + 1) + 0.5 * (8 + 0))
    assert loss.lecam_ema.tolist() == pytest.approx([0.5, -0.5])  # moved half-way to (1, -1)
    plain = tc.VQGANLoss(tc.VQGANLossConfig(perceptual_weight=0, disc_start=0, disc_ramp=0))
    assert plain.discriminator(real, fake, 0).total.item() == pytest.approx(0.5)


def test_sharpness_falls_with_blur_and_the_ratio_of_a_set_to_itself_is_one():
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    assert (tc.sharpness(blurred) < tc.sharpness(x) / 4).all()
    assert tc.sharpness_ratio(x, x) == pytest.approx(1.0)
    assert tc.sharpness(torch.zeros(2, 3, 8, 8)).tolist() == [0.0, 0.0]
    import cv2  # the same figure as OpenCV's Laplacian on the grey image
    grey = np.array(Image.fromarray(((x[0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).convert("L"))
    ref = cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F, ksize=1)[1:-1, 1:-1].var(ddof=1)
    assert tc.sharpness(x[:1]).item() == pytest.approx(ref, rel=0.02)
