"""The upload folder's quota sweep: the oldest regular files go first, links are not followed, and the sweeps
take a bounded share of a core however many files the folder holds."""
import os
import threading
import time

import taming_app.uploads as uploads


def test_the_oldest_regular_files_go_first_and_links_are_left(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x" * 5000)
    folder = tmp_path / "uploads"
    for i, name in enumerate(["a/old.bin", "b/c/mid.bin", "new.bin"]):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
        os.utime(path, (1000 + i, 1000 + i))
    (folder / "link.bin").symlink_to(outside)  # not counted, not followed, not deleted
    assert uploads.enforce_quota(folder, 1500) == 2000
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.bin"))
    assert left == ["link.bin", "new.bin"] and outside.exists()
    assert not (folder / "a").exists()  # an emptied folder goes too


def test_sweeps_take_a_bounded_share_of_a_core(tmp_path, monkeypatch):
    calls = []

    def slow(folder, quota):  # a folder whose listing takes 50 ms
        calls.append(time.perf_counter())
        time.sleep(0.05)
        return 0
    monkeypatch.setattr(uploads, "enforce_quota", slow)
    running = threading.Event()
    running.set()
    uploads.keep_uploads_within(1, running.is_set, every=0.001, max_share=0.1, folder=lambda: tmp_path)
    time.sleep(1.2)
    running.clear()
    assert 2 <= len(calls) <= 3  # each 50 ms sweep is followed by >= 0.5 s of rest (about 20 sweeps without)
    assert min(b - a for a, b in zip(calls, calls[1:])) >= 0.5
