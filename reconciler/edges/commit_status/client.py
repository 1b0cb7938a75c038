"""``HttpPoster``: sets commit statuses over HTTP (httpx), for one provider and repository.

Contract (``post(status)``): one attempt, bounded by ``timeout`` seconds, through a client that
ignores proxy settings of the environment and follows no redirects (a token is never sent
anywhere else); never raises. 2xx, or an answer the provider says means "already so"
(``Provider.accepted``), is ok; a network error, 429 or 5xx is worth a retry (the caller waits
and retries); another 4xx is not. ``detail`` carries the status code and the first 200
characters of the answer, redacted, and never the token (which is read once, from
``token_file``, and sent only in the provider's header).
"""

from __future__ import annotations

from pathlib import Path

import httpx

from reconciler import __version__
from reconciler.edges.commit_status import Posted, Status, providers
from reconciler.support.redaction import redact

__all__ = ["HttpPoster"]


class HttpPoster:
    def __init__(
        self,
        provider: str,
        api_url: str | None,
        repository: str,
        token_file: Path,
        *,
        timeout: float = 10.0,
    ) -> None:
        self._module = providers.get(provider)
        base = api_url or self._module.DEFAULT_API
        if not base:
            raise ValueError(f"commit_status.api_url is required for {provider}")
        token = token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"commit_status.token_file {token_file} is empty")
        self._token = token
        self._repository = repository
        self.api_url = base.rstrip("/")
        self._http = httpx.Client(
            timeout=timeout,
            trust_env=False,
            follow_redirects=False,
            headers={"User-Agent": f"reconciler/{__version__}"},
        )

    @property
    def provider(self) -> str:
        return self._module.KIND

    def post(self, status: Status) -> Posted:
        request = self._module.request(self._repository, self._token, status)
        try:
            answer = self._http.request(
                request.method,
                self.api_url + request.path,
                headers=dict(request.headers),
                json=dict(request.json),
            )
        except httpx.HTTPError as exc:
            return Posted(False, True, self._clean(f"{type(exc).__name__}: {exc}"))
        text = answer.text[:200]
        detail = self._clean(f"{answer.status_code} {text}".strip())
        if answer.is_success or self._module.accepted(answer.status_code, text):
            return Posted(True, False, detail)
        retry = answer.status_code == 429 or answer.status_code >= 500
        return Posted(False, retry, detail)

    def _clean(self, text: str) -> str:
        return redact(text.replace(self._token, "***"))

    def close(self) -> None:
        self._http.close()
