"""oneDNN-packed copies of the GPT's fp32 weights for sampling on a CPU (cpu_fastpath.prepare_for_sampling).

Shape legend: B batch, T tokens in a call, E width (n_embd), N = B * T rows of a product.

A decode step (one or a few new tokens and a KV cache) reads every GPT weight once. F.linear re-lays an fp32
weight out for oneDNN at every call; packing it once avoids that, with the same sums to float rounding.
`pack_gpt` turns the GPT's nn.Linear layers into `PackedLinear` (the same parameters and state-dict keys) and
gives each attention layer a `StackedQKV` (query, key and value as one stacked product, no keys of its own).

Every copy follows its weights: it is remade when a weight is replaced, moved or changed in place (identity,
address and version counter), and dropped by load_state_dict, train(), deepcopy and pickle. A packed GPT checks
all its copies at the first call of each KV cache (forward hooks, `CacheCheck`) and that cache's later calls use
them unchecked: weights must not change while a cache is being filled (its keys and values would be stale too);
every other call checks the copies it uses. In-place edits that torch does not version (through `.data`, fused
optimizers, and any edit of tensors made under torch.inference_mode()) need tc.drop_sampling_copies.
Gradients, autocast, other devices and other dtypes take the plain products; the copies cost the weights' bytes
once more.
Whether packing pays depends on the CPU and the row count (issue 28: slower than plain products on an Intel AMX
host at one row): `pack_gpt(gpt, packed_from_rows)` multiplies products of fewer rows than that by the plain
weights (None: never packed, no oneDNN copies made; query, key and value still one stacked product).
calibration.py measures which is faster for a model's decode steps on this host.
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .gpt import GPT, CausalSelfAttention

# One row times a matrix of fewer weights (out x in) than this stays on F.linear: oneDNN's fixed cost per call
# outweighs its gain there (measured on the AVX-512 CPU of bench/sampling.py).
PACK_ONE_ROW = 256 * 1024


def onednn_pack(weight: torch.Tensor) -> torch.Tensor | None:
    """weight (out, in), fp32 or bf16 on a CPU -> a copy in oneDNN's blocked layout for `onednn_linear`, or
    None where oneDNN cannot (no MKLDNN build or disabled, another device, an unsupported platform or dtype).

    The layout is chosen for up to 4 rows; any row count reads it.
    """
    if not (weight.is_cpu and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return None
    w = weight.detach().contiguous()  # packing from (out, in) rows is faster than from a transposed view
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 4)
        probe = torch.ones(1, w.shape[1], dtype=w.dtype)  # one product checked, for platforms where it misbehaves
        ok = torch.allclose(onednn_linear(probe, packed, None).float(), F.linear(probe, w).float(), rtol=1e-2,
                            atol=1e-3 * float(w.abs().sum(1).max()) + 1e-6)
    except RuntimeError:  # e.g. a build without oneDNN's linear for this dtype
        return None
    return packed if ok else None


def onednn_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (..., in) in the packed weight's dtype -> (..., out) = x W^T + bias."""
    flat = x.reshape(-1, x.shape[-1])  # (N, in)
    y = torch.ops.mkldnn._linear_pointwise(flat, packed, bias, "none", [], "")  # (N, out)
    return y.view(*x.shape[:-1], y.shape[-1])


