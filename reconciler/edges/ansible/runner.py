"""Run one Ansible playbook through ansible-runner and report per-host results.

This is the only module of the project that imports ``ansible_runner``; the types it returns
and the ``Runner`` Protocol it implements are in ``reconciler.edges.ansible``.

Contract
--------
* :meth:`PlaybookRunner.run` never raises for anything that happens while running a playbook:
  failed tasks, unreachable hosts, Ansible errors (syntax, inventory), ansible-runner
  exceptions, timeout and cancellation all come back as a :class:`RunResult` with
  ``outcome`` in ``"successful" | "failed" | "timeout" | "canceled" | "error"`` and a
  :class:`HostResult` for *every* requested host. Only an invalid :class:`PlaybookRun`
  (checked when it is constructed) raises ``ValueError``/``TypeError``.
* ``outcome == "successful"`` means ansible-playbook succeeded *and* every requested host is
  :attr:`HostStatus.OK`; otherwise ``"failed"`` (e.g. a requested host that is not in the
  inventory is ``NOT_RUN`` and makes the run ``"failed"`` even though Ansible exits 0).
  Per-host status comes from the final ``playbook_on_stats`` event, never from rc alone:
  ``dark > 0`` -> UNREACHABLE, ``failures > 0`` -> FAILED, present -> OK
  (``changed = changed > 0``), absent -> NOT_RUN.
* Every run gets a fresh private data dir ``runs_dir/<UTC timestamp>-<label>-<uuid8>`` and a
  unique ident (``uuid4().hex``). After each run only the newest ``keep_runs`` run dirs are
  kept (dirs of runs still in progress are never removed).
* Ansible Vault: each ``(vault id, password file)`` of ``vault`` is passed as
  ``--vault-id <id>@<file>``: the file's path is on the command line, never the secret (nor
  in the environment); Ansible reads it and decrypts only what the play uses.
* Extra vars are written to ``<run dir>/reconciler-extravars.yml`` with every string value
  (at any depth; mapping keys stay plain) tagged ``!unsafe``, and passed as
  ``-e @<file>``, so Ansible never templates them (a version like
  ``{{ lookup('pipe', ...) }}`` stays literal text).
* Environment of the run: the daemon's environment, then ``ANSIBLE_NOCOLOR=1``,
  ``ANSIBLE_RETRY_FILES_ENABLED=False``, ``ANSIBLE_ROLES_PATH`` (from ``roles_path``, when
  given), ``ANSIBLE_SSH_CONTROL_PATH_DIR`` (from ``control_path_dir``, when given: the
  ssh ControlPersist sockets of this state dir), then ``PlaybookRun.envvars``, then, not
  overridable, ``ANSIBLE_HOST_KEY_CHECKING``
  (from the adapter's ``host_key_checking``) and ``RECONCILER_RUN_IDENT=<ident>``. Values are
  never logged, and after the run the copy ansible-runner stores in
  ``artifacts/<ident>/command`` has every value redacted except the settings above.
  Facts are cached in memory only (Ansible's jsonfile cache writes world-readable files).
* Timeout and cancellation are enforced here, polled every ``poll_interval_s``: the whole
  process tree of the run is killed (:func:`reconciler.edges.ansible.process_tree.kill_run`) before
  ansible-runner is told to stop. Hosts that had not finished are FAILED (some task ran) or
  NOT_RUN (nothing ran), with message ``"timed out after Ns"`` / ``"canceled"``.
* ``on_event`` receives every ansible-runner event dict (in the calling thread); exceptions
  it raises are logged and swallowed. It must not mutate the event.

Several runs may execute at the same time in different threads of one process.

Size: a little over 400 lines: the adapter's contract (above) is long, and the run's
preparation, result and artifact redaction belong to the one ansible-runner call.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ansible_runner

from reconciler.edges.ansible import (
    RUN_IDENT_ENV,
    RUNS_DIR_ENV,
    HostResult,
    HostStatus,
    PlaybookRun,
    RunOutcome,
    RunResult,
    events,
)
from reconciler.edges.ansible.extravars import dump_unsafe_yaml

__all__ = ["PlaybookRunner"]

log = logging.getLogger(__name__)

_LABEL_MAX = 64
_EXTRAVARS_FILE = "reconciler-extravars.yml"
_RUN_DIR_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-.*-[0-9a-f]{8}$")
_REDACTED = "<redacted>"
_VAULT_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _safe_label(label: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._-")
    return cleaned[:_LABEL_MAX] or "run"


def _ansible_playbook_binary() -> str:
    """ansible-playbook of the interpreter we run in (the venv), else from PATH."""
    candidate = Path(sys.executable).parent / "ansible-playbook"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("ansible-playbook") or "ansible-playbook"


class PlaybookRunner:
    """Adapter around ``ansible_runner.run``; safe to use from several threads at once."""

    def __init__(
        self,
        runs_dir: Path,
        *,
        keep_runs: int = 50,
        host_key_checking: bool = True,
        poll_interval_s: float = 1.0,
        control_path_dir: Path | None = None,
        vault: Sequence[tuple[str, Path]] = (),
    ) -> None:
        if keep_runs < 1:
            raise ValueError("keep_runs must be >= 1")
        if any(not _VAULT_ID_RE.match(vault_id) for vault_id, _ in vault):
            raise ValueError(f"invalid vault id in {vault}: ids match {_VAULT_ID_RE.pattern}")
        if not poll_interval_s > 0:
            raise ValueError("poll_interval_s must be > 0")
        self.runs_dir = Path(runs_dir).absolute()
        self.keep_runs = keep_runs
        self.host_key_checking = host_key_checking
        self.poll_interval_s = poll_interval_s
        self.control_path_dir = control_path_dir
        self.vault_args = tuple(a for i, f in vault for a in ("--vault-id", f"{i}@{f.absolute()}"))
        self._lock = threading.Lock()
        self._active: set[Path] = set()

    # ---------------------------------------------------------------- public

    def run(
        self,
        run: PlaybookRun,
        *,
        cancel: threading.Event | None = None,
        on_event: Callable[[dict], None] | None = None,
    ) -> RunResult:
        started = time.monotonic()
        ident = uuid.uuid4().hex
        run_dir = self._create_run_dir(run.label, ident)
        state = events.RunState(ident, started + run.timeout_s, cancel, on_event)
        log.info(
            "run %s: %s on %d host(s) [%s], dir %s",
            ident,
            run.playbook,
            len(run.hosts),
            run.label,
            run_dir,
        )
        try:
            result = self._execute(run, ident, run_dir, state, started)
        except Exception as exc:  # a bug here must not take the daemon down
            log.exception("run %s: unexpected error", ident)
            result = self._error(run, ident, run_dir, started, f"internal error: {exc!r}")
        finally:
            with self._lock:
                self._active.discard(run_dir)
            self._rotate()
        log.info(
            "run %s: %s rc=%s in %.1fs (ok=%d, not ok=%d)",
            ident,
            result.outcome,
            result.rc,
            result.duration_s,
            len(result.succeeded()),
            len(result.failed()),
        )
        return result

    # ---------------------------------------------------------------- internals

    def _create_run_dir(self, label: str, ident: str) -> Path:
        self.runs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        run_dir = self.runs_dir / f"{stamp}-{_safe_label(label)}-{ident[:8]}"
        run_dir.mkdir(mode=0o700)  # never reuse: fails if it exists
        with self._lock:
            self._active.add(run_dir)
        return run_dir

    def _rotate(self) -> None:
        with self._lock:
            active = set(self._active)
            try:
                dirs = sorted(
                    p
                    for p in self.runs_dir.iterdir()
                    if p.is_dir() and not p.is_symlink() and _RUN_DIR_RE.match(p.name)
                )
            except OSError:
                log.exception("could not list %s for rotation", self.runs_dir)
                return
            excess = [p for p in dirs[: max(0, len(dirs) - self.keep_runs)] if p not in active]
        for path in excess:
            shutil.rmtree(path, ignore_errors=True)

    def _envvars(self, run: PlaybookRun, ident: str) -> dict[str, str]:
        env: dict[str, str] = {
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
        }
        if run.roles_path:
            env["ANSIBLE_ROLES_PATH"] = os.pathsep.join(str(p) for p in run.roles_path)
        if self.control_path_dir is not None:
            # ssh ControlPersist masters of this state dir: one place to find (and end) them
            self.control_path_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(self.control_path_dir)
        env.update(run.envvars)
        env["ANSIBLE_HOST_KEY_CHECKING"] = "True" if self.host_key_checking else "False"
        env[RUN_IDENT_ENV] = ident
        env[RUNS_DIR_ENV] = str(self.runs_dir)
        return env

    def _error(
        self,
        run: PlaybookRun,
        ident: str,
        run_dir: Path,
        started: float,
        message: str,
        rc: int | None = None,
    ) -> RunResult:
        message = events.truncate(message)
        log.error("run %s: error: %s", ident, message)
        hosts = {h: HostResult(h, HostStatus.NOT_RUN, False, message) for h in run.hosts}
        return RunResult(
            ident, RunOutcome.ERROR, rc, hosts, time.monotonic() - started, run_dir, message
        )

    def _execute(
        self, run: PlaybookRun, ident: str, run_dir: Path, state: events.RunState, started: float
    ) -> RunResult:
        playbook, inventory = Path(run.playbook), Path(run.inventory)
        if not playbook.is_absolute() or not playbook.is_file():
            return self._error(run, ident, run_dir, started, f"playbook not found: {playbook}")
        if not inventory.is_absolute() or not inventory.exists():
            # ansible-runner would take a missing path for inline inventory *content*.
            return self._error(run, ident, run_dir, started, f"inventory not found: {inventory}")

        env_known = self._envvars(run, ident)
        # Controller-side temp files go with the run dir, so rotation removes what a killed
        # run leaves behind (instead of piling up in ~/.ansible/tmp).
        env_known.setdefault("ANSIBLE_LOCAL_TEMP", str(run_dir / "tmp"))
        try:
            extravars_path = run_dir / _EXTRAVARS_FILE
            fd = os.open(extravars_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(dump_unsafe_yaml(run.extra_vars))
            settings = {"pexpect_timeout": self.poll_interval_s}
            # suppress_env_files keeps envvars (possibly secrets) out of env/; but then
            # ansible-runner 2.4 ignores the `settings` argument unless env/settings exists.
            (run_dir / "env").mkdir(mode=0o700)
            (run_dir / "env" / "settings").write_text(json.dumps(settings), encoding="utf-8")
        except OSError as exc:
            return self._error(run, ident, run_dir, started, f"cannot prepare run dir: {exc}")

        args = ("-e", f"@{extravars_path}", *self.vault_args, str(playbook))
        cmdline = " ".join(shlex.quote(a) for a in args)
        artifact_dir = run_dir / "artifacts" / ident
        try:
            runner = ansible_runner.run(
                private_data_dir=str(run_dir),
                ident=ident,
                binary=_ansible_playbook_binary(),
                cmdline=cmdline,
                inventory=str(inventory),
                limit=",".join(run.hosts),
                envvars=dict(env_known),
                settings=dict(settings),
                suppress_env_files=True,
                # Ansible's jsonfile fact cache chmods its files 0644 whatever the umask; a run
                # is one process, so facts in memory lose nothing.
                fact_cache_type="memory",
                quiet=True,
                event_handler=state.event_handler,
                cancel_callback=state.cancel_callback,
            )
        except Exception as exc:  # ansible_runner raises assorted exception types
            if state.stopped is None:
                return self._error(
                    run, ident, run_dir, started, f"ansible-runner: {type(exc).__name__}: {exc}"
                )
            runner = None
        finally:
            self._redact_command_artifact(artifact_dir, env_known, run.envvars)
        return self._result(run, ident, run_dir, state, started, runner, artifact_dir)

    def _result(
        self,
        run: PlaybookRun,
        ident: str,
        run_dir: Path,
        state: events.RunState,
        started: float,
        runner: Any,
        artifact_dir: Path,
    ) -> RunResult:
        rc: int | None = getattr(runner, "rc", None)
        status: str = getattr(runner, "status", "error")
        duration = time.monotonic() - started

        if state.stopped is not None:
            message = (
                f"timed out after {run.timeout_s:g}s"
                if state.stopped is RunOutcome.TIMEOUT
                else "canceled"
            )
            hosts = {}
            for host in run.hosts:
                track = state.hosts.get(host)
                if track is None or not track.seen:
                    hosts[host] = HostResult(host, HostStatus.NOT_RUN, False, message)
                elif track.unreachable:
                    hosts[host] = HostResult(
                        host, HostStatus.UNREACHABLE, track.changed, track.message
                    )
                elif track.failed:
                    hosts[host] = HostResult(host, HostStatus.FAILED, track.changed, track.message)
                else:
                    hosts[host] = HostResult(host, HostStatus.FAILED, track.changed, message)
            return RunResult(ident, state.stopped, rc, hosts, duration, run_dir, message)

        stats = state.stats
        if stats is None and runner is not None:
            try:
                stats = runner.stats
            except Exception:
                stats = None

        if stats is None:
            error = events.stdout_error(artifact_dir) or f"ansible-playbook {status} (rc={rc})"
            if events.no_hosts_matched(error):
                message = "no requested host is in the inventory"
                hosts = {h: HostResult(h, HostStatus.NOT_RUN, False, message) for h in run.hosts}
                return RunResult(
                    ident,
                    RunOutcome.FAILED,
                    rc,
                    hosts,
                    duration,
                    run_dir,
                    events.truncate(f"{message}: {error}"),
                )
            return self._error(run, ident, run_dir, started, error, rc)

        hosts = {h: self._host_from_stats(h, stats, state) for h in run.hosts}
        all_ok = all(r.status is HostStatus.OK for r in hosts.values())
        ok = status == "successful" and all_ok
        outcome = RunOutcome.SUCCESSFUL if ok else RunOutcome.FAILED
        message = ""
        if not ok:
            if all_ok:
                message = (
                    events.stdout_error(artifact_dir) or f"ansible-playbook {status} (rc={rc})"
                )
            else:
                bad = [h for h, r in hosts.items() if r.status is not HostStatus.OK]
                message = events.truncate(f"{len(bad)} host(s) not ok: {', '.join(bad)}")
        return RunResult(ident, outcome, rc, hosts, duration, run_dir, message)

    @staticmethod
    def _host_from_stats(host: str, stats: Mapping[str, Any], state: events.RunState) -> HostResult:
        def count(key: str) -> int:
            value = (stats.get(key) or {}).get(host, 0)
            return value if isinstance(value, int) else 0

        present = any(host in (stats.get(key) or {}) for key in stats)
        track = state.hosts.get(host)
        changed = count("changed") > 0
        if count("dark") > 0:
            msg = track.message if track and track.unreachable else "host unreachable"
            return HostResult(host, HostStatus.UNREACHABLE, changed, msg)
        if count("failures") > 0:
            msg = track.message if track and track.failed else "task failed"
            return HostResult(host, HostStatus.FAILED, changed, msg)
        if present:
            return HostResult(host, HostStatus.OK, changed, "")
        return HostResult(
            host,
            HostStatus.NOT_RUN,
            False,
            "not run: host not in the inventory or not targeted by the playbook",
        )

    @staticmethod
    def _redact_command_artifact(
        artifact_dir: Path, known: Mapping[str, str], secret: Mapping[str, str]
    ) -> None:
        """ansible-runner stores the complete environment; keep only non-secret values."""
        path = artifact_dir / "command"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        env = data.get("env")
        if not isinstance(env, dict):
            return
        enforced = {"ANSIBLE_HOST_KEY_CHECKING", RUN_IDENT_ENV}
        keep = {k for k in known if k in enforced or k not in secret} | {
            k  # added by ansible-runner itself
            for k in env
            if k.startswith(("ANSIBLE_", "RUNNER_", "AWX_"))
            and k not in secret
            and k not in os.environ
        }
        data["env"] = {k: (v if k in keep else _REDACTED) for k, v in env.items()}
        try:
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            tmp.replace(path)
        except OSError:
            log.warning("could not redact %s", path)
