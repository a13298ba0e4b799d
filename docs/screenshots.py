"""Screenshots of each tab of the app after a generation at its default 256x256 (and a 512x256 panorama), for
the README (docs/app-*.png).

    .venv/bin/python docs/screenshots.py --edges-photo ../shared/data/bsds/images/test__100039.jpg \
        --depth ../shared/data/drin/depth16/n01819313__ILSVRC2012_val_00003068.png \
        --photo ../shared/data/sflckr/images/australia__8720651218_ca82a6608e_b.jpg

Starts `app.py` on the bundled models at a free local port, drives Debian's chromium with Playwright
(never `playwright install`), presses Generate in every tab and saves a screenshot when "Done" shows.
"""
from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise SystemExit(f"app.py did not answer at {url} within {timeout:.0f} s")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edges-photo", required=True, help="photo whose edges condition the Edges tab")
    ap.add_argument("--depth", required=True, help="depth PNG for the Depth tab")
    ap.add_argument("--photo", help="photo for 'Start from a photo' (app-from-photo.png, with 4 images per run)")
    ap.add_argument("--out", default=str(ROOT / "docs"), help="folder for app-<tab>.png")
    ap.add_argument("--width", type=int, default=1400, help="browser window width in pixels")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--device", "cpu"],
                            cwd=ROOT)
    try:
        wait_until_up(url, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": args.width, "height": 1050})
            page.goto(url)
            page.locator("#go_seg").wait_for(timeout=60000)
            page.locator("#seed input").fill(str(args.seed))

            def generate(key: str, name: str) -> None:
                status = page.locator(f"#status_{key} textarea")
                before = status.input_value()
                page.click(f"#go_{key}")
                # each tab has its own status box: wait for this run's "Done" (not the last run's)
                page.wait_for_function("([sel, old]) => { const v = document.querySelector(sel).value; "
                                       "return v !== old && v.startsWith('Done'); }",
                                       arg=[f"#status_{key} textarea", before], timeout=300000)
                expect(status).to_have_value(re.compile("^Done"))
                page.evaluate("window.scrollTo(0, 0)")  # the tabs in view
                for close in page.locator(".toast-close").all():  # messages (e.g. an upload's crop) closed
                    close.click()
                page.wait_for_timeout(500)
                path = Path(args.out) / f"app-{name}.png"
                page.screenshot(path=str(path))
                print(f"saved {path}: {page.locator(f'#status_{key} textarea').input_value()}")

            generate("seg", "segmentation")  # the first ready-made scene, at the default 256x256
            # a panorama scene sets the output (and the canvas) to 2:1, 512x256
            page.locator("#seg_example input").click()
            page.get_by_role("option", name="Mountain panorama").click()
            expect(page.locator("#width input")).to_have_value("512", timeout=30000)
            page.wait_for_timeout(2000)  # the canvas takes the new shape
            generate("seg", "panorama")
            if args.photo:  # its label map becomes the canvas; four variations side by side
                page.locator("#seg_photo input[type=file]").set_input_files(args.photo)
                expect(page.locator("#status_seg textarea")).to_have_value(re.compile("^Label map"), timeout=60000)
                page.locator("#images input[type=number]").fill("4")
                page.locator("#images input[type=number]").press("Enter")
                generate("seg", "from-photo")
                page.locator("#images input[type=number]").fill("1")
                page.locator("#images input[type=number]").press("Enter")
            for field in ("width", "height"):  # back to the default size (the photo set its aspect)
                page.locator(f"#{field} input").fill("256")
            page.wait_for_timeout(2000)
            page.get_by_role("tab", name="Edges").click()
            page.locator("#edges_kind").get_by_text("photo", exact=True).click()
            page.locator("#edges_upload input[type=file]").set_input_files(args.edges_photo)
            page.wait_for_timeout(3000)  # the extracted edges replace the canvas
            generate("edges", "edges")
            page.get_by_role("tab", name="Depth").click()
            page.locator("#depth input[type=file]").set_input_files(args.depth)
            page.locator("#depth_preview img").wait_for(timeout=30000)
            generate("depth", "depth")
            page.get_by_role("tab", name="Unconditional").click()
            generate("uncond", "unconditional")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
