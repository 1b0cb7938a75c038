"""The state store calls of an idle cycle, SQLite vs PostgreSQL, at 1,000 hosts.

An idle reconcile of one environment (desired == recorded, see ``bench.idle_cycle``) makes a
fixed set of store calls: the source stage reads and writes its facts (``get_meta`` x2,
``set_meta`` x2), planning reads ``recorded_versions`` (1,000 hosts), ``observed`` and
``drift_marks`` (observed state, 10% of the hosts with a drift mark), ``quarantines`` and
``environment_statuses``, and the end of the cycle writes ``update_environment``. Each call is
timed on its own (median of many), then the whole sequence ("cycle").

Both stores are opened through ``service.wiring.open_store``, as the daemon opens them: SQLite
in a temp state dir (WAL, ``synchronous=NORMAL``), PostgreSQL in a throwaway local server
(``reconciler.testing.postgres``: loopback TCP, ``fsync=off``, on the same 2 cores as the
benchmark). The PostgreSQL figures are thus a floor: a real server adds the network round trip
(about 0.1-0.5 ms in one data center) to each of the 10 calls, and its commits wait for the
disk. Without PostgreSQL installed only the SQLite rows are produced. No assertions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bench.registry import DERIVED, Context, Row, register
from reconciler.record import DeployedVersion, DriftMark, ObservedVersion, StateStore
from reconciler.service import wiring
from reconciler.settings import Settings
from reconciler.states import EnvironmentResult, ObservationStatus
from reconciler.testing.postgres import PostgresCluster, server_bin

HOSTS = 1_000
ENVIRONMENT = "prod"


def _populate(store: StateStore) -> None:
    hosts = [f"web-{i:04d}" for i in range(HOSTS)]
    commit = "c" * 40
    store.record_deployed(
        [DeployedVersion(ENVIRONMENT, h, "shop", "2.4.1", "web", commit, "r1", 1.0) for h in hosts]
    )
    store.record_observed(
        [
            ObservedVersion(ENVIRONMENT, h, "shop", "2.4.1", ObservationStatus.OK, "", 2.0)
            for h in hosts
        ]
    )
    store.set_drift_marks(
        ENVIRONMENT, [DriftMark(ENVIRONMENT, h, "shop", 3.0, None, False) for h in hosts[::10]]
    )
    store.set_meta("last_valid_commit", "c" * 40)
    store.update_environment(ENVIRONMENT, 4.0, last_result=EnvironmentResult.IN_SYNC)


def _operations(store: StateStore) -> dict[str, Callable[[], object]]:
    """The calls of one idle cycle, in the order a cycle makes them."""
    return {
        "get_meta x2": lambda: (store.get_meta("last_valid_commit"), store.get_meta("problems")),
        "set_meta x2": lambda: (
            store.set_meta("last_valid_commit", "c" * 40),
            store.set_meta("problems", "[]"),
        ),
        "environment_statuses": store.environment_statuses,
        "quarantines": lambda: store.quarantines(ENVIRONMENT),
        "recorded_versions": lambda: store.recorded_versions(ENVIRONMENT),
        "observed": lambda: store.observed(ENVIRONMENT),
        "drift_marks": lambda: store.drift_marks(ENVIRONMENT),
        "update_environment": lambda: store.update_environment(
            ENVIRONMENT, time.time(), last_result=EnvironmentResult.IN_SYNC, last_error=""
        ),
    }


def _measure(name: str, store: StateStore, reps: int) -> list[Row]:
    _populate(store)
    operations = _operations(store)
    for call in operations.values():  # warm up: connections, prepared statements, caches
        call()
    rows = []
    for op, call in operations.items():
        samples = []
        for _ in range(reps):
            started = time.perf_counter()
            call()
            samples.append(time.perf_counter() - started)
        rows.append(Row.of(f"store.{name}.{op.split()[0]}", f"{name}: {op}", samples, detail=True))
    cycles = []
    for _ in range(max(5, reps // 4)):
        started = time.perf_counter()
        for call in operations.values():
            call()
        cycles.append(time.perf_counter() - started)
    rows.append(
        Row.of(
            f"store.{name}.cycle",
            f"{name}: store calls of an idle cycle, {HOSTS:,} hosts",
            cycles,
            note=f"{len(operations) + 2} calls",
        )
    )
    return rows


@register("store", "store calls of an idle cycle at 1,000 hosts: SQLite vs PostgreSQL")
def run(ctx: Context) -> list[Row]:
    reps = ctx.reps(200, 40)
    sqlite = Settings(state_dir=ctx.workdir / "sqlite")
    store = wiring.open_store(sqlite)
    try:
        rows = _measure("sqlite", store, reps)
    finally:
        store.close()
    found: Path | None = server_bin()
    if found is None:
        return [*rows, Row("store.postgresql.skipped", "PostgreSQL not installed", 0, "rows")]
    with PostgresCluster.start(found) as cluster:
        url = cluster.create_database("bench")
        settings = Settings(state_dir=ctx.workdir / "pg", state={"url": url})
        store = wiring.open_store(settings)
        try:
            rows += _measure("postgresql", store, reps)
        finally:
            store.close()
    lite, pg = rows_by_key(rows, "store.sqlite.cycle"), rows_by_key(rows, "store.postgresql.cycle")
    rows.append(
        Row(
            "store.ratio.cycle",
            "PostgreSQL / SQLite, store calls of an idle cycle",
            pg.value / lite.value,
            "x",
            kind=DERIVED,
            note="local server, fsync off: a floor",
        )
    )
    return rows


def rows_by_key(rows: list[Row], key: str) -> Row:
    return next(r for r in rows if r.key == key)
