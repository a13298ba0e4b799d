"""Sampling benchmark (issue 3): the original's recompute algorithms against our cached samplers, side by side.

    .venv/bin/python bench/sampling.py            # full run (tens of minutes on a 2-core CPU)
    .venv/bin/python bench/sampling.py --quick    # 1-2 minutes: fewer steps and rows, recompute estimated

Models have random weights: a paper-like GPT (12 layers, width 512, vocab 1024, 256 condition + 256 image
tokens) and a stand-in for the bundled model size (`--bundled-layers/--bundled-width`). Rows:
- floors, measured round-robin with cached decode steps (fp32 and int8, batch 1 and 4, 384 cached positions)
  so that load changes hit all alike: the time plain torch needs to stream the model's matrices once
  (F.linear, one row, (out, in) layout) and the memory-bandwidth floor (GPT fp32 bytes / measured copy
  bandwidth, read + write). The copy between steps evicts the caches, so these steps read from memory;
  inside a sampling run the weights of a small or int8 model stay in this CPU's large L3 and steps are faster;
- plain sampling of 256 tokens after 256 condition tokens: the original's recompute-per-token sampler
  (re-implemented on our GPT: the whole sequence and all logits every step) against `tc.sample` at batch 1
  and 4, in fp32 (prepared as the app loads it) and with int8 / bf16 GPT weights (`tc.quantize_gpt`);
- int8 / bf16 quality: top-1 agreement with fp32 logits (teacher-forced) and the fp32 model's mean
  log-likelihood of their samples against fp32 samples (same seeds);
- a 32x32 grid: the original's recompute sliding window (plain torch products, as the original; on a CPU
  also estimated on our packed weight copies, tc.prepare_for_sampling, to separate their share) against
  `exact` and `fast`, and the mean log-likelihood (under the exact window context) of fast-mode samples
  against exact-mode samples;
- the decode time of one preview (a stand-in VQGAN, f=8) and the preview share of a `tc.stream` run.
With --quick, rows whose cost per token is constant (recompute) are timed on a spread of positions and
extrapolated, and marked "estimated".
Threads default to 1: on a 2-core machine shared with other work, a second OpenMP thread waits at every
barrier for a core someone else holds (measured here: 10-40x slower steps); pass --threads 2 on a quiet machine.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import taming_core as tc

GRID = (32, 32)
WINDOW = (16, 16)


# int8 rows prefill as the app's --precision auto does: bf16 products on CPUs with bf16 units, else fp32
INT8_PREFILL = tc.sampling_precision("auto", "cpu").prefill_dtype


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="about a minute: fewer steps and rows, estimates")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (see the docstring)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=None, help="plain-sampling steps (default 256, quick 64)")
    ap.add_argument("--bundled-layers", type=int, default=8)
    ap.add_argument("--bundled-width", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "sampling.json"))
    return ap.parse_args(argv)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    """-> (fn(), seconds)."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def median_time(fn, device: str, repeat: int) -> float:
    fn()  # warm-up
    return sorted(timed(fn, device)[1] for _ in range(repeat))[repeat // 2]


def make_gpt(n_layer: int, width: int, device: str) -> tc.GPT:
    cfg = tc.GPTConfig(vocab_size=1024, block_size=512, n_layer=n_layer, n_head=8, n_embd=width)
    return tc.GPT(cfg).to(device).eval()


def prepared(gpt: tc.GPT) -> tc.GPT:
    """A copy of gpt prepared for fp32 sampling as the app loads it (packed weight copies on a CPU)."""
    return tc.prepare_for_sampling(copy.deepcopy(gpt))


# ----------------------------------------------------------------------------------------------------------
# The original's algorithms, re-implemented on our GPT (no cache: the whole context every token)


@torch.no_grad()
def recompute_step(gpt, seq, generator):
    """One step of the original `Net2NetTransformer.sample`: logits for the whole sequence, keep the last."""
    logits = gpt(seq)[:, -1]  # (B, V): the other positions are computed and thrown away, as there
    return tc.pick_token(logits.float(), top_k=100, generator=generator)


def window_sequence(c_grid, grid, top, left):
    """(condition window, image window) flattened in raster order -> (B, 2 * Lw)."""
    (wh, ww), B = WINDOW, grid.shape[0]
    cond = c_grid[:, top:top + wh, left:left + ww].reshape(B, -1)
    return torch.cat([cond, grid[:, top:top + wh, left:left + ww].reshape(B, -1)], 1)


@torch.no_grad()
def recompute_window_token(gpt, c_grid, grid, i, j, generator):
    """One token of the original `make_samples.run_conditional`: 511 tokens forward for one logit row.

    As the original, plain torch products for a plain GPT; a `prepared` one multiplies by our packed weight
    copies, to show their share."""
    wh, ww = WINDOW
    plan = tc.window_plan(grid.shape[1:], WINDOW)
    t, l = plan.top[i], plan.left[j]
    seq = window_sequence(c_grid, grid, t, l)
    logits = gpt(seq[:, :-1])[:, -wh * ww:]  # (B, Lw, V)
    row = logits[:, (i - t) * ww + (j - l)].float()  # (B, V)
    grid[:, i, j] = tc.pick_token(row, top_k=100, generator=generator)[:, 0]


@torch.no_grad()
def exact_context_loglik(gpt, c_grid, grid, positions=None) -> float:
    """Mean log p(token) of grid (B, H, W) when every token is scored in its exact-mode (original) window."""
    B, H, W = grid.shape
    wh, ww = WINDOW
    plan = tc.window_plan((H, W), WINDOW)
    by_window: dict[tuple[int, int], list[int]] = {}
    for n in (positions if positions is not None else range(H * W)):
        by_window.setdefault((plan.top[n // W], plan.left[n % W]), []).append(n)
    total, count = 0.0, 0
    for (t, l), ns in by_window.items():  # one forward per window placement scores all its tokens
        seq = window_sequence(c_grid, grid, t, l)
        logp = F.log_softmax(gpt(seq[:, :-1])[:, wh * ww - 1:].float(), -1)  # (B, Lw, V)
        for n in ns:
            k = (n // W - t) * ww + (n % W - l)
            total += float(logp[torch.arange(B), k, grid[:, n // W, n % W]].sum())
            count += B
    return total / count


# ----------------------------------------------------------------------------------------------------------
# Rows


class Table:
    def __init__(self):
        self.rows = []

    def add(self, section, model, row, batch, tokens, seconds, note="", **extra):
        steps = max(tokens // batch, 1)
        self.rows.append({"section": section, "model": model, "row": row, "batch": batch, "tokens": tokens,
                          "seconds": round(seconds, 4), "ms_per_step": round(1e3 * seconds / steps, 3),
                          "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else None, "note": note,
                          **extra})
        r = self.rows[-1]
        print(f"{section:<8} {model:<8} {row:<34} {batch:>2} {tokens:>6} {r['seconds']:>9.3f}s "
              f"{r['ms_per_step']:>9.2f} {r['tokens_per_s'] or 0:>9.1f}  {note}", flush=True)


@torch.no_grad()
def floors(gpt, device, rounds=15, context=384):
    """Cached per-token time against its floors, measured interleaved (round-robin) so that load changes hit
    all of them alike: one decode step of the fp32 and of the int8 GPT at batch 1 and 4 with `context` cached
    positions, plain F.linear streaming the GPT's matrices once ((out, in) layout, one row), a 256 MiB copy."""
    mats = [m.weight.detach().contiguous() for m in gpt.modules() if isinstance(m, torch.nn.Linear)]
    xs = {k: torch.randn(1, k, device=device) for k in {w.shape[1] for w in mats}}
    src = torch.empty(64 * 2 ** 20, device=device)  # 256 MiB, beyond any cache share
    dst = torch.empty_like(src)
    low = tc.quantize_gpt(gpt, torch.int8)
    jobs = {"stream": lambda: [F.linear(xs[w.shape[1]], w) for w in mats], "copy": lambda: dst.copy_(src)}
    for label, model in (("fp32", prepared(gpt)), ("int8", low)):
        for B in (1, 4):
            cache = tc.sampling.new_sampling_cache(model, B, 512, None)  # the cache the samplers give this model
            model(torch.randint(0, 1024, (B, context), device=device), cache)
            tok = torch.zeros(B, 1, dtype=torch.long, device=device)

            def step(model=model, cache=cache, tok=tok):
                cache.length = context  # roll back: every round decodes position `context` again
                return tc.sampling.next_logits(model, tok, cache, None)  # as the samplers take a step
            jobs[f"{label} b{B}"] = step
    times = {k: [] for k in jobs}
    for _ in range(rounds):
        for k, job in jobs.items():
            times[k].append(timed(job, device)[1])
    ms = {k: 1e3 * sorted(v)[rounds // 2] for k, v in times.items()}
    bandwidth = 2 * src.numel() * 4 / (ms["copy"] / 1e3)  # bytes read + written per second
    gpt_bytes = sum(p.numel() * p.element_size() for p in gpt.parameters())
    floor = 1e3 * gpt_bytes / bandwidth
    return {"step_ms": {k: v for k, v in ms.items() if k[-2:] in ("b1", "b4")}, "stream_once_ms": ms["stream"],
            "copy_GBps": bandwidth / 1e9, "gpt_MB": gpt_bytes / 1e6, "floor_ms": floor,
            "fp32_vs_stream": ms["fp32 b1"] / ms["stream"], "fp32_vs_floor": ms["fp32 b1"] / floor,
            "int8_vs_floor": ms["int8 b1"] / floor,
            "b4_vs_b1_tokens_per_s": {k: 4 * ms[f"{k} b1"] / ms[f"{k} b4"] for k in ("fp32", "int8")}}


def bench_plain(table, name, gpt, steps, quick, device, seed, dtype=None):
    """Recompute baseline vs tc.sample (fp32, int8, bf16) for `steps` tokens after 256 condition tokens."""
    results = {}
    g = torch.Generator(device).manual_seed(seed)
    c1 = torch.randint(0, 1024, (1, 256), generator=g, device=device)
    if device == "cpu" or not quick:  # the original's sampler: sequence lengths 256 .. 256 + steps - 1
        lengths = list(range(256, 256 + steps)) if not quick else [256 + k * steps // 8 for k in range(8)]
        seq = torch.cat([c1, torch.randint(0, 1024, (1, steps), generator=g, device=device)], 1)
        per = [timed(lambda n=n: recompute_step(gpt, seq[:, :n], g), device)[1] for n in lengths]
        base = sum(per) / len(per)
        table.add("plain", name, "recompute (original algorithm)", 1, steps, base * steps,
                  "estimated from 8 lengths" if quick else "")
        results["recompute_s"] = base * steps
    variants = [("fp32", prepared(gpt), None)]
    if device == "cpu":
        variants.append(("int8 weights", tc.quantize_gpt(gpt, torch.int8, INT8_PREFILL), None))
        if not quick:
            variants.append(("bf16 weights", tc.quantize_gpt(gpt, torch.bfloat16), None))
    else:  # --precision bf16 on CUDA: bf16 weights kept once (auto samples in fp32 there: measured faster)
        variants += [("bf16 weights", tc.quantize_gpt(gpt, torch.bfloat16), None)]
    for label, model, autocast in variants:
        batches = (1, 4) if device == "cpu" else (1,) if label == "bf16 weights" else (1, 8)
        gen = torch.Generator(device)

        def run(B, n):
            return tc.sample(model, c1.expand(B, -1), n, generator=gen.manual_seed(seed), dtype=autocast)
        for B in batches:
            run(B, 8)  # warm-up
        prefill, total = {B: [] for B in batches}, {B: [] for B in batches}
        for _ in range(1 if quick else 3):  # rounds with the batch sizes interleaved: load changes hit both
            for B in batches:
                prefill[B].append(timed(lambda: run(B, 1), device)[1])
                total[B].append(timed(lambda: run(B, steps), device)[1])
        for B in batches:
            t, t1 = sorted(total[B])[len(total[B]) // 2], sorted(prefill[B])[len(prefill[B]) // 2]
            decode_ms = 1e3 * (t - t1) / (steps - 1)
            note = f"decode {decode_ms:.2f} ms/step"
            if B == 1 and "recompute_s" in results:
                note += f"; {results['recompute_s'] / t:.0f}x recompute"
            elif B > 1:
                note += f"; {B * results[f'{label} b1 s'] / t:.2f}x the tokens/s of batch 1"
            table.add("plain", name, f"sample {label}", B, B * steps, t, note, decode_ms_per_step=decode_ms)
            results[f"{label} b{B} s"] = t
            results[f"{label} b{B} decode_ms"] = decode_ms
    return results


@torch.no_grad()
def low_bit_quality(gpt, device, seed, B=4, steps=64):
    """Teacher-forced top-1 agreement and fp32 log-likelihood of samples, int8 / bf16 against fp32."""
    g = torch.Generator(device).manual_seed(seed)
    c = torch.randint(0, 1024, (B, 256), generator=g, device=device)

    def loglik(z):  # mean log p_fp32(z | c)
        logits = gpt(torch.cat([c, z], 1)[:, :-1])[:, 255:]
        return float(F.log_softmax(logits.float(), -1).gather(-1, z[..., None]).mean())

    ref = tc.sample(gpt, c, steps, generator=torch.Generator(device).manual_seed(seed))
    ref_logits = gpt(torch.cat([c, ref], 1)[:, :-1])[:, 255:]
    out = {"fp32 loglik": loglik(ref)}
    for label, dtype in (("int8", torch.int8), ("bf16", torch.bfloat16)):
        low = tc.quantize_gpt(gpt, dtype)
        logits = low(torch.cat([c, ref], 1)[:, :-1])[:, 255:]
        z = tc.sample(low, c, steps, generator=torch.Generator(device).manual_seed(seed))
        out[f"{label} top1 agreement"] = float((logits.argmax(-1) == ref_logits.argmax(-1)).float().mean())
        out[f"{label} max |dlogit|"] = float((logits - ref_logits).abs().max())
        out[f"{label} same sampled tokens"] = float((z == ref).float().mean())
        out[f"{label} loglik"] = loglik(z)
    return out


def bench_window(table, name, gpt, quick, device, seed):
    fast = prepared(gpt)
    """Recompute sliding window vs exact vs fast on a 32x32 grid, batch 1, top_k 100 (the original's default)."""
    H, W = GRID
    g = torch.Generator(device).manual_seed(seed)
    c_grid = torch.randint(0, 1024, (1, H, W), generator=g, device=device)
    res = {}
    positions = list(range(0, H * W, H * W // 16)) if quick else list(range(H * W))
    grid = torch.zeros_like(c_grid)
    gen = torch.Generator(device).manual_seed(seed)
    _, t = timed(lambda: [recompute_window_token(gpt, c_grid, grid, n // W, n % W, gen) for n in positions], device)
    base = t / len(positions) * H * W
    table.add("window", name, "recompute sliding window (original)", 1, H * W, base,
              f"estimated from {len(positions)} tokens" if quick else "")
    if device == "cpu":  # the same algorithm on our packed products: how much of the gain is the products'
        spread = list(range(0, H * W, H * W // 64))
        _, t = timed(lambda: [recompute_window_token(fast, c_grid, grid.clone(), n // W, n % W, gen)
                              for n in spread], device)
        res["recompute packed"] = t / len(spread) * H * W
        table.add("window", name, "recompute, packed products", 1, H * W, res["recompute packed"],
                  f"estimated from {len(spread)} tokens; {base / res['recompute packed']:.2f}x faster than plain")
    samples = {}
    modes = [("exact", fast, {}), ("fast stride 8x8", fast, {"mode": "fast"})]
    if not quick:
        modes.append(("fast stride 4x4", fast, {"mode": "fast", "stride": (4, 4)}))
    if device == "cpu":
        modes.append(("fast stride 8x8, int8 weights", tc.quantize_gpt(gpt, torch.int8, INT8_PREFILL),
                      {"mode": "fast"}))
    for label, model, kw in modes:
        gen = torch.Generator(device).manual_seed(seed)
        samples[label], t = timed(lambda: tc.sample_sliding_window(model, c_grid, top_k=100, generator=gen, **kw),
                                  device)
        note = f"{base / t:.1f}x recompute"
        if "recompute packed" in res:
            note += f" ({res['recompute packed'] / t:.1f}x on packed products)"
        table.add("window", name, label, 1, H * W, t, note)
        res[label] = t
    if not quick:
        res["exact equals recompute tokens"] = float((samples["exact"] == grid).float().mean())
    score_at = None
    if quick:
        score_at = sorted(torch.randperm(H * W, generator=torch.Generator().manual_seed(seed))[:32].tolist())
    for label, z in samples.items():  # all scored by the fp32 model
        res[f"loglik {label}"] = exact_context_loglik(gpt, c_grid, z, score_at)
    return res


@torch.no_grad()
def bench_preview(table, gpt_cfg, device, seed):
    """Decode time of one preview (stand-in first stage, f=8) and the preview share of a stream run."""
    vq = {"n_embed": 1024, "embed_dim": 64,
          "ddconfig": {"ch": 64, "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [16],
                       "in_channels": 3, "out_ch": 3, "resolution": 128, "z_channels": 64}}
    model = tc.build_model({"model": "net2net", "first_stage": vq,
                            "cond_stage": {"kind": "none"}, "transformer": gpt_cfg,
                            "permuter": {"name": "identity"}}).to(device).eval()
    model = tc.prepare_for_sampling(model)  # as the app loads it
    res = {}
    for side in (16, 32):
        z = torch.randint(0, 1024, (1, side, side), device=device)
        t = median_time(lambda: model.first_stage_model.decode_indices(z), device, 3)
        table.add("preview", "vqgan-f8", f"decode one {side}x{side} preview", 1, side * side, t,
                  f"{8 * side}x{8 * side} px")
        res[f"decode {side}x{side} s"] = t
    c = model.encode_cond(1)
    (events, total) = timed(lambda: list(tc.stream(model, c, grid=(16, 16), generator=torch.Generator(device)
                                                   .manual_seed(seed))), device)
    previews = sum(e.preview is not None for e in events) - 1  # the last one is the result, not a preview
    share = events[-2].preview_s / total
    table.add("preview", "bundled", "stream 16x16 (plain) with previews", 1, 256, total,
              f"{previews} previews took {100 * share:.0f}% of the time (+ the final decode "
              f"{events[-1].preview_s - events[-2].preview_s:.3f}s)")
    res["stream previews"] = previews
    res["stream preview share"] = share
    return res


def main(args):
    torch.set_num_threads(args.threads)
    device, steps = args.device, args.steps or (64 if args.quick else 256)
    table, summary = Table(), {}
    meta = {"quick": args.quick, "threads": args.threads, "device": device, "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M")}
    meta["host"] = tc.host_info()  # the CPU beside each figure (issue 28): its speed does not carry to another
    print(tc.host_line(meta["host"]), flush=True)
    if device.startswith("cuda"):
        meta["gpu"] = torch.cuda.get_device_name()
    else:
        meta["cpu"] = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if "model name" in ln), "?")
    print(f"{'section':<8} {'model':<8} {'row':<34} {'B':>2} {'tokens':>6} {'time':>10} {'ms/step':>9} "
          f"{'tok/s':>9}  note")
    torch.manual_seed(args.seed)
    models = {"paper": make_gpt(12, 512, device),
              "bundled": make_gpt(args.bundled_layers, args.bundled_width, device)}
    for name, gpt in models.items():
        s = summary[name] = {}
        if device == "cpu":
            s["floors"] = floors(gpt, device)
            f = s["floors"]
            b1, r = f["step_ms"], f["b4_vs_b1_tokens_per_s"]
            print(f"floors   {name:<8} decode step at 384 cached: fp32 {b1['fp32 b1']:.2f} ms = "
                  f"{f['fp32_vs_stream']:.2f}x streaming the matrices once ({f['stream_once_ms']:.2f} ms); int8 "
                  f"{b1['int8 b1']:.2f} ms = {f['int8_vs_floor']:.2f}x the bandwidth floor ({f['gpt_MB']:.0f} MB / "
                  f"{f['copy_GBps']:.1f} GB/s = {f['floor_ms']:.2f} ms); batch 4: fp32 {b1['fp32 b4']:.2f} ms, "
                  f"int8 {b1['int8 b4']:.2f} ms per step = {r['fp32']:.2f}x / {r['int8']:.2f}x the tokens/s of "
                  "batch 1", flush=True)
        s["plain"] = bench_plain(table, name, gpt, steps, args.quick, device, args.seed)
        if device == "cpu":
            s["low-bit quality"] = low_bit_quality(gpt, device, args.seed, steps=32 if args.quick else 64)
            print("quality ", name, {k: round(v, 4) for k, v in s["low-bit quality"].items()}, flush=True)
    for name in (["bundled"] if args.quick else ["bundled", "paper"]):
        summary[name]["window"] = bench_window(table, name, models[name], args.quick, device, args.seed)
        print("window  ", name, {k: round(v, 4) for k, v in summary[name]["window"].items()}, flush=True)
    bundled_cfg = {"vocab_size": 1024, "block_size": 512, "n_layer": args.bundled_layers, "n_head": 8,
                   "n_embd": args.bundled_width}
    summary["preview"] = bench_preview(table, bundled_cfg, device, args.seed)
    meta["loadavg_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": table.rows, "summary": summary}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(parse_args())
