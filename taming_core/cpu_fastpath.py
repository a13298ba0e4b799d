"""Sampling on a CPU: the GPT's products shaped for memory traffic, applied to a model by one call.

A decode step (one or a few new tokens and a KV cache, sampling.py) reads every GPT weight once, so its time
follows how the weights are read rather than the arithmetic. `prepare_for_sampling(model, precision)` gives the
model to sample from:
- "fp32" on a CPU, in place: oneDNN-packed weight copies and one stacked query/key/value product (packed.py),
  the state-dict keys unchanged; `matmul` "plain" keeps plain products, "auto" the faster of the two for this
  model's decode steps on this host (calibration.py: measured at load, cached per host);
- "int8" / "bf16": `quantize_gpt`, a copy whose GPT matrices are `LowBitLinear` (1/4 or 1/2 of the fp32 bytes).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .gpt import GPT, CausalSelfAttention
from .net2net import Net2Net
from .calibration import MatmulChoice, choose_matmul
from .decode_step import attach as attach_decode_step
from .packed import HoldsSamplingCopy, onednn_linear, onednn_pack, pack_gpt
from .precision import SamplingPrecision, cpu_has_bf16, sampling_precision
from .sampling import gpt_of


def prepare_for_sampling(model: Net2Net | GPT, precision: str | SamplingPrecision = "fp32",
                         matmul: str | MatmulChoice = "packed") -> Net2Net | GPT:
    """The model to sample from at `precision` -> model (fp32, prepared in place) or a low-bit copy.

    precision: a SamplingPrecision (sampling_precision's plan) or its name ("auto", "fp32", "bf16", "int8")
    for the model's device. fp32 weights on a CPU: PackedLinear and StackedQKV in place (the keys stay), the
    packed copies made now; on other devices the model unchanged. int8 / bf16: quantize_gpt(model, ...). The
    plan's decode_dtype is the caller's, for the first stage (tc.stream's decode_dtype).
    On a CPU the first stage's weights are also laid out channels-last (faster decodes, the same keys and values).
    matmul (fp32 on a CPU; low-bit weights have their own kernels): "packed" (oneDNN copies), "plain" (F.linear
    on the weights), "auto" (calibration.choose_matmul: measured on this host and cached, well under a second
    for the bundled models) or a MatmulChoice; the one used is kept in the GPT's `sampling_matmul`. Both give
    the same sums to float rounding.
    """
    gpt = gpt_of(model)
    device = gpt.pos_emb.device
    plan = precision if isinstance(precision, SamplingPrecision) else sampling_precision(precision, device)
    if not isinstance(matmul, MatmulChoice) and matmul not in ("auto", "packed", "plain"):
        raise ValueError(f"matmul must be auto, packed or plain, got {matmul!r}")
    if plan.weight_dtype is not None:
        model = quantize_gpt(model, plan.weight_dtype, plan.prefill_dtype)
    elif device.type == "cpu":
        choice = matmul if isinstance(matmul, MatmulChoice) else choose_matmul(gpt, matmul)
        pack_gpt(gpt, choice.packed_from_rows)
        gpt.sampling_matmul = choice
    if device.type == "cpu":  # decode steps without module calls (decode_step.py), the same logits
        attach_decode_step(gpt_of(model))  # (quantize_gpt's copy has one already)
    if device.type == "cpu" and isinstance(model, Net2Net):
        # oneDNN's convolutions over channels-last weights: decodes 1.2-1.3x faster on a 2-core AVX2 host (batch
        # 4, 1-2 threads), the same values to float rounding; the outputs come channels-last too
        model.first_stage_model.to(memory_format=torch.channels_last)
    return model


def drop_sampling_copies(model: Net2Net | GPT) -> Net2Net | GPT:
    """Free the sampling copies of a prepared model (remade when needed); returns model. Needed after in-place
    weight edits that torch does not version (see packed.py)."""
    for module in model.modules():
        if isinstance(module, HoldsSamplingCopy):
            module.copy.clear()
    return model


# ----------------------------------------------------------------------------------------------------------
# Fewer bytes per token


def _pack_bf16(weight: torch.Tensor) -> torch.Tensor | None:
    """bf16 weights are packed on CPUs with bf16 units (F.linear re-lays them out at every call there, as
    fp32 ones); int8 weights are read as they are by their kernel."""
    return onednn_pack(weight) if weight.dtype == torch.bfloat16 and cpu_has_bf16() else None


class LowBitLinear(HoldsSamplingCopy):
    """Inference-only stand-in for an nn.Linear whose weight W (out, in) is stored in int8 or bf16.

    Decoding reads every weight once per token, so on a memory-bound CPU the time per token follows the bytes
    per weight: int8 keeps 1/4 of the fp32 bytes (one scale per output row, symmetric, max-abs / 127), bf16 1/2
    (multiplied by a packed copy on CPUs with bf16 units, a second copy of the bf16 bytes). Inputs and outputs
    stay in the caller's dtype. Not a training layer: no gradients, and its state_dict (int8 `weight` +
    `scale`) is not a checkpoint format.
    Many rows at once (a prefill) are compute-bound instead: int8 weights are then dequantized for one product
    in `prefill_dtype`, fp32 by default, bf16 on CPUs with bf16 units (sampling_precision).
    """

    DECODE_ROWS = 16  # up to this many rows, the int8 matrix-vector kernel; more (a prefill): one product

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype = torch.int8,
                 prefill_dtype: torch.dtype = torch.float32):
        super().__init__()
        if dtype not in (torch.int8, torch.bfloat16):
            raise ValueError(f"low-bit weights are torch.int8 or torch.bfloat16, got {dtype}")
        self.prefill_dtype = prefill_dtype
        w = weight.detach().float()  # (out, in)
        scale = None
        if dtype == torch.int8:
            scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127  # (out,)
            w = torch.round(w / scale[:, None]).clamp_(-127, 127)
            scale = scale.to(torch.bfloat16)  # the int8 kernel takes bf16 scales (and inputs)
        self.register_buffer("weight", w.to(dtype).contiguous())  # (out, in) rows: what the int8 kernel reads
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self._hold_copy(_pack_bf16)

    def sources(self) -> tuple[torch.Tensor, ...]:
        return (self.weight,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out) in x's dtype (fp32 when there is a bias)."""
        w, bias = self.weight, self.bias
        flat = x.reshape(-1, x.shape[-1])  # (N, in)
        if w.dtype == torch.bfloat16:
            packed = self.copy.get(w)  # None on a GPU (a move there changes the address: the CPU copy goes)
            y = F.linear(flat.to(w.dtype), w) if packed is None else onednn_linear(flat.to(w.dtype), packed, None)
        elif flat.shape[0] <= self.DECODE_ROWS and flat.is_cpu:
            # int8 x bf16 matrix-vector kernel: reads the int8 bytes once, scales the output rows
            y = torch._weight_int8pack_mm(flat.to(torch.bfloat16), w, self.scale)  # (N, out) bf16
        else:  # a prefill: one product on the dequantized weights
            p = self.prefill_dtype
            y = F.linear(flat.to(p), w.to(p) * self.scale.to(p)[:, None])
        y = y.to(x.dtype) if bias is None else bias + y  # one op: the add promotes bf16 to fp32
        return y.view(*x.shape[:-1], y.shape[-1])

    def rows_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """forward for fp32 rows x (N, in) on a CPU as one closure over the weights as they are now (a decode
        step, decode_step.py): the same ops, without the module call."""
        w, scale, bias = self.weight, self.scale, self.bias
        if w.dtype == torch.bfloat16:
            packed = self.copy.get(w)
            if packed is None:
                def mul(x: torch.Tensor) -> torch.Tensor:
                    return F.linear(x.to(w.dtype), w)
            else:
                def mul(x: torch.Tensor) -> torch.Tensor:
                    return onednn_linear(x.to(w.dtype), packed, None)
        else:
            def mul(x: torch.Tensor) -> torch.Tensor:
                if x.shape[0] > self.DECODE_ROWS:
                    p = self.prefill_dtype
                    return F.linear(x.to(p), w.to(p) * scale.to(p)[:, None])
                return torch._weight_int8pack_mm(x.to(torch.bfloat16), w, scale)
        if bias is None:
            return lambda x: mul(x).to(x.dtype)
        return lambda x: bias + mul(x)


def quantize_gpt(model: Net2Net | GPT, dtype: torch.dtype = torch.int8,
                 prefill_dtype: torch.dtype = torch.float32) -> Net2Net | GPT:
    """A copy of model whose GPT matrices (attention, MLP, head) are LowBitLinear with `dtype` (torch.int8 or
    torch.bfloat16) weights; query, key and value stacked in one (attn.qkv).

    For CPU decoding, which reads every weight once per token (the samplers keep keys and values in bf16 on a
    GPU, in fp32 on a CPU: sampling.new_sampling_cache). Embeddings, LayerNorms and the residual stream stay
    fp32; a Net2Net copy shares its (frozen) first and condition stages with the original. The effect on
    tokens and log-likelihood is measured in bench/sampling.py. Inference only: the copy is not a checkpoint
    format. prefill_dtype: the dtype of int8 products of many rows at once (a prefill), torch.bfloat16 on CPUs
    with bf16 units (sampling_precision).
    """
    gpt_of(model)  # a GPT in eval mode
    shared = {}
    if isinstance(model, Net2Net):
        shared = {id(m): m for name, m in model.named_children() if name != "transformer"}
    clone = copy.deepcopy(model, shared)
    for module in list(gpt_of(clone).modules()):
        if isinstance(module, CausalSelfAttention):  # one stacked low-bit product for query, key, value
            parts = (module.query, module.key, module.value)
            weight = torch.cat([m.weight for m in parts])  # (3E, E)
            module.qkv = LowBitLinear(weight, torch.cat([m.bias for m in parts]), dtype, prefill_dtype)
            del module.query, module.key, module.value
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, LowBitLinear(child.weight, child.bias, dtype, prefill_dtype))
    gpt = gpt_of(clone)
    if gpt.pos_emb.device.type == "cpu":  # decode steps without module calls (decode_step.py), the same logits
        attach_decode_step(gpt)
    return clone
