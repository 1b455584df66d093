"""Worker settings: one frozen object per worker process, from `TASKCAST_*` variables."""

from __future__ import annotations

from pydantic import Field

from taskcast.core.kinds import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT_S
from taskcast.core.settings import CommonSettings


class WorkerSettings(CommonSettings):
    """What a worker process needs; every field is also a `taskcast worker` flag."""

    lease: float = Field(
        10.0, ge=1, description="seconds a running attempt survives without heartbeat"
    )
    reap_interval: float = Field(2.0, gt=0, description="seconds between checks for lost attempts")
    retry_min_backoff: float = Field(
        1.0, ge=0, description="first retry delay (s), doubled each time"
    )
    retry_max_backoff: float = Field(300.0, ge=0, description="longest retry delay (s)")
    default_timeout: float = Field(
        DEFAULT_TIMEOUT_S, gt=0, description="time limit of an attempt (s) by default"
    )
    default_max_attempts: int = Field(
        DEFAULT_MAX_ATTEMPTS, ge=1, description="attempts per task by default"
    )
    prune_interval: float = Field(
        60.0, gt=0, description="seconds between sweeps of expired tasks out of the list indexes"
    )
    compact_after: float = Field(
        3600.0,
        ge=0,
        description="seconds after a task finishes until its events are compacted to the last one",
    )
    # 1 s, Dramatiq's own default: new work wakes an idle consumer at once (a token on its queue's
    # wake-up list, passed on by a fetch that leaves messages behind), a consumer with full
    # prefetch waits on the acknowledgement that frees room, and a delay queue's consumer wakes
    # when the message it holds is due; the poll is a safety net. At 100 ms the idle polls of a
    # process's ten-odd consumers cost 16-27 ms of CPU a second (docs/performance.md, Slots).
    # At most a minute: a graceful stop waits up to one interval for idle consumers to notice.
    poll_interval_ms: int = Field(
        1000, ge=1, le=60_000, description="longest idle pause between queue polls"
    )
    # At most 10: servers count a worker silent for 30 s (core.capacity.LIVE_MS) as gone.
    register_interval: float = Field(
        10.0,
        ge=0.1,
        le=10,
        description="seconds between records of this process's kinds and capacity",
    )
    # 1,000: an async attempt waiting on a slow call costs ~50-100 KiB and no CPU, so a process
    # holds a thousand LLM streams in well under 400 MiB (measured in docs/performance.md); a
    # kind that is CPU- or memory-heavy per call should run on its own queue with fewer slots.
    slots: int = Field(1000, ge=1, le=100_000, description="async attempts a process runs at once")
    shutdown_timeout: float = Field(
        30.0, ge=0, description="seconds running attempts get to finish on SIGTERM"
    )
    # Dramatiq's default is 60 s, and only a roll of its maintenance chance (1 in 1,000 commands,
    # `mq_maintenance_chance`) then puts a dead process's fetched messages back: 325 s once.
    # Messages a limit holds back wait in a delay-queue consumer's memory for as long as the
    # limit holds, so a killed worker would strand them that long. 20 s stays well above a
    # GIL-starved pause (dramatiq#692).
    mq_heartbeat_timeout: float = Field(
        20.0,
        ge=2,
        description="seconds after which a silent worker process's fetched messages "
        "(queued, delayed, held back by a limit) are put back for others",
    )
    # Dramatiq's maintenance also runs `KEYS <dead worker's acks>*` over the whole keyspace while
    # a dead process is listed: a higher chance recovers sooner but can cost a large Redis dearly.
    # 10,000 (1%): an idle process polls each queue once a second, so it rolls maintenance about
    # every 10 s, as it did at Dramatiq's 0.1% with the former 100 ms poll.
    mq_maintenance_chance: int = Field(
        10_000,
        ge=0,
        le=1_000_000,
        description="broker commands per million that run Dramatiq's queue maintenance "
        "(puts back the messages of processes silent for TASKCAST_MQ_HEARTBEAT_TIMEOUT)",
    )
    unserved_kind_timeout: float = Field(
        300.0,
        gt=0,
        description="seconds a task may wait for a kind no live worker serves before it fails",
    )
    # 2 MiB: room for `http.request`'s default 1 MiB body even base64-encoded (1.34 MiB), while
    # the largest payload (1 MiB) and result together stay under gRPC's default 4 MiB message.
    max_result_bytes: int = Field(
        2 << 20, ge=1024, description="largest JSON result; a larger one fails the task at once"
    )
    # 64 KiB: an `ai.chat` event (50 ms of tokens) is a few hundred bytes, and a watcher buffers
    # up to TASKCAST_WATCHER_BUFFER (1024) events, so one slow watcher holds at most 64 MiB.
    max_output_bytes: int = Field(
        64 << 10, ge=1024, description="largest output event; longer output is split over several"
    )
    # One port for all of a `taskcast worker`'s processes: the supervisor serves their sum.
    metrics_port: int = Field(
        0, ge=0, le=65535, description="port of the Prometheus /metrics endpoint (0: off)"
    )
    metrics_host: str = Field("127.0.0.1", description="address the /metrics endpoint binds")

    @property
    def lease_ms(self) -> int:
        """Lease in milliseconds."""
        return int(self.lease * 1000)
