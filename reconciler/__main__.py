"""``python -m reconciler``: the same command line as ``reconciler``."""

from reconciler.cli import main

main()
