"""systemd/reconciler.yaml: complete, and loadable by the daemon's Settings model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel
from ruamel.yaml import YAML

from reconciler.settings import Settings

CONFIG = Path(__file__).resolve().parents[2] / "systemd" / "reconciler.yaml"
CREDENTIALS_DIR = Path("/run/credentials/reconciler.service")


def model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every key of a settings model as a dotted path, sections walked recursively."""
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        section = _section_model(field.annotation)
        keys |= model_keys(section, key + ".") if section else {key}
    return keys


def document_keys(document: Any, model: type[BaseModel], prefix: str = "") -> set[str]:
    """The dotted keys a YAML document sets, read along the model's sections (a mapping that is a
    value, such as ``execution.extra_envvars``, is one key; a list of sections, such as
    ``notifications.routes``, is read item by item; a key the model lacks is kept)."""
    keys: set[str] = set()
    fields = {field.alias or name: field for name, field in model.model_fields.items()}
    for key, value in document.items():
        field = fields.get(key)
        section = _section_model(field.annotation) if field else None
        if section and isinstance(value, dict):
            keys |= document_keys(value, section, f"{prefix}{key}.")
        elif (
            section
            and isinstance(value, list)
            and value
            and all(isinstance(v, dict) for v in value)
        ):
            for item in value:
                keys |= document_keys(item, section, f"{prefix}{key}.")
        else:
            keys.add(prefix + key)
    return keys


def _section_model(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *get_args(annotation)]
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if models else None


def test_the_settings_model_is_walked() -> None:
    keys = model_keys(Settings)
    assert {"state_dir", "source.url", "execution.parallel_groups", "daemon.log_level"} <= keys
    assert "source" not in keys and "execution.extra_envvars" in keys
    assert len(keys) > 25


def test_example_shows_every_key() -> None:
    raw = YAML(typ="safe").load(CONFIG.read_text(encoding="utf-8"))
    shown = document_keys(raw, Settings)
    expected = model_keys(Settings)
    assert not expected - shown, f"keys the example does not show: {sorted(expected - shown)}"
    assert not shown - expected, f"keys the settings model lacks: {sorted(shown - expected)}"


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
    assert settings.execution.parallel_groups == 4
    assert settings.execution.extra_envvars == {}
    assert settings.execution.vault_password_file is None and settings.execution.vault_ids == {}
    assert settings.execution.dynamic_inventories == {}
    assert settings.execution.inventory_timeout == 120.0
    assert settings.execution.inventory_memory_mib == 2048
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