def _sampling_call(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether x @ weight^T is a call the sampling copies serve: fp32 inference on a CPU, outside autocast."""
    return not (torch.is_grad_enabled() or x.dtype != torch.float32 or weight.dtype != torch.float32
                or not x.is_cpu or torch.is_autocast_enabled("cpu"))


def _one_small_row(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """One row times a matrix under PACK_ONE_ROW weights: F.linear, not the packed copy."""
    return x.numel() == weight.shape[1] and weight.numel() < PACK_ONE_ROW


def _plain_rows(x: torch.Tensor, weight: torch.Tensor, packed_from_rows: int | None) -> bool:
    """Whether x (N rows) @ weight^T takes the plain weights: fewer rows than packed_from_rows (None: always),
    or one small row."""
    return packed_from_rows is None or x.numel() < packed_from_rows * weight.shape[1] or _one_small_row(x, weight)


def _rows_product(weight: torch.Tensor, bias: torch.Tensor | None, packed: torch.Tensor | None,
                  packed_from_rows: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The product of a sampling call, x (N, in) -> (N, out), as PackedLinear and StackedQKV take it."""
    def product(x: torch.Tensor) -> torch.Tensor:
        if packed is None or _plain_rows(x, weight, packed_from_rows):
            return F.linear(x, weight, bias)
        return onednn_linear(x, packed, bias)
    return product


def _no_copy(weight: torch.Tensor) -> None:
    """The copy of a PackedLinear that is never packed (pack_gpt(gpt, None))."""
    return None


class SamplingCopy:
    """A value made by `make` from some tensors (a packed or stacked weight copy), remade when one of them is
    replaced (identity), moved (address) or changed in place (version counter). deepcopy and pickle drop it:
    a packed tensor is opaque."""

    def __init__(self, make: Callable):
        self.make = make
        self.clear()

    def clear(self) -> None:
        self.sources: tuple = ()  # the tensors it was made from
        self.stamps: tuple = ()  # their (address, version) then; tensors made under inference_mode have no version
        self.value = None

    def get(self, *tensors: torch.Tensor):
        if len(tensors) == len(self.sources):
            for t, source, (address, version) in zip(tensors, self.sources, self.stamps):
                if t is not source or t.data_ptr() != address or (version is not None and t._version != version):
                    break
            else:
                return self.value
        self.value = self.make(*tensors)
        self.sources = tensors
        self.stamps = tuple((t.data_ptr(), None if t.is_inference() else t._version) for t in tensors)
        return self.value

    def __deepcopy__(self, memo) -> SamplingCopy:
        return SamplingCopy(self.make)

    def __getstate__(self) -> dict:
        return {"make": self.make}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["make"])


class CacheCheck:
    """The KV cache whose first call checked every sampling copy of a prepared GPT, and whether the GPT call
    now running is one of that cache's: its layers then use their copies unchecked (see the module docstring).
    Run by forward hooks on the GPT (`before`, `after`); a copy of the model gets a fresh one."""

    def __init__(self):
        self.cache: weakref.ref | None = None
        self.now = False

    def before(self, gpt: GPT, args: tuple, kwargs: dict) -> None:
        cache = args[1] if len(args) > 1 else kwargs.get("cache")
        if (cache is not None and cache.length == 0 and not torch.is_grad_enabled()
                and not torch.is_autocast_enabled("cpu")):  # a sampling cache's first call
            for module in gpt.modules():
                if isinstance(module, HoldsSamplingCopy):
                    module.sampling_copy()
            self.cache = weakref.ref(cache)
        self.now = cache is not None and self.cache is not None and self.cache() is cache

    def after(self, gpt: GPT, args: tuple, kwargs: dict, output) -> None:
        self.now = False

    def __deepcopy__(self, memo) -> CacheCheck:
        return CacheCheck()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


class HoldsSamplingCopy(nn.Module):
    """A module with a SamplingCopy of `sources()` in `self.copy`, dropped by load_state_dict and train(), and
    the CacheCheck of its GPT in `self.checked` (prepare_for_sampling; alone, one that never trusts)."""

    packed_from_rows: int | None = 1  # products of fewer rows take the plain weights (pack_gpt); None: always

    def _hold_copy(self, make: Callable) -> None:  # after nn.Module.__init__
        self.copy = SamplingCopy(make)
        self.checked = CacheCheck()
        self.register_load_state_dict_post_hook(_drop_copy)  # values copied in place

    def sources(self) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def sampling_copy(self):
        """The copy, made now if missing or stale."""
        return self.copy.get(*self.sources())

    def train(self, mode: bool = True):
        if mode:  # training changes the weights: the copy would only hold memory
            self.copy.clear()
        return super().train(mode)


def _drop_copy(module: HoldsSamplingCopy, incompatible_keys) -> None:
    module.copy.clear()


class PackedLinear(HoldsSamplingCopy, nn.Linear):
    """nn.Linear (same parameters and keys) that multiplies by a oneDNN-packed copy of its fp32 weight in
    inference on a CPU, except one row times a matrix under PACK_ONE_ROW weights."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._hold_copy(onednn_pack)

    @classmethod
    def sharing(cls, linear: nn.Linear) -> PackedLinear:
        """A PackedLinear over the same weight and bias objects as `linear` (nothing copied)."""
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        new.weight, new.bias = linear.weight, linear.bias
        return new.train(linear.training)

    def sources(self) -> tuple[torch.Tensor, ...]:
        return (self.weight,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out)."""
        w = self.weight
        if not _sampling_call(x, w) or _plain_rows(x, w, self.packed_from_rows):
            return F.linear(x, w, self.bias)
        packed = self.copy.value if self.checked.now else self.copy.get(w)  # None: not packed, or dropped
        return F.linear(x, w, self.bias) if packed is None else onednn_linear(x, packed, self.bias)

    def rows_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """forward for fp32 rows x (N, in) in inference on a CPU, as one closure over the weights and copy as
        they are now (a decode step, decode_step.py)."""
        return _rows_product(self.weight, self.bias, self.sampling_copy(), self.packed_from_rows)


