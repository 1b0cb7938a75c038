"""The Git edge (TEMPORARY shim until the reader/writer split lands)."""

from reconciler.edges.git.reader import CommitInfo, PushResult, SourceError, UnsafeTreeError

GitReader = object
GitWriter = object

__all__ = ["CommitInfo", "GitReader", "GitWriter", "PushResult", "SourceError", "UnsafeTreeError"]
