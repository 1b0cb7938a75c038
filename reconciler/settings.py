"""Configuration: one YAML file, every key overridable by ``RECONCILER_*`` environment variables.

Nested keys use a double underscore: ``RECONCILER_SOURCE__BRANCH=release``. Environment
variables win over the file, the file wins over defaults. Secrets are never values here, only
paths of files that hold them; a validation error never echoes the value it refused (it might
be a secret), only its key and the rule.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from ruamel.yaml import YAML

from reconciler.states import EventKind, Severity
from reconciler.support.durations import Duration

VaultId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")]
EnvironmentName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
PluginName = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSettings(_Section):
    url: str = Field(default="", description="Git URL or local path of the desired-state repo.")
    branch: str = Field(default="main", description="Tracked branch.")
    poll_interval: Duration = Field(default=30.0, description="Seconds between fetches.")
    poll_jitter: float = Field(
        default=0.1, ge=0, le=1, description="Random share of poll_interval added to each poll."
    )
    watch: bool | None = Field(
        default=None, description="Watch a local repository path for changes (None: auto)."
    )
    push: bool = Field(
        default=True,
        description="Push revert commits; false = read-only, reverts wait for a human.",
    )
    author_name: str = Field(default="reconciler", description="Author of revert commits.")
    author_email: str = Field(default="reconciler@localhost", description="Their email.")
    username: str | None = Field(
        default=None,
        description="HTTP(S) user name sent with password_file (default: the URL's, else 'git').",
    )
    password_file: Path | None = Field(
        default=None,
        description="File holding the HTTP(S) password or access token of the remote; git "
        "reads it through a credential helper at run time (never argv, env or .git/config).",
    )
    ssh_key_file: Path | None = Field(
        default=None, description="SSH deploy key for an ssh:// or scp-like remote."
    )
    known_hosts_file: Path | None = Field(
        default=None,
        description="known_hosts for the remote's SSH host key (default: ssh's own files).",
    )


class ExecutionSettings(_Section):
    host_key_checking: bool = Field(default=True, description="SSH host key checking.")
    forks: int = Field(default=20, ge=1, le=500, description="Ansible forks per playbook run.")
    pipelining: bool = Field(
        default=True, description="ANSIBLE_PIPELINING: fewer round trips per task."
    )
    keep_runs: int = Field(default=50, ge=1, description="Run directories kept under runs/.")
    parallel_groups: int = Field(
        default=4, ge=1, le=64, description="Independent groups of one environment at once."
    )
    private_key_file: Path | None = Field(default=None, description="SSH key for Ansible.")
    extra_envvars: dict[str, str] = Field(
        default_factory=dict, description="ANSIBLE_* settings passed to every run."
    )
    vault_password_file: Path | None = Field(
        default=None, description="Ansible Vault password file (vault id 'default')."
    )
    vault_ids: dict[VaultId, Path] = Field(
        default_factory=dict, description="More Ansible Vault ids: id -> password file."
    )
    dynamic_inventories: dict[EnvironmentName, list[PluginName]] = Field(
        default_factory=dict,
        description="Environment -> inventory plugins enabled on top of the static ones "
        "(script, auto, ...); environments not listed get static inventories only.",
    )
    inventory_timeout: Duration = Field(
        default=120.0, description="Wall-clock limit of one inventory parse (a child process)."
    )
    inventory_memory_mib: int = Field(
        default=2048, ge=256, le=1 << 20, description="Address-space limit of that process."
    )

    @property
    def vault_files(self) -> list[tuple[str, Path]]:
        """(vault id, password file) pairs: the default one first."""
        files = [("default", self.vault_password_file)] if self.vault_password_file else []
        return [*files, *sorted(self.vault_ids.items())]


class ApiSettings(_Section):
    listen: str = Field(default="127.0.0.1", description="Address of the HTTP API.")
    port: int = Field(default=9480, ge=0, le=65535, description="Port (0: any free port).")
    token_file: Path | None = Field(
        default=None, description="File holding the bearer token of mutating calls."
    )
    url: str | None = Field(
        default=None, description="Where the CLI reaches the daemon (default: listen:port)."
    )
    read_token_file: Path | None = Field(
        default=None,
        description="When set, reads (API, /metrics, OpenAPI) need this bearer token or the "
        "api.token_file one; /healthz and /readyz stay open. Recommended beyond loopback.",
    )
    max_body_bytes: int = Field(
        default=65_536,
        ge=1024,
        description="Largest request body of the API (webhooks: "
        "webhooks.max_payload_bytes); larger: 413, refused before it is read.",
    )
    max_connections: int = Field(
        default=512,
        ge=8,
        le=60_000,
        description="Open API connections at most; beyond, the oldest idle one is closed "
        "(or the new one refused) so the daemon never runs out of file descriptors.",
    )
    read_timeout: Duration = Field(
        default=10.0,
        gt=0,
        description="A request's headers and body must arrive within this; else closed.",
    )
    keep_alive: Duration = Field(
        default=5.0, gt=0, description="An idle keep-alive connection is closed after this."
    )

    @property
    def client_url(self) -> str:
        if self.url:
            return self.url.rstrip("/")
        host = "127.0.0.1" if self.listen in ("0.0.0.0", "") else self.listen  # noqa: S104
        host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
        return f"http://{host}:{self.port}"


class WebhookSettings(_Section):
    github_secret_file: Path | None = Field(default=None, description="GitHub HMAC secret.")
    gitlab_token_file: Path | None = Field(default=None, description="GitLab X-Gitlab-Token.")
    gitea_secret_file: Path | None = Field(default=None, description="Gitea HMAC secret.")
    max_payload_bytes: int = Field(default=1_048_576, ge=1024, description="Larger: 413.")


class DaemonSettings(_Section):
    parallel_environments: int = Field(
        default=4, ge=1, le=64, description="Environments reconciled at the same time."
    )
    resync_interval: Duration = Field(
        default=300.0, description="Reconcile every environment this often, changes or not."
    )
    shutdown_grace: Duration = Field(
        default=120.0, description="On SIGTERM, how long a running playbook step may finish."
    )
    log_format: str = Field(default="json", pattern="^(json|console)$")
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")


class ObservationSettings(_Section):
    interval: Duration = Field(
        default=600.0,
        description="Look at what every host runs this often (0: only after rollout steps).",
    )
    jitter: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="Share of interval by which looks vary (resyncs: fixed per environment).",
    )
    forks: int = Field(default=50, ge=1, le=500, description="Ansible forks of an observation.")


class LimitsSettings(_Section):
    """Bounds on what a commit of the desired-state repository may make reconciler read."""

    max_file_bytes: int = Field(
        default=2_097_152,
        ge=1024,
        description="Largest environment file, inventory file or repository playbook (bytes).",
    )
    max_repository_bytes: int = Field(
        default=134_217_728,
        ge=65_536,
        description="Largest commit: the sum of the sizes of all its files (bytes).",
    )
    max_depth: int = Field(
        default=32, ge=8, le=100, description="Deepest nesting of mappings and lists in YAML."
    )
    max_nodes: int = Field(
        default=20_000,
        ge=100,
        description="Most YAML nodes (keys, values, lists) in one environment file.",
    )


class EventsSettings(_Section):
    """The event log (``GET /api/v1/events``, its stream, ``reconciler events``)."""

    keep: int = Field(
        default=100_000, ge=0, description="Newest events kept (0: no limit by count)."
    )
    max_age: Duration = Field(
        default=90 * 86400.0, description="Older events are deleted (0: no limit by age)."
    )
    heartbeat: Duration = Field(
        default=15.0, gt=0, le=300, description="A comment line on idle event streams this often."
    )
    max_streams: int = Field(
        default=32, ge=1, le=1000, description="Event streams served at once; beyond: 503."
    )


class NotificationRoute(_Section):
    """Where some events go: apprise URLs, read from a secret file, and what to send there."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$", description="Metric label.")
    urls_file: Path = Field(
        description="File of apprise URLs, one per line (# comments); a secret, never logged."
    )
    environments: list[str] = Field(default_factory=list, description="Only these (empty: all).")
    groups: list[str] = Field(default_factory=list, description="Only these (empty: all).")
    kinds: list[EventKind] = Field(default_factory=list, description="Only these (empty: all).")
    min_severity: Severity = Field(default=Severity.INFO, description="info, warning or error.")


