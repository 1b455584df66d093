"""Generate the Python code for protos/taskcast/v1/*.proto, beside the protos.

Run `python scripts/gen_protos.py` after editing a .proto; `--check` exits 1 when the
committed files differ from what the current protos generate (CI runs it).
Generating with `-I protos` makes the generated imports read `from taskcast.v1 import ...`,
so nothing is rewritten afterwards.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from google.rpc import status_pb2

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = PROTO_ROOT / "taskcast" / "v1"
BIN = Path(sys.executable).parent  # the plugins of mypy-protobuf live beside the interpreter
# The tree that holds googleapis-common-protos' .proto files (google/rpc/status.proto).
GOOGLEAPIS = Path(status_pb2.__file__).resolve().parent.parent.parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out: Path) -> list[Path]:
    """Run protoc on every proto of the package into `out`; return the generated files."""
    protos = sorted(PACKAGE.glob("*.proto"))
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{GOOGLEAPIS}",  # google/rpc/status.proto, from googleapis-common-protos
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        *map(str, protos),
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
    ]
    subprocess.run(cmd, check=True)
    return sorted(
        p for p in (out / "taskcast" / "v1").iterdir() if p.name.endswith(GENERATED_SUFFIXES)
    )


def main() -> int:
    """Generate, or with --check compare against, the committed code."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        committed = sorted(p for p in PACKAGE.iterdir() if p.name.endswith(GENERATED_SUFFIXES))
        if args.check:
            stale = [
                p.name
                for p in fresh
                if not (PACKAGE / p.name).exists()
                or not filecmp.cmp(p, PACKAGE / p.name, shallow=False)
            ]
            stale += [p.name for p in committed if p.name not in {f.name for f in fresh}]
            if stale:
                print(f"stale generated code: {', '.join(stale)}; run `make gen`", file=sys.stderr)
                return 1
            print("generated code is fresh")
            return 0
        for p in committed:
            p.unlink()
        for p in fresh:
            shutil.copy2(p, PACKAGE / p.name)
            print(f"wrote {(PACKAGE / p.name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
