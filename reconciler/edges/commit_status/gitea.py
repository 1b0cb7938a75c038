"""Gitea (and Forgejo): ``POST /repos/{owner}/{repo}/statuses/{sha}`` ("Create a commit
status").

Body ``{state, context, description, target_url}`` (``CreateStatusOption``): ``state`` is
``pending``, ``success``, ``error``, ``failure`` (or ``warning``); a superseded rollout is
``error``. ``Authorization: token <token>`` (an access token with repository write access).
The API base is the instance's, e.g. ``https://gitea.example.com/api/v1``. Answer: 201.
"""

from __future__ import annotations

import urllib.parse

from reconciler.edges.commit_status import Request, Status

KIND = "gitea"
DEFAULT_API: str | None = None
DESCRIPTION_LIMIT = 255
_STATES = {"pending": "pending", "success": "success", "failure": "failure", "canceled": "error"}


def request(repository: str, token: str, status: Status) -> Request:
    owner, _, name = repository.partition("/")
    path = "/repos/{}/{}/statuses/{}".format(
        *(urllib.parse.quote(p, safe="") for p in (owner, name, status.sha))
    )
    description = status.description
    if len(description) > DESCRIPTION_LIMIT:
        description = description[: DESCRIPTION_LIMIT - 1] + "…"
    body = {"state": _STATES[status.state], "context": status.context, "description": description}
    if status.target_url:
        body["target_url"] = status.target_url
    return Request("POST", path, {"Authorization": f"token {token}"}, body)


def accepted(code: int, body: str) -> bool:
    return False
