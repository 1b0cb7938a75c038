"""How git authenticates to the remote, with no credential ever written to disk by us, put on a
command line or in git's environment.

Contract (``GitAuth``):

* ``url`` is the remote URL without credentials: the only form that reaches git's argv and the
  clones' ``.git/config``. A configured URL with userinfo (``https://user:pass@host/x``,
  ``https://<token>@host/x``) keeps working, but the userinfo is taken out of it (``embedded``
  is then true and the caller warns: the secret belongs in ``source.password_file``). A URL
  whose credentials cannot be separated cleanly is refused (``ValueError``).
* HTTP(S): git gets its user name and password from a credential helper defined for the one
  command (``GIT_CONFIG_*`` entries; the user's own helpers, which might store the secret, are
  reset first). The helper reads the secret at run time from ``password_file`` (its first
  line); only the file's *path* and the user name are in git's environment. Credentials from an
  embedded URL live in an anonymous in-memory file (``memfd``) that git inherits
  (``pass_fds``) and the helper reads through ``/dev/fd``.
* SSH: with ``ssh_key_file`` (and/or ``known_hosts_file``), ``GIT_SSH_COMMAND`` runs ssh with
  that key only (``IdentitiesOnly``), in batch mode, with strict host key checking against
  ``known_hosts_file`` (ssh's own files when not given). Without them ssh's configuration
  (``~/.ssh/config``) applies unchanged.
* ``environment(base)`` returns ``base`` plus what git needs; ``pass_fds`` the descriptors it
  must inherit. Neither holds a secret.
"""

from __future__ import annotations

import os
import re
import shlex
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from reconciler.support.redaction import redact

__all__ = ["GitAuth", "split_credentials"]

_USERINFO = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<authority>[^/?#]*)(?P<rest>.*)$", re.DOTALL
)
_HTTP = ("http", "https")
_SSH = ("ssh", "git+ssh", "ssh+git")
_DEFAULT_USER = "git"
# The helper answers `get` only; `store` and `erase` are ignored (nothing is ever stored).
_FILE_HELPER = (
    '!f() { test "$1" = get || return 0; IFS= read -r p < "$RECONCILER_GIT_PASSWORD_FILE"; '
    'printf \'username=%s\\npassword=%s\\n\' "$RECONCILER_GIT_USERNAME" "$p"; }; f'
)
_BLOCK_HELPER = '!f() { test "$1" = get || return 0; cat "$RECONCILER_GIT_CREDENTIALS"; }; f'


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(url without userinfo, user, password) of a ``scheme://`` URL (percent-decoded);
    other forms (local paths, scp-like ``git@host:x``) come back unchanged with no user."""
    match = _USERINFO.match(url)
    if match is None or "@" not in match["authority"]:
        return url, None, None
    userinfo, _, host = match["authority"].rpartition("@")
    user, colon, password = userinfo.partition(":")
    clean = f"{match['scheme']}://{host}{match['rest']}"
    return (
        clean,
        urllib.parse.unquote(user) or None,
        urllib.parse.unquote(password) if colon else None,
    )


def _scheme(url: str) -> str:
    match = _USERINFO.match(url)
    return match["scheme"].lower() if match else ""


class GitAuth:
    """Credentials of one remote (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password_file: Path | None = None,
        ssh_key_file: Path | None = None,
        known_hosts_file: Path | None = None,
    ) -> None:
        clean, url_user, url_password = split_credentials(url)
        scheme = _scheme(url)
        self.embedded = clean != url
        if scheme in _SSH and url_user is not None:  # ssh://git@host: the user is no secret
            user = urllib.parse.quote(url_user, safe="")
            clean = clean.replace("://", f"://{user}@", 1)
            self.embedded = url_password is not None  # ignored: ssh authenticates with keys
        self.url = clean
        self.password_file = password_file
        self.ssh_key_file = ssh_key_file
        self.known_hosts_file = known_hosts_file
        self._memfd: int | None = None
        if redact(self.url) != self.url:
            raise ValueError(
                f"source.url {redact(url)} holds credentials that cannot be separated from it: "
                "percent-encode them, or better, put the secret in source.password_file"
            )
        self.username = username or (url_user if password_file else None) or _DEFAULT_USER
        embedded_secret = url_password is not None or (url_user is not None and not password_file)
        if self.embedded and scheme in _HTTP and embedded_secret and password_file is None:
            self._memfd = _in_memory(url_user or "", url_password or "")

    def __del__(self) -> None:
        if self._memfd is not None:
            os.close(self._memfd)
            self._memfd = None

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self._memfd,) if self._memfd is not None else ()

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        env = dict(base)
        scheme = _scheme(self.url)
        if scheme in _HTTP and (self._memfd is not None or self.password_file is not None):
            if self._memfd is not None:
                env["RECONCILER_GIT_CREDENTIALS"] = f"/dev/fd/{self._memfd}"
                helper = _BLOCK_HELPER
            else:
                env["RECONCILER_GIT_PASSWORD_FILE"] = str(self.password_file)
                env["RECONCILER_GIT_USERNAME"] = self.username
                helper = _FILE_HELPER
            _add_config(env, [("credential.helper", ""), ("credential.helper", helper)])
        if self.ssh_key_file is not None or self.known_hosts_file is not None:
            env["GIT_SSH_COMMAND"] = self.ssh_command()
        return env

    def ssh_command(self) -> str:
        argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
        if self.ssh_key_file is not None:
            argv += ["-i", str(self.ssh_key_file), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts_file is not None:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts_file}"]
        return shlex.join(argv)


def _add_config(env: dict[str, str], entries: list[tuple[str, str]]) -> None:
    """Append ``GIT_CONFIG_KEY_n``/``VALUE_n`` entries after those already in ``env``."""
    try:
        count = int(env.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        count = 0
    for key, value in entries:
        env[f"GIT_CONFIG_KEY_{count}"] = key
        env[f"GIT_CONFIG_VALUE_{count}"] = value
        count += 1
    env["GIT_CONFIG_COUNT"] = str(count)


def _in_memory(user: str, password: str) -> int:
    """An anonymous in-memory file (never on disk) holding a credential-protocol answer."""
    if any(c in value for value in (user, password) for c in "\n\r\0"):
        raise ValueError("source.url: credentials must not contain line breaks or NUL")
    fd = os.memfd_create("reconciler-git-credentials")  # close-on-exec: only git inherits it
    os.write(fd, f"username={user}\npassword={password}\n".encode())
    return fd
