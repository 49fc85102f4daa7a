"""Live worker replicas, read from the registry the ``Heartbeat`` middleware keeps in Redis.

Each worker process owns one hash ``<ns>:workers:<replica_id>:<pid>`` whose TTL its
heartbeat renews; here those hashes are grouped back into replicas (one ``conveyor
worker`` command each). When Redis cannot be reached the job store still knows who ran
jobs lately, so the admin gets that instead of an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from jobs.logs import mask_secrets
from jobs.middleware.heartbeat import registry_prefix
from jobs.services import redis_certificate_error
from jobs.settings import Settings, mask_url
from jobs.store import Database
from jobs.store.stats import StatsStore

if TYPE_CHECKING:
    import redis

    from jobs.redis_lite import RegistryClient

#: How far back the PostgreSQL fallback looks for workers that ran jobs.
RECENT_WINDOW = timedelta(minutes=10)
#: Keys asked for per SCAN round trip, and hashes read per pipeline.
SCAN_BATCH = 500


@dataclass(frozen=True)
class ProcessBeat:
    """One worker process's last heartbeat, as its registry hash holds it."""

    replica_id: str
    host: str
    pid: int
    supervisor_pid: int
    version: str
    queues: tuple[str, ...]
    processes: int
    threads: int
    busy: int
    processed: int
    failed: int
    started: datetime
    heartbeat: datetime
    state: str
    #: The id the process signs its attempts with (empty from older versions).
    worker_id: str = ""


@dataclass(frozen=True)
class ReplicaView:
    """One live ``conveyor worker`` command, summed over its processes."""

    id: str
    host: str
    pid: int
    version: str
    queues: tuple[str, ...]
    processes: int
    threads: int
    busy: int
    processed: int
    failed: int
    started: datetime
    last_heartbeat: datetime
    pids: tuple[int, ...]
    state: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "queues": list(self.queues),
            "processes": self.processes,
            "threads": self.threads,
            "busy": self.busy,
            "processed": self.processed,
            "failed": self.failed,
            "started": self.started.isoformat(),
            "last_heartbeat": self.last_heartbeat.isoformat(),
            "pids": list(self.pids),
            "state": self.state,
        }


@dataclass(frozen=True)
class RecentWorker:
    """A worker process that ran jobs lately, as the job store saw it (``host:pid``)."""

    id: str
    host: str
    pid: int
    attempts: int
    last_seen: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "attempts": self.attempts,
            "last_seen": self.last_seen.isoformat(),
        }


@dataclass(frozen=True)
class WorkersView:
    """What ``conveyor workers`` shows: live replicas, or recent workers when Redis is down."""

    source: Literal["redis", "postgresql"]
    note: str | None
    replicas: Sequence[ReplicaView | RecentWorker]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "note": self.note,
            "replicas": [replica.to_dict() for replica in self.replicas],
        }


def live_replicas(settings: Settings, redis_client: redis.Redis, db: Database) -> WorkersView:
    """Every replica with a live heartbeat; on a Redis failure, who ran jobs in the last 10 min.

    Raises:
        ServiceUnavailable: Redis's certificate fails verification (a mistake, not an outage), or
            Redis is unreachable and so is the job store.
        SchemaMissing: Redis is unreachable and the job store has no schema.
    """
    import redis  # loaded already: redis_client is redis-py's

    try:
        beats = read_beats(redis_client, settings.namespace)
    except redis.RedisError as exc:
        misconfigured = redis_certificate_error(settings, exc)
        if misconfigured is not None:  # not an outage: the PostgreSQL fallback would hide it
            raise misconfigured from None
        reason = mask_secrets(str(exc).strip().rstrip(".") or type(exc).__name__)
        note = (
            f"Redis unreachable at {mask_url(settings.redis_url)}: {reason}; showing the workers that "
            f"ran jobs in the last {int(RECENT_WINDOW.total_seconds() // 60)} min, from PostgreSQL"
        )
        since = datetime.now(UTC) - RECENT_WINDOW
        return WorkersView(source="postgresql", note=note, replicas=recent_workers(db, since=since))
    return WorkersView(source="redis", note=None, replicas=group_replicas(beats))


