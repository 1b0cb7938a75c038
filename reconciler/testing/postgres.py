"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` and ``postgres`` in a
temporary directory, nothing installed or configured system-wide.

Contract:
* ``server_bin()``: the directory of ``initdb``/``postgres`` (PATH first, else the newest
  ``/usr/lib/postgresql/<major>/bin`` of Debian's packages), or None when not installed.
* ``PostgresCluster.start()``: a new cluster in a private temp dir, its server a child process
  listening on ``127.0.0.1:<free port>`` only (plus a unix socket in that dir), durability off
  (``fsync``, ``synchronous_commit``, ``full_page_writes``: it is thrown away). The superuser
  ``postgres`` connects without a password over loopback; other roles (``create_role``) need
  their password (scram-sha-256). PostgreSQL refuses to run as root: as root the server runs as
  the ``postgres`` user (Debian's package creates it), else ``nobody``.
* ``create_database(name)`` gives the URL of a new empty database (copied from an empty
  template of our own: nothing a test leaves in ``template1`` leaks in; about 60 ms);
  ``drop_database`` forces out its connections.
  ``psql(sql)`` runs SQL as the superuser and returns the unaligned output.
* ``stop_server()``/``start_server()`` take the server down and up again on the same port and
  data (outage tests); ``stop()`` ends it for good and removes the directory (also at exit).
* Uses only the server's own programs (no driver): callers bring theirs.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from reconciler.testing.fleet import free_port

__all__ = ["PostgresCluster", "server_bin"]

SUPERUSER = "postgres"
_TEMPLATE = "reconciler_template"
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
}
_HBA = f"""\
local all {SUPERUSER} trust
host all {SUPERUSER} 127.0.0.1/32 trust
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
"""


def server_bin() -> Path | None:
    """Where ``initdb`` and ``postgres`` are, or None."""
    found = shutil.which("initdb")
    if found and Path(found).resolve().with_name("pg_isready").exists():
        return Path(found).resolve().parent  # Debian links some programs into PATH, not all
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as (None: ourselves, we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in (SUPERUSER, "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _identifier(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a plain PostgreSQL identifier: {name!r}")
    return name


class PostgresCluster:
    """One throwaway server; see the module's contract."""

    def __init__(self, bin_dir: Path, base: Path, user: pwd.struct_passwd | None) -> None:
        self.bin_dir, self.base = bin_dir, base
        self._uid = user.pw_uid if user else None
        self._gid = user.pw_gid if user else None
        self._groups: list[int] | None = [] if user else None
        self.data = base / "data"
        self.log = base / "server.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, bin_dir: Path | None = None) -> PostgresCluster:
        found = bin_dir or server_bin()
        if found is None:
            raise FileNotFoundError("PostgreSQL is not installed (Debian package postgresql)")
        user = _run_as()
        base = Path(tempfile.mkdtemp(prefix="reconciler-pg-"))
        if user is not None:
            os.chown(base, user.pw_uid, user.pw_gid)
        cluster = cls(found, base, user)
        try:
            cluster._initdb()
            cluster.start_server()
            cluster.psql(f"CREATE DATABASE {_TEMPLATE} TEMPLATE template0 IS_TEMPLATE true")
        except BaseException:
            cluster.stop()
            raise
        atexit.register(cluster.stop)
        return cluster

    # -- the server process
    def _initdb(self) -> None:
        argv = [
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
            "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        ]  # fmt: skip
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=120, cwd=self.base,
            user=self._uid, group=self._gid, extra_groups=self._groups,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        (self.data / "pg_hba.conf").write_text(_HBA, encoding="utf-8")

    def start_server(self, attempts: int = 3) -> None:
        """Start the server (a new free port the first time, the same one afterwards)."""
        for attempt in range(attempts):
            port = self.port or free_port()
            argv = [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(port)]
            argv += ["-k", str(self.base)]
            for key, value in _SETTINGS.items():
                argv += ["-c", f"{key}={value}"]
            with self.log.open("ab") as log:
                self._process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.base,
                    start_new_session=True,
                    user=self._uid,
                    group=self._gid,
                    extra_groups=self._groups,
                )
            if self._wait_ready(port):
                self.port = port
                return
            if self.port or attempt == attempts - 1:
                break
        tail = self.log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"PostgreSQL did not start; its log ends:\n{tail}")

    def _wait_ready(self, port: int, timeout: float = 60.0) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        ready = [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            if subprocess.run(ready, check=False, env=self.environ(), timeout=30).returncode == 0:
                return True
            time.sleep(0.1)
        self.stop_server()
        return False

    def stop_server(self) -> None:
        """Fast shutdown of the server (its data stays); a no-op when it is not running."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)  # fast shutdown: clients disconnected, no waiting
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)

    def stop(self) -> None:
        """Stop the server and remove everything it had."""
        self.stop_server()
        shutil.rmtree(self.base, ignore_errors=True)
        atexit.unregister(self.stop)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- clients
    def environ(self) -> dict[str, str]:
        """The environment of our clients: no PG* variable of the caller's leaks in."""
        return {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    def url(self, database: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser; the output unaligned, tuples only."""
        argv = [
            str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database, "-c", sql,
        ]  # fmt: skip
        done = subprocess.run(
            argv, capture_output=True, text=True, env=self.environ(), timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self, name: str, owner: str = SUPERUSER) -> str:
        """A new empty database; its URL (as ``owner``)."""
        self.psql(
            f"CREATE DATABASE {_identifier(name)} OWNER {_identifier(owner)}"
            f" TEMPLATE {_TEMPLATE} STRATEGY FILE_COPY"
        )
        return self.url(name, owner)

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {_identifier(name)} WITH (FORCE)")

    def create_role(self, name: str, password: str) -> None:
        """A login role that must give ``password`` (no quote in it)."""
        if "'" in password:
            raise ValueError("a test password without quotes, please")
        self.psql(f"CREATE ROLE {_identifier(name)} LOGIN PASSWORD '{password}'")
