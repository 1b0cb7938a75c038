"""GitLab: ``POST /projects/{id}/statuses/{sha}`` (Commits API "Set the pipeline status of a
commit").

``id`` is the project's numeric id or its URL-encoded path (``group%2Fproject``). Body
``{state, name, description, target_url}``: ``state`` is ``pending``, ``running``,
``success``, ``failed`` or ``canceled`` (ours: ``pending``, ``success``, ``failed``,
``canceled``); ``name`` is the context. ``PRIVATE-TOKEN: <token>`` (a token with the ``api``
scope, of a user with at least the Developer role). Answer: 201. GitLab refuses to set the
state a status already has ("Cannot transition status via ..."): 400 with that text means the
status is already what we asked, and counts as set.
"""

from __future__ import annotations

import urllib.parse

from reconciler.edges.commit_status import Request, Status

KIND = "gitlab"
DEFAULT_API: str | None = "https://gitlab.com/api/v4"
DESCRIPTION_LIMIT = 255
_STATES = {"pending": "pending", "success": "success", "failure": "failed", "canceled": "canceled"}


def request(repository: str, token: str, status: Status) -> Request:
    project = urllib.parse.quote(repository, safe="")
    path = f"/projects/{project}/statuses/{urllib.parse.quote(status.sha, safe='')}"
    description = status.description
    if len(description) > DESCRIPTION_LIMIT:
        description = description[: DESCRIPTION_LIMIT - 1] + "…"
    body = {"state": _STATES[status.state], "name": status.context, "description": description}
    if status.target_url:
        body["target_url"] = status.target_url
    return Request("POST", path, {"PRIVATE-TOKEN": token}, body)


def accepted(code: int, body: str) -> bool:
    return code == 400 and "Cannot transition status" in body
