"""Configuration: one YAML file, every key overridable by ``RECONCILER_*`` environment variables.

Nested keys use a double underscore: ``RECONCILER_SOURCE__BRANCH=release``. Environment
variables win over the file, the file wins over defaults. Secrets are never values here, only
paths of files that hold them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from ruamel.yaml import YAML

from reconciler.desired_state import Duration


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSettings(_Section):
    url: str = Field(default="", description="Git URL or local path of the desired-state repo.")
    branch: str = Field(default="main", description="Tracked branch.")
    poll_interval: Duration = Field(default=30.0, description="Seconds between fetches.")
    push: bool = Field(
        default=True,
        description="Push revert commits; false = read-only, reverts wait for a human.",
    )
    author_name: str = Field(default="reconciler", description="Author of revert commits.")
    author_email: str = Field(default="reconciler@localhost", description="Their email.")


class ExecutionSettings(_Section):
    host_key_checking: bool = Field(default=True, description="SSH host key checking.")
    forks: int = Field(default=20, ge=1, le=500, description="Ansible forks per playbook run.")
    pipelining: bool = Field(
        default=True, description="ANSIBLE_PIPELINING: fewer round trips per task."
    )
    keep_runs: int = Field(default=50, ge=1, description="Run directories kept under runs/.")
    private_key_file: Path | None = Field(default=None, description="SSH key for Ansible.")
    extra_envvars: dict[str, str] = Field(
        default_factory=dict, description="ANSIBLE_* settings passed to every run."
    )


class Settings(BaseSettings):
    """Everything the daemon and the CLI need."""

    model_config = SettingsConfigDict(
        env_prefix="RECONCILER_", env_nested_delimiter="__", extra="forbid"
    )

    state_dir: Path = Field(default=Path("/var/lib/reconciler"), description="State and cache.")
    source: SourceSettings = SourceSettings()
    execution: ExecutionSettings = ExecutionSettings()

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
