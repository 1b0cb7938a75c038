"""The ``reconciler`` command line (typer + rich): the app, shared options and helpers.

Commands live in ``cli.inspect`` (validate, diff, plan, status, history) and ``cli.operate``
(sync, rollback, suspend, resume, run, migrate, demo). Exit codes: 0 success / no drift; 1
problems found (invalid desired state, a rejected commit, drift, failed hosts or groups); 2
usage or configuration errors, a state store that cannot be reached or refuses (its message,
no traceback), and a fetch that failed (what is shown is then as of the last fetch).
Output is terminal-safe (control characters escaped) and messages are length-capped
(``MESSAGE_LIMIT``). The process runs with 077 added to its umask: every file it (or git, or
Ansible) creates is private to the user.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from reconciler.record import StoreError, StoreUnavailable
from reconciler.report.terminal import Output, SafeConsole
from reconciler.service import resources
from reconciler.settings import Settings
from reconciler.support import logs
from reconciler.support.text import safe

app = typer.Typer(
    name="reconciler",
    help="GitOps for Ansible-managed hosts: converge a fleet to the versions declared in Git.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Everything printed is terminal-safe: control characters show as escapes (terminal.SafeConsole).
console: Console = SafeConsole()
errors: Console = SafeConsole(stderr=True)
#: The longest error message or problem printed whole (longer ones are cut, saying so).
MESSAGE_LIMIT = 2000

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="RECONCILER_CONFIG",
        help="Configuration YAML file.",
        exists=True,
        dir_okay=False,
    ),
]
EnvOption = Annotated[
    list[str] | None, typer.Option("--env", "-e", help="Only these environments (repeatable).")
]
OutputOption = Annotated[
    Output,
    typer.Option(
        "--output",
        "-o",
        help="table (fits 80 columns), wide (every column) or json (for scripts).",
        case_sensitive=False,
    ),
]


class _State:
    config: Path | None = None


_state = _State()


@app.callback()
def _main(
    config: ConfigOption = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "warning",
    log_format: Annotated[str, typer.Option(help="json or console")] = "console",
) -> None:
    _state.config = config
    logs.configure(log_level, log_format)


def fail(message: str, code: int = 1) -> NoReturn:
    errors.print(Text(safe(message, MESSAGE_LIMIT), style="red"))
    raise typer.Exit(code)


def settings(config: Path | None = None) -> Settings:
    """The configuration; a ``--config`` given after the command wins over one before it."""
    if config:
        _state.config = config
    try:
        return Settings.load(_state.config)
    except Exception as exc:  # a configuration error is a usage error
        fail(f"configuration error: {exc}", 2)


def source_settings(config: Path | None) -> Settings:
    """The configuration of a command that reads the Git source (needs ``source.url``, and
    readable credential files when configured)."""
    from reconciler.service import wiring

    loaded = settings(config)
    if not loaded.source.url:
        fail(
            "configuration error: source.url is not set (config file or RECONCILER_SOURCE__URL)",
            2,
        )
    try:
        wiring.git_auth(loaded)
    except (OSError, ValueError) as exc:
        fail(f"configuration error: {exc}", 2)
    return loaded


def main() -> None:
    os.environ.setdefault("ANSIBLE_NOCOLOR", "1")
    resources.private_umask()  # what we, git and Ansible create under the state dir is private
    try:
        app()
    except (StoreError, StoreUnavailable) as exc:  # unreachable, or an unknown schema: no trace
        errors.print(Text(safe(str(exc), MESSAGE_LIMIT), style="red"))
        raise SystemExit(2) from None
