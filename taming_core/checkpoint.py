"""Building and loading models: our format (safetensors + config) and the original `.ckpt` + `.yaml`.

Our format is a folder with `model.safetensors` (the config is also stored in its metadata) and a readable
`config.yaml`. The original format is a PyTorch-Lightning checkpoint whose `state_dict` uses the original key
names, plus the project yaml (`model.target` / `model.params`). The mapping from the original `target`
strings to our classes lives here and nowhere else.

Loading is strict: every expected key must be present and no unexpected key is ignored, except the
training-only `loss.*` keys of the original (perceptual network, discriminator), dropped by name. Configs are
read as plain data and checked (config_checks.py) before a model is built or a weights file read.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file, save_file

from .config_checks import MAX_PARAMS, ConfigError, check_config, check_plain, model_size, parse_json, read_yaml
from .net2net import Net2Net, Net2NetConfig
from .safe_unpickle import CheckpointError, regular_file, safe_load
from .segmenter import Segmenter, SegmenterConfig
from .vqgan import VQGAN, VQGANConfig

WEIGHTS, CONFIG = "model.safetensors", "config.yaml"
_META_KEY = "taming_core.config"
_SCHEMAS = {"vqgan": VQGANConfig, "net2net": Net2NetConfig, "segmenter": SegmenterConfig}  # our 'model:' kinds
_CLASSES = {"vqgan": VQGAN, "net2net": Net2Net, "segmenter": Segmenter}
Model = VQGAN | Net2Net | Segmenter
Config = VQGANConfig | Net2NetConfig | SegmenterConfig
_LINK_KEY = "taming_core.first_stage"  # {"path": folder relative to the model's, "sha256": of its weights}
# A safetensors header (tensor names, shapes, offsets and our metadata: the config) is checked by size before it
# is parsed: the library takes ~27x its bytes. Legit: ~100 bytes a tensor plus a config of at most 1 MiB.
MAX_HEADER_BYTES = 4 << 20
# Elements a model may rebuild (the GPT's causal masks, never stored) beyond what its checkpoint stores: as many
# again + this (block_size 1024 x 24 layers: 25M mask elements over ~300M weights)
_DERIVED_SLACK = 1 << 24

_VQ_TARGETS = {
    "taming.models.vqgan.VQModel": "vq",
    "taming.models.vqgan.VQNoDiscModel": "vq",
    "taming.models.vqgan.VQSegmentationModel": "vq",
    "taming.models.vqgan.GumbelVQ": "gumbel",
    "taming.models.vqgan.EMAVQ": "ema",
}
_NET2NET = "taming.models.cond_transformer.Net2NetTransformer"
_PERMUTERS = {f"taming.modules.transformer.permuter.{k}": v for k, v in {
    "Identity": "identity", "Subsample": "subsample", "ZCurve": "zcurve", "SpiralOut": "spiral_out",
    "SpiralIn": "spiral_in", "Random": "random", "AlternateParsing": "alternate"}.items()}
_VQ_PARAMS = {"ddconfig", "lossconfig", "n_embed", "embed_dim", "ckpt_path", "ignore_keys", "image_key",
              "colorize_nlabels", "monitor", "remap", "sane_index_shape", "n_labels", "kl_weight",
              "temperature_scheduler_config"}
_DD_PARAMS = {"ch", "out_ch", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "resamp_with_conv",
              "in_channels", "resolution", "z_channels", "double_z"}
_N2N_PARAMS = {"transformer_config", "first_stage_config", "cond_stage_config", "permuter_config", "ckpt_path",
               "ignore_keys", "first_stage_key", "cond_stage_key", "downsample_cond_size", "pkeep", "sos_token",
               "unconditional"}
_COND_KINDS = {"segmentation": "segmentation", "depth": "depth", "edges": "edges", "edge": "edges",
               "sketch": "edges", "image": "first_stage"}


# ----------------------------------------------------------------------------------------------------------
# Original yaml -> our config


def _params(node: dict, allowed: set[str], target: str, required: tuple[str, ...] = ()) -> dict:
    params = dict(node.get("params") or {})
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown} for target {target}")
    missing = [k for k in required if k not in params]
    if missing:
        raise ConfigError(f"missing parameter(s) {missing} for target {target}")
    return params


def _vq_from_original(node: dict, base_dir: Path | None) -> dict:
    target = node.get("target")
    if target not in _VQ_TARGETS:
        raise ConfigError(f"unknown first/condition-stage target {target!r}; supported: {sorted(_VQ_TARGETS)}")
    p = _params(node, _VQ_PARAMS, target, ("ddconfig", "n_embed", "embed_dim"))
    dd = {k: v for k, v in dict(p["ddconfig"]).items() if k in _DD_PARAMS}  # the original ignores extra keys
    dd.setdefault("double_z", True)  # the original Encoder's default
    out: dict[str, Any] = {"ddconfig": dd, "n_embed": p["n_embed"], "embed_dim": p["embed_dim"],
                           "quantizer": _VQ_TARGETS[target], "image_key": p.get("image_key", "image")}
    if target.endswith("VQSegmentationModel"):
        out["colorize_nlabels"] = p["n_labels"]
    elif p.get("colorize_nlabels") is not None:
        out["colorize_nlabels"] = p["colorize_nlabels"]
    if out["quantizer"] == "gumbel":
        out["kl_weight"] = p.get("kl_weight", 1e-8)
    if p.get("remap") is not None:
        remap = Path(p["remap"])
        if not remap.is_absolute() and base_dir is not None and (base_dir / remap).exists():
            remap = base_dir / remap  # relative to the yaml's folder; else the CWD, as the original
        out["remap"] = str(remap)
    return out


def _cond_from_original(params: dict, base_dir: Path | None) -> dict:
    node = params.get("cond_stage_config")
    key = params.get("cond_stage_key", "depth")
    if params.get("unconditional") or node == "__is_unconditional__":
        return {"kind": "none", "sos_token": params.get("sos_token", 0)}
    if node == "__is_first_stage__":
        return {"kind": "first_stage"}
    target = node.get("target") if isinstance(node, dict) else None
    p = dict(node.get("params") or {}) if isinstance(node, dict) else {}
    if target == "taming.modules.util.SOSProvider":
        return {"kind": "none", "sos_token": p.get("sos_token", 0)}
    if target == "taming.modules.util.Labelator":
        return {"kind": "class", "n_classes": p.get("n_classes", 1000)}
    if target == "taming.modules.misc.coord.CoordStage":
        return {"kind": "coord", "n_embed": p["n_embed"], "down_factor": p["down_factor"]}
    if target in _VQ_TARGETS:
        vq = _vq_from_original(node, base_dir)
        in_ch = vq["ddconfig"]["in_channels"]
        kind = _COND_KINDS.get(key, "segmentation" if in_ch > 3 else "depth")
        out = {"kind": kind, "vq": vq, "downsample_size": params.get("downsample_cond_size", -1)}
        if kind == "segmentation":
            out["n_labels"] = in_ch
        return out
    raise ConfigError(f"unsupported condition stage {target or node!r} (cond_stage_key {key!r})")


def config_from_original(cfg: dict, base_dir: Path | None = None) -> dict:
    """Translate an original project yaml (`model: {target, params}`) into our config dict."""
    model = cfg.get("model", cfg)
    target = model.get("target")
    if target in _VQ_TARGETS:
        return {"model": "vqgan", **_vq_from_original(model, base_dir)}
    if target != _NET2NET:
        raise ConfigError(f"unknown model target {target!r}; supported: {sorted(_VQ_TARGETS) + [_NET2NET]}")
    p = _params(model, _N2N_PARAMS, target, ("transformer_config", "first_stage_config", "cond_stage_config"))
    perm = p.get("permuter_config") or {"target": "taming.modules.transformer.permuter.Identity"}
    if perm["target"] not in _PERMUTERS:
        raise ConfigError(f"unknown permuter target {perm['target']!r}")
    tr = p["transformer_config"]
    if tr.get("target") != "taming.modules.transformer.mingpt.GPT":
        raise ConfigError(f"unsupported transformer target {tr.get('target')!r}")
    return {
        "model": "net2net",
        "first_stage": _vq_from_original(p["first_stage_config"], base_dir),
        "cond_stage": _cond_from_original(p, base_dir),
        "permuter": {"name": _PERMUTERS[perm["target"]], **(perm.get("params") or {})},
        "transformer": dict(tr.get("params") or {}),
        "first_stage_key": p.get("first_stage_key", "image"),
        "cond_stage_key": p.get("cond_stage_key", "depth"),
        "pkeep": p.get("pkeep", 1.0),
    }


# ----------------------------------------------------------------------------------------------------------
# Configs, building


def resolve_config(config, max_params: float | None = MAX_PARAMS) -> tuple[str, Config]:
    """A yaml path or dict, in the original schema or ours -> ("vqgan" | "net2net" | "segmenter", typed config),
    checked: plain data without interpolations, every size in range, at most `max_params` parameters and
    buffers (None: no limit). Raises ConfigError naming the field."""
    base_dir = None
    if isinstance(config, tuple(_SCHEMAS.values())):
        kind = next(k for k, schema in _SCHEMAS.items() if isinstance(config, schema))
        check_config(kind, config, max_params)
        return kind, config
    if isinstance(config, (str, Path)):
        base_dir = Path(config).parent
        config = read_yaml(Path(config))
    elif isinstance(config, DictConfig):  # interpolations stay unresolved, and are refused below
        config = OmegaConf.to_container(config, resolve=False)
    if not isinstance(config, dict):
        raise ConfigError(f"a config must be a yaml path or a dict, got {type(config).__name__}")
    check_plain(config, "the config")
    if isinstance(config.get("model"), dict):
        try:
            config = config_from_original(config, base_dir)
        except ConfigError:
            raise
        except (TypeError, ValueError, AttributeError, KeyError) as e:  # a value of the wrong type or shape
            raise ConfigError(f"malformed original config: {type(e).__name__}: {e}") from None
    config = dict(config)
    kind = config.pop("model", None)
    schema = _SCHEMAS.get(kind)
    if schema is None:
        raise ConfigError(f"config 'model' must be 'vqgan', 'net2net' or 'segmenter' (ours) or a dict with a "
                          f"target (original), got {kind!r}")
    config, remaps = _without_inline_remaps(config)
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), config))
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid {kind} config: {e}") from None
    for where, codes in remaps.items():  # put back what OmegaConf never saw
        node = typed
        for key in where:
            node = getattr(node, key, None)
        if not dataclasses.is_dataclass(node) or not hasattr(node, "remap"):
            raise ConfigError(f"{'.'.join(where + ('remap',))}: no such field")
        node.remap = codes
    check_config(kind, typed, max_params)
    return kind, typed


def _without_inline_remaps(config: dict) -> tuple[dict, dict[tuple[str, ...], list]]:
    """config -> (a copy with every inline `remap` list set to None, {path of its dict: the list}). OmegaConf
    takes ~1 ms per list item it merges: a remap of 16384 used codes would take 15 s; the codes are checked as
    plain integers by check_config instead."""
    found: dict[tuple[str, ...], list] = {}

    def strip(node, where):
        if not isinstance(node, dict):
            return node
        out = {}
        for k, v in node.items():
            if k == "remap" and isinstance(v, list):
                found[where] = v
                out[k] = None
            else:
                out[k] = strip(v, where + (k,))
        return out
    return strip(config, ()), found


def config_to_dict(model: Model) -> dict:
    kind = next(k for k, cls in _CLASSES.items() if isinstance(model, cls))
    return {"model": kind, **OmegaConf.to_container(OmegaConf.structured(model.config))}


def build_model(config, max_params: float | None = MAX_PARAMS) -> Model:
    """A model with random weights from a yaml path or dict (original schema or ours), checked first (see
    resolve_config)."""
    return _build(*resolve_config(config, max_params))


def _build(kind: str, cfg) -> Model:
    return _CLASSES[kind](cfg)


# ----------------------------------------------------------------------------------------------------------
# State dicts


def _is_derived(key: str) -> bool:
    return key.endswith(".attn.mask")  # the causal mask is rebuilt from the config


def _is_training_only(key: str) -> bool:
    return key.startswith("loss.") or ".loss." in key


def shared_keys(model: torch.nn.Module) -> dict[str, str]:
    """{key: the first key naming the same tensor} for the state-dict entries a model shares (a condition
    stage that is the first stage itself: `cond_stage_model.*` -> `first_stage_model.*`)."""
    first: dict[tuple, str] = {}
    aliases = {}
    for k, v in model.state_dict(keep_vars=True).items():
        where = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()), v.dtype)
        if v.numel() and where in first:
            aliases[k] = first[where]
        else:
            first.setdefault(where, k)
    return aliases


def load_state_dict_strict(model: torch.nn.Module, state: dict, allow_missing_derived: bool = False) -> None:
    """Copy `state` into `model`, naming the first missing, unexpected or mis-shaped key if any. A key of a
    tensor the model shares (`shared_keys`) may be missing: it is the same tensor as the one it aliases."""
    state = {k: v for k, v in state.items() if not _is_training_only(k)}
    for alias, key in shared_keys(model).items():
        if alias not in state and key in state:
            state[alias] = state[key]
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not (allow_missing_derived and _is_derived(k))]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise ConfigError(f"checkpoint lacks {len(missing)} key(s) the config expects, first: {missing[0]} "
                          f"{tuple(expected[missing[0]].shape)}")
    if unexpected:
        raise ConfigError(f"checkpoint has {len(unexpected)} key(s) the config does not expect, first: "
                          f"{unexpected[0]} {tuple(state[unexpected[0]].shape)}")
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"checkpoint entry {k} is not a tensor")
        if v.shape != expected[k].shape:
            raise ConfigError(f"shape mismatch at {k}: checkpoint {tuple(v.shape)}, config "
                              f"{tuple(expected[k].shape)}")
    model.load_state_dict(state, strict=False)


def _find_original_config(ckpt: Path) -> Path:
    candidates = [ckpt.with_suffix(".yaml"), ckpt.parent / CONFIG]
    project = sorted((ckpt.parent.parent / "configs").glob("*-project.yaml"))  # released log-dir layout
    for c in candidates + project:
        if c.is_file():
            return c
    raise FileNotFoundError(f"no config found for {ckpt}: pass config=..., or put {ckpt.stem}.yaml or "
                            f"{CONFIG} beside it")


def load_original(ckpt: str | Path, config=None, max_params: float | None = MAX_PARAMS) -> Model:
    """Original `.ckpt` + its yaml -> model (eval mode, CPU). Never runs code from the checkpoint; the config
    is checked before the checkpoint is read."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    kind, cfg = resolve_config(config if config is not None else _find_original_config(ckpt), max_params)
    obj = safe_load(ckpt)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{ckpt} is not a model checkpoint (no state_dict of tensors)")
    bad = next((k for k in state if not isinstance(k, str) or len(k) > 1000), None)
    if bad is not None:
        raise CheckpointError(f"{ckpt} holds a state_dict key of type {type(bad).__name__}"
                              f"{f' and length {len(bad)}' if isinstance(bad, str) else ''}; keys are parameter names")
    _check_stored_size(kind, cfg, state, str(ckpt))
    model = _build(kind, cfg)
    load_state_dict_strict(model, state)
    return model.eval()


