"""Records to rows and back: the column names of the schema, for every SQL backend.

Contract:
* ``*_row(record)`` gives ``column -> value`` in table order, ready for a driver: states as
  their text, JSON fields as compact JSON text, booleans as integers.
* ``deployed(row)``, ``run(row)``... read a row (anything indexable by column name: a
  ``sqlite3.Row``, a psycopg dict row) into the typed record: states become enum members,
  JSON text is decoded (an already decoded value, as a ``jsonb`` column gives, is kept), the
  ``''`` the first release stored for "never reconciled" becomes ``None``.
* ``insert_sql`` writes the ``INSERT`` (or upsert: ``ON CONFLICT ... DO UPDATE``, the same
  in SQLite and PostgreSQL) of such a row, with the driver's placeholder; ``events_sql`` the
  filtered, paged ``SELECT`` of the event log and ``prune_*_sql`` its bounded deletes (both
  dialects: they use the primary key and ``LIMIT``/``OFFSET`` only).
* Anything that does not convert raises ``ValueError`` (an unknown state, broken JSON, a
  non-terminal state given to a ``finish_*`` method, an unknown environment field); backends
  raise it as is for arguments and turn it into ``StoreError`` for stored rows.

Pure: no driver, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from reconciler.record.protocols import EnvironmentFields
from reconciler.record.types import (
    DeployedVersion,
    DriftMark,
    EnvironmentStatus,
    Event,
    ObservedVersion,
    QuarantineRecord,
    RolloutRecord,
    RunRecord,
    StepRecord,
)
from reconciler.states import (
    EnvironmentResult,
    EventKind,
    ObservationStatus,
    Phase,
    RolloutState,
    RolloutTrigger,
    Severity,
    StepState,
)

ENVIRONMENT_FIELDS = EnvironmentFields.__optional_keys__


class Row(Protocol):
    def __getitem__(self, column: str, /) -> Any: ...


def json_text(value: Any) -> str:
    """Compact JSON text, as every JSON column stores it."""
    return json.dumps(value, separators=(",", ":"))


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


# -- records to rows
def insert_sql(
    table: str,
    columns: Sequence[str],
    key: Sequence[str] = (),
    update: Sequence[str] = (),
    mark: str = "?",
) -> str:
    """``INSERT`` of ``columns`` (our own names, never input); an upsert on ``key``."""
    marks = ", ".join([mark] * len(columns))
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608
    if key:
        sets = ", ".join(f"{c} = excluded.{c}" for c in update)
        sql += f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"
    return sql


def deployed_row(r: DeployedVersion) -> dict[str, Any]:
    return {
        "environment": r.environment,
        "host": r.host,
        "app": r.app,
        "version": r.version,
        "grp": r.group,
        "commit_sha": r.commit,
        "rollout_id": r.rollout_id,
        "deployed_at": r.deployed_at,
    }


def run_row(r: RunRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "environment": r.environment,
        "commit_sha": r.commit,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "result": EnvironmentResult(r.result).value,
        "summary": json_text(dict(r.summary)),
    }


def rollout_row(r: RolloutRecord) -> dict[str, Any]:
    return {
        "id": r.id,
        "run_id": r.run_id,
        "environment": r.environment,
        "grp": r.group,
        "commit_sha": r.commit,
        "apps": json_text(dict(r.apps)),
        "state": RolloutState(r.state).value,
        "reason": r.reason,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "trigger": RolloutTrigger(r.trigger).value,
    }


def step_row(s: StepRecord) -> dict[str, Any]:
    return {
        "rollout_id": s.rollout_id,
        "phase": Phase(s.phase).value,
        "step_index": s.index,
        "percent": s.percent,
        "hosts": json_text(list(s.hosts)),
        "state": StepState(s.state).value,
        "host_results": json_text(dict(s.host_results)),
        "gate_results": json_text(list(s.gate_results)),
        "run_dir": s.run_dir,
        "started_at": s.started_at,
        "finished_at": s.finished_at,
        "attempts": json_text(list(s.attempts)),
        "bake_until": s.bake_until,
    }


#: The columns ``journal_step`` rewrites on a step already journalled (its key stays).
STEP_UPDATE = (
    "hosts", "state", "host_results", "gate_results", "run_dir", "finished_at", "attempts",
    "bake_until",
)  # fmt: skip


def observed_row(r: ObservedVersion) -> dict[str, Any]:
    return {
        "environment": r.environment,
        "host": r.host,
        "app": r.app,
        "version": r.version,
        "status": ObservationStatus(r.status).value,
        "detail": r.detail,
        "observed_at": r.observed_at,
    }


def drift_row(r: DriftMark) -> dict[str, Any]:
    return {
        "environment": r.environment,
        "host": r.host,
        "app": r.app,
        "since": r.since,
        "healed_at": r.healed_at,
        "flapping": int(r.flapping),
    }


def quarantine_row(r: QuarantineRecord) -> dict[str, Any]:
    return {
        "environment": r.environment,
        "grp": r.group,
        "fingerprint": r.fingerprint,
        "commit_sha": r.commit,
        "rollout_id": r.rollout_id,
        "reason": r.reason,
        "revert": r.revert,
        "created_at": r.created_at,
    }


def event_row(e: Event) -> dict[str, Any]:
    """The row of a new event (no ``id``: the store gives it)."""
    return {
        "at": e.at,
        "kind": EventKind(e.kind).value,
        "severity": Severity(e.severity).value,
        "environment": e.environment,
        "grp": e.group,
        "rollout_id": e.rollout_id,
        "commit_sha": e.commit,
        "summary": e.summary,
        "details": json_text(dict(e.details)),
    }


def events_sql(
    *,
    environment: str | None = None,
    group: str | None = None,
    kinds: Collection[EventKind] | None = None,
    severities: Collection[Severity] | None = None,
    after: int | None = None,
    before: int | None = None,
    limit: int = 100,
    oldest_first: bool = False,
    mark: str = "?",
) -> tuple[str, list[Any]]:
    """The ``SELECT`` of ``Events.events`` and its parameters (values never enter the text)."""
    where: list[str] = []
    params: list[Any] = []

    def among(column: str, values: Collection[str]) -> None:
        where.append(f"{column} IN ({', '.join([mark] * len(values))})" if values else "1 = 0")
        params.extend(values)

    for column, value in (("environment", environment), ("grp", group)):
        if value is not None:
            where.append(f"{column} = {mark}")
            params.append(value)
    if kinds is not None:
        among("kind", sorted(EventKind(k).value for k in kinds))
    if severities is not None:
        among("severity", sorted(Severity(s).value for s in severities))
    if after is not None:
        where.append(f"id > {mark}")
        params.append(int(after))
    if before is not None:
        where.append(f"id < {mark}")
        params.append(int(before))
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    order = "ASC" if oldest_first else "DESC"
    params.append(max(0, int(limit)))
    return f"SELECT * FROM events {clause}ORDER BY id {order} LIMIT {mark}", params  # noqa: S608


def prune_count_sql(mark: str = "?") -> str:
    """Delete the events whose id is not among the newest ``keep`` ids (one parameter:
    ``keep``): at most ``keep`` stay, found through the primary key, not by counting rows."""
    return f"DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - {mark}"  # noqa: S608


def prune_age_sql(mark: str = "?") -> str:
    """Delete the events before the first one at or after a time (one parameter: the time).
    Ids grow with time, so the oldest rows are walked once, in id order, and deleted."""
    first = f"SELECT id FROM events WHERE at >= {mark} ORDER BY id LIMIT 1"  # noqa: S608
    bound = f"COALESCE(({first}), (SELECT MAX(id) + 1 FROM events), 0)"  # noqa: S608
    return f"DELETE FROM events WHERE id < {bound}"  # noqa: S608


def environment_values(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The columns ``update_environment`` sets; ValueError for an unknown field or result."""
    unknown = set(fields) - ENVIRONMENT_FIELDS
    if unknown:
        raise ValueError(f"unknown environment fields: {sorted(unknown)}")
    values = dict(fields)
    if "suspended" in values:
        values["suspended"] = int(bool(values["suspended"]))
    if "last_result" in values:
        result = values["last_result"]
        values["last_result"] = "" if result is None else EnvironmentResult(result).value
    return values


