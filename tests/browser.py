"""The dashboard in a real browser: Debian's Chromium driven by Playwright, and a live `conveyor web`.

- :func:`chromium` is ``/usr/bin/chromium``, installed by ``scripts/ensure-browser.sh`` when it is
  missing (``make test`` runs that script first, through ``ensure-services.sh``). The tests never
  download a browser of their own (no ``playwright install``): Playwright starts Debian's binary
  through ``executable_path``. A browser that cannot be installed fails the tests, never skips them.
- The session fixture :func:`browser` starts one headless Chromium per test session (each xdist
  worker is one). Each :meth:`~playwright.sync_api.Browser.new_context` is a fresh profile: no
  cookie or cache is shared between contexts; Playwright gives every launch a fresh user-data dir.
- :class:`WebServer` is a `conveyor web --port <free>` subprocess whose output is collected (and
  scanned for passwords, as the workers' is).
- :func:`screenshot_folder`: ``docs/assets/screenshots`` when ``SCREENSHOTS=1`` (``make
  screenshots``), else a temporary folder, so that an ordinary run leaves the tree clean.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from jobs.settings import Settings
from tests.helpers import ROOT, eventually, observe
from tests.smtp import free_port

CHROMIUM = Path("/usr/bin/chromium")
ENSURE_BROWSER = ROOT / "scripts" / "ensure-browser.sh"
#: Headless, and nothing that would reach beyond this machine (no update checks, sync, QUIC).
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT = {"width": 1280, "height": 800}
#: Where ``SCREENSHOTS=1`` puts the pages' pictures: the docs show them.
DOCS_SCREENSHOTS = ROOT / "docs" / "assets" / "screenshots"
#: The schedule the dashboard shows the next runs of (the shipped example).
SCHEDULE = ROOT / "deploy" / "schedule.example.toml"
#: RabbitMQ's management API on the test services (guest/guest, loopback only).
MANAGEMENT_API = "http://guest:guest@127.0.0.1:15672"
#: Milliseconds Playwright waits for a page, an element or a navigation.
TIMEOUT_MS = 15_000


def chromium() -> Path:
    """Debian's Chromium, installed with ``scripts/ensure-browser.sh`` when it is missing.

    Raises AssertionError when it cannot be installed: a missing browser fails, never skips.
    """
    if not os.access(CHROMIUM, os.X_OK):
        result = subprocess.run(
            ["bash", str(ENSURE_BROWSER)], capture_output=True, text=True, timeout=900, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is missing and {ENSURE_BROWSER.name} did not install it"
    return CHROMIUM


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for this test session (each xdist worker has its own)."""
    executable = chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield launched
        finally:
            launched.close()


def new_page(browser: Browser, *, javascript: bool = True) -> Page:
    """A page in a fresh context (its own cookies), 1280×800, with the tests' timeouts."""
    context = browser.new_context(viewport=VIEWPORT, java_script_enabled=javascript)
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()


def screenshot_folder(tmp: Path) -> Path:
    """``docs/assets/screenshots`` with ``SCREENSHOTS=1``, else ``tmp``."""
    folder = DOCS_SCREENSHOTS if os.environ.get("SCREENSHOTS") == "1" else tmp
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class WebServer:
    """A `conveyor web --schedule <the example>` subprocess on a free loopback port, its output
    collected as it comes."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "cli.py"),
                "web",
                "--port",
                str(self.port),
                "--schedule",
                str(SCHEDULE.relative_to(ROOT)),  # the page shows it; the process runs in ROOT
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            eventually(self._answers, timeout=30, interval=0.1)
        except AssertionError:
            self.stop()
            raise AssertionError("conveyor web did not start:\n" + self.output) from None

    @staticmethod
    def environment(settings: Settings) -> dict[str, str]:
        """The environment of a `conveyor` subprocess on ``settings``' services, namespace and token."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
        env.update(
            CONVEYOR_BROKER_URL=settings.broker_url,
            CONVEYOR_DATABASE_URL=settings.database_url,
            CONVEYOR_NAMESPACE=settings.namespace,
            # The queues page's unacknowledged counts and rates (the services' management API).
            CONVEYOR_RABBITMQ_API_URL=MANAGEMENT_API,
        )
        if settings.web_token is not None:
            env["CONVEYOR_WEB_TOKEN"] = settings.web_token
        return env

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            observe(line, f"output of `conveyor web` (pid {self.process.pid})")
            self.lines.append(line.rstrip("\n"))

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"conveyor web exited with {self.process.returncode}:\n{self.output}")
        try:
            with urllib.request.urlopen(f"{self.url}/login", timeout=2) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
