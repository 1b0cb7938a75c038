"""Pure edits of an environment file: versions change, everything else stays byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.desired.edits import (
    EditError,
    group_versions,
    only_group_versions_changed,
    set_group_versions,
)
from reconciler.desired.schema import VERSION_RE
from tests.conftest import EXAMPLE

DOC = """\
# Production (format v1).
environment: production
inventory: inventories/production.yml
groups:
  web:
    apps:
      shop: "2.4.1"       # the storefront
      cart: '1.2.0'
      search: 3.1.0
    rollout:
      canary: [25, 100]
  worker:
    after: [web]
    apps: {shop-worker: "1.8.0", mailer: 0.9.1}
"""


def test_group_versions():
    assert group_versions(DOC, "web") == {"shop": "2.4.1", "cart": "1.2.0", "search": "3.1.0"}
    assert group_versions(DOC, "worker") == {"shop-worker": "1.8.0", "mailer": "0.9.1"}


def test_set_keeps_comments_quotes_and_order_exactly():
    edited = set_group_versions(DOC, "web", {"shop": "2.4.0", "cart": "1.1.9", "search": "3.0.0"})
    assert edited == DOC.replace(
        'shop: "2.4.1"       # the storefront', 'shop: "2.4.0"       # the storefront'
    ).replace("cart: '1.2.0'", "cart: '1.1.9'").replace("search: 3.1.0", "search: 3.0.0")


def test_set_in_a_flow_mapping_and_only_the_given_apps():
    edited = set_group_versions(DOC, "worker", {"mailer": "0.10.0"})
    assert edited == DOC.replace("mailer: 0.9.1}", "mailer: 0.10.0}")
    edited = set_group_versions(DOC, "worker", {"shop-worker": "1.7.12", "mailer": "1.0.0"})
    assert 'apps: {shop-worker: "1.7.12", mailer: 1.0.0}' in edited


def test_plain_scalar_that_would_not_read_as_a_string_gets_quoted():
    edited = set_group_versions(DOC, "web", {"search": "3.0"})
    assert 'search: "3.0"\n' in edited
    assert group_versions(edited, "web")["search"] == "3.0"


def test_unchanged_versions_return_the_text_itself():
    assert set_group_versions(DOC, "web", {"shop": "2.4.1"}) is DOC


def test_example_file_round_trips_exactly():
    text = (EXAMPLE / "environments" / "production.yaml").read_text()
    edited = set_group_versions(text, "web", {"shop": "2.4.0"})
    assert edited == text.replace('shop: "2.4.1"', 'shop: "2.4.0"')
    assert set_group_versions(edited, "web", {"shop": "2.4.1"}) == text


def test_crlf_line_endings_are_kept():
    text = DOC.replace("\n", "\r\n")
    edited = set_group_versions(text, "web", {"cart": "1.1.0"})
    assert edited == text.replace("cart: '1.2.0'", "cart: '1.1.0'")


@pytest.mark.parametrize(
    ("group", "versions", "message"),
    [
        ("db", {"pg": "16"}, "group 'db' is not in the file"),
        ("web", {"nope": "1.0.0"}, "has no app 'nope'"),
        ("web", {"shop": "2.4.1; rm -rf /"}, "not a valid version"),
    ],
)
def test_missing_group_app_or_bad_version_is_an_edit_error(group, versions, message):
    with pytest.raises(EditError, match=message):
        set_group_versions(DOC, group, versions)


def test_invalid_yaml_or_missing_group_is_an_edit_error():
    with pytest.raises(EditError, match="invalid YAML"):
        group_versions("groups: [unclosed\n", "web")
    with pytest.raises(EditError, match="no 'groups'"):
        group_versions("environment: x\n", "web")
    with pytest.raises(EditError, match="group 'db'"):
        group_versions(DOC, "db")


def test_only_group_versions_changed():
    bumped = set_group_versions(DOC, "web", {"shop": "2.5.0"})
    assert only_group_versions_changed(DOC, bumped, "web")
    # Another group's versions are "something else".
    assert not only_group_versions_changed(DOC, bumped, "worker")
    both = set_group_versions(bumped, "worker", {"mailer": "1.0.0"})
    assert not only_group_versions_changed(DOC, both, "web")
    # Any other key of the file.
    assert not only_group_versions_changed(DOC, bumped.replace("[25, 100]", "[100]"), "web")
    # Adding or removing an app is not a version change.
    added = bumped.replace("      search: 3.1.0\n", "      search: 3.1.0\n      new: 1.0.0\n")
    assert not only_group_versions_changed(DOC, added, "web")
    # No change at all: the documents do not differ, so not "only versions changed".
    assert not only_group_versions_changed(DOC, DOC, "web")
    # Unparsable or group missing on one side.
    assert not only_group_versions_changed(DOC, "groups: [", "web")
    assert not only_group_versions_changed(DOC, bumped, "db")


def test_comments_and_formatting_are_ignored_by_only_group_versions_changed():
    """Decision: documents are compared as data; a version bump with a comment is a bump."""
    bumped = set_group_versions(DOC, "web", {"shop": "2.5.0"}).replace(
        "# the storefront", "# 2.5.0: new checkout"
    )
    assert only_group_versions_changed(DOC, bumped, "web")
    comment_only = DOC.replace("# the storefront", "# renamed comment")
    assert not only_group_versions_changed(DOC, comment_only, "web")


@given(
    st.lists(st.from_regex(VERSION_RE, fullmatch=True), min_size=5, max_size=5),
)
def test_any_valid_versions_read_back_exactly(versions):
    apps = {"shop": versions[0], "cart": versions[1], "search": versions[2]}
    edited = set_group_versions(DOC, "web", apps)
    assert group_versions(edited, "web") == apps
    assert group_versions(edited, "worker") == group_versions(DOC, "worker")
    edited = set_group_versions(edited, "worker", {"mailer": versions[3]})
    assert group_versions(edited, "worker")["mailer"] == versions[3]
    assert edited.splitlines()[0] == "# Production (format v1)."
