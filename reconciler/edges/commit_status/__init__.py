"""Deploy status on a commit at the Git host: the public surface, nothing concrete.

One module per provider (``github``, ``gitlab``, ``gitea``) turns a ``Status`` into the one
HTTP request of that provider's documented API (``Provider``, type-checked in ``providers``,
the registry: the only place that picks a provider by name); ``client.HttpPoster`` sends it
(httpx, a timeout, no proxies from the environment) and is what ``service.wiring`` builds.
The report stage (``report.commit_status``) decides which status a commit gets and retries;
it knows only the ``Poster`` Protocol.

* ``State``: ``pending``, ``success``, ``failure`` and ``canceled`` (a superseded rollout);
  each provider maps them to its own words.
* ``Posted``: ``ok``; ``retry`` when trying again may help (a network error, 429, 5xx);
  ``detail``: the HTTP status and the start of the answer, never the token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = ["Posted", "Poster", "Provider", "Request", "State", "Status"]

State = Literal["pending", "success", "failure", "canceled"]


@dataclass(frozen=True)
class Status:
    """A status of one commit: ``context`` is ``reconciler/<environment>``."""

    sha: str
    state: State
    context: str
    description: str
    target_url: str | None = None


@dataclass(frozen=True)
class Request:
    """One HTTP request of a provider's API (relative to its API base URL)."""

    method: str
    path: str
    headers: Mapping[str, str]
    json: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Posted:
    ok: bool
    retry: bool
    detail: str


class Provider(Protocol):
    """The shape of a provider module."""

    KIND: str
    DEFAULT_API: str | None

    def request(self, repository: str, token: str, status: Status) -> Request: ...

    def accepted(self, code: int, body: str) -> bool:
        """Whether an answer that is not 2xx still means the status is set."""
        ...


class Poster(Protocol):
    """Sets statuses at one provider (``client.HttpPoster``)."""

    @property
    def provider(self) -> str: ...

    def post(self, status: Status) -> Posted: ...