def _check_stored_size(kind: str, cfg, state: dict[str, torch.Tensor], where: str) -> None:
    """Refuse, before the model is built, a config that describes more than twice the elements the checkpoint
    stores (+ _DERIVED_SLACK: the causal masks the model rebuilds): a 200-byte checkpoint must not make the
    loader allocate a billion-parameter model only to find its keys missing. Counted on the meta device; the
    keys and shapes are compared after building (load_state_dict_strict)."""
    stored = sum(v.numel() for k, v in state.items() if not _is_training_only(k))
    needed = model_size(kind, cfg)
    if needed > 2 * stored + _DERIVED_SLACK:
        raise ConfigError(f"the {kind} config describes {needed / 1e6:.1f}M parameters and buffers, but {where} "
                          f"stores {stored / 1e6:.1f}M: the checkpoint does not hold this model (refused before "
                          "building it)")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(model: Model, folder: str | Path, dtype: torch.dtype | None = None,
               first_stage: str | Path | None = None) -> Path:
    """Write our format: folder/model.safetensors (config in its metadata) and folder/config.yaml.

    first_stage: a folder in our format holding exactly this Net2Net's first stage (as stored, after `dtype`).
    Its weights are then not copied: the metadata names the folder (relative to `folder`) and the sha256 of
    its weights file, and loading reads them from there (refusing a changed file). Several models over one
    VQGAN then store it once, as the original configs point at one first-stage checkpoint."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = config_to_dict(model)
    aliases = shared_keys(model)
    tensors = {}
    for k, v in model.state_dict().items():
        if _is_derived(k) or k in aliases:
            continue  # shared stages (first_stage as condition) are stored once; loading fills the alias in
        v = v.detach().cpu()
        tensors[k] = (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
    meta = {_META_KEY: json.dumps(config)}
    if first_stage is not None:
        if not isinstance(model, Net2Net):
            raise ValueError("first_stage= applies to a Net2Net only")
        linked = Path(first_stage) / WEIGHTS
        if not linked.is_file():
            raise FileNotFoundError(f"first stage weights not found: {linked}")
        theirs = load_file(str(linked))
        prefix = "first_stage_model."
        ours = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if ours.keys() != theirs.keys() or any(not torch.equal(ours[k], theirs[k]) for k in ours):
            raise ValueError(f"{linked} does not hold this model's first stage (as stored): not linked")
        tensors = {k: v for k, v in tensors.items() if not k.startswith(prefix)}
        rel = os.path.relpath(Path(first_stage).resolve(), folder.resolve())
        meta[_LINK_KEY] = json.dumps({"path": Path(rel).as_posix(), "sha256": _sha256(linked)})
    tmp = folder / (WEIGHTS + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(folder / WEIGHTS)
    OmegaConf.save(OmegaConf.create(config), folder / CONFIG)
    return folder


def _linked_first_stage(weights: Path, link: str, first_stage) -> dict[str, torch.Tensor]:
    """The first-stage tensors a model stores by reference, checked against the recorded digest. The file's
    size is checked against the first stage its config describes (8 bytes an element at most, + a header)
    before it is hashed, a chunk at a time, then mapped."""
    try:
        info = json.loads(link)
        linked = (weights.parent / info["path"] / WEIGHTS).resolve()
        digest = str(info["sha256"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{weights}: malformed first-stage link in its metadata: {type(e).__name__}") from None
    if not linked.exists():
        raise FileNotFoundError(f"{weights} reads its first stage from {linked}, which is missing")
    size = regular_file(linked, "first-stage weights")
    most = 8 * model_size("vqgan", first_stage) + MAX_HEADER_BYTES + 8
    if size > most:
        raise CheckpointError(f"{linked} is {size} bytes, more than the first stage the config describes can "
                              f"take ({most} bytes); refused before reading it")
    if _sha256(linked) != digest:
        raise CheckpointError(f"{weights} was saved over a different first stage than {linked} holds now "
                              f"(sha256 differs): re-save the model, or restore that file")
    return {"first_stage_model." + k: v for k, v in _read_safetensors(linked).items()}


def _safetensors_metadata(weights: Path) -> dict:
    """The metadata of a safetensors file, its header's size checked before the header is parsed."""
    size = regular_file(weights)
    try:
        with open(weights, "rb") as f:
            header = struct.unpack("<Q", f.read(8).ljust(8, b"\0"))[0]
    except OSError as e:
        raise CheckpointError(f"{weights} cannot be read: {e.strerror}") from None
    if size < 8 or header > min(size - 8, MAX_HEADER_BYTES):
        raise CheckpointError(f"{weights}: its header declares {header} bytes (file {size} bytes, at most "
                              f"{MAX_HEADER_BYTES >> 20} MiB read); truncated or not a safetensors file")
    try:
        with safe_open(str(weights), "pt") as f:  # reads the header only
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is truncated or not a safetensors file: {e}") from None


