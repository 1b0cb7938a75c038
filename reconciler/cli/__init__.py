"""The ``reconciler`` command line (entry point ``reconciler.cli:main``)."""

from reconciler.cli.app import app, main

__all__ = ["app", "main"]
