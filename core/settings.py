"""The settings every taskcast process shares; each process builds one frozen object at start-up."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskcast.core import redisurl
from taskcast.core.layout import MAX_EVENTS, PREFIX, RETENTION_S, Layout
from taskcast.core.logs import LogFormat


class CommonSettings(BaseSettings):
    """Redis location and the data layout; read from `TASKCAST_*` environment variables."""

    model_config = SettingsConfigDict(env_prefix="TASKCAST_", frozen=True, extra="ignore")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis for state, events and queues (redis://, rediss://, unix://, "
        "redis+sentinel://host:port,.../service[/db])",
    )
    redis_prefix: str = Field(PREFIX, description="prefix of every key taskcast writes")
    retention: float = Field(RETENTION_S, gt=0, description="seconds a finished task is kept")
    max_events: int = Field(
        MAX_EVENTS, ge=10, description="events kept per task (older ones trimmed)"
    )
    log_format: LogFormat = Field(
        "text", description="log lines as text, or json (one object a line, with task fields)"
    )

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        return redisurl.check(value)

    @property
    def layout(self) -> Layout:
        """The key layout these settings describe."""
        return Layout(self.redis_prefix, self.max_events, int(self.retention))
