"""Prototypes of the proposed code changes, measured against unchanged taskcast in the same run.

Nothing here changes taskcast's own files: each prototype wraps or subclasses taskcast objects at
process start (a bench-only launcher), to size a proposal before anyone writes it properly.
See docs/performance.md, "Proposals", and `python -m bench.experiments.run --help`.
"""
