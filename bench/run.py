"""Run the benchmark suite and print a table of medians; write them to bench/results/latest.json.

Usage: ``.venv/bin/python -m bench [--quick] [--only NAME[,NAME]] [--details] [--list]
[--markdown]``
(or ``.venv/bin/python bench/run.py ...``). ``--only`` may repeat. The JSON file keeps the entries
of benchmarks not run this time, each stamped with when and how (quick or not) it ran.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.metadata
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.registry import BENCHMARKS, MODULES, Benchmark, Context, Row
from reconciler.support import logs

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = next(
        (
            int(line.split()[1]) * 1024
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    git = subprocess.run(["git", "--version"], capture_output=True, text=True, check=False)
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1),
        "python": platform.python_version(),
        "ansible-core": importlib.metadata.version("ansible-core"),
        "ansible-runner": importlib.metadata.version("ansible-runner"),
        "git": git.stdout.strip().removeprefix("git version "),
        "sqlite": sqlite3.sqlite_version,
    }


def _seconds(value: float) -> str:
    if abs(value) < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if abs(value) < 1:
        return f"{value * 1e3:.3g} ms"
    return f"{value:.2f} s"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "s":
        return _seconds(value)
    if unit == "x":
        return f"{value:,.2f}x" if value < 100 else f"{value:,.0f}x"
    if unit == "%":
        return f"{value:.2g} %" if value < 1 else f"{value:.1f} %"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    return f"{value:,.4g} {unit}"


def table(entries: dict[str, dict[str, Any]], details: bool) -> Table:
    out = Table(title="reconciler benchmarks (median of n runs)", show_lines=False)
    for column in ("benchmark", "case", "median", "min", "max", "spread", "n", "kind", "note"):
        justify = "right" if column in ("median", "min", "max", "spread", "n") else "left"
        out.add_column(column, justify=justify, overflow="fold")
    for name, entry in entries.items():
        if entry.get("error"):
            out.add_row(name, "[red]failed[/red]", "", "", "", "", "", "", entry["error"][:120])
            continue
        for raw in entry["rows"]:
            if raw.get("detail") and not details:
                continue
            row = Row(**{k: v for k, v in raw.items() if k != "spread"})
            spread = f"{100 * row.spread:.0f} %" if row.spread is not None else ""
            out.add_row(
                name,
                row.case,
                fmt(row.value, row.unit),
                fmt(row.low, row.unit),
                fmt(row.high, row.unit),
                spread,
                str(row.runs),
                row.kind,
                row.note,
            )
            name = ""
        out.add_section()
    return out


def _busy_seconds() -> float:
    """CPU-seconds all processes on this machine have used since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    own, children = (
        resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def markdown(path: Path, details: bool) -> str:
    """The figures of ``path`` as a Markdown table, for docs/performance.md."""
    document = json.loads(path.read_text(encoding="utf-8"))
    lines = [
        "| benchmark | case | median | min | max | n | kind | note |",
        "|---|---|--:|--:|--:|--:|---|---|",
    ]
    for name, entry in document["benchmarks"].items():
        mode = "quick, " if entry["quick"] else ""
        share = entry.get("other_cpu_share")
        busy = f"others used {100 * share:.0f} % of the CPUs" if share is not None else ""
        label = f"{name} ({mode}{entry['started'][:10]}; {busy})"
        for raw in entry["rows"]:
            if raw.get("detail") and not details:
                continue
            row = Row(**{k: v for k, v in raw.items() if k != "spread"})
            cells = [
                label,
                row.case,
                fmt(row.value, row.unit),
                fmt(row.low, row.unit),
                fmt(row.high, row.unit),
                str(row.runs),
                row.kind,
                row.note,
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
            label = ""
    return "\n".join(lines)


def run_one(bench: Benchmark, quick: bool, results: dict[str, list[Row]]) -> dict[str, Any]:
    before, started = os.getloadavg(), time.monotonic()
    busy, own = _busy_seconds(), _own_seconds()
    entry: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "summary": bench.summary,
        "loadavg_before": [round(x, 2) for x in before],
    }
    with tempfile.TemporaryDirectory(prefix=f"bench-{bench.name}-") as tmp:
        ctx = Context(quick=quick, workdir=Path(tmp), results=results)
        try:
            rows = bench.func(ctx)
            results[bench.name] = rows
            entry["rows"] = [r.to_json() for r in rows]
            entry["error"] = None
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            traceback.print_exc()
            entry["rows"], entry["error"] = [], f"{type(exc).__name__}: {exc}"
    elapsed = time.monotonic() - started
    others = max(0.0, (_busy_seconds() - busy) - (_own_seconds() - own))
    entry["seconds"] = round(elapsed, 1)
    entry["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    # CPU the rest of the machine used meanwhile, as a share of all cores (processes this suite
    # started but never reaped, like the test apps, count as others: a few percent at most).
    entry["other_cpu_share"] = round(others / (elapsed * (os.cpu_count() or 1)), 3)
    return entry


def write_json(path: Path, info: dict[str, Any], entries: dict[str, dict[str, Any]]) -> None:
    old: dict[str, Any] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
    benchmarks = {**old.get("benchmarks", {}), **entries}
    document = {
        "schema": 1,
        "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": info,
        "benchmarks": {n: benchmarks[n] for n in [*BENCHMARKS, *benchmarks] if n in benchmarks},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes/repetitions (~2 min)")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only these benchmarks (repeat or comma-separate)",
    )
    parser.add_argument("--details", action="store_true", help="print the breakdown rows too")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument(
        "--markdown", action="store_true", help="print the JSON file as a Markdown table; no run"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON file ({RESULTS})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for module in MODULES:
        importlib.import_module(module)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 200)
    if args.markdown:
        print(markdown(args.output, args.details))
        return 0
    if args.list:
        for bench in BENCHMARKS.values():
            quick = "" if bench.in_quick else "  (not in --quick)"
            console.print(f"{bench.name:18} {bench.summary}{quick}")
        return 0
    wanted = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in BENCHMARKS]
    if unknown:
        console.print(f"unknown benchmark(s): {', '.join(unknown)}; see --list")
        return 2
    selected = [
        b
        for b in BENCHMARKS.values()
        if ((b.name in wanted) if wanted else (b.in_quick or not args.quick))
    ]
    logs.configure("critical", "console")  # expected failures (rollback bench) are not news
    info = machine()
    console.print(
        f"[dim]{info['cpu']}, {info['cpus']} CPUs, {info['memory_gib']} GiB, "
        f"Python {info['python']}, ansible-core {info['ansible-core']}, "
        f"ansible-runner {info['ansible-runner']}[/dim]"
    )
    results: dict[str, list[Row]] = {}
    entries: dict[str, dict[str, Any]] = {}
    for bench in selected:
        console.print(f"[bold]{bench.name}[/bold]: {bench.summary} ...")
        entries[bench.name] = entry = run_one(bench, args.quick, results)
        share = entry["other_cpu_share"]
        noisy = " [yellow](busy machine: figures may be noisy)[/yellow]" if share > 0.2 else ""
        console.print(
            f"  done in {entry['seconds']:.0f} s; other processes used {100 * share:.0f} % "
            f"of the CPUs meanwhile{noisy}"
        )
    console.print(table(entries, args.details))
    write_json(args.output, info, entries)
    console.print(f"[dim]written to {args.output}[/dim]")
    return 1 if any(e.get("error") for e in entries.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
