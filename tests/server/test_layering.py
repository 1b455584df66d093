"""What server/convert.py's docstring promises: only the translating modules touch `_pb2`."""

from __future__ import annotations

import ast
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server"
# convert and the servicer translate; app registers the generated services; healthcheck is the
# standard health service; errors builds google.rpc status details.
TRANSLATORS = {"convert.py", "servicer.py", "app.py", "healthcheck.py", "errors.py"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_only_the_translating_modules_import_generated_code() -> None:
    touching = {
        path.name for path in SERVER.glob("*.py") if any("_pb2" in name for name in _imports(path))
    }
    assert touching == TRANSLATORS
