"""The ``reconciler`` command line (entry point ``reconciler.cli:main``)."""

from reconciler.cli import inspect, operate
from reconciler.cli.app import app, main

__all__ = ["app", "inspect", "main", "operate"]
