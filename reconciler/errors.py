"""The exception hierarchy: errors classified by what happens next, not by their text.

Edges translate foreign exceptions (GitPython, ansible-runner, sqlite3, httpx) into these at the
boundary, so callers decide on the class, never on a message::

    ReconcilerError
    ├── PermanentError          stalled: retrying cannot help until something changes
    │   ├── edges.git.UnsafeTreeError         a commit's tree is unusable (escapes, .git, size)
    │   ├── edges.ansible.InventoryError      an inventory cannot be parsed
    │   └── record.StoreError                 unknown schema, corrupt database, refused write
    └── TemporaryError          transient: retry after ``delay`` seconds (None: caller's backoff)
        ├── edges.git.SourceError             the remote cannot be read now
        └── record.StoreUnavailable           the state database cannot be reached now

In the spirit of kopf's ``PermanentError`` / ``TemporaryError(delay=...)``.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error reconciler raises on purpose."""


class PermanentError(ReconcilerError):
    """Retrying will not help until the input changes (a new commit, a fixed config)."""


class TemporaryError(ReconcilerError):
    """Transient: try again later; ``delay`` is a hint in seconds (None: use the backoff)."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay
