"""HTTP GET for the gates that speak HTTP (http, prometheus), on one shared ``httpx.Client``.

Contract of ``Session.get(url, timeout=, limit=)``:

* Only ``http`` and ``https`` URLs are fetched; another scheme raises :class:`Refused` before
  anything is sent.
* Proxies and every other setting from the environment are ignored (``trust_env=False``): gates
  talk to the fleet directly, and an inherited ``http_proxy`` would otherwise route even
  loopback checks through a proxy. TLS is verified against the system trust store (as the
  stdlib does), not against a bundled one.
* Redirects are followed (at most ``MAX_REDIRECTS``) only to http and https; a redirect to
  another scheme raises :class:`Refused`. A redirect's own body is never read.
* The body is streamed and at most ``limit`` bytes are read: the response is closed after that
  (a huge or endless body costs ``limit`` bytes, not its size). The body is asked for and read
  as sent (``Accept-Encoding: identity``, never decompressed), so a small compressed body cannot
  expand past the limit.
* The whole GET (redirects and body included) is bounded by ``timeout`` seconds.
* Every request opens a new connection (no keep-alive, ``Connection: close``), as each attempt
  did before and as Kubernetes probes do: a check sees what a new client would see.
* A network or protocol failure raises :class:`FetchError` whose text is the short reason
  users see (``Connection refused``, ``timed out``, ...). Non-2xx statuses are responses.

The client is built on first use (none is built for checks that do not speak HTTP) and is
safe to share between threads.
"""

from __future__ import annotations

import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass

import httpx

from reconciler.edges.gates.attempts import describe_error, short

__all__ = ["MAX_REDIRECTS", "FetchError", "Fetched", "Refused", "Session"]

MAX_REDIRECTS = 10
_HEADERS = {"User-Agent": "reconciler", "Accept-Encoding": "identity", "Connection": "close"}


class FetchError(Exception):
    """No response: the text is the reason (``Connection refused``, ``timed out``)."""


class Refused(FetchError):
    """The URL (or a redirect) is not one gates may fetch; the text says why."""


@dataclass(frozen=True)
class Fetched:
    status: int
    body: bytes  # at most the limit
    url: str  # after redirects


def _check_scheme(url: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise Refused(f"only http and https URLs are allowed, not {scheme or 'no scheme'!r}")


class Session:
    """One lazily built ``httpx.Client`` shared by every HTTP attempt of a checker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None

    def _get_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    trust_env=False,
                    verify=ssl.create_default_context(),
                    follow_redirects=False,
                    headers=_HEADERS,
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
                )
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def get(self, url: str, *, timeout: float, limit: int) -> Fetched:
        """GET ``url``: status and the first ``limit`` bytes of the body (see the contract)."""
        _check_scheme(url)
        client = self._get_client()  # building it (~0.2 s, the CA store) is not the check's time
        deadline = time.monotonic() + timeout
        try:
            request = client.build_request("GET", url, timeout=_left(deadline))
            for _ in range(MAX_REDIRECTS + 1):
                response = client.send(request, stream=True)
                try:
                    if response.next_request is None:
                        return Fetched(
                            response.status_code, _read(response, limit, deadline), str(request.url)
                        )
                    request = response.next_request
                    target = str(request.url)
                    scheme = request.url.scheme
                    if scheme not in ("http", "https"):
                        raise Refused(
                            f"{response.status_code} redirect to {short(target, 80)!r} refused: "
                            "only http and https URLs are followed"
                        )
                    timeout_left = httpx.Timeout(_left(deadline)).as_dict()
                    request.extensions = {**request.extensions, "timeout": timeout_left}
                finally:
                    response.close()
            raise FetchError(f"more than {MAX_REDIRECTS} redirects")
        except httpx.TimeoutException as error:
            raise FetchError("timed out") from error
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as error:
            raise FetchError(describe_error(error)) from error


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise FetchError("timed out")
    return left


def _read(response: httpx.Response, limit: int, deadline: float) -> bytes:
    """At most ``limit`` bytes of the body, as sent; the rest is never read."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_raw():  # what each read brings (at most 64 KiB)
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
        _left(deadline)
    return b"".join(chunks)[:limit]
