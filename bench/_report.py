"""What every benchmark shares: the machine, percentiles, a printed table, the JSON file.

Raw results go outside the checkout, to `$BENCH_RESULTS` (default: taskcast-bench-results in the
temporary directory): a full pass writes about 1.5 MB, mostly latency samples. With
`BENCH_KEEP=1` a run is also kept in bench/results/ in compact form (each latency list cut to
its 201 quantiles, enough for the CDF plots), as the runs docs/performance.md quotes are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Compact copies of the runs the docs quote, in git.
KEPT = ROOT / "bench" / "results"
#: Raw results of every run, outside the checkout.
RESULTS = Path(
    os.environ.get("BENCH_RESULTS") or Path(tempfile.gettempdir()) / "taskcast-bench-results"
)
#: Points a kept latency list is cut to: every half percentile, min and max included.
KEPT_QUANTILES = 201
_NUMBERS = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")


def machine() -> dict[str, Any]:
    """Cores, CPU model, Python and the load when the run started."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "loadavg_at_start": list(os.getloadavg()),
    }


CODE = ("core", "server", "worker", "client", "cli", "protos")


def code_state() -> dict[str, Any]:
    """Which taskcast was measured: HEAD, and a digest of uncommitted changes to its packages."""
    root = ROOT

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=20, check=False
            )
            return out.stdout
        except (OSError, subprocess.TimeoutExpired):
            return ""

    changed = git("status", "--porcelain", "--", *CODE).splitlines()
    digest = hashlib.sha1(git("diff", "HEAD", "--", *CODE).encode())
    for line in sorted(changed):
        if line.startswith("??"):
            path = root / line[3:]
            for f in sorted(path.rglob("*") if path.is_dir() else [path]):
                if f.is_file():
                    digest.update(f.read_bytes())
    return {
        "head": git("rev-parse", "--short", "HEAD").strip(),
        "uncommitted": [line[3:] for line in changed],
        "digest": digest.hexdigest()[:12],
    }


def pct(values: Sequence[float], q: float) -> float:
    """The q-th quantile (0..1) by nearest rank; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, max and mean in milliseconds of durations given in seconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": pct(ms, 0.5),
        "p90_ms": pct(ms, 0.9),
        "p99_ms": pct(ms, 0.99),
        "max_ms": max(ms) if ms else float("nan"),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
    }


def sample(values_ms: Sequence[float], size: int = 5_000) -> list[float]:
    """At most `size` evenly spaced order statistics (enough for a CDF), rounded to 1 us."""
    ordered = sorted(values_ms)
    step = max(1, len(ordered) // size)
    return [round(v, 3) for v in ordered[::step]]


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table, numbers right-aligned."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(header)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for r, row in zip(cells, rows, strict=True):
        lines.append(
            "  ".join(
                c.rjust(w) if isinstance(v, (int, float)) else c.ljust(w)
                for c, w, v in zip(r, widths, row, strict=True)
            )
        )
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    """How a target reads in a table."""
    return "met" if ok else "NOT met"


def keep() -> bool:
    """Whether this run is also kept in bench/results/ (`BENCH_KEEP=1`)."""
    return os.environ.get("BENCH_KEEP", "") not in ("", "0")


def files(name: str) -> list[Path]:
    """Every result file of a benchmark, kept and raw, oldest first; a raw run hides its copy."""
    by_name = {p.name: p for folder in (KEPT, RESULTS) for p in folder.glob(f"{name}-*.json")}
    return [by_name[n] for n in sorted(by_name)]


def compact(doc: Any) -> Any:
    """The document with every latency list cut to its quantiles (for bench/results/)."""
    if isinstance(doc, dict):
        return {
            k: _quantiles(v) if k == "latencies_ms" and isinstance(v, list) else compact(v)
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [compact(v) for v in doc]
    return doc


def _quantiles(values: Sequence[float]) -> list[float]:
    if len(values) <= KEPT_QUANTILES:
        return list(values)
    last = KEPT_QUANTILES - 1
    return [round(pct(values, i / last), 3) for i in range(KEPT_QUANTILES)]


def dumps(doc: Any) -> str:
    """JSON indented by object, each list of numbers on one line (a kept file stays short)."""
    text = json.dumps(doc, indent=2, default=str)
    return _NUMBERS.sub(lambda m: "[" + re.sub(r"\s+", " ", m[1]) + "]", text) + "\n"


def save(filename: str, doc: dict[str, Any]) -> Path:
    """Write a result to RESULTS (and compact to bench/results/ with BENCH_KEEP=1)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / filename
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"\nwrote {path}")
    if keep():
        kept = KEPT / filename
        kept.write_text(dumps(compact(doc)))
        print(f"kept {kept.relative_to(ROOT)}")
    return path


def write(name: str, quick: bool, data: dict[str, Any]) -> Path:
    """Save the results as <name>-<date>[-quick].json (see `save`) and return the raw path."""
    now = dt.datetime.now(dt.UTC)
    doc = {
        "benchmark": name,
        "quick": quick,
        "date": now.isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code_state(),
        **data,
    }
    stamp = now.strftime("%Y%m%d-%H%M%S")
    return save(f"{name}-{stamp}{'-quick' if quick else ''}.json", doc)


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a short pass (seconds, not minutes)")
    return p