def finished_result(result: EnvironmentResult | str) -> str:
    """The text of a run's final result; ValueError unless it is terminal."""
    result = EnvironmentResult(result)
    if result is EnvironmentResult.RUNNING:
        raise ValueError("a run finishes with a terminal result, not 'running'")
    return result.value


def finished_state(state: RolloutState | str) -> str:
    """The text of a rollout's final state; ValueError unless it is terminal."""
    state = RolloutState(state)
    if not state.terminal:
        raise ValueError(f"a rollout finishes in a terminal state, not {state.value!r}")
    return state.value


# -- rows to records
def deployed(r: Row) -> DeployedVersion:
    return DeployedVersion(
        r["environment"],
        r["host"],
        r["app"],
        r["version"],
        r["grp"],
        r["commit_sha"],
        r["rollout_id"],
        r["deployed_at"],
    )


def run(r: Row) -> RunRecord:
    return RunRecord(
        r["id"],
        r["environment"],
        r["commit_sha"],
        r["started_at"],
        r["finished_at"],
        EnvironmentResult(r["result"]),
        _loads(r["summary"]),
    )


def rollout(r: Row) -> RolloutRecord:
    return RolloutRecord(
        r["id"],
        r["run_id"],
        r["environment"],
        r["grp"],
        r["commit_sha"],
        _loads(r["apps"]),
        RolloutState(r["state"]),
        r["reason"],
        r["started_at"],
        r["finished_at"],
        RolloutTrigger(r["trigger"]),
    )


