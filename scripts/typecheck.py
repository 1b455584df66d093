"""Run mypy on the packages as installed: `taskcast.core` is the folder `core/`, and so on.

The folders map into the `taskcast` namespace through `package-dir`, which mypy cannot follow
through an editable install; a tree of symlinks under build/typecheck gives it the real layout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPING = {
    "core": "core",
    "server": "server",
    "worker": "worker",
    "client": "client",
    "cli": "cli",
    "v1": "protos/taskcast/v1",
}


def main() -> int:
    """Build the symlink tree, then run mypy on every package."""
    tree = ROOT / "build" / "typecheck"
    shutil.rmtree(tree, ignore_errors=True)
    pkg = tree / "taskcast"
    pkg.mkdir(parents=True)
    for name, folder in MAPPING.items():
        (pkg / name).symlink_to(ROOT / folder, target_is_directory=True)
    packages = [arg for name in MAPPING if name != "v1" for arg in ("-p", f"taskcast.{name}")]
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), *packages]
    return subprocess.run(cmd, cwd=tree, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
