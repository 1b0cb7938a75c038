"""support.redaction: credentials never survive, in any URL form, alone or inside longer text.

The property tests build secrets from characters that appear nowhere else in the text around
them (upper-case letters and digits, plus punctuation a secret may hold), so "no upper-case
letter or digit in the output" proves that no piece of the secret survived, not just the whole.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from reconciler.support.redaction import redact

SECRET_MARKS = string.ascii_uppercase + string.digits
# What a password may hold besides its marks: any ASCII punctuation, "/", "@" and ":" included.
PUNCTUATION = string.punctuation
QUERY_PUNCTUATION = PUNCTUATION.translate(str.maketrans("", "", "&#;"))  # where a value ends

secrets = st.text(SECRET_MARKS + PUNCTUATION, min_size=1, max_size=40).filter(
    lambda s: any(c in SECRET_MARKS for c in s)
)
query_secrets = st.text(SECRET_MARKS + QUERY_PUNCTUATION, min_size=1, max_size=40).filter(
    lambda s: any(c in SECRET_MARKS for c in s)
)
hosts = st.sampled_from(["github.com", "git.example.invalid", "localhost", "[::one]"])
paths = st.sampled_from(["org/repo.git", "x", "a/b/c.git", ""])
# Surrounding text: lower-case only, like git's own messages once the marks are excluded.
contexts = st.sampled_from(
    [
        "{}",
        "fatal: unable to access '{}/': could not resolve host",
        "cannot fetch {} (main): error: failed to push some refs to '{}'",
        'remote url "{}" refused',
        "first line\n  {}\nlast line",
    ]
)


def _clean(output: str) -> bool:
    return not any(c in SECRET_MARKS for c in output)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:s3cret@git.example/x.git", "https://***@git.example/x.git"),
        ("https://u:p/a@ss@host/x", "https://***@host/x"),
        ("https://ghp_token@github.com/org/repo", "https://***@github.com/org/repo"),
        ("http://user@host:8080/x", "http://***@host:8080/x"),
        ("ssh://git@host/org/repo.git", "ssh://git@host/org/repo.git"),
        ("ssh://git:pw@host:22/org/repo.git", "ssh://git:***@host:22/org/repo.git"),
        ("git+ssh://git:p@ss@host/x", "git+ssh://git:***@host/x"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("git:pw@github.com:org/repo.git", "git:***@github.com:org/repo.git"),
        ("https://h/x?token=abc&ref=main", "https://h/x?token=***&ref=main"),
        ("https://h/x?ref=main&PRIVATE_TOKEN=zz#top", "https://h/x?ref=main&PRIVATE_TOKEN=***#top"),
        ("https://h/x?access_token=a&Password=b", "https://h/x?access_token=***&Password=***"),
        ("https://h/x?ref=main", "https://h/x?ref=main"),
        (
            "fatal: unable to access 'https://u:p@host/x/': Could not resolve host: host",
            "fatal: unable to access 'https://***@host/x/': Could not resolve host: host",
        ),
        (
            "error: failed to push some refs to 'git@github.com:org/x.git'",
            "error: failed to push some refs to 'git@github.com:org/x.git'",
        ),
        ("/srv/git/remote.git (main): no such file", "/srv/git/remote.git (main): no such file"),
        ("dev@example.invalid pushed 2.5.0", "dev@example.invalid pushed 2.5.0"),
        ("", ""),
    ],
)
def test_forms(text, expected):
    assert redact(text) == expected


@given(scheme=st.sampled_from(["https", "http", "ftp", "HTTPS"]), user=secrets, password=secrets,
       host=hosts, path=paths, context=contexts)  # fmt: skip
def test_userinfo_never_survives(scheme, user, password, host, path, context):
    url = f"{scheme}://{user}:{password}@{host}/{path}"
    output = redact(context.format(url, url))
    assert _clean(output.replace(scheme, ""))
    assert f"{scheme}://***@{host}/{path}" in output


@given(scheme=st.sampled_from(["https", "http"]), token=secrets, host=hosts, path=paths,
       context=contexts)  # fmt: skip
def test_user_only_userinfo_is_a_secret_too(scheme, token, host, path, context):
    output = redact(context.format(f"{scheme}://{token}@{host}/{path}", "x"))
    assert _clean(output)


@given(scheme=st.sampled_from(["ssh", "git+ssh"]), password=secrets, host=hosts, path=paths,
       context=contexts)  # fmt: skip
def test_ssh_keeps_the_user_and_masks_a_password(scheme, password, host, path, context):
    url = f"{scheme}://git:{password}@{host}/{path}"
    output = redact(context.format(url, url))
    assert _clean(output)
    assert f"{scheme}://git:***@{host}/{path}" in output


@given(password=secrets.filter(lambda s: not s.startswith("//")), context=contexts)
def test_scp_like_keeps_the_user_and_masks_a_password(password, context):
    url = f"git:{password}@github.com:org/repo.git"
    output = redact(context.format(url, url))
    assert _clean(output)
    assert "git:***@github.com:org/repo.git" in output


@given(
    name=st.sampled_from(
        ["token", "access_token", "private_token", "password", "Passwd", "api_key",
         "client_secret", "X-Amz-Signature", "oauth_token", "TOKEN"]
    ),
    value=query_secrets,
    before=st.sampled_from(["?", "?ref=main&"]),
    after=st.sampled_from(["", "&ref=main", "#frag"]),
    userinfo=st.sampled_from(["", "git@", "u:p@"]),
    context=contexts,
)  # fmt: skip
def test_query_secrets_never_survive(name, value, before, after, userinfo, context):
    url = f"https://{userinfo}host.example/org/repo.git{before}{name}={value}{after}"
    output = redact(context.format(url, url))
    assert not any(c in SECRET_MARKS for c in output.replace(name, ""))


@given(st.text(max_size=200))
@example("https://a@b@c/x?token=1&key=2 git:p@h:x ssh://u:v@w")
def test_idempotent_and_total(text):
    once = redact(text)
    assert redact(once) == once
