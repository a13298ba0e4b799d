"""GPT over code indices (paper Sec. 3.2, Eq. 8-10), with a key/value cache.

Shape legend: B batch, T tokens in this call, P tokens already in the cache, E width (n_embd), nh heads,
hs = E / nh head size, V vocab, n_layer layers.
Aligned conditioning (net2net.py, cond_mode="aligned") adds a second table `cond_emb` (cond_vocab_size rows, a key the
original does not have): condition ids cond (B, T) of the same positions as the tokens are embedded and added.
With `cond_layers` > 0, `cond_features` first runs the embedded condition grid through dilated 3x3 convolutions
(`cond_conv.{i}`), so the feature added at a position also tells the condition below and to the right of it,
which the causal GPT never sees otherwise; those features (B, T, E) are passed as `cond` instead of ids.
Key names follow the original minGPT (`tok_emb`, `pos_emb`, `blocks.{l}.attn.{key,query,value,proj,mask}`,
`blocks.{l}.mlp.{0,2}`, `ln_f`, `head`), including the persistent causal `mask` buffer.
Decoding (one or a few tokens per call, a KV cache) reads every weight once per call, so the inference path
is shaped for memory traffic: on a CPU, calls with a cache multiply by oneDNN-packed copies of the fp32 weights
(`Linear`), query/key/value in one product, and `LowBitLinear` (int8 or bf16 weights, made by `quantize_gpt` in
sampling.py) gives fewer bytes per token.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .precision import cpu_has_bf16


@dataclass
class GPTConfig:
    vocab_size: int = 1024
    block_size: int = 512
    n_layer: int = 12
    n_head: int = 8
    n_embd: int = 256
    embd_pdrop: float = 0.0
    resid_pdrop: float = 0.0
    attn_pdrop: float = 0.0
    n_unmasked: int = 0  # the first n_unmasked tokens attend to each other bidirectionally
    # Rows of the condition embedding `cond_emb` added per position (aligned conditioning); 0: no such table
    # (every original model and prefix-mode model)
    cond_vocab_size: int = 0
    # Aligned conditioning: residual 3x3 convolutions over the embedded condition grid, dilations 1, 2, 4, ..
    # (4 layers see 31x31 cells); 0: each position gets its own condition's embedding alone
    cond_layers: int = 0


class KVCache:
    """Keys and values of every layer for positions [0, length), preallocated for `max_len` positions.

    Shrinking `length` rolls the cache back (the slots past it are overwritten by the next call).
    """

    def __init__(self, cfg: GPTConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        hs = cfg.n_embd // cfg.n_head
        shape = (cfg.n_layer, batch_size, cfg.n_head, max_len, hs)
        self.k = torch.empty(shape, device=device, dtype=dtype)  # (n_layer, B, nh, max_len, hs)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0
        self.checked_by: nn.Module | None = None  # the GPT that checked its weight copies at the first call

    @property
    def max_len(self) -> int:
        return self.k.shape[3]


def _stamp(*tensors: torch.Tensor) -> tuple:
    """Identity of tensors' current values: address and in-place version (tensors made under inference_mode
    have no version counter: the address alone, and an in-place edit other than load_state_dict must drop the
    copy made from them)."""
    return tuple((t.data_ptr(), None if t.is_inference() else t._version) for t in tensors)


def onednn_pack(weight: torch.Tensor) -> torch.Tensor | None:
    """weight (out, in), fp32 or bf16 on a CPU -> a copy in oneDNN's blocked layout for `onednn_linear`, or
    None where oneDNN cannot (no MKLDNN build, another device, an unsupported platform or dtype).

    Measured on this repo's 2-core AVX-512 CPU (torch 2.13), fp32 (512, 2048) products: plain F.linear 61 / 271
    / 4,606 us for 1 / 4 / 400 rows, packed 45 / 47 / 1,947 us, the same sums to 1e-6 relative; F.linear re-lays
    the matrix out at every call. The packing is laid out for up to 4 rows; any row count reads it.
    """
    if not (weight.is_cpu and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return None
    w = weight.detach().contiguous()  # packing from (out, in) rows is 2-3x faster than from a transposed view
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
    rows = x.reshape(-1, x.shape[-1])  # (N, in)
    y = torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "")  # (N, out)
    return y.view(*x.shape[:-1], y.shape[-1])


class PackedWeight:
    """Mixin for a module with a `weight`: a oneDNN-packed copy of it (`onednn_pack`), made on demand, remade
    when the weight moved or changed in place (a stamp), dropped by load_state_dict (a hook), never copied by
    deepcopy or pickle (the packed tensor is opaque). Subclasses say which weights are worth packing."""

    def _init_packed(self) -> None:  # after nn.Module.__init__
        self._packed: tuple | None = None  # (stamp of weight, packed weight or None)
        self.register_load_state_dict_post_hook(PackedWeight._drop_packed)

    @staticmethod
    def _drop_packed(module: PackedWeight, incompatible_keys) -> None:
        module._packed = None  # load_state_dict copied new values in place

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_packed": None}

    def _packs(self, weight: torch.Tensor) -> bool:
        raise NotImplementedError

    def packed_weight(self) -> torch.Tensor | None:
        """The packed copy of the weight (made now if missing or stale), or None where it is not packed."""
        w = self.weight
        stamp = _stamp(w)
        if self._packed is None or self._packed[0] != stamp:
            self._packed = (stamp, onednn_pack(w) if self._packs(w) else None)
        return self._packed[1]


class Linear(PackedWeight, nn.Linear):
    """nn.Linear (same parameters and keys) that samples from a packed copy of its weight on a CPU.

    `sampling_forward` (the GPT's calls with a KV cache and no gradients) multiplies fp32 inputs by a oneDNN-
    packed fp32 copy of the weight (`onednn_pack`, PackedWeight): 1.3-1.5x faster products for one row, 4-6x
    for 4 rows and half the time of a prefill's, exact to float rounding. The copy costs the weight's bytes
    again (edits torch does not version, through `.data` or a fused optimizer, need
    GPT.drop_sampling_copies()).
    Training, evaluation without a cache, autocast, other devices and dtypes use plain F.linear, and so does
    one row times a matrix under PACK_ONE_ROW weights, where oneDNN's fixed cost per call (about 12 us here)
    outweighs its gain: (256, 256) 6 us plain vs 15 packed, (768, 256) 13 vs 21, (1024, 256) 21 vs 20,
    (1536, 512) 51 vs 36.
    """

    PACK_ONE_ROW = 256 * 1024  # weights (out x in) from which a single row is multiplied by the packed copy

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_packed()

    def _packs(self, weight: torch.Tensor) -> bool:
        return weight.dtype == torch.float32

    def sampling_forward(self, x: torch.Tensor, trusted: bool = False) -> torch.Tensor:
        """x (..., in) -> (..., out), through the packed weight where it applies (see the class).

        trusted: reuse the packed copy without checking that the weight is unchanged (the GPT checked every
        copy at the first call of this KV cache, see GPT.forward).
        """
        w = self.weight
        if (torch.is_grad_enabled() or x.dtype != torch.float32 or w.dtype != torch.float32 or not x.is_cpu
                or torch.is_autocast_enabled("cpu") or (x.numel() == w.shape[1] and w.numel() < self.PACK_ONE_ROW)):
            return self(x)
        packed = self._packed[1] if trusted and self._packed is not None else self.packed_weight()
        return self(x) if packed is None else onednn_linear(x, packed, self.bias)


def _dense(module: nn.Module, x: torch.Tensor, cache: KVCache | None, trusted: bool) -> torch.Tensor:
    """module(x); in a GPT call with a KV cache (sampling), a Linear's packed path, its copy unchecked when
    `trusted` (checked at the cache's first call, GPT.forward); LowBitLinear has its own path."""
    if cache is None or not isinstance(module, Linear):
        return module(x)
    return module.sampling_forward(x, trusted)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head = cfg.n_head
        self.key = Linear(cfg.n_embd, cfg.n_embd)
        self.query = Linear(cfg.n_embd, cfg.n_embd)
        self.value = Linear(cfg.n_embd, cfg.n_embd)
        self.attn_drop = cfg.attn_pdrop
        self.resid_drop = nn.Dropout(cfg.resid_pdrop)
        self.proj = Linear(cfg.n_embd, cfg.n_embd)
        mask = torch.tril(torch.ones(cfg.block_size, cfg.block_size))
        if cfg.n_unmasked > 0:
            mask[: cfg.n_unmasked, : cfg.n_unmasked] = 1
        # Persistent as in the original (its checkpoints carry it); our own format derives it from the config.
        self.register_buffer("mask", mask.view(1, 1, cfg.block_size, cfg.block_size))
        self.n_unmasked = cfg.n_unmasked
        self._stacked: tuple | None = None  # (stamp, Linear E -> 3E): see _stacked_qkv
        self.qkv: nn.Module | None = None  # quantize_gpt: query, key, value stacked in one LowBitLinear
        self.register_load_state_dict_post_hook(CausalSelfAttention._drop_stacked)

    @staticmethod
    def _drop_stacked(module: CausalSelfAttention, incompatible_keys) -> None:
        module._stacked = None  # load_state_dict copied new weights in place

    def _stacked_qkv(self, trusted: bool = False) -> Linear:
        """A Linear E -> 3E with the [query; key; value] weights (3E, E) and biases (3E,) stacked, for one
        product instead of three (its packed copy too, when sampling on a CPU).

        Inference only: a copy, rebuilt whenever one of the six tensors moved (data_ptr) or was changed in
        place (_version), so training steps never leave it stale; load_state_dict drops it (a hook). Tensors
        made under torch.inference_mode() have no version counter: for them the stamp is the address only,
        and an in-place edit other than load_state_dict must reset `_stacked`. One (3E, E) product per layer
        is a few % faster per decoded token on CPU than three (E, E) ones. Key names are unchanged.
        trusted: return the copy unchecked, if there is one (calls with a cache: see GPT.forward).
        """
        if trusted and self._stacked is not None:
            return self._stacked[1]
        layers = (self.query, self.key, self.value)
        parts = [m.weight for m in layers] + [m.bias for m in layers]
        stamp = _stamp(*parts)
        if self._stacked is None or self._stacked[0] != stamp:
            E = self.query.in_features
            stacked = Linear(E, 3 * E, device="meta")  # not a submodule: no keys, no parameters of the model
            # (3E, E), stored in (in, out) order like every Linear weight (see GPT.__init__)
            stacked.weight = nn.Parameter(torch.cat([w.detach().t() for w in parts[:3]], dim=1).t(), False)
            stacked.bias = nn.Parameter(torch.cat([b.detach() for b in parts[3:]]), False)
            self._stacked = (stamp, stacked)
        return self._stacked[1]

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                trusted: bool = False) -> torch.Tensor:
        """x (B, T, E) -> (B, T, E); with a cache, x takes positions [cache.length, cache.length + T).
        trusted: the weight copies were checked at this cache's first call (GPT.forward)."""
        B, T, E = x.shape
        nh = self.n_head
        if self.qkv is not None or not torch.is_grad_enabled():
            stacked = self.qkv if self.qkv is not None else self._stacked_qkv(trusted)
            qkv = _dense(stacked, x, cache, trusted)  # (B, T, 3E)
            q, k, v = qkv.view(B, T, 3, nh, E // nh).permute(2, 0, 3, 1, 4)  # 3 x (B, nh, T, hs)
        else:  # training: three products, gradients reach the three weights
            q, k, v = (f(x).view(B, T, nh, E // nh).transpose(1, 2)
                       for f in (self.query, self.key, self.value))  # (B, nh, T, hs)
        start = 0
        if cache is not None:
            q = q.to(cache.k.dtype)  # a bf16 cache (low-bit weights on a GPU) attends in bf16; k, v cast on writing
            start = cache.length
            cache.k[layer, :, :, start:start + T] = k
            cache.v[layer, :, :, start:start + T] = v
            k = cache.k[layer, :, :, : start + T]  # (B, nh, P+T, hs)
            v = cache.v[layer, :, :, : start + T]
        drop = self.attn_drop if self.training else 0.0
        if T == 1:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # one new token sees everything
        elif start == 0 and self.n_unmasked == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        else:
            mask = self.mask[:, :, start:start + T, : start + T].bool()  # (1, 1, T, P+T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = _dense(self.proj, y.transpose(1, 2).reshape(B, T, E).to(x.dtype), cache, trusted)  # (B, T, E)
        return self.resid_drop(y) if self.training else y


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.n_embd)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.mlp = nn.Sequential(
            Linear(cfg.n_embd, 4 * cfg.n_embd),
            nn.GELU(),  # exact erf form, as the original
            Linear(4 * cfg.n_embd, cfg.n_embd),
            nn.Dropout(cfg.resid_pdrop),
        )

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0,
                trusted: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache, layer, trusted)
        if self.training:
            return x + self.mlp(self.ln2(x))
        fc, _, proj, _ = self.mlp  # the same layers without the dropout call: decoding runs this per token
        return x + _dense(proj, F.gelu(_dense(fc, self.ln2(x), cache, trusted)), cache, trusted)


class GPT(nn.Module):
    """Decoder-only transformer p(s_i | s_<i) over a shared vocabulary of condition and image tokens."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, cfg.block_size, cfg.n_embd))
        if cfg.cond_vocab_size > 0:
            self.cond_emb = nn.Embedding(cfg.cond_vocab_size, cfg.n_embd)
        if cfg.cond_layers > 0:
            if cfg.cond_vocab_size == 0:
                raise ValueError("cond_layers > 0 needs a condition table (cond_vocab_size > 0)")
            self.cond_conv = nn.ModuleList(nn.Conv2d(cfg.n_embd, cfg.n_embd, 3, padding=2 ** i, dilation=2 ** i)
                                           for i in range(cfg.cond_layers))
        self.drop = nn.Dropout(cfg.embd_pdrop)
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init_weights)
        # Every Linear weight keeps its (out, in) shape and key name but lives in (in, out) memory order (a
        # transposed view): MKL's product of one row by a small matrix (which Linear leaves unpacked) is 5-15%
        # faster on that layout on this CPU; training speed is unchanged. load_state_dict
        # copies into it; save_model writes contiguous tensors.
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight = nn.Parameter(module.weight.detach().t().contiguous().t())
        for conv in getattr(self, "cond_conv", ()):  # zero: a new stack starts as the embedding alone
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, 0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.data.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.data.fill_(1.0)
            module.bias.data.zero_()

    def pack_for_sampling(self) -> GPT:
        """Make (or check against the weights) the copies that sampling on a CPU multiplies by: the stacked
        query/key/value and the packed Linear weights; returns self. forward calls it at the first call of every
        KV cache; the app calls it at load time, so that the first image does not wait for it. Packing reads and
        writes every fp32 weight once more: measured here, about 10 ms for an 8 x 256 GPT and 3-9 s for a
        305M-parameter one; checking copies that are current costs about 0.1 ms at 8 x 256."""
        stacked = set()  # query, key, value: sampling multiplies by their stacked copy instead
        for module in self.modules():  # a parent comes before its children
            if isinstance(module, CausalSelfAttention) and module.qkv is None:
                stacked.update(id(m) for m in (module.query, module.key, module.value))
                module._stacked_qkv().packed_weight()
            elif isinstance(module, Linear) and id(module) not in stacked:
                module.packed_weight()
        return self

    def drop_sampling_copies(self) -> GPT:
        """Free the copies pack_for_sampling made (they are remade when needed); returns self. train() calls it.
        Needed after in-place weight edits that torch does not version: through `.data`, or a fused optimizer
        (AdamW(fused=True)); load_state_dict, ordinary in-place ops and optimizer steps are noticed."""
        for module in self.modules():
            if isinstance(module, CausalSelfAttention):
                module._stacked = None
            elif isinstance(module, Linear):
                module._packed = None
        return self

    def train(self, mode: bool = True) -> GPT:
        if mode:  # training changes the weights: the sampling copies would only hold memory
            self.drop_sampling_copies()
        return super().train(mode)

    def new_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        p = self.pos_emb
        return KVCache(self.config, batch_size, max_len or self.config.block_size, p.device, p.dtype)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        """idx (B, T) int64 -> logits (B, T, V), or (B, 1, V) with `last_only`.

        With a cache, the T tokens take positions [cache.length, cache.length + T), attend to the cached
        positions and causally to each other, and are appended to the cache. cond (B, T) int64: condition ids
        of the same positions, embedded by `cond_emb` and added to the token embeddings (aligned conditioning;
        needs config.cond_vocab_size > 0), or their features (B, T, E) from `cond_features` (needed when
        config.cond_layers > 0).
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}")
        if cache is not None and start + T > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions, {start + T} needed")
        if idx.numel():
            lo, hi = idx.aminmax()  # one device sync per call, not two
            if bool((lo < 0) | (hi >= self.config.vocab_size)):
                raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got range "
                                 f"[{int(lo)}, {int(hi)}]")
        trusted = False
        if cache is not None:
            if start == 0 and not torch.is_grad_enabled() and not torch.is_autocast_enabled(idx.device.type):
                # Sampling: every weight copy (stacked query/key/value, packed weights) is checked against its
                # weights once per cache, here, and trusted by this cache's later calls: weights must not change
                # while a cache is filled (its keys and values would be stale too). Saves 0.1-0.3 ms per token
                # at 8 x 256 (2.1-2.4 ms). Other first calls (gradients, autocast) leave every call checking.
                self.pack_for_sampling()
                cache.checked_by = self
            trusted = cache.checked_by is self
        x = self.tok_emb(idx) + self.pos_emb[:, start:start + T]  # (B, T, E)
        if cond is not None:
            x = x + self._cond_embedding(cond, idx.shape).to(x.dtype)  # (B, T, E)
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer, trusted)
        if cache is not None:
            cache.length = start + T
        if last_only:
            x = x[:, -1:]
        return _dense(self.head, self.ln_f(x), cache, trusted)  # (B, T, V)

    def _cond_embedding(self, cond: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """cond (B, T) condition ids or (B, T, E) features -> (B, T, E), checked against the token shape."""
        if self.config.cond_vocab_size == 0:
            raise ValueError("this GPT has no condition embedding (cond_vocab_size = 0): it takes no `cond`")
        if cond.is_floating_point():
            if cond.shape != (*shape, self.config.n_embd):
                raise ValueError(f"condition features must be (B, T, E) = {(*shape, self.config.n_embd)}, got "
                                 f"{tuple(cond.shape)}")
            return cond
        if self.config.cond_layers > 0:
            raise ValueError("this GPT convolves its condition grid (cond_layers > 0): pass cond_features(grid), "
                             "not ids")
        if cond.shape != shape:
            raise ValueError(f"cond must match the tokens {tuple(shape)}, got {tuple(cond.shape)}")
        return self.cond_emb(self._check_cond_ids(cond))

    def _check_cond_ids(self, cond: torch.Tensor) -> torch.Tensor:
        n = self.config.cond_vocab_size
        if cond.numel():
            lo, hi = cond.aminmax()
            if bool((lo < 0) | (hi >= n)):
                raise ValueError(f"condition ids must lie in [0, {n}), got range [{int(lo)}, {int(hi)}]")
        return cond

    def cond_features(self, cond: torch.Tensor) -> torch.Tensor:
        """Condition grid cond (B, h, w) int64 ids -> features (B, h * w, E) in raster order, for `cond`.

        Each layer adds conv_i(gelu(x)) (3x3, dilation 2^i, zero padding at the grid's edges) to the embedded
        grid x (B, E, h, w). Without cond_layers this is the embedding of each cell alone.
        """
        if self.config.cond_vocab_size == 0:
            raise ValueError("this GPT has no condition embedding (cond_vocab_size = 0)")
        if cond.ndim != 3 or cond.is_floating_point():
            raise ValueError(f"expected a condition grid (B, h, w) of ids, got {tuple(cond.shape)} {cond.dtype}")
        x = self.cond_emb(self._check_cond_ids(cond)).permute(0, 3, 1, 2)  # (B, E, h, w)
        for conv in getattr(self, "cond_conv", ()):
            x = x + conv(F.gelu(x))
        return x.flatten(2).transpose(1, 2)  # (B, h * w, E)


class LowBitLinear(PackedWeight, nn.Module):
    """Inference-only stand-in for an nn.Linear whose weight W (out, in) is stored in int8 or bf16.

    Decoding one token reads every weight once, so on a memory-bound CPU the time per token follows the
    bytes per weight: int8 keeps 1/4 of the fp32 bytes (one scale per output row, symmetric, max-abs / 127),
    bf16 1/2. Inputs and outputs stay in the caller's dtype. Not a training layer: no gradients, and its
    state_dict (int8 `weight` + `scale`) is not a checkpoint format.
    Many rows at once (a prefill) are compute-bound instead: int8 weights are then dequantized for one GEMM in
    `gemm_dtype`, fp32 by default, bf16 on CPUs with bf16 units (sampling_precision's prefill_dtype).
    """

    ROWS_FOR_GEMM = 16  # above this many rows (prefill), dequantize and use a GEMM in gemm_dtype instead

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype = torch.int8,
                 gemm_dtype: torch.dtype = torch.float32):
        super().__init__()
        if dtype not in (torch.int8, torch.bfloat16):
            raise ValueError(f"low-bit weights are torch.int8 or torch.bfloat16, got {dtype}")
        self.gemm_dtype = gemm_dtype
        w = weight.detach().float()  # (out, in)
        scale = None
        if dtype == torch.int8:
            scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127  # (out,)
            w = torch.round(w / scale[:, None]).clamp_(-127, 127)
            scale = scale.to(torch.bfloat16)  # the int8 kernel takes bf16 scales (and inputs)
        self.register_buffer("weight", w.to(dtype).contiguous())  # (out, in) rows: what the int8 kernel reads
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self._init_packed()

    def _packs(self, weight: torch.Tensor) -> bool:
        """bf16 weights on CPUs with bf16 units are packed (packed_weight); int8 ones are read as they are.

        F.linear re-lays the (out, in) bf16 matrix out at every call: measured on this repo's 2-core AVX-512
        bf16 CPU (torch 2.13), one (1536, 512) product took 37 us plain and 22 us packed for 1-4 rows (8% less
        for 300), equally accurate; bench/sampling.py: a 12 x 512 GPT's cached decode step 7.1 -> 5.8 ms (no
        gain at 8 x 256). The packed copy is a second copy of the bf16 bytes.
        """
        return weight.dtype == torch.bfloat16 and cpu_has_bf16()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out) in x's dtype (fp32 when there is a bias)."""
        w, bias = self.weight, self.bias
        rows = x.reshape(-1, x.shape[-1])  # (N, in)
        if w.dtype == torch.bfloat16:
            packed = self.packed_weight()  # None on a GPU (a move there changes the stamp: the CPU copy goes)
            if packed is not None:
                y = onednn_linear(rows.to(w.dtype), packed, None)
            else:
                y = F.linear(rows.to(w.dtype), w)
        elif rows.shape[0] <= self.ROWS_FOR_GEMM and rows.is_cpu:
            # int8 x bf16 matrix-vector kernel: reads the int8 bytes once, scales the output rows
            y = torch._weight_int8pack_mm(rows.to(torch.bfloat16), w, self.scale)  # (N, out) bf16
        else:  # a prefill: one GEMM on the dequantized weights
            g = self.gemm_dtype
            y = F.linear(rows.to(g), w.to(g) * self.scale.to(g)[:, None])
        y = y.to(x.dtype) if bias is None else bias + y  # one op: the add promotes bf16 to fp32
        return y.view(*x.shape[:-1], y.shape[-1])