def _read_safetensors(weights: Path) -> dict[str, torch.Tensor]:
    _safetensors_metadata(weights)  # size and header checked first
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is truncated or not a safetensors file: {e}") from None


def load_ours(path: str | Path, config=None, max_params: float | None = MAX_PARAMS) -> Model:
    """Our format (a folder or its .safetensors file) -> model (eval mode, CPU). The config (given, else
    the one in the metadata, else config.yaml) is checked before the weights are read."""
    path = Path(path)
    weights = path / WEIGHTS if path.is_dir() else path
    if not weights.is_file():
        raise FileNotFoundError(f"weights not found: {weights}")
    meta = _safetensors_metadata(weights)
    if config is None:
        config = parse_json(meta[_META_KEY], str(weights)) if _META_KEY in meta else weights.parent / CONFIG
    kind, cfg = resolve_config(config, max_params)
    state = _read_safetensors(weights)
    if _LINK_KEY in meta:
        if kind != "net2net":
            raise CheckpointError(f"{weights} links a first stage, but its config is a {kind}")
        state.update(_linked_first_stage(weights, meta[_LINK_KEY], cfg.first_stage))
    _check_stored_size(kind, cfg, state, str(weights))
    model = _build(kind, cfg)
    expected = model.state_dict()
    for k, v in expected.items():  # restore stages shared by two prefixes
        if k not in state:
            twin = next((s for s, t in expected.items() if t is v and s in state), None)
            if twin is not None:
                state[k] = state[twin]
    load_state_dict_strict(model, state, allow_missing_derived=True)
    return model.eval()