class NotificationSettings(_Section):
    routes: list[NotificationRoute] = Field(default_factory=list, description="No route: none.")
    attempts: int = Field(default=5, ge=1, le=20, description="Tries of one delivery in all.")
    backoff: Duration = Field(default=2.0, description="First wait before a retry (doubling).")
    max_backoff: Duration = Field(default=120.0, description="Longest wait between retries.")
    catch_up: Duration = Field(
        default=3600.0,
        description="At start, undelivered events younger than this are still sent; older ones "
        "are skipped (never resent: the last delivered event is kept per route).",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> NotificationSettings:
        names = [r.name for r in self.routes]
        if len(names) != len(set(names)):
            raise ValueError("notification route names must be unique")
        return self


class CommitStatusSettings(_Section):
    """Deploy status on the desired-state commit at the Git host (``null`` provider: off)."""

    provider: Literal["github", "gitlab", "gitea"] | None = Field(
        default=None, description="github, gitlab or gitea; null: no commit statuses."
    )
    api_url: str | None = Field(
        default=None,
        description="API base (default: https://api.github.com, https://gitlab.com/api/v4; "
        "Gitea: required, e.g. https://gitea.example.com/api/v1).",
    )
    token_file: Path | None = Field(default=None, description="File holding the API token.")
    repository: str = Field(
        default="", description="owner/name (GitLab: the project's id or path)."
    )
    target_url: str | None = Field(
        default=None,
        description="Link of the status; {environment}, {rollout_id} and {commit} replaced.",
    )
    timeout: Duration = Field(default=10.0, gt=0, le=120, description="One API request.")
    attempts: int = Field(default=5, ge=1, le=20, description="Tries of one status in all.")

    @model_validator(mode="after")
    def _complete(self) -> CommitStatusSettings:
        if self.provider is not None:
            if self.token_file is None or not self.repository:
                raise ValueError("commit_status needs token_file and repository")
            if self.provider == "gitea" and not self.api_url:
                raise ValueError("commit_status.api_url is required for gitea")
        return self


#: libpq URL parameters that carry a secret: never in ``state.url``.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def check_state_url(url: str) -> str:
    """``url`` when it is empty or a ``postgresql://`` URL without a password; else
    ``ValueError`` saying why (without the URL: it may hold a secret)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        raise ValueError("state.url is not a valid URL") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(
            "state.url must be postgresql://[user@]host[:port]/database[?param=value...] "
            "(empty: SQLite under state_dir)"
        )
    secrets = {k.lower() for k, _ in parse_qsl(parts.query)} & _SECRET_PARAMETERS
    if password is not None or secrets:
        raise ValueError(
            "state.url must not contain a password: put it in a file named by "
            "state.password_file, or let libpq find it (PGPASSWORD, PGPASSFILE, ~/.pgpass)"
        )
    return url


class StateSettings(_Section):
    """Where the state store lives: SQLite under ``state_dir`` (default) or PostgreSQL."""

    url: str = Field(
        default="",
        description="Empty: SQLite at state_dir/state.db. A libpq URL "
        "postgresql://user@host:port/database?sslmode=verify-full: that PostgreSQL database "
        "(never with a password in it: refused).",
    )
    password_file: Path | None = Field(
        default=None,
        description="File holding the PostgreSQL password, read at each new connection "
        "(unset: libpq's PGPASSWORD, PGPASSFILE or ~/.pgpass).",
    )
    pool_size: int = Field(
        default=8, ge=1, le=100, description="PostgreSQL connections one process keeps at most."
    )
    connect_timeout: Duration = Field(
        default=10.0,
        ge=1,
        le=300,
        description="Longest wait for a PostgreSQL connection; then the call fails as "
        "temporary (the daemon retries on its next cycle).",
    )

    replica: str = Field(
        default="",
        max_length=100,
        description="This daemon's name among replicas sharing the PostgreSQL database "
        "(empty: host name and process id). Unused with SQLite.",
    )
    lease_ttl: Duration = Field(
        default=15.0,
        ge=3,
        le=600,
        description="How long an environment's lease lasts without renewal (renewed every "
        "third of it): a crashed replica's environments are taken over after about this long.",
    )

    @field_validator("url")
    @classmethod
    def _no_password(cls, value: str) -> str:
        return check_state_url(value.strip())

    @property
    def postgresql(self) -> bool:
        return bool(self.url)


class Settings(BaseSettings):
    """Everything the daemon and the CLI need."""

    model_config = SettingsConfigDict(
        env_prefix="RECONCILER_",
        env_nested_delimiter="__",
        extra="forbid",
        hide_input_in_errors=True,  # a refused value may be a secret (state.url)
    )

    state_dir: Path = Field(default=Path("/var/lib/reconciler"), description="State and cache.")
    state: StateSettings = StateSettings()
    source: SourceSettings = SourceSettings()
    execution: ExecutionSettings = ExecutionSettings()
    api: ApiSettings = ApiSettings()
    webhooks: WebhookSettings = WebhookSettings()
    daemon: DaemonSettings = DaemonSettings()
    observation: ObservationSettings = ObservationSettings()
    limits: LimitsSettings = LimitsSettings()
    events: EventsSettings = EventsSettings()
    notifications: NotificationSettings = NotificationSettings()
    commit_status: CommitStatusSettings = CommitStatusSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment variables override the config file (passed as init kwargs)
        return env_settings, init_settings

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {}
        if path is not None:
            with path.open(encoding="utf-8") as handle:
                loaded = YAML(typ="safe").load(handle) or {}
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: the configuration must be a mapping")
            values.update(loaded)
        values.update(overrides)
        return cls(**values)

    @property
    def database_path(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "source"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def inventory_cache_dir(self) -> Path:
        """Parsed inventories by content hash (not the state store: reads may fill it)."""
        return self.state_dir / "inventory-cache"

    @property
    def control_path_dir(self) -> Path:
        """ssh ControlPersist sockets of this state dir's playbook runs. A socket path must
        fit in 108 bytes with ssh's 40-character name, so a long state dir uses a short
        directory named after it under the temp dir instead."""
        candidate = self.state_dir / "ssh"
        if len(str(candidate.absolute())) <= 60:
            return candidate
        digest = hashlib.sha256(str(self.state_dir.absolute()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"reconciler-ssh-{digest}"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "daemon.lock"


def read_secret(path: Path | None) -> str | None:
    """The stripped content of a secret file, or None when no file is configured."""
    if path is None:
        return None
    value = path.read_text(encoding="utf-8").strip()
    if not value:
        raise ValueError(f"secret file {path} is empty")
    return value
