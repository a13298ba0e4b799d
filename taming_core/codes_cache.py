"""The codes cache of transformer training, tied to the stages that made it.

`<out>/codes.pt` (or `cache=FILE`) holds every image's code indices, z (N, V, L) and c (N, V, L_c) for V
variants, computed once. Besides the key of what they were made from (files, settings, stage weights) it records
the sha256 of each stage's weights (`stage_ids`), and so does every resume checkpoint: codes made with another
first stage, or a run resumed with another `--first-stage`, are refused in one line instead of training the GPT
on codes that mean something else.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .checkpoint import ConfigError
from .data import DataError, WithRandomCrops
from .interrupt import ignore_sigint
from .resume import load_checkpoint
from .safe_unpickle import CheckpointError

STAGES = ("first_stage", "cond_stage")


def weights_sha256(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes and bytes, in key order): its identity."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def stage_ids(net: nn.Module) -> dict[str, str | None]:
    """{"first_stage_sha256": ..., "cond_stage_sha256": ... or None (no VQ condition stage)} of a Net2Net."""
    cond = getattr(net, "cond_stage_model", None)
    cond = cond if isinstance(cond, nn.Module) and cond.state_dict() else None  # a VQ stage, not a label grid
    return {"first_stage_sha256": weights_sha256(net.first_stage_model),
            "cond_stage_sha256": weights_sha256(cond) if cond is not None else None}


def check_stage_ids(recorded: dict, ids: dict[str, str | None], what: str, fix: str) -> None:
    """ConfigError (one line) unless `recorded` (a codes file or resume checkpoint) names the same stages."""
    for stage in STAGES:
        key = f"{stage}_sha256"
        if key not in recorded:
            raise ConfigError(f"{what} records no {stage.replace('_', ' ')} (made before stages were recorded): "
                              f"{fix}")
        if recorded[key] != ids[key]:
            theirs, mine = str(recorded[key])[:12], str(ids[key])[:12]
            raise ConfigError(f"{what} used another {stage.replace('_', ' ')} (weights sha256 {theirs}..., this "
                              f"run's: {mine}...): {fix}")


def cache_key(files: list[Path], data_cfg, net: nn.Module, settings: str) -> str:
    """Digest of everything the codes depend on: files (path, size, mtime), the data config (crop settings),
    the other `settings` that change the tokens (condition, token order, crops, seed) and the stages' weights."""
    from omegaconf import OmegaConf

    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(json.dumps(OmegaConf.to_container(OmegaConf.structured(data_cfg)), sort_keys=True).encode())
    h.update(settings.encode())
    for k, v in sorted(net.state_dict().items()):
        if not k.startswith("transformer."):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def small_ints(t: torch.Tensor) -> torch.Tensor:
    """Code indices in the smallest integer type that holds them (int16 below 32768 codes): a 4x smaller
    cache with many crops."""
    return t.to(torch.int16) if t.numel() == 0 or int(t.max()) < 2 ** 15 else t.int()


def cached_codes(cache: Path, key: str) -> dict | None:
    """The codes in `cache` if they were made from these files, settings and stages; None (encode again) when
    the file is missing, out of date, or unreadable (e.g. truncated by a full disk)."""
    if not cache.is_file():
        return None
    try:
        codes = load_checkpoint(cache, required=("key", "z", "c"))
    except CheckpointError as e:
        print(f"codes cache unusable, encoding again: {e}")
        return None
    if codes["key"] != key:
        print(f"codes cache {cache} is out of date (images, settings or stages changed): encoding again")
        return None
    return codes


def condition_of(batch: dict, condition: str, n_labels: int | None):
    """A batch -> what Net2Net.encode_cond takes: batch size, class ids (B,), one-hot (B, K, S, S), (B, 1, S, S)."""
    if condition == "none":
        return len(batch["image"])
    if condition == "class":
        return batch["class"]
    if condition == "segmentation":
        return F.one_hot(batch["segmentation"], n_labels).permute(0, 3, 1, 2).float()  # (B, K, S, S)
    return batch[condition]  # (B, 1, S, S)


@torch.no_grad()
def encode_images(net, dataset, condition: str, crops: int, seed: int, flip: bool, batch_size: int,
                  num_workers: int, device) -> dict:
    """Every image of `dataset` (an ImageFolder) -> tokens z (N, V, L) and c (N, V, L_c): V variants = the
    centre crop, its mirror image when `flip`, and `crops` random crops (seeded by `seed`)."""
    loader = torch.utils.data.DataLoader(WithRandomCrops(dataset, crops, seed), batch_size=batch_size,
                                         num_workers=num_workers, worker_init_fn=ignore_sigint)
    n_labels = net.config.cond_stage.n_labels
    net.eval()  # stages in training mode would update their codebooks (EMA, dead-code restarts)
    zs, cs, kept, expected = [], [], [], 0
    for batch in tqdm(loader, desc="encoding", dynamic_ncols=True):
        got = batch["index"]
        ok = got == torch.arange(expected, expected + len(got))  # a skipped file returns the next one
        expected += len(got)
        batch = {k: v[ok] for k, v in batch.items()}
        z, c = [], []
        for v in range(1 + crops):  # the centre crop first, then the random crops
            one = {k: (t[:, v] if k not in ("index", "class") else t) for k, t in batch.items()}
            x, cond = one["image"].to(device), condition_of(one, condition, n_labels)
            cond = cond.to(device) if isinstance(cond, torch.Tensor) else cond
            z.append(net.encode_image(x))  # (B, L)
            c.append(net.encode_cond(cond))  # (B, L_c)
            if v == 0 and flip:
                z.append(net.encode_image(x.flip(-1)))
                c.append(net.encode_cond(cond.flip(-1)) if isinstance(cond, torch.Tensor) and cond.ndim == 4
                         else c[0])
        zs.append(small_ints(torch.stack(z, 1).cpu()))  # (B, V, L)
        cs.append(small_ints(torch.stack(c, 1).cpu()))  # (B, V, L_c)
        kept.append(batch["index"])
    skipped = expected - sum(len(k) for k in kept)
    if skipped:
        print(f"skipped {skipped} unreadable file(s) of {expected}")
    if not kept or not sum(len(k) for k in kept):
        raise DataError(f"none of the {expected} images under {dataset.root} can be read")
    return {"z": torch.cat(zs), "c": torch.cat(cs), "index": torch.cat(kept), "skipped": skipped}
