"""A real browser for the tests of `snn serve`: Debian's Chromium driven by Playwright, and the
server started as a user starts it (`snn serve --port 0`, read back from what it prints).

Without Chromium (the apt packages chromium and chromium-driver) or Playwright, the browser tests
are skipped with the reason; in CI (CI set), that is a failure instead."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: the browser tests cannot be skipped in CI")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        _unavailable(f"no {CHROMIUM} (apt-get install chromium chromium-driver)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield page
    context.close()
    assert errors == [], errors  # no script error and no failed request on any page


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the pages' pictures go: SNN_SCREENSHOTS (`make screenshots` sets docs/screenshots),
    else a temporary folder."""
    folder = Path(os.environ.get("SNN_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Server:
    def __init__(self, runs: Path, data: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "snn.cli", "serve", "--runs", str(runs)]
        self.process = subprocess.Popen(
            [*command, "--port", "0", "--data", str(data)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        first = self.process.stdout.readline() if self.process.stdout else ""
        if not first.startswith("snn serve: http://"):
            self.stop()
            pytest.fail(f"snn serve did not start: {first}{self.process.stderr.read()}")
        self.url = first.split()[2].rstrip("/")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=15)


@pytest.fixture
def serve() -> Iterator[Any]:
    """serve(runs, data) starts `snn serve` over runs; stopped at the end of the test."""
    started: list[Server] = []

    def start(runs: Path, data: Path) -> Server:
        started.append(Server(runs, data))
        return started[-1]

    yield start
    for server in started:
        server.stop()
