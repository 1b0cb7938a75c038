"""THE status read model: one shape of "what is desired, what runs, what happened", built once
and rendered by every surface (``GET /api/v1/status`` and ``/environments``, ``reconciler
status``, the Prometheus gauges, the web page).

Contract: ``build(...)`` reads the desired state in force (a ``DesiredSnapshot``), the state
store and, in the daemon, what is reconciling now; it writes nothing. Pure functions of those
inputs, so the API, the CLI and the metrics cannot disagree:

* drift per group and app counts hosts whose recorded version differs from the desired one;
* a quarantine is listed (and a group ``quarantined``) only while it holds, i.e. while the
  desired versions in force are the ones that failed (``plan.policy.quarantine_holds``): once a
  revert or a new commit is in force it is gone everywhere, before the next reconcile lifts it
  from the store;
* the source says which commit is in force (with author and subject), whether the newest
  commit was rejected and why, and whether the last fetch worked.

The models are pydantic models: the API returns them as they are, the CLI parses the daemon's
JSON back into them, so both render the very same objects.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from pydantic import BaseModel, Field

from reconciler import __version__
from reconciler.plan import canary, policy
from reconciler.record import EnvironmentStatus, QuarantineRecord
from reconciler.source import facts
from reconciler.source.refresh import DesiredSnapshot
from reconciler.support.redaction import redact


class StatusStore(Protocol):
    """What the read model reads of the state store (``record.StateStore`` is one)."""

    def environment_statuses(self) -> list[EnvironmentStatus]: ...
    def quarantines(self, environment: str | None = None) -> list[QuarantineRecord]: ...
    def recorded_versions(self, environment: str) -> dict[tuple[str, str], str]: ...
    def get_meta(self, key: str) -> str | None: ...


# ------------------------------------------------------------------------------ the model


class CommitView(BaseModel):
    sha: str
    author: str
    subject: str
    committed_at: float


class SourceView(BaseModel):
    url: str = Field(description="The Git source, credentials masked.")
    branch: str
    up: bool = Field(description="The last fetch succeeded.")
    error: str = Field(description="Why the last fetch failed; empty when it worked.")
    valid_commit: str | None = Field(description="The commit in force.")
    commit: CommitView | None = Field(default=None, description="The commit in force.")
    rejected_commit: str | None = Field(description="The newest commit, when rejected.")
    problems: list[str] = Field(description="Why it was rejected: file:line: message.")
    last_fetch_at: float | None


class QuarantineView(BaseModel):
    environment: str
    group: str
    commit: str | None
    rollout_id: str | None
    reason: str
    revert: str
    created_at: float


class GroupView(BaseModel):
    name: str
    apps: dict[str, str] = Field(description="Desired versions.")
    hosts: int
    drifted_hosts: int = Field(description="Hosts with at least one app not at its version.")
    drift: dict[str, int] = Field(
        default_factory=dict, description="Per app: hosts whose recorded version differs."
    )
    in_sync: bool
    quarantined: bool
    after: list[str]


class HostApp(BaseModel):
    group: str
    host: str
    app: str
    desired: str
    deployed: str | None
    in_sync: bool


class EnvironmentView(BaseModel):
    name: str
    suspended: bool
    reconciling: bool
    last_result: str
    last_error: str
    last_attempted_commit: str | None
    last_applied_commit: str | None
    updated_at: float | None
    last_success_at: float | None = None
    groups: list[GroupView]


class EnvironmentDetail(EnvironmentView):
    hosts: list[HostApp]


class DaemonView(BaseModel):
    pid: int
    started_at: float
    ready: bool
    stopping: bool
    running: dict[str, str] = Field(description="Environments reconciling now -> commit.")
    source_failures: int
    source_retry_in: float


class StatusView(BaseModel):
    version: str
    daemon: DaemonView | None
    source: SourceView
    environments: list[EnvironmentView]
    quarantines: list[QuarantineView]


# ------------------------------------------------------------------------------ building


def source_view(
    store: StatusStore, snapshot: DesiredSnapshot | None, url: str, branch: str
) -> SourceView:
    known = facts.read(store)
    commit = snapshot.commit if snapshot else None
    return SourceView(
        url=redact(url),
        branch=branch,
        up=known.up,
        error=known.error,
        valid_commit=commit.sha if commit else known.valid_commit,
        commit=(
            CommitView(
                sha=commit.sha,
                author=commit.author,
                subject=commit.subject,
                committed_at=commit.committed_at,
            )
            if commit
            else None
        ),
        rejected_commit=known.rejected_commit,
        problems=list(known.problems),
        last_fetch_at=known.last_fetch_at,
    )


def _holding(store: StatusStore, snapshot: DesiredSnapshot | None) -> list[QuarantineRecord]:
    """Stored quarantines that still hold against the desired state in force."""
    stored = store.quarantines()
    state = snapshot.state if snapshot else None
    if state is None:
        return stored
    return [
        q
        for q in stored
        if (environment := state.environments.get(q.environment)) is not None
        and q.group in environment.groups
        and policy.quarantine_holds(q, environment.groups[q.group])
    ]


def environment_views(
    store: StatusStore,
    snapshot: DesiredSnapshot | None,
    *,
    reconciling: Collection[str] = (),
    only: str | None = None,
    with_hosts: bool = False,
) -> list[EnvironmentDetail]:
    """Per environment (or only one): its state in the store, groups and drift, hosts."""
    state = snapshot.state if snapshot else None
    statuses = {s.environment: s for s in store.environment_statuses()}
    held = {(q.environment, q.group) for q in _holding(store, snapshot)}
    names = sorted(set(statuses) | set(state.environments if state else ()))
    views = []
    for name in names:
        if only is not None and name != only:
            continue
        status = statuses.get(name) or EnvironmentStatus.unknown(name)
        environment = state.environments.get(name) if state else None
        groups: list[GroupView] = []
        hosts: list[HostApp] = []
        if environment is not None:
            recorded = store.recorded_versions(name)
            rows = canary.drift(environment, recorded)
            for group in environment.groups.values():
                mine = [r for r in rows if r.group == group.name]
                drifted = {r.host for r in mine}
                groups.append(
                    GroupView(
                        name=group.name,
                        apps=dict(group.apps),
                        hosts=len(group.hosts),
                        drifted_hosts=len(drifted),
                        drift={app: sum(1 for r in mine if r.app == app) for app in group.apps},
                        in_sync=not drifted,
                        quarantined=(name, group.name) in held,
                        after=list(group.after),
                    )
                )
                if with_hosts:
                    hosts.extend(
                        HostApp(
                            group=group.name,
                            host=host,
                            app=app,
                            desired=version,
                            deployed=recorded.get((host, app)),
                            in_sync=recorded.get((host, app)) == version,
                        )
                        for host in group.host_names
                        for app, version in group.apps.items()
                    )
        views.append(
            EnvironmentDetail(
                name=name,
                suspended=status.suspended,
                reconciling=name in reconciling,
                last_result=str(status.last_result or ""),
                last_error=status.last_error,
                last_attempted_commit=status.last_attempted_commit,
                last_applied_commit=status.last_applied_commit,
                updated_at=status.updated_at,
                last_success_at=facts.last_success(store, name),
                groups=groups,
                hosts=hosts,
            )
        )
    return views


def build(
    store: StatusStore,
    snapshot: DesiredSnapshot | None,
    *,
    url: str,
    branch: str,
    daemon: DaemonView | None = None,
) -> StatusView:
    """The whole status: source, every environment with its groups, holding quarantines."""
    reconciling = daemon.running if daemon is not None else {}
    return StatusView(
        version=__version__,
        daemon=daemon,
        source=source_view(store, snapshot, url, branch),
        environments=[
            EnvironmentView(**view.model_dump(exclude={"hosts"}))
            for view in environment_views(store, snapshot, reconciling=reconciling)
        ],
        quarantines=[
            QuarantineView(
                environment=q.environment,
                group=q.group,
                commit=q.commit,
                rollout_id=q.rollout_id,
                reason=q.reason,
                revert=q.revert,
                created_at=q.created_at,
            )
            for q in _holding(store, snapshot)
        ],
    )
