"""taskcast's benchmark suite: each module measures one promise against its baseline, same run.

Run one with `python -m bench.<name> [--quick]`, all with `python -m bench.run --quick`
(`make bench`). See bench/README.md.
"""
