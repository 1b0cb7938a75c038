"""Real servers for the health-gate tests: scripted HTTP servers, free ports, a Prometheus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reconciler.desired.model import Host
from reconciler.desired.schema import HealthCheck
from reconciler.edges.gates import GateTarget
from reconciler.testing import testapp
from reconciler.testing.fleet import free_port
from tests.tools import missing_tool

HERE = Path(__file__).resolve().parent


def check(kind: str, **gate: object) -> HealthCheck:
    """A validated HealthCheck with fast defaults for tests."""
    gate.setdefault("interval", 0.05)
    gate.setdefault("timeout", 2)
    gate.setdefault("request_timeout", 1)
    return HealthCheck.model_validate({kind: gate})


def target(
    port: int | None = None,
    *,
    name: str = "web1",
    app: str = "shop",
    version: str = "1.0.0",
    address: str = "127.0.0.1",
) -> GateTarget:
    ports = {} if port is None else {app: port}
    return GateTarget(Host(name, address, ports), app, version)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 delays parallel clients by 1 s


#: A scripted answer: (status, body) or (status, body, extra headers).
Answer = tuple[int, str] | tuple[int, str, dict[str, str]]


@dataclass
class ScriptedServer:
    """A real HTTP server: answers each request with the next scripted answer."""

    script: list[Answer] = field(default_factory=list)
    default: Answer = (200, "ok")
    delay: float = 0.0
    requests: list[str] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    outer.requests.append(self.path)
                    answer = outer.script.pop(0) if outer.script else outer.default
                status, body, headers = (*answer, {})[:3]
                if outer.delay:
                    time.sleep(outer.delay)
                data = body.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (request_timeout): expected here
                    pass

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str = "/healthz") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def http_server() -> Iterator[Callable[..., ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def make(
        script: Sequence[Answer] = (),
        default: Answer = (200, "ok"),
        delay: float = 0.0,
    ) -> ScriptedServer:
        server = ScriptedServer(list(script), default, delay)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


class EndlessServer:
    """A real HTTP server whose one answer declares a 1 GiB body of ``x`` and streams it until
    the client goes away; ``sent`` counts the bytes written, ``finished`` is set at the end."""

    declared = 1 << 30

    def __init__(self) -> None:
        self.sent = 0
        self.finished = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                chunk = b"x" * (64 * 1024)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(outer.declared))
                    self.end_headers()
                    while outer.sent < outer.declared:
                        self.wfile.write(chunk)
                        outer.sent += len(chunk)
                except OSError:  # the client closed the connection
                    pass
                finally:
                    outer.finished.set()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def endless_server() -> Iterator[EndlessServer]:
    server = EndlessServer()
    yield server
    server.close()


# ------------------------------------------------------------------------------ Prometheus


def _find_prometheus() -> str | None:
    found = shutil.which("prometheus")
    if found is None and os.environ.get("RECONCILER_NO_INSTALL") != "1":
        subprocess.run(
            [str(HERE / "install-prometheus.sh")],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=600,
        )
        found = shutil.which("prometheus")
    return found


def _get_json(url: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=2) as response:
        return json.loads(response.read())


@dataclass
class PromFleet:
    url: str
    version: str
    apps: dict[str, GateTarget]  # app name -> target whose host serves it
    log: Path


def _start_testapp(
    root: Path, app: str, version: str, behaviour: str, procs: list[subprocess.Popen]
) -> GateTarget:
    artifact = testapp.build_artifact(root / "artifacts", app, version, behaviour)
    release = root / f"{app}-{version}"
    release.mkdir(parents=True)
    with tarfile.open(artifact) as tar:
        tar.extractall(release, filter="data")
    port = free_port()
    env = {**os.environ, "PORT": str(port), "APP_NAME": app, "APP_VERSION": version}
    procs.append(
        subprocess.Popen(
            [str(release / "start")],
            cwd=release,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    return GateTarget(Host(f"{app}-host", "127.0.0.1", {app: port}), app, version)


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PromFleet]:
    """A real Prometheus scraping two real test apps (one healthy, one not) every second."""
    binary = _find_prometheus()
    if binary is None:
        missing_tool("prometheus is not installed and install-prometheus.sh could not install it")
    root = tmp_path_factory.mktemp("prometheus")
    procs: list[subprocess.Popen] = []
    log_file = root / "prometheus.log"
    try:
        fleet = {
            "good": _start_testapp(root, "good", "1.2.3", "ok", procs),
            "sick": _start_testapp(root, "sick", "2.0.0", "unhealthy", procs),
        }
        scrape = [f"127.0.0.1:{t.host.ports[t.app]}" for t in fleet.values()]
        (root / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: testapp\n"
            f"    static_configs: [{{targets: {json.dumps(scrape)}}}]\n"
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with log_file.open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        binary,
                        f"--config.file={root / 'prometheus.yml'}",
                        f"--storage.tsdb.path={root / 'data'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                        "--storage.tsdb.retention.time=1h",
                        "--log.level=warn",
                    ],
                    cwd=root,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        version = ""
        deadline = time.monotonic() + 30
        while True:
            if procs[-1].poll() is not None:
                pytest.fail(f"prometheus exited early:\n{log_file.read_text()[-3000:]}")
            try:
                info = _get_json(f"{url}/api/v1/status/buildinfo")
                version = info["data"]["version"]
                up = _get_json(f"{url}/api/v1/query?query=testapp_healthy")
                if len(up["data"]["result"]) == 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"prometheus never scraped the test apps:\n{log_file.read_text()}")
            time.sleep(0.2)
        yield PromFleet(url, version, fleet, log_file)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
