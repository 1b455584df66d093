"""Run every benchmark, each in its own process: `python -m bench.run [--quick] [names...]`."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

ALL = (
    "submit",
    "e2e",
    "batch",
    "seed",
    "handoff",
    "fanout",
    "gateway",
    "scaling",
    "llm",
    "slots",
    "slot_overhead",
    "observability",
    "memory",
    "redrive",
    "limits",
    "fairness",
    "redis_cost",
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="a short pass of each")
    p.add_argument(
        "names", nargs="*", metavar="NAME", help=f"any of {', '.join(ALL)} (default: all)"
    )
    args = p.parse_args()
    unknown = set(args.names) - set(ALL)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    failed = []
    t0 = time.monotonic()
    for name in args.names or ALL:
        print(f"\n=== bench.{name}{' --quick' if args.quick else ''}", flush=True)
        cmd = [sys.executable, "-m", f"bench.{name}", *(["--quick"] if args.quick else [])]
        if subprocess.run(cmd, check=False).returncode != 0:
            failed.append(name)
    print(
        f"\nall done in {time.monotonic() - t0:.0f} s" + (f"; FAILED: {failed}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
