"""GitHub: ``POST /repos/{owner}/{repo}/statuses/{sha}`` (REST API "Create a commit status").

Body ``{state, context, description, target_url}``: ``state`` is ``pending``, ``success``,
``failure`` or ``error`` (a superseded rollout is ``error``), ``description`` at most 140
characters. ``Authorization: Bearer <token>`` (a token with ``repo:status``, or a fine-grained
one with "Commit statuses: write"), ``Accept: application/vnd.github+json``,
``X-GitHub-Api-Version: 2022-11-28``. Answer: 201.
"""

from __future__ import annotations

import urllib.parse

from reconciler.edges.commit_status import Request, Status

KIND = "github"
DEFAULT_API: str | None = "https://api.github.com"
DESCRIPTION_LIMIT = 140
_STATES = {"pending": "pending", "success": "success", "failure": "failure", "canceled": "error"}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def request(repository: str, token: str, status: Status) -> Request:
    owner, _, name = repository.partition("/")
    path = "/repos/{}/{}/statuses/{}".format(
        *(urllib.parse.quote(p, safe="") for p in (owner, name, status.sha))
    )
    body = {
        "state": _STATES[status.state],
        "context": status.context,
        "description": _clip(status.description, DESCRIPTION_LIMIT),
    }
    if status.target_url:
        body["target_url"] = status.target_url
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    return Request("POST", path, headers, body)


def accepted(code: int, body: str) -> bool:
    return False
