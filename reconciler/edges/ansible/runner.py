"""Run one Ansible playbook through ansible-runner and report per-host results.

This is the only module of the project that imports ``ansible_runner``.

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
* Extra vars are written to ``<run dir>/reconciler-extravars.yml`` with every string value
  (at any depth; mapping keys stay plain) tagged ``!unsafe``, and passed as
  ``-e @<file>``, so Ansible never templates them (a version like
  ``{{ lookup('pipe', ...) }}`` stays literal text).
* Environment of the run: the daemon's environment, then ``ANSIBLE_NOCOLOR=1``,
  ``ANSIBLE_RETRY_FILES_ENABLED=False``, ``ANSIBLE_ROLES_PATH`` (from ``roles_path``, when
  given), then ``PlaybookRun.envvars``, then, not overridable, ``ANSIBLE_HOST_KEY_CHECKING``
  (from the adapter's ``host_key_checking``) and ``RECONCILER_RUN_IDENT=<ident>``. Values are
  never logged, and after the run the copy ansible-runner stores in
  ``artifacts/<ident>/command`` has every value redacted except the settings above.
* Timeout and cancellation are enforced here, polled every ``poll_interval_s``: the whole
  process tree of the run is killed (:func:`reconciler.process_tree.kill_run`) before
  ansible-runner is told to stop. Hosts that had not finished are FAILED (some task ran) or
  NOT_RUN (nothing ran), with message ``"timed out after Ns"`` / ``"canceled"``.
* ``on_event`` receives every ansible-runner event dict (in the calling thread); exceptions
  it raises are logged and swallowed. It must not mutate the event.

Several runs may execute at the same time in different threads of one process.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import ansible_runner
import yaml

from reconciler.edges.ansible import process_tree

__all__ = ["HostResult", "HostStatus", "PlaybookRun", "PlaybookRunner", "RunResult"]

log = logging.getLogger(__name__)

_MESSAGE_MAX = 500
_LABEL_MAX = 64
_EXTRAVARS_FILE = "reconciler-extravars.yml"
_HOST_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")
_RUN_DIR_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-.*-[0-9a-f]{8}$")
_REDACTED = "<redacted>"
_NO_HOSTS_MARKERS = ("no hosts to target", "no hosts matched")


# --------------------------------------------------------------------------- data types


def _check_extra_vars(value: Any, path: str) -> None:
    if isinstance(value, str) or value is None or isinstance(value, bool | int | float):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"extra_vars{path}: keys must be str, got {type(key).__name__}")
            _check_extra_vars(item, f"{path}.{key}")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_extra_vars(item, f"{path}[{index}]")
        return
    raise TypeError(f"extra_vars{path}: unsupported type {type(value).__name__}")


def _check_host(host: Any) -> None:
    if not isinstance(host, str) or not host:
        raise ValueError(f"host names must be non-empty str, got {host!r}")
    if host[0] in "!&~":
        raise ValueError(f"host name {host!r} must not start with '!', '&' or '~'")
    if not _HOST_RE.match(host):
        # rejects ',', '*', '?', whitespace and '[...]' (fnmatch classes/subscripts in Ansible
        # host patterns), so every name selects at most the host of exactly that name.
        raise ValueError(f"invalid host name {host!r}: must match {_HOST_RE.pattern}")


@dataclass(frozen=True)
class PlaybookRun:
    """What to run. Validated on construction (``ValueError`` / ``TypeError``)."""

    playbook: Path
    inventory: Path
    hosts: tuple[str, ...]
    extra_vars: Mapping[str, Any]
    timeout_s: float
    roles_path: tuple[Path, ...] = ()
    envvars: Mapping[str, str] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.hosts, str) or not self.hosts:
            raise ValueError("hosts must be a non-empty tuple of host names")
        for host in self.hosts:
            _check_host(host)
        if len(set(self.hosts)) != len(self.hosts):
            raise ValueError("hosts contains duplicates")
        if not isinstance(self.extra_vars, Mapping):
            raise TypeError("extra_vars must be a mapping")
        _check_extra_vars(self.extra_vars, "")
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        for key, value in self.envvars.items():
            if not isinstance(key, str) or not isinstance(value, str) or not key:
                raise TypeError("envvars must map str to str")
        if process_tree.RUN_IDENT_ENV in self.envvars:
            raise ValueError(f"envvars must not set {process_tree.RUN_IDENT_ENV}")


class HostStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    NOT_RUN = "not_run"


@dataclass(frozen=True)
class HostResult:
    host: str
    status: HostStatus
    changed: bool
    message: str  # last failure/unreachable message (<= ~500 chars), "" when ok


@dataclass(frozen=True)
class RunResult:
    ident: str
    outcome: str  # "successful" | "failed" | "timeout" | "canceled" | "error"
    rc: int | None
    hosts: Mapping[str, HostResult]  # one entry for every requested host
    duration_s: float
    run_dir: Path
    message: str = ""  # run-level explanation (error text, timeout, ...); "" when successful

    def succeeded(self) -> tuple[str, ...]:
        return tuple(h for h, r in self.hosts.items() if r.status is HostStatus.OK)

    def failed(self) -> tuple[str, ...]:
        return tuple(h for h, r in self.hosts.items() if r.status is not HostStatus.OK)


# --------------------------------------------------------------------------- helpers


class _Unsafe(str):
    """A string value to be emitted as ``!unsafe``."""

    __slots__ = ()


class _ExtraVarsDumper(yaml.SafeDumper):
    pass


def _represent_unsafe(dumper: yaml.SafeDumper, data: _Unsafe) -> yaml.ScalarNode:
    text = str(data)
    # Single quotes for ordinary text; double quotes (with escapes) for line breaks and
    # non-printable characters, which single-quoted scalars fold or cannot represent.
    style = "'" if text.isprintable() else '"'
    return dumper.represent_scalar("!unsafe", text, style=style)


_ExtraVarsDumper.add_representer(_Unsafe, _represent_unsafe)


def _mark_unsafe(value: Any) -> Any:
    if isinstance(value, str):
        return _Unsafe(value)
    if isinstance(value, Mapping):
        return {str(k): _mark_unsafe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mark_unsafe(v) for v in value]
    return value


def dump_unsafe_yaml(extra_vars: Mapping[str, Any]) -> str:
    """YAML text of ``extra_vars`` with every string value tagged ``!unsafe``."""
    return yaml.dump(
        _mark_unsafe(extra_vars),
        Dumper=_ExtraVarsDumper,
        default_flow_style=False,
        allow_unicode=True,
        sort_keys=False,
        width=1 << 20,
    )


def _truncate(text: str, limit: int = _MESSAGE_MAX) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tail(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def _safe_label(label: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._-")
    return cleaned[:_LABEL_MAX] or "run"


def _ansible_playbook_binary() -> str:
    """ansible-playbook of the interpreter we run in (the venv), else from PATH."""
    candidate = Path(sys.executable).parent / "ansible-playbook"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("ansible-playbook") or "ansible-playbook"


def _failure_message(event: str, data: Mapping[str, Any]) -> str:
    res = data.get("res")
    res = res if isinstance(res, Mapping) else {}
    if isinstance(res.get("results"), list):  # loop: use the last failed item
        failed_items = [
            r
            for r in res["results"]
            if isinstance(r, Mapping) and (r.get("failed") or r.get("unreachable"))
        ]
        if failed_items:
            res = failed_items[-1]
    msg = str(res.get("msg") or "").strip()
    stderr = str(res.get("stderr") or res.get("module_stderr") or "").strip()
    parts = []
    task = str(data.get("task") or "").strip()
    if task:
        parts.append(f"{task}:")
    parts.append(msg or ("host unreachable" if event == "runner_on_unreachable" else "task failed"))
    if stderr and stderr not in msg:
        parts.append(f"(stderr: {_tail(stderr, 200)})")
    if "rc" in res and res.get("rc") not in (0, None):
        parts.append(f"[rc={res['rc']}]")
    return _truncate(" ".join(parts))


def _stdout_error(artifact_dir: Path) -> str:
    """The ERROR lines Ansible printed (no events are emitted for early errors)."""
    try:
        text = (artifact_dir / "stdout").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("ERROR!", "[ERROR]"))]
    if errors:
        return _truncate(" ".join(errors))
    return _tail("\n".join(lines), _MESSAGE_MAX)


class _HostTrack:
    __slots__ = ("changed", "failed", "message", "seen", "unreachable")

    def __init__(self) -> None:
        self.seen = False
        self.changed = False
        self.failed = False
        self.unreachable = False
        self.message = ""


_FAIL_EVENTS = frozenset({"runner_on_failed", "runner_on_async_failed", "runner_item_on_failed"})


class _RunState:
    """Per-run mutable state shared by the callbacks (all called in the run's thread)."""

    def __init__(
        self,
        ident: str,
        deadline: float,
        cancel: threading.Event | None,
        on_event: Callable[[dict], None] | None,
    ) -> None:
        self.ident = ident
        self.deadline = deadline
        self.cancel = cancel
        self.on_event = on_event
        self.stopped: str | None = None  # "timeout" | "canceled"
        self.killed: list[int] = []
        self.stats: dict[str, Any] | None = None
        self.hosts: dict[str, _HostTrack] = {}

    # ansible-runner: return True to stop the run. Must never raise (CallbackError otherwise).
    def cancel_callback(self) -> bool:
        if self.stopped is not None:
            return True
        if self.cancel is not None and self.cancel.is_set():
            reason = "canceled"
        elif time.monotonic() >= self.deadline:
            reason = "timeout"
        else:
            return False
        self.stopped = reason
        try:
            self.killed = process_tree.kill_run(self.ident)
        except Exception:
            log.exception("run %s: killing the process tree failed", self.ident)
        log.info("run %s: %s, killed %d process(es)", self.ident, reason, len(self.killed))
        return True

    # ansible-runner: return True so that the event is written (stats depend on it).
    def event_handler(self, event: dict) -> bool:
        try:
            self._track(event)
        except Exception:
            log.exception("run %s: could not interpret event", self.ident)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("run %s: on_event callback raised", self.ident)
        return True

    def _track(self, event: Mapping[str, Any]) -> None:
        name = event.get("event")
        data = event.get("event_data")
        if not isinstance(data, Mapping):
            return
        if name == "playbook_on_stats":
            self.stats = {
                key: dict(data.get(key) or {})
                for key in (
                    "ok",
                    "failures",
                    "dark",
                    "changed",
                    "skipped",
                    "rescued",
                    "ignored",
                    "processed",
                )
            }
            return
        host = data.get("host")
        if not isinstance(host, str) or not name or not name.startswith("runner_"):
            return
        track = self.hosts.setdefault(host, _HostTrack())
        track.seen = True
        res = data.get("res")
        if isinstance(res, Mapping) and res.get("changed") is True:
            track.changed = True
        if name in _FAIL_EVENTS and not data.get("ignore_errors"):
            track.failed = True
            track.message = _failure_message(name, data)
        elif name == "runner_on_unreachable" and not data.get("ignore_unreachable"):
            track.unreachable = True
            track.message = _failure_message(name, data)


# --------------------------------------------------------------------------- the adapter


class PlaybookRunner:
    """Adapter around ``ansible_runner.run``; safe to use from several threads at once."""

    def __init__(
        self,
        runs_dir: Path,
        *,
        keep_runs: int = 50,
        host_key_checking: bool = True,
        poll_interval_s: float = 1.0,
    ) -> None:
        if keep_runs < 1:
            raise ValueError("keep_runs must be >= 1")
        if not poll_interval_s > 0:
            raise ValueError("poll_interval_s must be > 0")
        self.runs_dir = Path(runs_dir).absolute()
        self.keep_runs = keep_runs
        self.host_key_checking = host_key_checking
        self.poll_interval_s = poll_interval_s
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
        state = _RunState(ident, started + run.timeout_s, cancel, on_event)
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
        env.update(run.envvars)
        env["ANSIBLE_HOST_KEY_CHECKING"] = "True" if self.host_key_checking else "False"
        env[process_tree.RUN_IDENT_ENV] = ident
        env[process_tree.RUNS_DIR_ENV] = str(self.runs_dir)
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
        message = _truncate(message)
        log.error("run %s: error: %s", ident, message)
        hosts = {h: HostResult(h, HostStatus.NOT_RUN, False, message) for h in run.hosts}
        return RunResult(ident, "error", rc, hosts, time.monotonic() - started, run_dir, message)

    def _execute(
        self, run: PlaybookRun, ident: str, run_dir: Path, state: _RunState, started: float
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

        cmdline = " ".join(shlex.quote(a) for a in ("-e", f"@{extravars_path}", str(playbook)))
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
        state: _RunState,
        started: float,
        runner: Any,
        artifact_dir: Path,
    ) -> RunResult:
        rc: int | None = getattr(runner, "rc", None)
        status: str = getattr(runner, "status", "error")
        duration = time.monotonic() - started

        if state.stopped is not None:
            message = (
                f"timed out after {run.timeout_s:g}s" if state.stopped == "timeout" else "canceled"
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
            error = _stdout_error(artifact_dir) or f"ansible-playbook {status} (rc={rc})"
            if any(marker in error.lower() for marker in _NO_HOSTS_MARKERS):
                message = "no requested host is in the inventory"
                hosts = {h: HostResult(h, HostStatus.NOT_RUN, False, message) for h in run.hosts}
                return RunResult(
                    ident, "failed", rc, hosts, duration, run_dir, _truncate(f"{message}: {error}")
                )
            return self._error(run, ident, run_dir, started, error, rc)

        hosts = {h: self._host_from_stats(h, stats, state) for h in run.hosts}
        all_ok = all(r.status is HostStatus.OK for r in hosts.values())
        outcome = "successful" if status == "successful" and all_ok else "failed"
        message = ""
        if outcome == "failed":
            if all_ok:
                message = _stdout_error(artifact_dir) or f"ansible-playbook {status} (rc={rc})"
            else:
                bad = [h for h, r in hosts.items() if r.status is not HostStatus.OK]
                message = _truncate(f"{len(bad)} host(s) not ok: {', '.join(bad)}")
        return RunResult(ident, outcome, rc, hosts, duration, run_dir, message)

    @staticmethod
    def _host_from_stats(host: str, stats: Mapping[str, Any], state: _RunState) -> HostResult:
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
        enforced = {"ANSIBLE_HOST_KEY_CHECKING", process_tree.RUN_IDENT_ENV}
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
