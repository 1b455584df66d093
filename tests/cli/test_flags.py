"""Flags and variables are named from each settings model's own `env_prefix`."""

from __future__ import annotations

import argparse

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskcast.cli import flags
from taskcast.server.config import ServerSettings


class _Demo(BaseSettings):
    """A model with another prefix than taskcast's."""

    model_config = SettingsConfigDict(env_prefix="DEMO_", frozen=True)

    batch_size: int = 4


def test_names_come_from_the_model_prefix() -> None:
    parser = argparse.ArgumentParser()
    flags.add(parser, _Demo)
    assert "[DEMO_BATCH_SIZE, default 4]" in parser.format_help()
    assert "each also a DEMO_* environment variable" in parser.format_help()
    assert flags.export(_Demo()) == {"DEMO_BATCH_SIZE": "4"}


def test_a_bad_value_names_its_variable() -> None:
    args = parser_args(["--batch-size", "many"])
    with pytest.raises(SystemExit, match=r"batch_size \(DEMO_BATCH_SIZE\)"):
        flags.build(_Demo, args)


def test_server_settings_export_under_their_prefix() -> None:
    prefix = ServerSettings.model_config["env_prefix"]
    exported = flags.export(ServerSettings())
    assert prefix == "TASKCAST_" and exported
    assert all(name.startswith(prefix) for name in exported)


def parser_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    flags.add(parser, _Demo)
    return parser.parse_args(argv)