def _stack_qkv(*parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """query, key, value weights (E, E) and biases (E,) -> weight (3E, E) laid out in (in, out) order (one row
    times a small matrix is faster on that layout under MKL), bias (3E,), the weight's packed copy."""
    weight, bias, _ = _stack_qkv_plain(*parts)
    return weight, bias, onednn_pack(weight)


def _stack_qkv_plain(*parts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
    """_stack_qkv without the packed copy (pack_gpt(gpt, None))."""
    weight = torch.cat([w.detach().t() for w in parts[:3]], dim=1).t()  # (3E, E), a transposed view
    return weight, torch.cat([b.detach() for b in parts[3:]]), None


class StackedQKV(HoldsSamplingCopy):
    """One attention layer's query, key and value as one product E -> 3E ([q; k; v] along the last axis),
    from a stacked copy of the three weights in inference on a CPU; no parameters or keys of its own."""

    def __init__(self, attn: CausalSelfAttention):
        super().__init__()
        self.parts = (attn.query, attn.key, attn.value)  # a tuple: not submodules, so no keys
        self._hold_copy(_stack_qkv)

    def sources(self) -> tuple[torch.Tensor, ...]:
        q, k, v = self.parts
        return q.weight, k.weight, v.weight, q.bias, k.bias, v.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, E) -> (B, T, 3E)."""
        q, k, v = self.parts
        if not _sampling_call(x, q.weight):  # gradients reach the three weights
            return torch.cat([q(x), k(x), v(x)], dim=-1)
        stacked = self.copy.value if self.checked.now else None
        weight, bias, packed = stacked if stacked is not None else self.sampling_copy()
        if packed is None or _plain_rows(x, weight, self.packed_from_rows):
            return F.linear(x, weight, bias)
        return onednn_linear(x, packed, bias)

    def rows_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """forward for fp32 rows x (N, E) in inference on a CPU, as one closure over the stacked copy as it is
        now (a decode step, decode_step.py)."""
        weight, bias, packed = self.sampling_copy()
        return _rows_product(weight, bias, packed, self.packed_from_rows)


def pack_gpt(gpt: GPT, packed_from_rows: int | None = 1) -> None:
    """Swap the GPT's nn.Linear layers for PackedLinear, add a StackedQKV to each attention layer, pack; the
    GPT's hooks check the copies at each KV cache's first call. Products of fewer than `packed_from_rows` rows
    (B * T) take the plain weights; None: no oneDNN copies at all (a GPT packed before drops them)."""
    checked = next((m.checked for m in gpt.modules() if isinstance(m, (PackedLinear, StackedQKV))), None)
    if checked is None:  # not prepared before
        checked = CacheCheck()
        gpt.register_forward_pre_hook(checked.before, with_kwargs=True)
        gpt.register_forward_hook(checked.after, with_kwargs=True, always_call=True)
    for module in list(gpt.modules()):
        stacked = ()
        if isinstance(module, CausalSelfAttention):
            if module.qkv is None:
                module.qkv = StackedQKV(module)
            stacked = ("query", "key", "value")  # multiplied through module.qkv
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear and name not in stacked:
                setattr(module, name, PackedLinear.sharing(child))
    for module in gpt.modules():  # the copies now, not during the first image
        if isinstance(module, (PackedLinear, StackedQKV)):
            module.checked = checked
            make = {(PackedLinear, True): onednn_pack, (PackedLinear, False): _no_copy,
                    (StackedQKV, True): _stack_qkv, (StackedQKV, False): _stack_qkv_plain}
            wanted = make[type(module), packed_from_rows is not None]
            if module.copy.make is not wanted:
                module.copy = SamplingCopy(wanted)
            module.packed_from_rows = packed_from_rows
            module.sampling_copy()


def set_packed_from_rows(gpt: GPT, packed_from_rows: int | None) -> None:
    """Change the row count from which a packed GPT's products use their copies, keeping the copies (for
    timing both paths on one model: calibration.py); pack_gpt sets it for good."""
    for module in gpt.modules():
        if isinstance(module, (PackedLinear, StackedQKV)):
            module.packed_from_rows = packed_from_rows
