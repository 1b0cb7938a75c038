"""systemd/reconciler.yaml: complete, and loadable by the daemon's Settings model."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from reconciler.settings import Settings

CONFIG = Path(__file__).resolve().parents[2] / "systemd" / "reconciler.yaml"
CREDENTIALS_DIR = Path("/run/credentials/reconciler.service")

#: Every key the daemon's configuration has; the example shows them all, no more.
EXPECTED_KEYS: dict[str, set[str] | None] = {
    "state_dir": None,
    "source": {
        "url", "branch", "poll_interval", "poll_jitter", "push", "author_name", "author_email",
        "watch",
    },
    "execution": {
        "host_key_checking", "forks", "pipelining", "keep_runs", "private_key_file",
        "extra_envvars",
    },
    "api": {"listen", "port", "token_file", "url"},
    "webhooks": {
        "github_secret_file", "gitlab_token_file", "gitea_secret_file", "max_payload_bytes",
    },
    "daemon": {
        "parallel_environments", "resync_interval", "shutdown_grace", "log_format", "log_level",
    },
}  # fmt: skip


def test_example_shows_every_key() -> None:
    raw = YAML(typ="safe").load(CONFIG.read_text(encoding="utf-8"))
    assert set(raw) == set(EXPECTED_KEYS)
    for section, keys in EXPECTED_KEYS.items():
        if keys is not None:
            assert set(raw[section]) == keys, section


def test_example_loads_through_settings() -> None:
    settings = Settings.load(CONFIG)
    assert settings.state_dir == Path("/var/lib/reconciler")
    assert settings.source.branch == "main"
    assert settings.source.poll_interval == 30.0
    assert settings.source.poll_jitter == pytest.approx(0.1)
    assert settings.source.push is True
    assert settings.source.watch is False
    assert settings.execution.host_key_checking is True
    assert settings.execution.private_key_file == CREDENTIALS_DIR / "ssh-key"
    assert settings.execution.extra_envvars == {}
    assert (settings.api.listen, settings.api.port, settings.api.url) == ("127.0.0.1", 9480, None)
    assert settings.api.token_file == CREDENTIALS_DIR / "api-token"
    assert settings.webhooks.github_secret_file == CREDENTIALS_DIR / "github-secret"
    assert settings.webhooks.gitlab_token_file == CREDENTIALS_DIR / "gitlab-token"
    assert settings.webhooks.gitea_secret_file == CREDENTIALS_DIR / "gitea-secret"
    assert settings.webhooks.max_payload_bytes == 1_048_576
    assert settings.daemon.parallel_environments == 4
    assert settings.daemon.resync_interval == 300.0
    assert settings.daemon.shutdown_grace == 120.0
    assert (settings.daemon.log_format, settings.daemon.log_level) == ("json", "info")
