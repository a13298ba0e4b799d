"""Helpers of the app's tests: a free port, a page of Debian's chromium (browser tests skip themselves where it
is missing), and what the served app logs."""
import contextlib
import logging
import socket
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# browser tests skip themselves where Debian's chromium is missing (.ci/run installs it)
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="Debian's chromium is not installed (.ci/run installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.contextmanager
def browser_page(url: str):
    """A page of Debian's chromium (headless, 1400x1200) open at `url`; the browser closes afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            page.goto(url)
            yield page
        finally:
            browser.close()


def colour_button(page):
    """The painter's Color button, once the editor has loaded (a stroke drawn before that is lost)."""
    button = page.locator("#seg").get_by_role("button", name="Color", exact=True)
    button.wait_for(timeout=30000)
    return button


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server_log():
    """The records (warnings and worse, tracebacks included) that the app served in this process logs meanwhile, as
    a list of lines: uvicorn's own loggers (which do not pass records on to the root) and every other one."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.extend(self.format(record).splitlines())

    handler = Collect(logging.WARNING)
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield lines
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
