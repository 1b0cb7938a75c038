"""Credential redaction: ONE function, ``redact(text)``, for every URL form reconciler prints.

Contract: ``redact`` takes any text (a URL, a git error message, a commit message's reason) and
returns it with every credential replaced by ``***``; everything else is kept so the text stays
useful. It is idempotent (``redact(redact(t)) == redact(t)``) and never raises.

* ``scheme://userinfo@host...`` (https, http, ftp, ...): the whole userinfo is masked, user
  included (``https://<token>@github.com/...`` is a common way to pass a token):
  ``https://***@host/x``. A password may contain ``/``, ``@`` or ``:``: the userinfo runs up to
  the LAST ``@`` of the URL, so ``https://u:p/a@ss@host/x`` becomes ``https://***@host/x``.
* ``ssh://`` (and ``git+ssh://``, ``ssh+git://``): the user is not a secret there (keys
  authenticate): ``ssh://git@host`` is kept, a password is masked: ``ssh://git:***@host``.
* scp-like ``git@host:org/repo.git``: kept; a password, if any, is masked:
  ``git:***@host:org/repo.git``.
* Query strings: the value of every parameter whose name contains ``token``, ``passw``,
  ``pwd``, ``secret``, ``auth``, ``key``, ``sig`` or ``credential`` (case-insensitive) is
  masked: ``?private_token=***&ref=main``. A value ends at ``&``, ``#``, ``;`` or whitespace.
* URLs embedded in longer text are found anywhere; a URL ends at whitespace. When a form is
  ambiguous (an ``@`` in a path), more is masked rather than less: the spans found by all rules
  are merged before masking, so one rule's match can never leave a piece of another's secret.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact"]

MASK = "***"

_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})

# scheme://<userinfo>@ : the userinfo runs to the last "@" before whitespace (greedy \S*).
_SCHEME_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<userinfo>\S*)@")
# scp-like user:password@host:path, the password up to the last "@" that a "host:" follows.
# "user://" is a scheme URL (above), hence (?!//). A user without a password is not a secret.
_SCP_PASSWORD = re.compile(
    r"[A-Za-z0-9._~+\-]+:(?!//)(?P<password>\S*)@(?=(?:[A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\]):)"
)
_QUERY_SECRET = re.compile(
    r"[?&;][^=&#;?\s]*(?:token|passw|pwd|secret|auth|key|sig|credential)[^=&#;?\s]*"
    r"=(?P<value>[^&#;\s]*)",
    re.IGNORECASE,
)


def _spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for match in _SCHEME_USERINFO.finditer(text):
        start, end = match.span("userinfo")
        if match["scheme"].lower() in _SSH_SCHEMES:
            colon = match["userinfo"].find(":")
            if colon < 0:
                continue
            start += colon + 1
        spans.append((start, end))
    for match in _SCP_PASSWORD.finditer(text):
        spans.append(match.span("password"))
    for match in _QUERY_SECRET.finditer(text):
        spans.append(match.span("value"))
    return [(start, end) for start, end in spans if end > start]


def redact(text: str) -> str:
    """``text`` with every credential in a URL replaced by ``***`` (see the module docstring)."""
    spans = sorted(_spans(text))
    if not spans:
        return text
    out: list[str] = []
    position = 0
    current_start, current_end = spans[0]
    for start, end in spans[1:]:
        if start <= current_end:
            current_end = max(current_end, end)
            continue
        out += [text[position:current_start], MASK]
        position = current_end
        current_start, current_end = start, end
    out += [text[position:current_start], MASK, text[current_end:]]
    return "".join(out)
