"""The reconciler benchmark suite: ``.venv/bin/python -m bench [--quick] [--only NAME]``.

See ``bench/registry.py`` for how to add a benchmark and ``docs/performance.md`` for figures.
"""
