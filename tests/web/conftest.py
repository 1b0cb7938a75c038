"""The web page in a real browser: Debian's headless Chromium driven by Selenium (chromedriver
from the ``chromium-driver`` package; nothing is downloaded), against a real daemon that
converges the local fleet.

ONE daemon and ONE browser per module (both are slow to start); the tests of a module run in
file order against them. The browser resolves no name but 127.0.0.1 (``--host-resolver-rules``),
and ``Browser.checks`` reads its logs: no console error, no request that left loopback, and
axe-core (vendored, ``vendor/README.md``) finds no serious or critical violation.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from ruamel.yaml import YAML
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from reconciler.testing.fleet import LocalFleet
from tests.daemon.conftest import RunningDaemon, write_config
from tests.end_to_end.conftest import _setup

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
AXE = Path(__file__).parent / "vendor" / "axe-4.12.1.min.js"
AXE_SHA256 = "84494fec757e4710dc751c8d7a636e457f4532f08f85c86dc9070133fbff53bc"
# `make screenshots` sets this: the tests also write the README's images there.
SCREENSHOTS = os.environ.get("RECONCILER_SCREENSHOTS")
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass
class Browser:
    driver: webdriver.Chrome
    base: str
    requests: list[str] = field(default_factory=list)

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)
        self.wait(
            lambda d: d.execute_script("return document.body.dataset.live === 'ready';"),
            what="the page's first live check",
        )

    def wait(self, condition: Any, timeout: float = 30, what: str = "") -> Any:
        return WebDriverWait(
            self.driver,
            timeout,
            poll_frequency=0.2,
            ignored_exceptions=[StaleElementReferenceException],
        ).until(condition, what)

    def text(self, css: str = "main") -> str:
        """The element's text now; found again when a live update replaced it while it was
        being read (a stale element: the page swaps its content in place)."""
        for _ in range(10):
            try:
                return self.driver.find_element(By.CSS_SELECTOR, css).text
            except StaleElementReferenceException:
                continue
        return self.driver.find_element(By.CSS_SELECTOR, css).text

    def wait_text(self, needle: str, css: str = "main", timeout: float = 30) -> str:
        """Wait until the element shows ``needle`` (the page updates itself; no reload)."""
        return self.wait(
            lambda d: needle in (t := d.find_element(By.CSS_SELECTOR, css).text) and t,
            timeout,
            f"{needle!r} in {css}",
        )

    def mark(self) -> None:
        """A marker that survives in-page updates and dies with a reload."""
        self.driver.execute_script("window.__sameDocument = true;")

    def same_document(self) -> bool:
        return bool(self.driver.execute_script("return window.__sameDocument === true;"))

    # -- the checks every test makes
    def console_errors(self) -> list[dict[str, Any]]:
        return [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def collect_requests(self) -> list[str]:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
        return self.requests

    def outside(self) -> list[str]:
        return [
            url
            for url in self.collect_requests()
            # the network only: chrome:// pages (the blank start tab), data: and blob: are not
            if urlsplit(url).scheme in ("http", "https", "ws", "wss", "ftp")
            and urlsplit(url).hostname not in LOOPBACK
        ]

    def axe(self) -> list[dict[str, Any]]:
        """axe-core's serious and critical violations on the page as it is now."""
        if not self.driver.execute_script("return typeof window.axe === 'object';"):
            self.driver.execute_script(AXE.read_text())
        result = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']})"
            ".then(r => done(r.violations), e => done([{id: 'axe-error', impact: 'critical',"
            " help: String(e), nodes: []}]));"
        )
        return [
            {"id": v["id"], "help": v["help"], "nodes": [n.get("html") for n in v["nodes"]][:3]}
            for v in result
            if v.get("impact") in ("serious", "critical")
        ]

    def checks(self) -> None:
        """No console errors, nothing left loopback, no serious accessibility violation."""
        assert self.console_errors() == []
        assert self.outside() == []
        assert self.axe() == []

    def dark(self, on: bool) -> None:
        self.driver.execute_cdp_cmd(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-color-scheme", "value": "dark" if on else "light"}]},
        )

    def screenshot(self, directory: Path, name: str, full: bool = True) -> Path:
        """Save a PNG under the test's tmp dir (and, for `make screenshots`, docs/img)."""
        size = self.driver.get_window_size()
        if full:
            height = self.driver.execute_script("return document.documentElement.scrollHeight;")
            self.driver.set_window_size(size["width"], min(max(height, 600), 4000))
        path = directory / f"{name}.png"
        self.driver.save_screenshot(str(path))
        if full:
            self.driver.set_window_size(size["width"], size["height"])
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, Path(SCREENSHOTS) / path.name)
        return path


def _chrome(profile: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
        # Any name but loopback fails: a CDN or font would show as an error and a request.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--lang=en-GB",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """A daemon that converged 2 web hosts to shop 1.0.0 and 2 workers to jobs 3.0.0."""
    root = tmp_path_factory.mktemp("web")
    with pytest.MonkeyPatch.context() as patch:
        fleet = LocalFleet(root / "fleet").create()
        for key, value in fleet.environ().items():
            patch.setenv(key, value)
        try:
            setup = _setup(root, fleet, 2)
            setup.commit_versions(
                {"web": {"shop": "1.0.0"}, "worker": {"jobs": "3.0.0"}}, "initial <em>fleet</em>"
            )
            config = write_config(setup)
            port = YAML().load(config.read_text())["api"]["port"]
            running = RunningDaemon(
                setup, config, f"http://127.0.0.1:{port}", config.parent / "daemon.log"
            ).start()
            try:
                running.wait_converged("1.0.0", "the initial convergence")
                yield running
            finally:
                running.stop(timeout=90)
        finally:
            fleet.stop()


@pytest.fixture(scope="module")
def browser(daemon: RunningDaemon, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromium-driver are needed (.ci/run installs them)")
    assert hashlib.sha256(AXE.read_bytes()).hexdigest() == AXE_SHA256
    driver = _chrome(tmp_path_factory.mktemp("chromium"))
    try:
        yield Browser(driver, daemon.url)
    finally:
        driver.quit()


@pytest.fixture
def page(browser: Browser) -> Iterator[Browser]:
    """The module's browser, light theme, desktop size; its logs start empty for the test."""
    browser.dark(False)
    browser.driver.set_window_size(1280, 900)
    browser.console_errors()
    browser.collect_requests()
    browser.requests.clear()
    yield browser
