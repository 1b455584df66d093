"""Every Redis key is spelt in `core` only (`core/layout.py`, `core/mqlayout.py`, the Lua scripts):
server, worker, CLI, client, tests and benchmarks ask a `Layout`."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

from tests.support import ROOT

# Pieces of taskcast's and Dramatiq's key names, inside a string literal (f-strings included).
KEY_PIECE = re.compile(
    r"""(?x)
    :(?:t|e|tn|tenants|idx|kinds|workers|leases|once|idem|stats|rt|live|cancel|mq|prune-lock
       |fin|lim)(?:[:"'}]|$)
    | \.(?:DQ|XQ|msgs|wake)\b
    | __acks__ | __heartbeats__
    """
)
OUTSIDE_CORE = ("server", "worker", "cli", "client", "tests", "bench", "scripts")


def _url(text: str) -> bool:
    """The HTTP gateway's cancel verb (`/v1/tasks/{id}:cancel`): a path, with a `/` before its
    `:cancel` (no key name has one), not the cancel channel's key."""
    return all(m.group().startswith(":cancel") for m in KEY_PIECE.finditer(text)) and bool(
        re.search(r"/[^\s'\"]*:cancel", text)
    )


def _spellings(path: Path) -> list[str]:
    source = path.read_text()
    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    found = [
        f"{name}:{tok.start[0]}: {tok.string}"
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.STRING and KEY_PIECE.search(tok.string) and not _url(tok.string)
    ]
    # Layout.key(*parts) was the escape hatch that let any module build any key.
    found += [
        f"{name}:{n}: {line.strip()}"
        for n, line in enumerate(source.splitlines(), 1)
        if "layout.key(" in line
    ]
    return found


def test_no_key_is_spelt_outside_core() -> None:
    here = Path(__file__).resolve()
    files = [
        p
        for folder in OUTSIDE_CORE
        for p in sorted((ROOT / folder).rglob("*.py"))
        if p.resolve() != here and "results" not in p.parts
    ]
    assert len(files) > 50  # the scan found the code
    assert [s for p in files for s in _spellings(p)] == []


def test_the_scan_finds_a_spelt_key(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text('prefix = "p"\nkey = f"{prefix}:kinds"\nq = "default.DQ"\n')
    assert len(_spellings(sample)) == 2
    route = tmp_path / "route.py"
    route.write_text('route = "/v1/tasks/{id}:cancel"\nkey = f"{prefix}:cancel"\n')
    assert [s.split(": ", 1)[1] for s in _spellings(route)] == ['f"{prefix}:cancel"']
