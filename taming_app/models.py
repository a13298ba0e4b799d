"""The models behind the tabs, shared by every browser session, and Stop, per session."""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import gradio as gr
import torch

import taming_core as tc

from .refused import Refused

MODES = ("segmentation", "edges", "depth", "unconditional", "class")
# mode -> the condition kinds its model may have (a coordinate stage, as FacesHQ's, samples whole images alone);
# not tc.conditioners.KINDS, the kinds the library knows
CONDITION_KINDS_BY_MODE = {"segmentation": ("segmentation",), "edges": ("edges",), "depth": ("depth",),
                           "unconditional": ("none", "coord"), "class": ("class",)}
SEGMENTER = "segmenter"  # the photo -> label map model behind "Start from a photo"


@dataclass
class ModelBank:
    """One loaded model per mode, shared by every browser session; loaded at start (load_all) or on first use."""

    paths: dict[str, tuple[str | None, str | None]]  # mode -> (checkpoint, optional original yaml)
    device: torch.device = torch.device("cpu")
    precision: str = "auto"  # how to sample (tc.sampling_precision): auto = the fastest faithful path here
    matmul: str = "packed"  # fp32 products on a CPU (tc.prepare_for_sampling): packed, plain, or auto (measured)
    # torch threads per part of a generation (the batcher's worker, the segmenter); app.py: --threads
    threads: tc.ThreadPolicy = field(default_factory=lambda: tc.ThreadPolicy("auto"))
    _models: dict[str, tc.Net2Net] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)  # mode -> how its model samples, in words
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def available(self, mode: str) -> bool:
        return self.paths.get(mode, (None, None))[0] is not None  # get() caches only modes with a path

    def load_all(self) -> None:
        """Loads every model with a path now, so that one that cannot be loaded is known at start: raises
        SystemExit with one line naming the mode, the path and the cause."""
        for mode in (*MODES, SEGMENTER):
            if self.available(mode):
                try:
                    self.get(mode)
                except Exception as e:  # noqa: BLE001 - any cause ends the app, said in one line
                    path, config = self.paths[mode]
                    cause = (" ".join(str(e).split()) or type(e).__name__).replace("pass config=...",
                                                                                    f"pass --{mode}-config YAML")
                    raise SystemExit(f"app.py: cannot load the {mode} model from {path}"
                                     f"{f' with {config}' if config else ''}: {cause}") from None

    @property
    def sampling(self) -> tc.SamplingPrecision:
        return tc.sampling_precision(self.precision, self.device)

    def decoding(self):
        """The context of first-stage decodes outside tc.stream (its decode_dtype)."""
        dtype = self.sampling.decode_dtype
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def get(self, mode: str) -> tc.Net2Net | tc.Segmenter:
        with self._lock:
            if mode not in self._models:
                path, config = self.paths.get(mode, (None, None))
                if path is None:
                    raise Refused(f"No {mode} model is loaded: start the app with --{mode} PATH.")
                model = tc.load_model(path, config)  # errors name the cause (main ends the app with it)
                if mode == SEGMENTER and not isinstance(model, tc.Segmenter):
                    raise tc.ConfigError(f"{path} is not a segmenter (train/train_segmenter.py makes one).")
                if mode != SEGMENTER and not isinstance(model, tc.Net2Net):
                    raise tc.ConfigError(f"{path} is a {type(model).__name__}, not a transformer.")
                kind = model.config.cond_stage.kind if mode != SEGMENTER else None
                wanted = CONDITION_KINDS_BY_MODE.get(mode, ())
                if kind is not None and kind not in wanted:
                    flag = [f"--{m}" for m, k in CONDITION_KINDS_BY_MODE.items() if kind in k]
                    raise tc.ConfigError(f"{path} is conditioned on {kind}, not {' or '.join(wanted)}"
                                         + (f": pass it with {flag[0]}." if flag else
                                            ": the app has no tab for this condition (use the library)."))
                model = model.to(self.device).eval()
                if isinstance(model, tc.Net2Net):
                    params = sum(p.numel() for p in model.transformer.parameters())
                    plan = self.sampling
                    # int8 or bf16 weights (a copy; the fp32 GPT is let go), or fp32 packed now on a CPU rather
                    # than during the first image
                    model = tc.prepare_for_sampling(model, plan, matmul=self.matmul)
                    chosen = getattr(model.transformer, "sampling_matmul", None)  # fp32 on a CPU only
                    self.plans[mode] = (f"{params / 1e6:.1f}M GPT parameters, {plan.describe()}"
                                        + (f", {chosen.describe()}" if chosen is not None else ""))
                    with torch.no_grad(), self.decoding():  # warm up the decoder: the first previews are not late
                        model.decode_indices(torch.zeros(1, model.grid[0] * model.grid[1], dtype=torch.long,
                                                         device=self.device))
                self._models[mode] = model
            return self._models[mode]


class Stops:
    """Stop, per browser session (or API client): a count of Stop presses. A job takes the count as its ticket
    when it enters the queue and stops once the count has moved on: within a token when it runs, before it
    starts when it still waits. Jobs queued after a Stop take the new count and run."""

    def __init__(self):
        self._presses: dict[str, int] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _session(request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or "default"

    def press(self, request: gr.Request | None) -> None:
        with self._lock:
            key = self._session(request)
            self._presses[key] = self._presses.get(key, 0) + 1

    def presses(self, request: gr.Request | None) -> int:
        return self._presses.get(self._session(request), 0)

    def admit(self, request: gr.Request | None) -> None:
        """Gives a job entering the queue its ticket. Gradio hands the job the same underlying HTTP request
        when it starts, so the ticket travels in that request's state."""
        if getattr(request, "request", None) is not None:
            request.request.state.stop_ticket = self.presses(request)

    def ticket(self, request: gr.Request | None) -> int:
        """The ticket taken in the queue; for a direct call (no queue), the count now."""
        ticket = getattr(getattr(getattr(request, "request", None), "state", None), "stop_ticket", None)
        return self.presses(request) if ticket is None else ticket
