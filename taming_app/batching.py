"""Batching across requests: concurrent generations of one model sampled together as one batch.

A handler submits a Job (its condition rows, its token choice, guidance and fill) and reads its Updates; one
worker thread runs the jobs. The oldest waiting job opens a batch, which every waiting job of the same model and
token grid joins, up to `max_rows` rows in all. When a batch is about to start while other handlers are still
reading their inputs (`arriving`), it waits for them a little (`linger`), so that requests sent together start
together. A job that arrives while a batch runs:
- joins it at its next step when the batch samples the model's own grid on a CPU (`run_joined`, a
  tc.joining.JoinedBatch: the job's prefill runs alone, then its rows step with the others', each at its own
  position); it leaves with its image, and the batch runs as long as it has jobs;
- else (grids larger than the model's: the sliding window; models on a GPU) joins the next batch (`run_batch`).

Each job's rows are drawn by its own picker (its seed, temperature, top-k/p) from the logits of its own rows,
with its own guidance. Jobs that start together draw the tokens they draw alone, up to the rounding of the
GPT's products over another batch size, which on a rare step could move a draw (not seen in the tests); the
decoded image can differ by one level of 255 in a few pixels, for the same reason. A job that joins a running
batch attends through a mask over the batch's longer cache, which rounds otherwise again: its image follows the
same distribution, but its seed may give another image than alone. A cancelled job (Stop, client gone) gets no
more updates at once; in a joined batch its rows leave at the next step, in a next-run batch they are sampled
on until that batch ends (a batch whose every job is cancelled stops at once). A job cancelled while it waits
never runs.
"""
from __future__ import annotations

import queue
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

import taming_core as tc
import taming_core.joining
import taming_core.streaming
from taming_core.joining import can_join

from .refused import log

END = object()  # the last item of a job's updates (after its final image, an error, or a cancellation)
# The sliding window of grids larger than the model's own (tc.window_plan's mode and stride; None: half the
# window, 8x8 tokens of the bundled 16x16 one), chosen by bench/window_plan.py (bench/results/window_plan*.json,
# the 19 held-out maps, README "The window plan of larger images"): every candidate follows the maps at 256x256
# and 512x256 at least as well as the model at its own 128x128 (adherence 1.01-1.10, the plans' differences
# within 1-2 standard errors), and fast 8x8 is the fastest at the default 256x256: "exact", the original's
# placement, 4.9x its time there (5.8x at 512x256), stride 4x4 1.4x, stride 12x12 1.07x (0.94x at 512x256).
WINDOW_MODE, WINDOW_STRIDE = "fast", None


@dataclass
class Update:
    """One sampled token of a job: the progress of its batch, and its rows' preview when one was decoded."""

    done: int
    total: int
    tokens_per_s: float  # of each row
    preview: torch.Tensor | None  # (rows, 3, H, W) in [-1, 1]; the last update carries the final images
    finished: bool
    shared_with: int  # other jobs in the batch


@dataclass(eq=False)  # a job is itself: compared by identity
class Job:
    """One request's generation. c: its condition rows, (rows, L_c) for the model's grid or (rows, h, w) for the
    sliding window; fill: (1, 3, H', W') in [-1, 1] or None (mid-grey)."""

    mode: str
    model: tc.Net2Net
    c: torch.Tensor
    grid: tuple[int, int]
    pick: tc.sampling.Picker
    guidance: float = 1.0
    fill: torch.Tensor | None = None
    decode_dtype: torch.dtype | None = None
    updates: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: threading.Event = field(default_factory=threading.Event)
    stopped: Callable[[], bool] = lambda: False  # Stop pressed for it (read when a batch forms: it never starts)

    @property
    def rows(self) -> int:
        return self.c.shape[0]

    @property
    def key(self) -> tuple:
        """What jobs sharing a batch have in common: the model and the token grid."""
        return self.mode, id(self.model), tuple(self.grid), tuple(self.c.shape[1:])

    def cancel(self) -> None:
        self.cancelled.set()


class Arrival:
    """A handler reading its inputs: a batch about to start waits for it (up to the batcher's linger)."""

    def __init__(self, batcher: Batcher):
        self._batcher, self._open = batcher, True

    def close(self) -> None:
        with self._batcher._cv:
            if self._open:
                self._open = False
                self._batcher._arriving -= 1
                self._batcher._cv.notify_all()