def read_beats(client: RegistryClient, namespace: str) -> list[ProcessBeat]:
    """Every process entry of ``namespace`` (SCAN, never KEYS: it does not block Redis).

    Raises:
        redis.RedisError: (redis-py) Redis is unreachable or failed.
        RegistryUnavailable: the same, from :class:`~jobs.redis_lite.LiteRedis`.
    """
    keys = list(client.scan_iter(match=f"{registry_prefix(namespace)}*", count=SCAN_BATCH))
    beats = []
    for start in range(0, len(keys), SCAN_BATCH):
        with client.pipeline(transaction=False) as pipe:
            for key in keys[start : start + SCAN_BATCH]:
                pipe.hgetall(key)
            # One stray key of another type under the prefix must not hide every replica.
            hashes = pipe.execute(raise_on_error=False)
        # A key that expired between SCAN and HGETALL comes back empty: skipped, like junk.
        beats += [
            beat
            for fields in hashes
            if isinstance(fields, Mapping) and (beat := parse_beat(fields)) is not None
        ]
    return beats


def parse_beat(fields: Mapping[Any, Any]) -> ProcessBeat | None:
    """A registry hash (bytes or str) as a :class:`ProcessBeat`; None when empty or malformed."""
    data = {_text(k): _text(v) for k, v in fields.items()}
    try:
        return ProcessBeat(
            replica_id=data["replica_id"],
            host=data["host"],
            pid=int(data["pid"]),
            supervisor_pid=int(data["supervisor_pid"]),
            version=data.get("version", "?"),
            queues=tuple(q for q in data.get("queues", "").split(",") if q),
            processes=int(data["processes"]),
            threads=int(data["threads"]),
            busy=int(data.get("busy", 0)),
            processed=int(data.get("processed", 0)),
            failed=int(data.get("failed", 0)),
            started=_utc(data["started"]),
            heartbeat=_utc(data["heartbeat"]),
            state=data.get("state", "running"),
            worker_id=data.get("worker_id", ""),
        )
    except (KeyError, ValueError):
        # Another version's layout, or a stray key under the prefix: not worth failing for.
        return None


def group_replicas(beats: Iterable[ProcessBeat]) -> list[ReplicaView]:
    """Processes grouped by replica id, with their counters summed; ordered by host, then start."""
    groups: dict[str, list[ProcessBeat]] = {}
    for beat in beats:
        groups.setdefault(beat.replica_id, []).append(beat)
    replicas = [_replica(replica_id, members) for replica_id, members in groups.items()]
    return sorted(replicas, key=lambda r: (r.host, r.started, r.id))


def _replica(replica_id: str, members: Sequence[ProcessBeat]) -> ReplicaView:
    first = members[0]
    return ReplicaView(
        id=replica_id,
        host=first.host,
        pid=first.supervisor_pid,
        # Processes of one replica share a version unless it was upgraded under a live supervisor.
        version=",".join(sorted({m.version for m in members})),
        queues=tuple(sorted({q for m in members for q in m.queues})),
        processes=max(m.processes for m in members),
        threads=max(m.threads for m in members),
        busy=sum(m.busy for m in members),
        processed=sum(m.processed for m in members),
        failed=sum(m.failed for m in members),
        started=min(m.started for m in members),
        last_heartbeat=max(m.heartbeat for m in members),
        pids=tuple(sorted(m.pid for m in members)),
        state="stopping" if any(m.state == "stopping" for m in members) else "running",
    )


def recent_workers(db: Database, *, since: datetime) -> list[RecentWorker]:
    """Worker processes (``host:pid``) that started or finished an attempt since ``since``.

    Raises:
        ServiceUnavailable: the job store cannot be reached.
        SchemaMissing: the job store has no schema.
    """
    return [
        RecentWorker(
            id=f"{seen.host}:{seen.pid}",
            host=seen.host,
            pid=seen.pid,
            attempts=seen.attempts,
            last_seen=seen.last_seen,
        )
        for seen in StatsStore(db).worker_activity(since)
    ]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _utc(text: str) -> datetime:
    return _as_utc(datetime.fromisoformat(text))


def _as_utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; Conveyor stores UTC everywhere.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
