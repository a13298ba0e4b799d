"""The served side of bench/serving.py: the app started as a subprocess, concurrent gradio_client clients and
their arithmetic (images per minute, p50/p95 latency), a process that keeps one core busy, and the host's CPU
(tc.host_info, and the load) written beside every figure."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUIET_LOAD = 0.3  # a 1-minute load average under this at the start counts as a quiet machine
SPIN = "while True:\n    pass\n"  # the busy neighbour: one core at 100%


def host() -> dict:
    """The host (tc.host_info: CPU model, flags, cores, torch, threads) and its 1-minute load average now (quiet
    when under QUIET_LOAD)."""
    import taming_core as tc

    load = os.getloadavg()[0]
    return {**tc.host_info(), "load_1min": round(load, 2), "quiet": load < QUIET_LOAD}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served_app(app_args: list[str], port: int = 0, log: Path | None = None,
               timeout: float = 300.0) -> Iterator[str]:
    """app.py with `app_args` (the bundled models unless they name others) served on 127.0.0.1:`port` (0: a free
    one) in a subprocess, its output in `log`; yields its URL once it answers, and ends it afterwards. Raises
    RuntimeError with the end of its output if it ends before serving or is not up within `timeout` s."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}/"
    log = log or Path(os.devnull)
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), *app_args, "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    try:
        wait_until_serving(url, proc, log, timeout)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_serving(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the app ended (exit code {proc.returncode}) before serving: {tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "gradio_api/info", timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the app did not serve within {timeout:.0f} s: {tail(log)}")


def tail(log: Path, chars: int = 600) -> str:
    with contextlib.suppress(OSError):
        return " ".join(log.read_text(errors="replace")[-chars:].split()) or "(no output)"
    return "(no output)"


@contextlib.contextmanager
def busy_core() -> Iterator[subprocess.Popen]:
    """A python process spinning on one core for the duration of the block (killed afterwards)."""
    spinner = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0.5)  # let it reach the spin (and the scheduler notice it) before timing starts
        yield spinner
    finally:
        spinner.kill()
        spinner.wait()


@dataclass
class Load:
    """What `clients` clients, each submitting `images` images one after another, got."""

    clients: int
    images: int  # per client
    wall_s: float  # from all clients starting together to the last image
    images_per_min: float
    p50_s: float  # latency of one request, submit to final result
    p95_s: float
    mean_s: float

    def row(self) -> dict:
        return asdict(self)


def summary(latencies: list[float], wall_s: float, clients: int, images: int) -> Load:
    """The images per minute (all images over the wall time) and the p50/p95/mean of per-request latencies
    (linear interpolation between ranks, numpy's default)."""
    if len(latencies) != clients * images or wall_s <= 0:
        raise ValueError(f"{len(latencies)} latencies for {clients} x {images} images in {wall_s} s")
    lat = np.asarray(latencies, dtype=np.float64)
    p50, p95 = np.percentile(lat, [50, 95])
    return Load(clients, images, wall_s, 60.0 * len(lat) / wall_s, float(p50), float(p95), float(lat.mean()))


def run_clients(url: str, clients: int, images: int, request: Callable[[object, int], None],
                timeout: float = 1800.0) -> Load:
    """`clients` threads, each with its own gradio_client.Client, start together and each submits `images`
    requests one after another: `request(client, seed)` makes one (and raises if it failed). Clients are
    connected before the clock starts; RuntimeError when a request fails or all are not done within `timeout` s."""
    from gradio_client import Client

    connected = [Client(url, verbose=False) for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(k: int) -> None:
        start.wait()
        for i in range(images):
            t = time.perf_counter()
            try:
                request(connected[k], 1000 * k + i)
            except BaseException as e:  # noqa: BLE001 - reported once all threads are done
                with lock:
                    errors.append(e)
                return
            with lock:
                latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(max(0.0, t0 + timeout - time.perf_counter()))
    wall = time.perf_counter() - t0
    for c in connected:
        c.close()
    if any(t.is_alive() for t in threads):
        raise RuntimeError(f"{len(latencies)} of {clients} x {images} requests done after {timeout:.0f} s: "
                           "the app stalls")
    if errors:
        raise RuntimeError(f"{len(errors)} of {clients} clients failed; the first: {errors[0]}")
    return summary(latencies, wall, clients, images)


def segmentation_request(label_map: Path, size: int, frames: int, guidance: float) -> Callable[[object, int], None]:
    """One /generate_segmentation of `label_map` at size x size with the API's defaults otherwise (temperature 1,
    top-k 100, top-p 1, `frames` previews, `guidance`): a function of (client, seed) that raises unless the
    status says Done."""
    from gradio_client import handle_file

    def request(client, seed: int) -> None:
        _, status, _ = client.predict(handle_file(str(label_map)), seed, 1.0, 100, 1.0, size, size, frames, guidance,
                                      api_name="/generate_segmentation")
        if not str(status).startswith("Done"):
            raise RuntimeError(f"seed {seed}, {size} px: {status}")
    return request
