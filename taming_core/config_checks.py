"""Model configs checked before anything is allocated: plain data, sane sizes, and the size of the model.

A config often comes from a file someone else wrote (an original project yaml, our `config.yaml`, the JSON in
a safetensors header). Before a model is built from it:
- the file is read as plain data: yaml through a safe loader (no `!!python/...` tags), JSON through `json`;
  it must be small and shallow, and hold no OmegaConf interpolation (`${oc.env:NAME}` would copy an
  environment variable into the config): those are refused, never resolved;
- every size of the typed config lies within `_RULES` (`n_embed: 0`, a negative `ch`, `n_layer: 10000`,
  `num_res_blocks: 1000` are refused by name);
- the parameters and buffers of the model it describes are counted on the meta device (`model_size`: the
  model's own layers, built without storage); more than `max_params` elements (default `MAX_PARAMS`, raised
  by the `max_params=` keyword of `build_model` / `load_model` or `--max-params` of taming-convert) are
  refused.
Every refusal is a `ConfigError` naming the field.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import yaml

from .autoencoder import AutoencoderConfig
from .conditioners import KINDS, ConditionerConfig
from .gpt import GPTConfig
from .net2net import COND_MODES, Net2NetConfig
from .permuter import NAMES, PermuterConfig
from .labels import COCO_STUFF
from .quantizer import BetaOn, UnknownIndex
from .safe_unpickle import regular_file
from .segmenter import SegmenterConfig
from .vqgan import VQGANConfig

MAX_PARAMS = 5_000_000_000  # parameters + buffers (elements): 20 GB in fp32
# A config file or the config in a safetensors header, checked before it is parsed: the largest legit ones list
# a few thousand used codes (an inline remap, ~8 bytes a code); PyYAML takes ~50x the bytes it parses.
MAX_CONFIG_BYTES = 1 << 20
_MAX_NODES, _MAX_DEPTH = 1 << 18, 32  # values and nesting of the raw data (yaml aliases can repeat a subtree)
# Items of one list: OmegaConf takes ~1 ms and ~2 KB per item it merges, so lists are short, except an inline
# `remap` (used codes), which the loader keeps out of OmegaConf (checkpoint.resolve_config).
_MAX_LIST, MAX_INLINE_REMAP = 4096, 1 << 17
_INTERPOLATION = re.compile(r"\$\{")


class ConfigError(ValueError):
    """A config that names an unknown target or parameter, holds an out-of-range value, or does not fit the
    checkpoint."""


# ----------------------------------------------------------------------------------------------------------
# Raw data: yaml, JSON


class _YamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """yaml.SafeLoader (plain data only; libyaml's parser where PyYAML has it, 5x faster) that also reads
    `1e-6` as a float, as OmegaConf does (YAML 1.2)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def read_yaml(path: Path) -> dict:
    """A yaml file -> plain dict, read without tags or interpolation; ConfigError for anything else."""
    size = regular_file(path, "config", ConfigError)
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is {size} bytes, more than a config holds ({MAX_CONFIG_BYTES >> 20} MiB); "
                          "refused before parsing")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)  # a file that grew after its size was read is still bounded
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} holds more than {MAX_CONFIG_BYTES >> 20} MiB; refused before parsing")
        data = yaml.load(raw.decode("utf-8"), Loader=_YamlLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not a plain-data yaml config: "
                          f"{getattr(e, 'problem', None) or e}") from None
    except (UnicodeDecodeError, RecursionError, OSError) as e:
        raise ConfigError(f"{path} is not a readable yaml config: {type(e).__name__}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds a {type(data).__name__}, not a config mapping")
    return check_plain(data, str(path))