class Batcher:
    """Runs submitted Jobs on one worker thread (started with the first job), batching those that fit together."""

    def __init__(self, max_rows: int = 8, linger: float = 0.3, threads: tc.ThreadPolicy | None = None):
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.max_rows, self.linger = max_rows, linger
        self.threads = threads  # the worker's torch threads per batch; measured once a second while idle
        self._waiting: list[Job] = []
        self._arriving = 0
        self._cv = threading.Condition()
        self._worker: threading.Thread | None = None
        self.batches = 0  # batches run so far, and the most jobs one of them held
        self.most_jobs = 0

    def arriving(self) -> Arrival:
        with self._cv:
            self._arriving += 1
        return Arrival(self)

    def submit(self, job: Job, arrival: Arrival | None = None) -> None:
        """Queues `job` (a job of more rows than max_rows runs in a batch of its own); closes its arrival."""
        with self._cv:
            self._waiting.append(job)
            if arrival is not None:
                arrival.close()  # under the same lock: the worker never sees the job neither arriving nor waiting
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._serve, name="taming-batcher", daemon=True)
                self._worker.start()
            self._cv.notify_all()

    def waiting(self) -> int:
        with self._cv:
            return len(self._waiting)

    def _take(self) -> list[Job]:
        """The next batch: the oldest waiting job and the waiting jobs that fit with it."""
        with self._cv:
            while True:
                self._waiting = [j for j in self._waiting if not _dropped(j)]
                if not self._waiting:
                    self._cv.wait(timeout=1.0)
                    if self.threads is not None:
                        self.threads.measure()  # cheap (/proc/stat): the batch then needs no window of its own
                    continue
                deadline = time.monotonic() + self.linger
                while self._arriving and time.monotonic() < deadline and self._fitting()[1] < self.max_rows:
                    self._cv.wait(deadline - time.monotonic())
                self._waiting = [j for j in self._waiting if not _dropped(j)]  # stopped while it lingered
                if self._waiting:
                    batch, _ = self._fitting()
                    self._waiting = [j for j in self._waiting if j not in batch]
                    return batch

    def _joining(self, key: tuple, rows: int) -> list[Job]:
        """Waiting jobs of `key` that fit in `rows` more rows, taken from the queue (a running batch's joiners);
        jobs stopped while they waited are dropped."""
        with self._cv:
            self._waiting = [j for j in self._waiting if not _dropped(j)]
            taken = []
            for job in self._waiting:
                if job.key == key and job.rows <= rows:
                    taken.append(job)
                    rows -= job.rows
            self._waiting = [j for j in self._waiting if j not in taken]
            return taken

    def _fitting(self) -> tuple[list[Job], int]:
        first = self._waiting[0]
        batch, rows = [first], first.rows
        for job in self._waiting[1:]:
            if job.key == first.key and rows + job.rows <= self.max_rows and not _stopped(job):
                batch.append(job)
                rows += job.rows
        return batch, rows

    def _serve(self) -> None:
        while True:
            batch: list[Job] = []
            try:
                batch = self._take()
                self.batches += 1
                self.most_jobs = max(self.most_jobs, len(batch))
                first = batch[0]
                joins = tuple(first.grid) == tuple(first.model.grid) and can_join(first.model)
                decode_threads = None
                if self.threads is not None:
                    self.threads.measure()
                    decode_threads = self.threads.threads_for("decode")
                with self.threads.use("gpt") if self.threads is not None else nullcontext():
                    # GPT steps on this thread; the decodes with their own threads
                    if joins:  # jobs that arrive while it runs join at its next step
                        run_joined(batch, self._joining, self.max_rows, decode_threads)
                    else:
                        run_batch(batch, decode_threads)
            except Exception as e:  # noqa: BLE001 - every job of the batch gets the error, the worker goes on
                log.exception("a batch of %d job(s) failed", len(batch))
                for job in batch:
                    job.updates.put(e)
                if not batch:
                    time.sleep(0.1)  # a failure outside any batch: not in a tight loop
            finally:
                for job in batch:
                    job.updates.put(END)


def _stopped(job: Job) -> bool:
    return job.cancelled.is_set() or job.stopped()


def _dropped(job: Job) -> bool:
    """A job cancelled or stopped while it waited: it ends without running."""
    if _stopped(job):
        job.cancelled.set()
        job.updates.put(END)
        return True
    return False


@dataclass(eq=False)
class _Joined:
    """A job in a joined batch: its member of the tc JoinedBatch, its own sampling time and preview state."""

    job: Job
    member: tc.joining.Member
    sampling_s: float = 0.0
    shown_rows: int = 0  # token rows in its latest preview
    shown_at: float = 0.0  # when that preview was decoded