def load_model(path: str | Path, config=None, max_params: float | None = MAX_PARAMS) -> Model:
    """Load ours (a folder or .safetensors) or an original .ckpt (+ yaml); eval mode, on the CPU.

    The config is checked before anything is allocated: a model of more than `max_params` parameters and
    buffers is refused (ConfigError) unless the limit is raised. Never runs code from the files."""
    path = Path(path)
    if path.is_dir():
        if (path / WEIGHTS).is_file():
            return load_ours(path, config, max_params)
        ckpts = sorted(path.glob("*.ckpt")) or sorted(path.glob("checkpoints/last.ckpt"))
        if not ckpts:
            raise FileNotFoundError(f"{path} holds neither {WEIGHTS} nor a .ckpt file")
        return load_original(ckpts[0], config, max_params)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return load_ours(path, config, max_params)
    return load_original(path, config, max_params)


def main(argv: list[str] | None = None) -> None:
    """`taming-convert original.ckpt [--config project.yaml] out_folder [--half]`."""
    ap = argparse.ArgumentParser(description="Convert an original taming-transformers checkpoint to our "
                                             "format (model.safetensors + config.yaml).")
    ap.add_argument("ckpt", help="original .ckpt file (or a folder holding one)")
    ap.add_argument("out", help="output folder")
    ap.add_argument("--config", help="project yaml (default: found beside the checkpoint)")
    ap.add_argument("--half", action="store_true", help="store float weights as float16")
    ap.add_argument("--max-params", type=float, default=MAX_PARAMS,
                    help="refuse configs describing more parameters and buffers than this (default: %(default).0e)")
    args = ap.parse_args(argv)
    try:
        model = load_model(args.ckpt, args.config, args.max_params)
        save_model(model, args.out, torch.float16 if args.half else None)
    except (ConfigError, CheckpointError, FileNotFoundError) as e:  # one line, no traceback: bad input
        sys.exit("taming-convert: error: " + " ".join(str(e).split()))  # OmegaConf messages span lines
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}/{WEIGHTS} ({n / 1e6:.1f}M parameters) and {args.out}/{CONFIG}")


if __name__ == "__main__":
    main()
