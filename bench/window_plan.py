"""Which sliding-window plan the app samples larger images with: how well samples follow their maps, and speed.

    OMP_NUM_THREADS=1 nice .venv/bin/python bench/window_plan.py [--maps 19] [--seeds 1] [--exact-wide-maps 6]
    OMP_NUM_THREADS=1 nice .venv/bin/python bench/window_plan.py --timing 3
    OMP_NUM_THREADS=1 nice .venv/bin/python bench/window_plan.py --through-api 4
    .venv/bin/python bench/window_plan.py --summary bench/results/window_plan.json bench/results/window_plan_timing.json

Maps: the fixed hold-out's label maps (the 19 COCO + S-FLCKR maps that train/prepare_data.py's md5 rule holds
out), read at their original resolution from ../shared/data so that 512x256 crops exist. Each map is brought to
the output's size as the app's fit="crop" does (tc.condition_maps.label_map: centre crop to the output's
aspect, nearest-neighbour resize) and sampled by the bundled segmentation model loaded as the app loads it
(tc.sampling_precision("auto"), tc.prepare_for_sampling) and streamed as the app streams it (tc.stream: top-k
100, guidance 3, previews; seed s for the s-th sample of a map): at 128x128, the model's own grid (plain
sampling), and at each larger size with each candidate window plan (tc.window_plan: "exact", the original's
placement, or "fast" with a stride; the window is the model's 16x16 grid).

Scores, as `train/evaluate.py transformer` computes its layout score: the bundled segmenter's classes of each
sample against its map's classes (pixel accuracy over all samples' labelled pixels, and mIoU); **adherence** =
that score / the 128x128 score on the same maps (the square crops: 128x128 is the model's own grid). Floor:
the samples scored against another map (the next one in the list, cropped to the same size); ceiling: the
segmenter on the real photo, cropped and resized (INTER_AREA) to that size. `--exact-wide-maps N` samples
"exact" at the wide sizes on N evenly spaced maps only (it is slow there); that row also gives its adherence
and the default plan's on those maps alone.

Speed: seconds per image, tc.stream to the final image with one torch thread (the figures are taken beside
other work on the second core; the results say so), and the work whatever the load: window placements and the
positions the GPT runs over (positions_fed). `--timing R` times every row on one map in R interleaved rounds,
so that a change in the machine's load reaches every row alike. `--summary` prints the results as a markdown
table, with each plan's paired per-sample difference to the default plan (same maps, same seeds) and its
standard error: the plans' differences are to be read against it.

`--through-api N`: the app's own handler (taming_app App.generate_segmentation, the function behind the API's
/generate_segmentation, called in-process as tests/test_app_handlers.py does) on the first N maps, given as
their original PNGs with width/height 256x256 and 512x256 (the app's window plan): the size of the image that
comes back and its adherence against the 128x128 handler output of the same maps.

Writes bench/results/window_plan.json (window_plan_timing.json, window_plan_api.json) with tc.host_info().
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

import taming_core as tc

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SETS = ("coco", "sflckr")  # the data sets with label maps
GUIDANCE, TOP_K = 3.0, 100  # the app's defaults on the Segmentation tab
BUSY = "one torch thread; the machine's other core ran other work (timings are for comparison between rows)"


@dataclass(frozen=True)
class Plan:
    """A window plan for tc.stream: mode and stride (None: the default, half the window)."""
    mode: str
    stride: tuple[int, int] | None = None

    @property
    def name(self) -> str:
        return "exact" if self.mode == "exact" else f"fast {self.stride[0]}x{self.stride[1]}" if self.stride \
            else "fast (default 8x8)"


def parse_plan(text: str) -> Plan:
    """'exact', 'fast' (the default stride) or 'fast:S' (stride S x S) -> Plan."""
    mode, _, stride = text.partition(":")
    if mode not in ("exact", "fast") or (stride and (mode == "exact" or not stride.isdigit())):
        raise argparse.ArgumentTypeError(f"a plan is exact, fast or fast:S (a stride of S x S), got {text!r}")
    return Plan(mode, (int(stride), int(stride)) if stride else None)


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' in pixels -> (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is WIDTHxHEIGHT in pixels, e.g. 512x256, got {text!r}") from None
    return h, w


def positions_fed(grid: tuple[int, int], window: tuple[int, int], plan: Plan) -> tuple[int, int]:
    """(window placements, positions the GPT runs over) to sample a grid with `plan` (aligned conditioning: a
    placement's cache starts with the start token; each token costs one forward call, whose new positions are
    the window's tokens since the placement's last use): the work of a plan, whatever the machine's load."""
    if grid == window:
        return 1, grid[0] * grid[1]  # plain sampling: the start token and all but the last token
    wp = tc.window_plan(grid, window, plan.mode, plan.stride)
    last = {}  # placement -> the window position (raster, within the window) of its last token
    for i in range(grid[0]):
        for j in range(grid[1]):
            top, left = wp.top[i], wp.left[j]
            last[top, left] = (i - top) * window[1] + (j - left)
    return len(last), sum(1 + upto for upto in last.values())


