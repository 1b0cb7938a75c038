"""Does a notification receiver or a Git host that is down or slow slow down a rollout?

Runs the real thing in-process, as ``bench.rollback_latency`` does (a bare Git remote, a local
fleet of 4 hosts, the shipped role, real health gates, the daemon's event log and consumers from
``service.wiring``): the initial deploy, then a bad version (its /healthz answers 500) committed
and reconciled: gate failure, rollback, revert pushed. The wall time of that reconcile is
measured with the event consumers (one apprise ``json://`` route and GitHub commit statuses)
pointed at:

* ``none``: no route and no commit statuses (the baseline);
* ``up``: a local receiver that answers at once;
* ``down``: a port nothing listens on (every delivery refused, retried with backoff);
* ``slow``: a local receiver that waits ``SLOW_S`` before each answer.

The figures, not an assert, show whether the consumers stay off the rollout's path (they run
in their own threads; the producers only append to the log). Registered as ``notify_delay``
(not part of ``--quick``: each run deploys and rolls back). Usage:
``.venv/bin/python -m bench --only notify_delay``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench import rollback_latency
from bench.common import git
from bench.registry import Context, Row, register
from bench.rollback_latency import ENV
from reconciler.service import wiring
from reconciler.settings import Settings
from reconciler.testing.fleet import free_port
from reconciler.testing.receiver import Receiver

MODES = ("none", "up", "down", "slow")
SLOW_S = 3.0  # under apprise's 4 s read timeout: slow, yet delivered


def _consumers(base: Path, url: str | None) -> dict[str, Any]:
    """The notifications and commit_status sections pointing at ``url`` (None: none)."""
    if url is None:
        return {}
    urls, token = base / "notify-urls", base / "gh-token"
    urls.write_text(url.replace("http://", "json://") + "/hook\n")
    token.write_text("bench-token\n")
    return {
        "notifications": {"routes": [{"name": "bench", "urls_file": str(urls)}], "attempts": 3},
        "commit_status": {
            "provider": "github",
            "api_url": url,
            "token_file": str(token),
            "repository": "ops/desired-state",
            "attempts": 3,
        },
    }


def once(base: Path, mode: str) -> float:
    """Seconds of the reconcile that rolls a bad version back and pushes the revert."""
    fleet, bare, work = rollback_latency.seed(base, ENV)
    receiver = Receiver(delay=SLOW_S if mode == "slow" else 0.0) if mode in ("up", "slow") else None
    url = {"none": None, "down": f"http://127.0.0.1:{free_port()}"}.get(mode)
    url = receiver.url if receiver is not None else url
    settings = Settings(
        state_dir=base / "state", source={"url": str(bare)}, **_consumers(base, url)
    )
    store = wiring.open_store(settings)
    log = wiring.event_log(settings, store)
    consumers = wiring.event_consumers(settings, store)
    for consumer in consumers:
        consumer.start(log)
    reconciler = wiring.build(settings, store=store, events=log)
    try:
        first = reconciler.reconcile_once()
        if [e.result for e in first.environments] != ["applied"]:
            raise RuntimeError(f"the initial deploy did not apply: {first.environments}")
        (work / "environments" / "prod.yaml").write_text(ENV.format(version="1.1.0"))
        git(work, "commit", "-qam", "bad bump")
        git(work, "push", "-q", str(bare), "HEAD:main")
        bad = git(bare, "rev-parse", "main")
        start = time.monotonic()
        reconciler.reconcile_once()
        elapsed = time.monotonic() - start
        if git(bare, "rev-parse", "main") == bad:
            raise RuntimeError("the bad version was not reverted")
        return elapsed
    finally:
        log.close()
        for consumer in consumers:
            consumer.stop(timeout=1.0)
        if receiver is not None:
            receiver.close()
        store.close()
        fleet.stop()


@register(
    "notify_delay",
    "a bad version rolled back with notification/commit-status receivers up, down or slow",
    in_quick=False,
)
def run(ctx: Context) -> list[Row]:
    runs = ctx.reps(3, 1)
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(runs):
        for mode in MODES:  # interleaved: a drift in machine load touches every mode alike
            with tempfile.TemporaryDirectory(prefix=f"bench-notify-{mode}-") as tmp:
                samples[mode].append(once(Path(tmp), mode))
    rows = [
        Row.of(
            f"notify.rollback.{mode}",
            f"bad version rolled back + revert pushed, receivers {mode}",
            values,
            note="" if mode != "slow" else f"each answer after {SLOW_S:.0f}s",
        )
        for mode, values in samples.items()
    ]
    base = rows[0].value
    for row in rows[1:]:
        rows.append(
            Row(
                f"notify.rollback.{row.key.rsplit('.', 1)[1]}_vs_none",
                f"receivers {row.key.rsplit('.', 1)[1]} / none",
                row.value / base if base else 0.0,
                "x",
                kind="derived",
            )
        )
    return rows
