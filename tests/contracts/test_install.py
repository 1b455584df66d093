"""The install: `pip install taskcast` is the client alone, and each extra is what its code needs.

The client-only tests run `_client_only.py` with `python -I` in a subprocess whose import hook
refuses every module of the extras, against the module's real server and worker.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from typing import Any

import pytest

from taskcast.cli import extras
from tests.contracts import _client_only as boot
from tests.support import ROOT

BOOT = ROOT / "tests" / "contracts" / "_client_only.py"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return match[0].lower().replace("_", "-")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", str(BOOT), *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd="/",  # nothing of the checkout on the path but the installed package
    )


@pytest.mark.usefixtures("worker")
def test_client_only_environment_submits_and_watches(grpc_addr: str) -> None:
    run = _run("client", grpc_addr)
    assert run.returncode == 0, run.stderr
    out: dict[str, Any] = json.loads(run.stdout)
    assert out["states"] == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert out["result"]["payload"] == {"hello": "client only"}
    assert out["async_result"]["payload"] == {"hello": "async"}
    assert set(out["modules"]) - {"typing_extensions", "cython_runtime"} == {
        "google",
        "grpc",
        "taskcast",
    }


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["server", "--listen", "127.0.0.1:0"], "server"),
        (["worker", "-p", "1"], "worker"),
        (["dev"], "all"),
        (["stats", "--server", "127.0.0.1:1"], "cli"),
    ],
)
def test_a_command_without_its_extra_names_it(argv: list[str], extra: str) -> None:
    run = _run("cli", *argv)
    assert run.returncode == 1
    assert f"pip install 'taskcast[{extra}]'" in run.stderr
    assert "Traceback" not in run.stderr


def test_help_works_without_any_extra() -> None:
    run = _run("cli", "--help")
    assert run.returncode == 0, run.stderr
    assert "run the gRPC server (install taskcast[server])" in " ".join(run.stdout.split())


def test_base_dependencies_are_exactly_the_clients() -> None:
    assert sorted(map(_name, PYPROJECT["dependencies"])) == [
        "googleapis-common-protos",  # google.rpc's error details (client/_errors.py)
        "grpcio",
        "protobuf",
    ]


def test_every_extra_module_is_refused_in_the_client_only_run() -> None:
    extra_modules = {m for modules in extras.MODULES.values() for m in modules}
    assert extra_modules <= boot.REFUSED


@pytest.mark.parametrize("extra", sorted(extras.MODULES))
def test_the_cli_knows_each_extra_as_pyproject_declares_it(extra: str) -> None:
    declared = {
        _name(r) for r in PYPROJECT["optional-dependencies"][extra] if "sys_platform" not in r
    }
    dists = packages_distributions()
    known = {_name(dists[m][0]) for m in extras.MODULES[extra]}
    assert known == declared