def held_out_maps() -> list[tuple[Path, Path]]:
    """(photo, label map) of the fixed hold-out's COCO + S-FLCKR maps, at their original resolution."""
    sys.path.insert(0, str(ROOT / "train"))
    from prepare_data import split_of  # the md5 rule that fixes the hold-out
    pairs = []
    for data_set in SETS:
        for photo in sorted((SHARED / data_set / "images").glob("*.jpg")):
            seg = SHARED / data_set / "segmentations" / f"{photo.stem}.png"
            if seg.is_file() and split_of(data_set, photo.stem, 0.1) == "holdout":
                pairs.append((photo, seg))
    return pairs


def photo_crop(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A photo (H, W, 3) uint8 -> its centre part at the aspect of size = (height, width), resized to size."""
    part = tc.condition_maps.fit_aspect(rgb, size, "crop")
    return cv2.resize(part, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float() / 127.5 - 1  # PIL arrays: read-only


@dataclass
class Layout:
    """Confusion matrices (K, K) of the segmenter's classes against the maps' classes, one per sample."""
    n_classes: int
    confusions: list[torch.Tensor] = field(default_factory=list)

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target (H, W) classes; target -1 = unlabelled (not counted)."""
        self.confusions.append(tc.confusion_matrix(pred, target, self.n_classes))

    def scores(self, which: list[int] | None = None) -> dict:
        """Pixel accuracy and mIoU over all samples (or those numbered `which`)."""
        total = torch.stack([self.confusions[i] for i in (which or range(len(self.confusions)))]).sum(0)
        s = tc.segmentation_scores(total, [str(k) for k in range(self.n_classes)])
        return {"pixel_accuracy": s["pixel_accuracy"], "miou": s["miou"]}

    def per_sample(self) -> list[float]:
        return [float(c.diag().sum() / c.sum().clamp_min(1)) for c in self.confusions]


def adherence(score: float, reference: float) -> float:
    """A layout score relative to the model's own-grid score on the same maps (1 = follows them as well)."""
    if reference <= 0:
        raise ValueError(f"the reference score must be positive, got {reference}")
    return score / reference


class Scorer:
    """The bundled segmenter's classes of an image, and the classes of a map."""

    def __init__(self, path: Path):
        self.seg = tc.load_model(path).eval()
        if not isinstance(self.seg, tc.Segmenter):
            raise SystemExit(f"{path} is not a segmenter")
        self.table = torch.from_numpy(self.seg.class_of_id())  # COCO-Stuff id -> class, -1 = unlabelled

    @property
    def n_classes(self) -> int:
        return self.seg.n_classes

    @torch.no_grad()
    def classes(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) in [-1, 1] -> classes (H, W), as train/evaluate.py's segmenter_classes."""
        return self.seg(image.float()).argmax(1)[0]

    def target(self, labels: np.ndarray) -> torch.Tensor:
        """Raw COCO-Stuff ids (H, W) (the data's, 255 = unlabelled; tc.condition_maps.label_map's for a COCO-Stuff
        model) -> the segmenter's classes (H, W) (-1 = unlabelled)."""
        return self.table[torch.from_numpy(labels)]


def stream_image(net: tc.Net2Net, c: torch.Tensor, grid: tuple[int, int], plan: Plan, seed: int,
                 decode_dtype) -> tuple[torch.Tensor, float]:
    """One sample as the app streams it -> (image (1, 3, H, W) in [-1, 1], seconds to the final image)."""
    t0, final = time.perf_counter(), None
    window = {} if grid == net.grid else dict(window=net.grid, mode=plan.mode, stride=plan.stride)
    for ev in tc.stream(net, c, grid=grid, top_k=TOP_K, guidance=GUIDANCE, decode_dtype=decode_dtype,
                        generator=torch.Generator().manual_seed(seed), **window):
        if ev.finished:
            final = ev.preview.clamp(-1, 1)
    return final, time.perf_counter() - t0


def row(size, plan_name, layout: Layout, floor: Layout, ceiling: Layout, seconds, reference: dict,
        maps: list[int]) -> dict:
    s = layout.scores()
    return {"size": f"{size[1]}x{size[0]}", "plan": plan_name, "maps": maps, "samples": len(layout.confusions),
            "layout": s, "adherence": adherence(s["pixel_accuracy"], reference["pixel_accuracy"]),
            "floor": floor.scores(), "ceiling": ceiling.scores(),
            "seconds_per_image": statistics.mean(seconds), "seconds_median": statistics.median(seconds),
            "per_sample_accuracy": [round(a, 4) for a in layout.per_sample()]}


@torch.no_grad()
def measure(args: argparse.Namespace, scorer: Scorer, pairs: list[tuple[Path, Path]]) -> list[dict]:
    """Every (size, plan) row over the maps, 128x128 first (the reference)."""
    plan_of = tc.sampling_precision("auto", "cpu")
    net = tc.prepare_for_sampling(tc.load_model(ROOT / "checkpoints" / "segmentation").eval(), plan_of)
    cond = net.conditioner
    space = tc.labels.label_space(cond.n_labels, cond.label_offset)
    if space not in tc.labels.COCO_SPACES:
        raise SystemExit(f"the segmenter reads COCO-Stuff labels; this model reads {space.name}")
    f = net.first_stage_model.downsample_factor
    native = (net.grid[0] * f, net.grid[1] * f)
    raws = [np.asarray(Image.open(m)) for _, m in pairs]
    photos = [np.asarray(Image.open(p).convert("RGB")) for p, _ in pairs]
    n = len(pairs)
    jobs = [(native, Plan("plain"))] + [(size, plan) for size in args.sizes for plan in args.plans]
    rows, layouts, reference, warm = [], {}, None, set()
    for size, plan in jobs:
        if size not in warm:  # the first sample of a size (packing, allocations) is not timed
            grid = (size[0] // f, size[1] // f)
            c = net.encode_cond(torch.zeros(1, *size, dtype=torch.long))
            stream_image(net, c if grid == net.grid else c.view(1, *grid), grid, Plan("fast"), 0, plan_of.decode_dtype)
            warm.add(size)
        few = plan.mode == "exact" and size[1] != size[0] and 0 < args.exact_wide_maps < n
        maps = sorted({i * n // args.exact_wide_maps for i in range(args.exact_wide_maps)}) if few else list(range(n))
        grid = (size[0] // f, size[1] // f)
        targets = [scorer.target(tc.condition_maps.label_map(raw, size, "crop", space, "0-based")[0]) for raw in raws]
        layout, floor, ceiling = (Layout(scorer.n_classes) for _ in range(3))
        seconds = []
        for i in maps:
            labels, _ = tc.condition_maps.label_map(raws[i], size, "crop", space, "0-based")
            c = net.encode_cond(torch.from_numpy(labels)[None])  # (1, L_c), as the handler
            if grid != net.grid:
                c = c.view(1, *grid)  # the condition grid for the sliding window
            for seed in range(args.seeds):
                image, dt = stream_image(net, c, grid, plan, seed, plan_of.decode_dtype)
                assert image.shape[-2:] == size, (image.shape, size)
                pred = scorer.classes(image)
                layout.add(pred, targets[i])
                floor.add(pred, targets[(i + 1) % n])
                seconds.append(dt)
            ceiling.add(scorer.classes(to_tensor(photo_crop(photos[i], size))), targets[i])
        name = "plain (the model's grid)" if plan.mode == "plain" else plan.name
        if reference is None:
            reference = layout.scores()
        r = row(size, name, layout, floor, ceiling, seconds, reference, maps)
        r["placements"], r["positions"] = positions_fed(grid, net.grid, plan)
        layouts[r["size"], name] = layout
        if few:  # the default plan and the model's grid on the same maps, for comparison
            samples = [i * args.seeds + k for i in maps for k in range(args.seeds)]
            same = layouts[r["size"], Plan("fast").name].scores(samples)["pixel_accuracy"]
            own = layouts[rows[0]["size"], rows[0]["plan"]].scores(samples)["pixel_accuracy"]
            r["on_these_maps"] = {"default_plan_layout": same, "default_plan_adherence": adherence(same, own),
                                  "adherence": adherence(r["layout"]["pixel_accuracy"], own)}
        rows.append(r)
        print(table_line(r), flush=True)
    return rows


@torch.no_grad()
def timing(args: argparse.Namespace, pairs: list[tuple[Path, Path]]) -> list[dict]:
    """Seconds per image of every (size, plan) on the first map, in --timing interleaved rounds (each round
    runs every row once, so a change in the machine's load reaches every row alike); the median per row."""
    plan_of = tc.sampling_precision("auto", "cpu")
    net = tc.prepare_for_sampling(tc.load_model(ROOT / "checkpoints" / "segmentation").eval(), plan_of)
    cond = net.conditioner
    space = tc.labels.label_space(cond.n_labels, cond.label_offset)
    f = net.first_stage_model.downsample_factor
    raw = np.asarray(Image.open(pairs[0][1]))
    native = (net.grid[0] * f, net.grid[1] * f)
    jobs = [(native, Plan("fast"))] + [(size, plan) for size in args.sizes for plan in args.plans]
    conds = {}
    for size, _ in jobs:
        grid = (size[0] // f, size[1] // f)
        c = net.encode_cond(torch.from_numpy(tc.condition_maps.label_map(raw, size, "crop", space, "0-based")[0])[None])
        conds[size] = c if grid == net.grid else c.view(1, *grid)
        stream_image(net, conds[size], grid, Plan("fast"), 0, plan_of.decode_dtype)  # warm-up, not timed
    times = {job: [] for job in jobs}
    for k in range(args.timing):
        for size, plan in jobs:
            grid = (size[0] // f, size[1] // f)
            times[size, plan].append(stream_image(net, conds[size], grid, plan, k, plan_of.decode_dtype)[1])
        print(f"round {k + 1}/{args.timing} done", flush=True)
    rows = []
    for (size, plan), t in times.items():
        grid = (size[0] // f, size[1] // f)
        placements, positions = positions_fed(grid, net.grid, plan)
        name = "plain (the model's grid)" if grid == net.grid else plan.name
        rows.append({"size": f"{size[1]}x{size[0]}", "plan": name, "seconds": t, "median_s": statistics.median(t),
                     "placements": placements, "positions": positions})
        print(f"{rows[-1]['size']:>8}  {name:<24} {statistics.median(t):7.2f} s  ({min(t):.2f}-{max(t):.2f}; "
              f"{placements} placements, {positions} positions)", flush=True)
    return rows


@torch.no_grad()
def through_api(args: argparse.Namespace, scorer: Scorer, pairs: list[tuple[Path, Path]]) -> list[dict]:
    """The app's handler on the first --through-api maps at 128x128 and at the --sizes: size and adherence."""
    import os
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from taming_app import App, ModelBank
    from taming_app.batching import WINDOW_MODE, WINDOW_STRIDE
    bank = ModelBank({"segmentation": (str(ROOT / "checkpoints" / "segmentation"), None)})
    app = App(bank)
    cond = bank.get("segmentation").conditioner
    space = tc.labels.label_space(cond.n_labels, cond.label_offset)
    pairs = pairs[:args.through_api]
    rows, reference = [], None
    for size in [(128, 128), *args.sizes]:
        layout, floor = Layout(scorer.n_classes), Layout(scorer.n_classes)
        seconds, shapes = [], set()
        targets = [scorer.target(tc.condition_maps.label_map(np.asarray(Image.open(m)), size, "crop", space,
                                                             "0-based")[0]) for _, m in pairs]
        for i, (_, m) in enumerate(pairs):
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                image, status, _ = list(app.generate_segmentation(str(m), seed=seed, width=size[1], height=size[0]))[-1]
                seconds.append(time.perf_counter() - t0)
                if not status.startswith("Done"):
                    raise SystemExit(f"the handler did not finish on {m.name}: {status}")
                shapes.add(image.shape)
                pred = scorer.classes(to_tensor(image))
                layout.add(pred, targets[i])
                floor.add(pred, targets[(i + 1) % len(pairs)])
        s = layout.scores()
        reference = reference or s
        plan = Plan(WINDOW_MODE, WINDOW_STRIDE).name if size != (128, 128) else "plain"
        r = {"size": f"{size[1]}x{size[0]}", "plan": plan,
             "maps": len(pairs), "samples": len(layout.confusions), "image_shapes": sorted(map(list, shapes)),
             "exact_size": shapes == {(size[0], size[1], 3)}, "layout": s,
             "adherence": adherence(s["pixel_accuracy"], reference["pixel_accuracy"]), "floor": floor.scores(),
             "seconds_per_image": statistics.mean(seconds)}
        rows.append(r)
        print(f"API {r['size']:>8}  images {r['image_shapes']}  layout {s['pixel_accuracy']:.1%}  adherence "
              f"{r['adherence']:.2f}  floor {r['floor']['pixel_accuracy']:.1%}  {r['seconds_per_image']:.2f} s/image",
              flush=True)
    return rows


def table_line(r: dict) -> str:
    extra = ""
    if "on_these_maps" in r:
        d = r["on_these_maps"]
        extra = (f"  (on these {len(r['maps'])} maps: adherence {d['adherence']:.2f}, fast (default 8x8) "
                 f"{d['default_plan_adherence']:.2f})")
    return (f"{r['size']:>8}  {r['plan']:<24} {r['samples']:>3}  {r['layout']['pixel_accuracy']:6.1%}  "
            f"{r['adherence']:5.2f}  {r['floor']['pixel_accuracy']:6.1%}  {r['ceiling']['pixel_accuracy']:6.1%}  "
            f"{r['layout']['miou']:.3f}  {r['seconds_per_image']:7.2f}{extra}")


def paired_difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """Per-sample scores of two plans on the same maps and seeds -> (mean of a - b, its standard error)."""
    d = np.asarray(a) - np.asarray(b)
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")


def plan_named(name: str) -> Plan:
    """Plan.name -> Plan ("plain ..." -> the default plan: the model's own grid needs none)."""
    if name == "exact":
        return Plan("exact")
    if name.startswith("fast ") and name[5].isdigit():
        sh, sw = name[5:].split("x")
        return Plan("fast", (int(sh), int(sw)))
    return Plan("fast")


def summary(results: dict, timings: dict | None = None, window: tuple[int, int] = (16, 16), f: int = 8) -> str:
    """A results JSON (and a --timing JSON) -> a markdown table: per size and plan, the layout score, adherence
    (on the row's own maps), the paired per-sample difference to the default plan at that size, floor,
    ceiling, seconds per image and the work (positions the GPT runs over)."""
    rows = results["rows"]
    own = rows[0]
    timed = {(t["size"], t["plan"]): t["median_s"] for t in (timings or {}).get("rows", [])}
    by = {(r["size"], r["plan"]): r for r in rows}
    lines = ["| size | plan | maps | layout | adherence | vs fast 8x8, per sample | floor | ceiling | s/image | "
             "s/image, rounds | GPT positions |", "| --- " * 11 + "|"]
    for r in rows:
        maps = r["maps"] if isinstance(r["maps"], list) else list(range(r["maps"]))
        size = tuple(int(v) for v in r["size"].split("x"))[::-1]  # (height, width)
        adh = r.get("on_these_maps", {}).get("adherence", r["adherence"])
        base = by.get((r["size"], Plan("fast").name))
        vs = ""
        if base is not None and base is not r and r is not own:
            b = [base["per_sample_accuracy"][i] for i in maps] if len(maps) < len(base["per_sample_accuracy"]) \
                else base["per_sample_accuracy"]
            mean, se = paired_difference(r["per_sample_accuracy"], b)
            vs = f"{mean * 100:+.1f} ± {se * 100:.1f} points"
        grid = (size[0] // f, size[1] // f)
        positions = positions_fed(grid, window, plan_named(r["plan"]))[1]
        t = timed.get((r["size"], r["plan"]))
        lines.append(f"| {r['size']} | {r['plan']} | {len(maps)} | {r['layout']['pixel_accuracy']:.1%} | {adh:.2f} | "
                     f"{vs} | {r['floor']['pixel_accuracy']:.1%} | {r['ceiling']['pixel_accuracy']:.1%} | "
                     f"{r['seconds_per_image']:.1f} | {'' if t is None else f'{t:.1f}'} | {positions:,} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--maps", type=int, default=19, help="the first N held-out maps (19 in all)")
    ap.add_argument("--seeds", type=int, default=1, help="samples per map (seeds 0..N-1)")
    ap.add_argument("--sizes", type=parse_size, nargs="+", default=[(256, 256), (256, 512)],
                    help="output sizes WxH beyond the model's 128x128")
    ap.add_argument("--plans", type=parse_plan, nargs="+",
                    default=[Plan("fast"), Plan("fast", (4, 4)), Plan("fast", (12, 12)), Plan("exact")],
                    help="window plans: exact, fast (stride half the window), fast:S (stride S x S)")
    ap.add_argument("--exact-wide-maps", type=int, default=0,
                    help="'exact' at sizes that are not square on N evenly spaced maps only (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timing", type=int, default=0, metavar="R",
                    help="instead: seconds per image of each row on the first map, R interleaved rounds")
    ap.add_argument("--through-api", type=int, default=0, metavar="N",
                    help="instead: the app's handler on the first N maps (its own window plan)")
    ap.add_argument("--json", help="default bench/results/window_plan.json (window_plan_timing.json with --timing, "
                    "window_plan_api.json with --through-api)")
    ap.add_argument("--summary", nargs="+", metavar="JSON",
                    help="instead: the markdown table of a results JSON (and a --timing JSON), no sampling")
    args = ap.parse_args(argv)
    if args.summary:
        results, *timings = (json.loads(Path(p).read_text()) for p in args.summary)
        print(tc.host_line(results["host"]), f"({results['timing']})")
        print(summary(results, timings[0] if timings else None))
        return results
    torch.set_num_threads(args.threads)
    host = tc.host_info()
    print(tc.host_line(host), f"({BUSY})" if args.threads == 1 else "", flush=True)
    pairs = held_out_maps()[:args.maps]
    pairs = pairs[:1] if args.timing else pairs[:args.through_api] if args.through_api else pairs  # the maps used
    if not pairs:
        raise SystemExit(f"no held-out label maps under {SHARED}")
    scorer = Scorer(ROOT / "checkpoints" / "segmenter")
    print(f"{len(pairs)} held-out maps x {args.seeds} seed(s), top-k {TOP_K}, guidance {GUIDANCE}", flush=True)
    if args.timing:
        rows = timing(args, pairs)
        default = ROOT / "bench" / "results" / "window_plan_timing.json"
    elif args.through_api:
        rows = through_api(args, scorer, pairs)
        default = ROOT / "bench" / "results" / "window_plan_api.json"
    else:
        print(f"{'size':>8}  {'plan':<24} {'n':>3}  {'layout':>6}  {'adh.':>5}  {'floor':>6}  {'ceil.':>6}  mIoU  "
              f"{'s/image':>7}", flush=True)
        rows = measure(args, scorer, pairs)
        default = ROOT / "bench" / "results" / "window_plan.json"
    result = {"host": host, "timing": BUSY if args.threads == 1 else f"{args.threads} torch threads",
              "maps": [f"{p.parent.parent.name}/{p.stem}" for p, _ in pairs], "seeds": args.seeds,
              "top_k": TOP_K, "guidance": GUIDANCE, "precision": "auto", "rows": rows}
    out = Path(args.json or default)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {out}")
    return result


if __name__ == "__main__":
    main()
