"""What the CLI prints can never drive the terminal, and long messages are capped.

Text from outside (a Git error naming a hostile path, a commit subject, a daemon's answer)
goes through ``terminal.SafeConsole``: control characters are shown as escapes. Error messages
are cut at ``MESSAGE_LIMIT`` characters, saying how much was left out.
"""

from __future__ import annotations

import io
import os
import subprocess

from rich.table import Table
from rich.text import Text

from reconciler.cli.app import MESSAGE_LIMIT
from reconciler.report.terminal import SafeConsole
from reconciler.support.text import escape_controls, safe
from tests.end_to_end.conftest import RECONCILER

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil\r"


def _raw_controls(text: str) -> list[str]:
    return [c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F]


def test_safe_escapes_controls_and_caps_length():
    assert safe(HOSTILE, 100) == "\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\u202eevil\\r"
    assert escape_controls(escape_controls(HOSTILE)) == escape_controls(HOSTILE)
    # one-line messages: a newline could fake a line of output, so it is escaped too;
    # whole blocks a console prints keep their lines (escape_controls)
    assert safe("keep\nlines\tand tabs", 100) == "keep\\nlines\\tand tabs"
    assert escape_controls("keep\nlines\tand tabs") == "keep\nlines\tand tabs"
    cut = safe("x" * 100_000, 50)
    assert len(cut) == 50 and cut.endswith("chars]") and cut.startswith("x" * 30)


def test_the_safe_console_prints_no_control_character_of_the_text():
    out = io.StringIO()
    console = SafeConsole(file=out, width=80, color_system=None)
    table = Table("subject")
    table.add_row(HOSTILE)
    console.print(Text(HOSTILE, style="red"))
    console.print(table)
    console.print(HOSTILE)
    printed = out.getvalue()
    assert _raw_controls(printed) == []
    assert "\\x1b]0;pwned" in printed


def test_a_hostile_error_reaches_the_terminal_escaped_and_cut(tmp_path):
    hostile_path = "/nonexistent/" + HOSTILE + "a" * 10_000
    config = tmp_path / "reconciler.yaml"
    # YAML's double-quoted scalars decode \x1b, \u202e...: the URL holds the real characters
    config.write_text(
        f'state_dir: {tmp_path / "state"}\nsource:\n  url: "{escape_controls(hostile_path)}"\n'
    )
    result = subprocess.run(
        [RECONCILER, "--config", str(config), "diff"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert result.returncode in (1, 2), result.stderr
    assert "cannot clone" in result.stderr
    assert _raw_controls(result.stdout + result.stderr) == []
    assert "\\x1b]0;pwned" in result.stderr
    assert " chars]" in result.stderr
    shown = result.stderr[result.stderr.index("source: fetch failed") :]
    shown = shown[: shown.index(" chars]")].replace("\n", "")
    assert len(shown) < MESSAGE_LIMIT + 200