def step(r: Row) -> StepRecord:
    return StepRecord(
        r["rollout_id"],
        Phase(r["phase"]),
        r["step_index"],
        r["percent"],
        tuple(_loads(r["hosts"])),
        StepState(r["state"]),
        _loads(r["host_results"]),
        _loads(r["gate_results"]),
        r["run_dir"],
        r["started_at"],
        r["finished_at"],
        tuple(_loads(r["attempts"])),
        r["bake_until"],
    )


def status(r: Row) -> EnvironmentStatus:
    return EnvironmentStatus(
        r["environment"],
        bool(r["suspended"]),
        r["last_attempted_commit"],
        r["last_applied_commit"],
        EnvironmentResult(r["last_result"]) if r["last_result"] else None,
        r["last_error"],
        r["updated_at"],
    )


def quarantine(r: Row) -> QuarantineRecord:
    return QuarantineRecord(
        r["environment"],
        r["grp"],
        r["fingerprint"],
        r["commit_sha"],
        r["rollout_id"],
        r["reason"],
        r["revert"],
        r["created_at"],
    )


def observed(r: Row) -> ObservedVersion:
    return ObservedVersion(
        r["environment"],
        r["host"],
        r["app"],
        r["version"],
        ObservationStatus(r["status"]),
        r["detail"],
        r["observed_at"],
    )


def drift(r: Row) -> DriftMark:
    return DriftMark(
        r["environment"], r["host"], r["app"], r["since"], r["healed_at"], bool(r["flapping"])
    )


def event(r: Row) -> Event:
    return Event(
        int(r["id"]),
        r["at"],
        EventKind(r["kind"]),
        Severity(r["severity"]),
        r["summary"],
        r["environment"],
        r["grp"],
        r["rollout_id"],
        r["commit_sha"],
        _loads(r["details"]),
    )
