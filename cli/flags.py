"""Every setting is a `TASKCAST_*` variable and the same-named flag: built from the models."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


def env_name(model: type[BaseSettings] | BaseSettings, field: str) -> str:
    """The environment variable of a settings field: the model's own `env_prefix` plus its name."""
    return f"{model.model_config.get('env_prefix', '')}{field}".upper()


def add(parser: argparse.ArgumentParser, model: type[BaseSettings]) -> None:
    """One `--field-name` flag per settings field, with its description and default."""
    prefix = env_name(model, "")
    group = parser.add_argument_group(f"settings (each also a {prefix}* environment variable)")
    for name, info in model.model_fields.items():
        env = env_name(model, name)
        flag = "--" + name.replace("_", "-")
        if info.annotation is bool:
            group.add_argument(
                flag,
                dest=f"setting_{name}",
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{info.description} [{env}, default {info.default}]",
            )
        else:
            group.add_argument(
                flag,
                dest=f"setting_{name}",
                default=None,
                metavar=name.upper(),
                help=f"{info.description} [{env}, default {info.default}]",
            )


def build(model: type[S], args: argparse.Namespace) -> S:
    """The settings from flags over environment over defaults; exits with a clear message."""
    given = {
        k.removeprefix("setting_"): v
        for k, v in vars(args).items()
        if k.startswith("setting_") and v is not None
    }
    try:
        return model(**given)
    except ValidationError as exc:
        lines = [f"  {_where(model, e['loc'])}: {e['msg']}" for e in exc.errors()]
        sys.exit("invalid settings:\n" + "\n".join(lines))


def _where(model: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    """The field an error is about, with its variable; a check across fields has none."""
    if not loc:
        return "settings"
    return f"{'.'.join(map(str, loc))} ({env_name(model, str(loc[0]))})"


def export(settings: BaseSettings) -> dict[str, str]:
    """The settings as TASKCAST_* variables, for child processes."""
    out: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        out[env_name(settings, name)] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )
    return out


def environ_with(settings: BaseSettings, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """os.environ plus the settings (and extras) as variables."""
    return {**os.environ, **export(settings), **{k: str(v) for k, v in (extra or {}).items()}}