def run_joined(batch: list[Job], joining: Callable[[tuple, int], list[Job]], max_rows: int,
               decode_threads: int | None = None) -> None:
    """Samples jobs of the model's own grid as a tc JoinedBatch, sending each its own Updates; before every
    step, jobs of the same key that `joining(key, free rows)` hands over join it (appended to `batch`, so that
    an error reaches them too); a job leaves when it has its image or is cancelled, and the batch ends when
    every job has left. Previews of all jobs together take at most 20% of the batch's time (one
    tc.streaming.PreviewClock): when one is affordable, the job whose latest preview is oldest among those with
    new finished rows gets it; every job's final image is decoded."""
    first = batch[0]
    model, key = first.model, first.key
    h = model.grid[0]
    engine = tc.joining.JoinedBatch(model)
    clock = tc.streaming.PreviewClock()
    running: list[_Joined] = []

    def admit(job: Job) -> None:
        job.started.set()
        t0 = time.perf_counter()
        member = engine.join(job.c, job.pick, job.guidance)
        running.append(_Joined(job, member, time.perf_counter() - t0))
        clock.sampling_s += time.perf_counter() - t0

    def decode(state: _Joined, tokens: torch.Tensor, rows: int) -> torch.Tensor:
        t0 = time.perf_counter()
        with tc.threads.intra_op_threads(decode_threads), torch.no_grad():
            image = tc.streaming.preview_image(model, tokens, rows, state.job.fill, state.job.decode_dtype)
        clock.decoded(rows, time.perf_counter() - t0)
        state.shown_rows, state.shown_at = rows, time.perf_counter()
        return image

    def send_all() -> None:
        rasters = {id(s): engine.raster(s.member) for s in running if not s.job.cancelled.is_set()}
        waiting = [s for s in running if id(s) in rasters and not s.member.finished
                   and rasters[id(s)][1] > s.shown_rows]
        chosen = min(waiting, key=lambda s: s.shown_at) if waiting and clock.affordable() else None
        for state in running:
            if id(state) not in rasters:
                continue
            member = state.member
            tokens, rows = rasters[id(state)]
            preview = None
            if member.finished:
                preview = decode(state, tokens, h)  # the result
            elif state is chosen:
                preview = decode(state, tokens, rows)
            state.job.updates.put(Update(member.done, member.total, member.done / max(state.sampling_s, 1e-9),
                                         preview, member.finished, len(running) - 1))

    for job in batch:
        admit(job)
    send_all()
    while running:
        for state in [s for s in running if s.job.cancelled.is_set() or s.member.finished]:
            engine.leave(state.member)
            running.remove(state)
        free = max_rows - sum(s.member.rows for s in running)
        joined = joining(key, free) if running and free > 0 else []
        for job in joined:
            batch.append(job)
            admit(job)
        if not running:
            return
        t0 = time.perf_counter()
        engine.step()
        dt = time.perf_counter() - t0
        clock.sampling_s += dt
        for state in running:
            state.sampling_s += dt
        send_all()


def run_batch(batch: list[Job], decode_threads: int | None = None) -> None:
    """Samples the jobs of `batch` (one key) as one batch of all their rows, sending each its own Updates;
    decode_threads: torch threads for the previews' and images' decodes (None: the caller's)."""
    first = batch[0]
    for job in batch:
        job.started.set()
    c = torch.cat([job.c for job in batch])  # (B, L_c) or (B, h, w)
    pick = tc.split_picker([(job.rows, job.pick) for job in batch])
    scales = [job.guidance for job in batch for _ in range(job.rows)]
    guidance = scales[0] if len(set(scales)) == 1 else torch.tensor(scales)  # one number: exactly as alone
    fill = None
    if any(job.fill is not None for job in batch):
        f = first.model.first_stage_model.downsample_factor
        size = (first.grid[0] * f, first.grid[1] * f)
        fill = torch.cat([(F.interpolate(job.fill.float(), size=size, mode="nearest") if job.fill is not None
                           else torch.zeros(1, 3, *size, device=c.device)).expand(job.rows, -1, -1, -1) for job in batch])
    events = tc.stream(first.model, c, grid=first.grid, window=first.model.grid, mode=WINDOW_MODE,
                       stride=WINDOW_STRIDE, pick=pick,
                       fill=fill, guidance=guidance, decode_dtype=first.decode_dtype, decode_threads=decode_threads)
    try:
        for ev in events:
            if all(job.cancelled.is_set() for job in batch):
                return
            start = 0
            for job in batch:
                if not job.cancelled.is_set():
                    rows = None if ev.preview is None else ev.preview[start:start + job.rows]
                    job.updates.put(Update(ev.done, ev.total, ev.tokens_per_s, rows, ev.finished, len(batch) - 1))
                start += job.rows
    finally:
        events.close()  # stops all work at once
