"""PlaybookRun validation and the !unsafe extra-vars file (no Ansible processes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from reconciler.edges.ansible import HostResult, HostStatus, PlaybookRun, RunResult
from reconciler.edges.ansible.extravars import dump_unsafe_yaml


def _run(**overrides: Any) -> PlaybookRun:
    kwargs: dict[str, Any] = {
        "playbook": Path("/pb.yml"),
        "inventory": Path("/inv.yml"),
        "hosts": ("web1",),
        "extra_vars": {},
        "timeout_s": 10.0,
    }
    kwargs.update(overrides)
    return PlaybookRun(**kwargs)


@pytest.mark.parametrize(
    "hosts",
    [
        (),
        ("",),
        ("!web1",),
        ("&web1",),
        ("~web.*",),
        ("web1,web2",),
        ("web*",),
        ("web?",),
        ("web 1",),
        ("web[0]",),
        ("web1", "web1"),
        "web1",
    ],
)
def test_invalid_hosts_are_rejected(hosts: Any) -> None:
    with pytest.raises(ValueError):
        _run(hosts=hosts)


@pytest.mark.parametrize("host", ["web1", "web-1.example.com", "10.0.0.1", "fe80::1", "db_2"])
def test_valid_hosts(host: str) -> None:
    assert _run(hosts=(host,)).hosts == (host,)


@pytest.mark.parametrize(
    "extra_vars",
    [{"a": object()}, {"a": {1: "x"}}, {"a": b"bytes"}, {"a": {"b": [set()]}}],
)
def test_invalid_extra_vars(extra_vars: Any) -> None:
    with pytest.raises(TypeError):
        _run(extra_vars=extra_vars)


def test_reserved_envvar_and_timeout() -> None:
    with pytest.raises(ValueError):
        _run(envvars={"RECONCILER_RUN_IDENT": "x"})
    with pytest.raises(ValueError):
        _run(timeout_s=0)


def test_run_result_partition() -> None:
    hosts = {
        "a": HostResult("a", HostStatus.OK, True, ""),
        "b": HostResult("b", HostStatus.FAILED, False, "x"),
        "c": HostResult("c", HostStatus.UNREACHABLE, False, "y"),
        "d": HostResult("d", HostStatus.NOT_RUN, False, "z"),
    }
    result = RunResult("i", "failed", 2, hosts, 1.0, Path("/r"))
    assert result.succeeded() == ("a",)
    assert result.failed() == ("b", "c", "d")


class _TagLoader(yaml.SafeLoader):
    """Loads ``!unsafe 'x'`` as ``("UNSAFE", "x")`` so tests can see every tag."""


_TagLoader.add_constructor(
    "!unsafe", lambda loader, node: ("UNSAFE", loader.construct_scalar(node))
)


def _expected(value: Any) -> Any:
    if isinstance(value, str):
        return ("UNSAFE", value)
    if isinstance(value, dict):
        return {k: _expected(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expected(v) for v in value]
    return value


def test_every_string_value_is_unsafe_and_keys_stay_plain() -> None:
    data = {
        "reconciler_apps": {"shop": "{{ lookup('pipe', 'id') }}", "it's": "a'b\"c"},
        "reconciler_list": ["{% raw %}", "x: y", "- z", "#c", "\n  multi\nline"],
        "reconciler_commit": "abc",
        "n": 1,
        "flag": True,
        "none": None,
    }
    text = dump_unsafe_yaml(data)
    assert yaml.load(text, Loader=_TagLoader) == _expected(data)
    node = yaml.compose(text)
    assert all(key.tag == "tag:yaml.org,2002:str" for key, _ in node.value)


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
_values = st.recursive(
    _text | st.integers() | st.booleans(),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), children, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), _values, max_size=4))
def test_unsafe_yaml_round_trips(data: dict[str, Any]) -> None:
    assert yaml.load(dump_unsafe_yaml(data), Loader=_TagLoader) == _expected(data)