def parse_json(text: str, where: str) -> dict:
    """The config stored in a safetensors header -> plain dict; ConfigError if it is not a JSON object."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the config stored in {where} is {len(text)} characters, more than a config holds "
                          f"({MAX_CONFIG_BYTES >> 20} MiB); refused before parsing")
    try:
        data = json.loads(text)
    except (ValueError, TypeError, RecursionError) as e:
        raise ConfigError(f"the config stored in {where} is not valid JSON: {str(e)[:100]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"the config stored in {where} is a {type(data).__name__}, not a mapping")
    return check_plain(data, where)


def check_plain(data: dict, where: str) -> dict:
    """Refuse raw config data that is not plain, too large or too deep, or holds an OmegaConf interpolation
    (merging into the typed config would resolve it). Iterative, so depth cannot overflow the stack."""
    stack, nodes = [(data, "", 0)], 0
    while stack:
        value, key, depth = stack.pop()
        nodes += 1
        if nodes > _MAX_NODES or depth > _MAX_DEPTH:
            raise ConfigError(f"{where}: the config is larger or deeper than a model config can be; refused")
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise ConfigError(f"{where}: key {k!r} under {key or 'the top level'} is not a string")
                stack.append((v, f"{key}.{k}" if key else k, depth + 1))
        elif isinstance(value, list):
            longest = MAX_INLINE_REMAP if key.rpartition(".")[2] == "remap" else _MAX_LIST
            if len(value) > longest:
                raise ConfigError(f"{where}: {key} lists {len(value)} values, more than {longest}; refused")
            stack.extend((v, f"{key}[{i}]", depth + 1) for i, v in enumerate(value))
        elif isinstance(value, str) and _INTERPOLATION.search(value):
            raise ConfigError(f"{where}: {key} = {value!r} is an OmegaConf interpolation; model configs are "
                              "read literally (interpolations could copy environment variables): write the value")
        elif value is not None and not isinstance(value, (str, bool, int, float, datetime.date)):
            raise ConfigError(f"{where}: {key} holds a {type(value).__name__}; configs hold plain values only")
    return data


# ----------------------------------------------------------------------------------------------------------
# Typed configs: sizes, then the size of the model

_INF = math.inf
_RULES = {  # (config class, field): ("int", lo, hi) | ("ints", min len, max len, lo, hi) | ("real", lo, hi)
    # | ("choice", values). Bounds are inclusive and generous: the released models use a few percent of them.
    (AutoencoderConfig, "ch"): ("int", 1, 16384),
    (AutoencoderConfig, "ch_mult"): ("ints", 1, 10, 1, 64),
    (AutoencoderConfig, "num_res_blocks"): ("int", 0, 64),
    (AutoencoderConfig, "attn_resolutions"): ("ints", 0, 64, 1, 1 << 16),
    (AutoencoderConfig, "dropout"): ("real", 0.0, 1.0),
    (AutoencoderConfig, "in_channels"): ("int", 1, 4096),
    (AutoencoderConfig, "out_ch"): ("int", 1, 4096),
    (AutoencoderConfig, "resolution"): ("int", 1, 1 << 16),
    (AutoencoderConfig, "z_channels"): ("int", 1, 16384),
    (VQGANConfig, "n_embed"): ("int", 1, 1 << 24),
    (VQGANConfig, "embed_dim"): ("int", 1, 16384),
    (VQGANConfig, "quantizer"): ("choice", ("vq", "gumbel", "ema")),
    (VQGANConfig, "beta"): ("real", 0.0, _INF),
    (VQGANConfig, "beta_on"): ("choice", tuple(b.value for b in BetaOn)),
    (VQGANConfig, "dead_code_threshold"): ("real", 0.0, _INF),
    (VQGANConfig, "kl_weight"): ("real", 0.0, _INF),
    (VQGANConfig, "temperature"): ("real", 1e-6, _INF),
    (VQGANConfig, "ema_decay"): ("real", 0.0, 1.0),
    (VQGANConfig, "colorize_nlabels"): ("int", 1, 4096),
    (GPTConfig, "vocab_size"): ("int", 1, 1 << 24),
    (GPTConfig, "block_size"): ("int", 1, 1 << 16),
    (GPTConfig, "n_layer"): ("int", 1, 1024),
    (GPTConfig, "n_head"): ("int", 1, 1024),
    (GPTConfig, "n_embd"): ("int", 1, 1 << 16),
    (GPTConfig, "embd_pdrop"): ("real", 0.0, 1.0),
    (GPTConfig, "resid_pdrop"): ("real", 0.0, 1.0),
    (GPTConfig, "attn_pdrop"): ("real", 0.0, 1.0),
    (GPTConfig, "n_unmasked"): ("int", 0, 1 << 16),
    (GPTConfig, "cond_vocab_size"): ("int", 0, 1 << 24),
    (ConditionerConfig, "kind"): ("choice", KINDS),
    (ConditionerConfig, "sos_token"): ("int", 0, 1 << 24),
    (ConditionerConfig, "n_classes"): ("int", 1, 1 << 24),
    (ConditionerConfig, "n_labels"): ("int", 1, 4096),
    (ConditionerConfig, "label_offset"): ("int", 0, 255),
    (ConditionerConfig, "downsample_size"): ("int", -1, 1 << 16),
    (ConditionerConfig, "n_embed"): ("int", 1, 1 << 24),
    (ConditionerConfig, "down_factor"): ("int", 1, 4096),
    (PermuterConfig, "name"): ("choice", NAMES),
    (PermuterConfig, "H"): ("int", 1, 256),  # the latent grid a token order is built for (Python loops)
    (PermuterConfig, "W"): ("int", 1, 256),
    (Net2NetConfig, "pkeep"): ("real", 0.0, 1.0),
    (Net2NetConfig, "cond_mode"): ("choice", COND_MODES),
    (Net2NetConfig, "null_token"): ("int", 0, 1 << 24),
    (SegmenterConfig, "width"): ("int", 1, 4096),
    (SegmenterConfig, "short_side"): ("int", 32, 4096),
}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_value(value, rule: tuple, name: str) -> None:
    kind = rule[0]
    if kind == "int" and not (_is_int(value) and rule[1] <= value <= rule[2]):
        raise ConfigError(f"{name} = {value!r}: must be an integer in [{rule[1]}, {rule[2]}]")
    if kind == "ints":
        _, shortest, longest, lo, hi = rule
        if not (isinstance(value, (list, tuple)) and shortest <= len(value) <= longest
                and all(_is_int(v) and lo <= v <= hi for v in value)):
            shown = str(list(value[:8])) if isinstance(value, (list, tuple)) else repr(value)[:80]
            raise ConfigError(f"{name} = {shown}: must be a list of {shortest}-{longest} integers "
                              f"in [{lo}, {hi}]")
    if kind == "real" and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                               and rule[1] <= value <= rule[2]):  # NaN fails every comparison
        raise ConfigError(f"{name} = {value!r}: must be a number in [{rule[1]}, {rule[2]}]")
    if kind == "choice" and value not in rule[1]:
        raise ConfigError(f"{name} = {value!r}: must be one of {', '.join(map(str, rule[1]))}")


def _check_fields(cfg, where: str) -> None:
    """Every field of a typed config (and of the configs nested in it) against _RULES."""
    for f in dataclasses.fields(cfg):
        value, name = getattr(cfg, f.name), where + f.name
        if dataclasses.is_dataclass(value):
            _check_fields(value, name + ".")
        elif (type(cfg), f.name) in _RULES and not (value is None and f.default is None):
            _check_value(value, _RULES[(type(cfg), f.name)], name)
    if isinstance(cfg, AutoencoderConfig):
        if any(cfg.ch * m % 32 for m in cfg.ch_mult):
            raise ConfigError(f"{where}ch x {where}ch_mult = {[cfg.ch * m for m in cfg.ch_mult]}: every width "
                              "must be a multiple of 32 (GroupNorm with 32 groups)")
    elif isinstance(cfg, GPTConfig):
        if cfg.n_embd % cfg.n_head:
            raise ConfigError(f"{where}n_embd = {cfg.n_embd} is not a multiple of {where}n_head = {cfg.n_head}")
    elif isinstance(cfg, VQGANConfig):
        if cfg.quantizer == "gumbel" and cfg.embed_dim != cfg.ddconfig.z_channels:
            raise ConfigError(f"{where}embed_dim = {cfg.embed_dim}: a Gumbel VQGAN needs embed_dim == "
                              f"ddconfig.z_channels = {cfg.ddconfig.z_channels}")
        _check_remap(cfg, where)
    elif isinstance(cfg, SegmenterConfig):
        labels = cfg.labels
        if not isinstance(labels, (list, tuple)) or not 1 <= len(labels) <= 255 or len(set(labels)) != len(labels):
            raise ConfigError(f"{where}labels must list 1..255 distinct COCO-Stuff label names")
        unknown = [n for n in labels if n not in COCO_STUFF]
        if unknown:
            raise ConfigError(f"{where}labels: {unknown[0]!r} is not a COCO-Stuff label name")
    elif isinstance(cfg, ConditionerConfig):
        grid = cfg.kind == "segmentation" and _is_int(cfg.grid_factor) and cfg.grid_factor > 0
        if grid and (cfg.vq is not None or not _is_int(cfg.n_labels) or not 1 <= cfg.n_labels <= 256
                     or cfg.grid_factor > 64):
            raise ConfigError(f"{where}a label grid (grid_factor = {cfg.grid_factor}, at most 64) needs n_labels "
                              "in 1..256 and no vq")
        if not isinstance(cfg.grid_detail, bool) or (cfg.grid_detail and (not grid or cfg.grid_factor % 2)):
            raise ConfigError(f"{where}grid_detail (true / false) applies to a label grid with an even grid_factor")
        if cfg.kind in ("segmentation", "depth", "edges") and cfg.vq is None and not grid:
            raise ConfigError(f"{where}vq is missing: the {cfg.kind} condition needs a condition-stage VQGAN")


def _check_remap(cfg: VQGANConfig, where: str) -> None:
    """`remap` lists used codes (at most n_embed of them, each < n_embed), inline or in a .npy file whose
    header is read here, before the quantizer loads it."""
    if cfg.unknown_index not in tuple(u.value for u in UnknownIndex) and not (
            _is_int(cfg.unknown_index) and 0 <= cfg.unknown_index < cfg.n_embed):
        raise ConfigError(f"{where}unknown_index = {cfg.unknown_index!r}: must be 'random', 'extra' or a code")
    remap, name = cfg.remap, f"{where}remap"
    if remap is None:
        return
    if isinstance(remap, (list, tuple)):
        _check_value(list(remap), ("ints", 1, cfg.n_embed, 0, cfg.n_embed - 1), name)
    elif isinstance(remap, (str, Path)) and os.path.lexists(remap):  # a missing file is named by the quantizer
        size = regular_file(remap, name, ConfigError)
        with open(remap, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
            except (ValueError, OSError, SyntaxError, TypeError) as e:
                raise ConfigError(f"{name} = {str(remap)[:200]!r} is not a .npy array: "
                                  f"{' '.join(str(e).split())[:200]}") from None
            data_start = f.tell()
        if len(shape) != 1 or dtype.kind not in "iu" or not 1 <= shape[0] <= cfg.n_embed:
            raise ConfigError(f"{name} = {str(remap)[:200]!r} holds {dtype} {shape}; expected a 1-D integer array "
                              f"of at most n_embed = {cfg.n_embed} codes")
        if size != data_start + shape[0] * dtype.itemsize:
            raise ConfigError(f"{name} = {str(remap)[:200]!r} is {size} bytes, but its header declares "
                              f"{shape[0]} codes of {dtype.itemsize} bytes after {data_start}: truncated or padded")
    elif not isinstance(remap, (str, Path)):
        raise ConfigError(f"{name} must be a list of codes or a .npy path, got {type(remap).__name__}")


_SIZES: dict[tuple[str, str], int] = {}  # the last few counts: a load checks the limit, then the checkpoint


def model_size(kind: str, cfg: VQGANConfig | Net2NetConfig | SegmenterConfig) -> int:
    """Parameters + buffers (elements) of the model a config describes. The model is built on the meta device
    (shapes without storage: nothing is allocated), so the count cannot drift from the layers it builds."""
    key = (kind, repr(cfg))
    if key not in _SIZES:
        if len(_SIZES) >= 16:
            _SIZES.clear()
        _SIZES[key] = _count(kind, cfg)
    return _SIZES[key]


def _count(kind: str, cfg) -> int:
    import torch  # the model classes: imported here, config_checks is imported by their loader

    from .net2net import Net2Net
    from .segmenter import Segmenter
    from .vqgan import VQGAN

    cls = {"vqgan": VQGAN, "net2net": Net2Net, "segmenter": Segmenter}[kind]
    try:
        with torch.device("meta"):
            model = cls(cfg)
    except ValueError as e:  # a combination of fields the model refuses
        raise ConfigError(str(e)) from None
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}  # shared stages counted once
    return sum(t.numel() for t in tensors.values())


def check_config(kind: str, cfg: VQGANConfig | Net2NetConfig | SegmenterConfig,
                 max_params: float | None = MAX_PARAMS) -> None:
    """Refuse a typed config with an out-of-range field, or whose model holds more than `max_params`
    parameters and buffers (None: no limit). Nothing is allocated."""
    _check_fields(cfg, "")
    n = model_size(kind, cfg)
    if max_params is not None and n > max_params:
        raise ConfigError(f"the {kind} config describes a model of {n / 1e9:.2f}e9 parameters and buffers, more "
                          f"than the limit of {max_params / 1e9:.2f}e9; raise it with max_params= "
                          "(taming-convert --max-params) if the model is genuine")
