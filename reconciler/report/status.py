"""THE status read model: one shape of "what is desired, what runs, what happened", built once
and rendered by every surface (``GET /api/v1/status`` and ``/environments``, ``reconciler
status``, the Prometheus gauges, the web page).

Contract: ``build(...)`` reads the desired state in force (a ``DesiredSnapshot``), the state
store and, in the daemon, what is reconciling now; it writes nothing. Pure functions of those
inputs, so the API, the CLI and the metrics cannot disagree:

* drift per group and app counts hosts whose recorded version differs from the desired one
  (``drift``, as before); beside it, per host and app, the three-way class (desired /
  recorded / observed: ``plan.observed``), the observed version and when it was seen, and per
  group the out-of-band and unknown (unobserved or unreachable) hosts and the oldest
  unresolved drift;
* a quarantine is listed (and a group ``quarantined``) only while it holds, i.e. while the
  desired versions in force are the ones that failed (``plan.policy.quarantine_holds``): once a
  revert or a new commit is in force it is gone everywhere, before the next reconcile lifts it
  from the store;
* per group, its maintenance windows: whether one is open at ``now`` and when the next one
  opens (only when the caller passes ``now``; the read model has no clock of its own);
* the source says which commit is in force (with author and subject), whether the newest
  commit was rejected and why, and whether the last fetch worked;
* per environment, its ``owner``: the replica that reconciles it (``Owners``). With
  PostgreSQL, the holder of its live lease as the leases table says (``record.LeaseHolders``),
  with the lease's expiry and fencing token, the same answer on every replica; null while no
  replica holds a live lease (before the first round, or between a crash and the takeover).
  With SQLite there is one daemon per state (the state-dir flock): the daemon reports itself
  as the owner of every environment, with no expiry and no token; read from the store
  without a daemon (``reconciler status`` with no daemon running), the owner is null: nobody
  reconciles.

The models are pydantic models: the API returns them as they are, the CLI parses the daemon's
JSON back into them, so both render the very same objects.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from typing import Protocol

from pydantic import BaseModel, Field

from reconciler import __version__
from reconciler.desired import windows
from reconciler.desired.model import GroupDesired
from reconciler.plan import observed as drift_model
from reconciler.plan import policy
from reconciler.record import (
    DriftMark,
    EnvironmentStatus,
    LeaseHolders,
    ObservedVersion,
    QuarantineRecord,
)
from reconciler.source import facts
from reconciler.source.refresh import DesiredSnapshot
from reconciler.states import DriftClass
from reconciler.support.redaction import redact


class StatusStore(Protocol):
    """What the read model reads of the state store (``record.StateStore`` is one)."""

    def environment_statuses(self) -> list[EnvironmentStatus]: ...
    def quarantines(self, environment: str | None = None) -> list[QuarantineRecord]: ...
    def recorded_versions(self, environment: str) -> dict[tuple[str, str], str]: ...
    def observed(self, environment: str) -> dict[tuple[str, str], ObservedVersion]: ...
    def drift_marks(self, environment: str) -> dict[tuple[str, str], DriftMark]: ...
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
    out_of_band: dict[str, int] = Field(
        default_factory=dict, description="Per app: hosts that run another version than recorded."
    )
    unknown_hosts: int = Field(default=0, description="Hosts not observed, or unreachable.")
    drift_since: dict[str, float] = Field(
        default_factory=dict, description="Per app: since when its oldest unresolved drift is."
    )
    in_sync: bool
    quarantined: bool
    after: list[str]
    maintenance_windows: int = Field(default=0, description="How many windows (0: any time).")
    window_open: bool | None = Field(
        default=None, description="A window is open now (null: no windows, or not computed)."
    )
    next_window_at: float | None = Field(default=None, description="When the next one opens.")


class HostApp(BaseModel):
    group: str
    host: str
    app: str
    desired: str
    deployed: str | None = Field(description="What reconciler recorded as deployed.")
    in_sync: bool = Field(description="Deployed is desired (observed aside).")
    observed: str | None = Field(default=None, description="What the host last reported.")
    observed_at: float | None = None
    drift: str = Field(
        default="in_sync",
        description="Desired/recorded/observed: in_sync, pending, out_of_band, unknown, new_host.",
    )
    flapping: bool = False


class OwnerView(BaseModel):
    replica: str = Field(description="The replica that reconciles the environment.")
    expires_at: float | None = Field(
        default=None, description="When its lease lapses unless renewed (null: SQLite, no lease)."
    )
    fencing_token: int | None = Field(
        default=None, description="The lease's fencing token (null: SQLite, no lease)."
    )


class Owners(BaseModel):
    """Who owns what: ``leases`` per environment, or ``everything`` for one daemon."""

    leases: dict[str, OwnerView] = Field(default_factory=dict)
    everything: OwnerView | None = None

    def of(self, environment: str) -> OwnerView | None:
        return self.leases.get(environment, self.everything)


def lease_owners(holders: LeaseHolders) -> Owners:
    """The live leases of the leases table (PostgreSQL: the same on every replica)."""
    return Owners(
        leases={
            lease.environment: OwnerView(
                replica=lease.holder, expires_at=lease.expires_at, fencing_token=lease.token
            )
            for lease in holders.leases()
            if lease.live
        }
    )


def sole_owner(replica: str) -> Owners:
    """One daemon owns every environment (SQLite: the state-dir flock)."""
    return Owners(everything=OwnerView(replica=replica))


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
    owner: OwnerView | None = Field(
        default=None, description="The replica reconciling it (null: none now, or no daemon)."
    )
    groups: list[GroupView]


class EnvironmentDetail(EnvironmentView):
    hosts: list[HostApp]


class WebhookView(BaseModel):
    """One webhook delivery as the API answered it (``report.webhook_log``)."""

    at: float
    provider: str
    result: str = Field(description="triggered, ignored, unauthorized, invalid or disabled.")
    detail: str
    commit: str | None = Field(description="The pushed commit, when the payload named one.")
    delivery: str | None = Field(description="The provider's delivery id (its header).")


class DaemonView(BaseModel):
    pid: int
    started_at: float
    ready: bool
    stopping: bool
    running: dict[str, str] = Field(description="Environments reconciling now -> commit.")
    source_failures: int
    source_retry_in: float
    webhooks: list[WebhookView] = Field(
        default_factory=list, description="The newest webhook deliveries, newest first."
    )


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


def _group_view(
    group: GroupDesired,
    states: list[drift_model.HostAppState],
    quarantined: bool,
    now: float | None = None,
) -> GroupView:
    """Drift counts keep their meaning: ``drift``/``drifted_hosts`` are desired != recorded;
    out-of-band and unknown hosts are counted beside them."""
    window_open: bool | None = None
    next_window_at: float | None = None
    if group.maintenance_windows and now is not None:
        moment = datetime.fromtimestamp(now, UTC)
        window_open = windows.windows_open(group.maintenance_windows, moment)
        following = windows.next_window(group.maintenance_windows, moment)
        next_window_at = following.timestamp() if following is not None else None
    pending = [s for s in states if s.recorded != s.desired]
    out_of_band = [s for s in states if s.drift is DriftClass.OUT_OF_BAND]
    since: dict[str, float] = {}
    for s in states:
        if s.since is not None:
            since[s.app] = min(since.get(s.app, s.since), s.since)
    return GroupView(
        name=group.name,
        apps=dict(group.apps),
        hosts=len(group.hosts),
        drifted_hosts=len({s.host for s in pending}),
        drift={app: sum(1 for s in pending if s.app == app) for app in group.apps},
        out_of_band={app: sum(1 for s in out_of_band if s.app == app) for app in group.apps},
        unknown_hosts=len({s.host for s in states if s.drift is DriftClass.UNKNOWN}),
        drift_since=since,
        in_sync=not pending,
        quarantined=quarantined,
        after=list(group.after),
        maintenance_windows=len(group.maintenance_windows),
        window_open=window_open,
        next_window_at=next_window_at,
    )


def environment_views(
    store: StatusStore,
    snapshot: DesiredSnapshot | None,
    *,
    reconciling: Collection[str] = (),
    only: str | None = None,
    with_hosts: bool = False,
    now: float | None = None,
    owners: Owners | None = None,
) -> list[EnvironmentDetail]:
    """Per environment (or only one): its state in the store, groups and drift, hosts, its
    owner (from ``owners``: none when not given); maintenance windows as of ``now`` (epoch
    seconds), when given."""
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
            states = drift_model.host_states(
                environment,
                store.recorded_versions(name),
                store.observed(name),
                store.drift_marks(name),
                unobserved={g.name for g in environment.groups.values() if g.observe is None},
            )
            for group in environment.groups.values():
                mine = [s for s in states if s.group == group.name]
                groups.append(_group_view(group, mine, (name, group.name) in held, now))
                if with_hosts:
                    hosts.extend(
                        HostApp(
                            group=s.group,
                            host=s.host,
                            app=s.app,
                            desired=s.desired,
                            deployed=s.recorded,
                            in_sync=s.recorded == s.desired,
                            observed=s.observed,
                            observed_at=s.observed_at,
                            drift=str(s.drift),
                            flapping=s.flapping,
                        )
                        for s in mine
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
                owner=owners.of(name) if owners is not None else None,
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
    now: float | None = None,
    owners: Owners | None = None,
) -> StatusView:
    """The whole status: source, every environment with its groups and owner, holding
    quarantines."""
    reconciling = daemon.running if daemon is not None else {}
    return StatusView(
        version=__version__,
        daemon=daemon,
        source=source_view(store, snapshot, url, branch),
        environments=[
            EnvironmentView(**view.model_dump(exclude={"hosts"}))
            for view in environment_views(
                store, snapshot, reconciling=reconciling, now=now, owners=owners
            )
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
