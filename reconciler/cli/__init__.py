"""The ``reconciler`` command line (entry point ``reconciler.cli:main``)."""

from reconciler.cli import events, inspect, operate
from reconciler.cli.app import app, main

__all__ = ["app", "events", "inspect", "main", "operate"]
