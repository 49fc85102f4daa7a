"""Dead-letter queues (``<queue>.XQ``): list, requeue and purge the messages Dramatiq gave up on.

RabbitMQ cannot peek: every message of an XQ is got unacknowledged, and closing the connection
hands back, in place, all those not acknowledged. Only selected messages are acknowledged (removed).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Protocol

import pika
import pika.exceptions

from jobs.broker import BROKER_ERRORS, broker_parameters, broker_unavailable
from jobs.errors import ConveyorError, DeadLetterNotFound
from jobs.fingerprint import Fingerprint, fingerprint
from jobs.kinds import ACTOR_KINDS, KINDS
from jobs.settings import Settings
from jobs.store.database import Database
from jobs.store.dead_letters import DeadJob, DeadJobStore
from jobs.store.delayed import DUE_OPTION
from jobs.store.jobs import as_utc

#: The kind shown for a message without a job row (undecodable, or not a Conveyor job).
FOREIGN_KIND = "?"
PURGED_ERROR = "purged from the dead-letter queue"
#: Called with ``(done, total)`` after each selected message.
Progress = Callable[[int, int], None]
#: Picks the ids to act on among the dead letters present when the action runs.
Selector = Callable[[Sequence["DeadLetter"]], Sequence[str]]

# Retry bookkeeping of Dramatiq: without it a requeued message has a fresh budget, due at once.
_DROPPED_OPTIONS = frozenset({"retries", "traceback", "eta"})


class _Channel(Protocol):
    """What requeue and purge do on the channel a message was got on (pika's ``BlockingChannel``)."""

    def basic_ack(self, delivery_tag: int) -> None: ...

    def basic_publish(
        self, exchange: str, routing_key: str, body: bytes, properties: Any, mandatory: bool
    ) -> None: ...


#: A message got and not yet acknowledged: channel, queue, delivery tag, properties, body.
_Raw = tuple[_Channel, str, int, Any, bytes]


@dataclass(frozen=True)
class DeadLetter:
    """One message of a dead-letter queue, joined with its job row when it has one."""

    #: The job id (Dramatiq's ``message_id``), or a digest of an undecodable message.
    id: str
    queue: str
    kind: str = FOREIGN_KIND
    job_id: str | None = None
    actor: str | None = None
    status: str | None = None
    dead_since: datetime | None = None
    attempts: int | None = None
    error: str | None = None
    #: Why the message is foreign (it has no job row): ``not JSON``, ``no job row``…
    reason: str | None = None
    #: The fingerprint key its job row keeps from when the worker dead-lettered it (not listed).
    stored_key: str | None = field(default=None, repr=False)

    @property
    def foreign(self) -> bool:
        return self.job_id is None

    @property
    def fingerprint(self) -> Fingerprint:
        """The group of errors it died of (see :mod:`jobs.fingerprint`), from its error now."""
        return fingerprint(self.kind, self.error, foreign_reason=self.reason if self.foreign else None)

    @property
    def key(self) -> str:
        """Its group's key: the one its row keeps (so that the dashboard's groups, read from the
        rows, and the group actions, matched on the messages, agree), else its fingerprint's."""
        return self.stored_key or self.fingerprint.key

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with stable snake_case keys."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stored_key"}  # no deep copy
        data.update(dead_since=self.dead_since.isoformat() if self.dead_since else None, foreign=self.foreign)
        return data


@dataclass(frozen=True)
class Outcome:
    """What a requeue or a purge did: the ids it handled, and those it skipped with why."""

    done: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()

    @property
    def count(self) -> int:
        return len(self.done)

    def to_dict(self) -> dict[str, Any]:
        skipped = [{"id": ident, "reason": reason} for ident, reason in self.skipped]
        return {"count": self.count, "ids": list(self.done), "skipped": skipped}


@dataclass(frozen=True)
class _Held:
    channel: _Channel
    tag: int  # only valid on its channel
    message: dict[str, Any] | None
    letter: DeadLetter


def dead_letter_queues(settings: Settings, queue: str | None = None) -> list[str]:
    """Every kind's namespaced queue, or only ``queue``: ``email``, ``conveyor.email``, or its XQ.

    Raises:
        ValueError: no job kind uses that queue (the message lists the known ones).
    """
    queues = {kind.queue: settings.queue_name(kind.queue) for kind in KINDS.values()}
    if queue is None:
        return list(dict.fromkeys(queues.values()))
    aliases = {**queues, **{n: queues[k.queue] for n, k in KINDS.items()}, **{q: q for q in queues.values()}}
    name = queue.strip().removesuffix(".XQ")
    if name not in aliases:
        raise ValueError(f"unknown queue {queue!r}; known queues: {', '.join(sorted(queues))}")
    return [aliases[name]]


def list_dead(settings: Settings, db: Database, queue: str | None = None) -> list[DeadLetter]:
    """Every message of the dead-letter queues, oldest first per queue; none is removed.

    Raises:
        ServiceUnavailable: RabbitMQ or PostgreSQL cannot be reached.
        ValueError: an unknown ``queue``.
    """
    with _scan(settings, db, queue) as held:
        return [item.letter for item in held]


def select_dead(letters: Sequence[DeadLetter], ids: Sequence[str] = (), *, all: bool = False) -> list[str]:
    """The ids of ``letters`` that ``ids`` (or ``all``) selects.

    Raises:
        ValueError: neither or both of ``ids`` and ``all``.
        DeadLetterNotFound: an id matches no dead letter (nothing is selected then).
    """
    if bool(ids) == all:
        raise ValueError("give job ids or all=True (not both)")
    if all:
        return [letter.id for letter in letters]
    wanted = list(dict.fromkeys(_normal(i) for i in ids))
    present = {letter.id for letter in letters}
    missing = [i for i in wanted if i not in present]
    if missing:
        raise DeadLetterNotFound(
            f"no dead-lettered message for {', '.join(missing)} (see `conveyor dlq list`)"
        )
    return wanted


def requeue(
    settings: Settings,
    db: Database,
    ids: Sequence[str] = (),
    *,
    all: bool = False,
    queue: str | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Run dead-lettered jobs again: same id, attempts and history; a fresh retry budget.

    Per message: the job goes back to ``queued``, the message (less its retry bookkeeping)
    is published to its queue and confirmed, then removed from the XQ: a crash in between
    leaves at worst a duplicate. Foreign messages and jobs no longer failed are skipped.

    Raises:
        ValueError: neither or both of ``ids`` and ``all``; an unknown ``queue``.
        DeadLetterNotFound: an id matches no dead letter (nothing is done then).
        ConveyorError: RabbitMQ refused a message (it stays dead, its job as it was).
        ServiceUnavailable: RabbitMQ or PostgreSQL cannot be reached.
    """
    return _apply(settings, db, queue, _by_ids(ids, all), _requeue_one, progress, confirm=True)


def purge(
    settings: Settings,
    db: Database,
    ids: Sequence[str] = (),
    *,
    all: bool = False,
    queue: str | None = None,
    progress: Progress | None = None,
) -> Outcome:
    """Remove dead-lettered messages for good; their jobs stay (or become) ``failed``.

    A job that succeeded, was cancelled or runs meanwhile is left alone: its message just goes.

    Raises:
        ValueError: neither or both of ``ids`` and ``all``; an unknown ``queue``.
        DeadLetterNotFound: an id matches no dead letter (nothing is done then).
        ServiceUnavailable: RabbitMQ or PostgreSQL cannot be reached.
    """
    return _apply(settings, db, queue, _by_ids(ids, all), _purge_one, progress)


def requeue_group(settings: Settings, db: Database, key: str, *, queue: str | None = None) -> Outcome:
    """Requeue every dead letter whose fingerprint's key is ``key`` (see :func:`requeue`).

    The group is matched when this runs, not when it was listed: a message of the same
    fingerprint dead-lettered since is requeued too, one requeued or purged meanwhile is not.

    Raises:
        ValueError: an unknown ``queue``.
        ConveyorError: RabbitMQ refused a message.
        ServiceUnavailable: RabbitMQ or PostgreSQL cannot be reached.
    """
    return _apply(settings, db, queue, _by_fingerprint(key), _requeue_one, None, confirm=True)


def purge_group(settings: Settings, db: Database, key: str, *, queue: str | None = None) -> Outcome:
    """Purge every dead letter whose fingerprint's key is ``key`` (see :func:`purge`), matched
    when this runs as :func:`requeue_group` does.

    Raises:
        ValueError: an unknown ``queue``.
        ServiceUnavailable: RabbitMQ or PostgreSQL cannot be reached.
    """
    return _apply(settings, db, queue, _by_fingerprint(key), _purge_one, None)


def _by_ids(ids: Sequence[str], everything: bool) -> Selector:
    return lambda letters: select_dead(letters, ids, all=everything)


def _by_fingerprint(key: str) -> Selector:
    return lambda letters: [letter.id for letter in letters if letter.key == key]


def _apply(
    settings: Settings,
    db: Database,
    queue: str | None,
    select: Selector,
    action: Callable[[Database, _Held, dict[str, None]], str | None],
    progress: Progress | None,
    *,
    confirm: bool = False,
) -> Outcome:
    """``action`` on each message ``select`` picks; it returns why it skipped one, or ``None``."""
    with _scan(settings, db, queue, confirm=confirm) as held:
        wanted = set(select([item.letter for item in held]))
        chosen = [item for item in held if item.letter.id in wanted]
        done: dict[str, None] = {}  # ordered, with fast membership
        skipped: list[tuple[str, str]] = []
        for index, item in enumerate(chosen, 1):
            reason = action(db, item, done)
            if reason is None:
                done[item.letter.id] = None
            else:
                skipped.append((item.letter.id, reason))
            if progress:
                progress(index, len(chosen))
        return Outcome(tuple(done), tuple(skipped))


def _requeue_one(db: Database, item: _Held, already: dict[str, None]) -> str | None:
    """Requeue one message; the reason when it is skipped instead."""
    job_id = item.letter.job_id
    if item.message is None or job_id is None:
        return f"foreign message ({item.letter.reason}): not requeued"
    if job_id in already:
        # A second dead copy of a job requeued a moment ago: one live copy is enough.
        item.channel.basic_ack(item.tag)
        return "duplicate of a message requeued in this run: removed"
    store = DeadJobStore(db)
    # Back to `queued` before its message is live, so that a worker runs it.
    before = store.reopen(job_id)
    if before is None:
        return "its job row is gone"
    if not before.reopened:
        return f"job is {before.status}: not requeued"
    try:
        _publish(item)
    except BaseException:
        # Nothing was sent: the job goes back to how it was, its message still dead.
        with suppress(ConveyorError):
            store.undo_reopen(job_id, before)
        raise
    item.channel.basic_ack(item.tag)
    return None


def _publish(item: _Held) -> None:
    """The original message to its queue, persistent as Dramatiq sends it; waits for the confirm.

    Raises:
        ConveyorError: RabbitMQ returned or refused the message.
    """
    assert item.message is not None
    options = {k: v for k, v in (item.message.get("options") or {}).items() if k not in _DROPPED_OPTIONS}
    options[DUE_OPTION] = round(time.time() * 1000)  # due now: its queue wait runs from the requeue
    body = json.dumps({**item.message, "queue_name": item.letter.queue, "options": options}).encode()
    priority = options.get("broker_priority") if isinstance(options.get("broker_priority"), int) else None
    properties = pika.BasicProperties(delivery_mode=2, priority=priority)
    try:
        item.channel.basic_publish("", item.letter.queue, body, properties, mandatory=True)
    except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
        refused = f"RabbitMQ refused job {item.letter.id} on {item.letter.queue} ({type(exc).__name__})"
        raise ConveyorError(f"{refused}; it stays in the dead-letter queue") from None


def _purge_one(db: Database, item: _Held, _done: dict[str, None]) -> None:
    """Fail the job for good (unless it finished or runs meanwhile), then remove its message."""
    # The row first: were the ack lost, the message would still be there to purge again.
    if item.letter.job_id is not None:
        DeadJobStore(db).fail(item.letter.job_id, PURGED_ERROR)
    item.channel.basic_ack(item.tag)


@contextmanager
def _scan(
    settings: Settings, db: Database, queue: str | None, *, confirm: bool = False
) -> Iterator[list[_Held]]:
    """Every message of the selected XQs, joined with its job row, unacknowledged until the block ends.

    Raises:
        ServiceUnavailable: RabbitMQ cannot be reached or drops the connection.
    """
    queues = dead_letter_queues(settings, queue)
    try:
        connection = pika.BlockingConnection(broker_parameters(settings))
    except BROKER_ERRORS as exc:
        raise broker_unavailable(settings, exc) from None
    try:
        fetched = [message for name in queues for message in _drain(connection, name, confirm=confirm)]
        decoded = [(raw, *_decode(raw[4])) for raw in fetched]
        rows = _job_rows(db, [message["message_id"] for _, message, _ in decoded if message])
        yield [_Held(raw[0], raw[2], m, _letter(raw, m, rows, why)) for raw, m, why in decoded]
    except BROKER_ERRORS as exc:
        raise broker_unavailable(settings, exc) from None
    finally:
        # Closing hands every message not acknowledged back to its XQ.
        if connection.is_open:
            with suppress(*BROKER_ERRORS):
                connection.close()


def dead_counts(settings: Settings, queue: str | None = None) -> dict[str, int]:
    """How many messages each selected dead-letter queue holds now (a passive declare each; 0
    for one never declared), by queue name (without ``.XQ``).

    Raises:
        ServiceUnavailable: RabbitMQ cannot be reached.
        ValueError: an unknown ``queue``.
    """
    queues = dead_letter_queues(settings, queue)
    try:
        connection = pika.BlockingConnection(broker_parameters(settings))
    except BROKER_ERRORS as exc:
        raise broker_unavailable(settings, exc) from None
    counts: dict[str, int] = {}
    try:
        channel = connection.channel()
        for name in queues:
            try:
                counts[name] = int(channel.queue_declare(f"{name}.XQ", passive=True).method.message_count)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                counts[name] = 0  # never declared: nothing was ever dead-lettered there
                channel = connection.channel()
    except BROKER_ERRORS as exc:
        raise broker_unavailable(settings, exc) from None
    finally:
        if connection.is_open:
            with suppress(*BROKER_ERRORS):
                connection.close()
    return counts


#: The largest prefetch count AMQP allows; a larger snapshot is read with no limit.
MAX_PREFETCH = 65535


def _drain(connection: pika.BlockingConnection, queue: str, *, confirm: bool) -> list[_Raw]:
    """The messages of ``queue``'s XQ at this moment, got on a channel of their own."""
    channel = connection.channel()
    try:
        declared = channel.queue_declare(f"{queue}.XQ", passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:  # never declared: nothing was ever dead-lettered there
            return []
        raise
    if confirm:
        channel.confirm_delivery()
    count = declared.method.message_count
    if count == 0:
        return []
    # A snapshot: what is dead-lettered while we read waits for the next command. A consumer
    # with a prefetch of exactly that many reads them in a few round trips, where one
    # ``basic_get`` each cost a round trip per message (1,000 letters: ~30 ms against ~480 ms).
    channel.basic_qos(prefetch_count=count if count <= MAX_PREFETCH else 0)
    fetched: list[_Raw] = []
    for method, properties, body in channel.consume(f"{queue}.XQ", auto_ack=False, inactivity_timeout=1.0):
        if method is None:  # fewer than counted: another reader holds some
            break
        fetched.append((channel, queue, method.delivery_tag, properties, body))
        if len(fetched) >= count:
            break
    channel.cancel()  # requeues only what arrived beyond the snapshot; ours stay held until settled
    return fetched


def _decode(body: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """Dramatiq's JSON message, or why it is not one."""
    try:
        data = json.loads(body)
    except ValueError:  # bad UTF-8 too
        return None, "not JSON"
    ok = isinstance(data, dict) and all(isinstance(data.get(k), str) for k in ("message_id", "actor_name"))
    if not ok or not isinstance(data.get("options", {}), dict):
        return None, "not a Dramatiq message"
    return data, None


def _job_rows(db: Database, message_ids: list[str]) -> dict[str, DeadJob]:
    # Only UUIDs: anything else cannot be a job id, and PostgreSQL would reject it.
    canonical = (_normal(i) for i in message_ids)
    return DeadJobStore(db).rows(i for i in canonical if _UUID_TEXT.match(i))


def _letter(
    raw: _Raw, message: dict[str, Any] | None, rows: dict[str, DeadJob], why: str | None
) -> DeadLetter:
    _, queue, _, properties, body = raw
    if message is None:
        ident = str(properties.message_id or "") or f"sha256:{hashlib.sha256(body).hexdigest()[:16]}"
        return DeadLetter(ident, queue, dead_since=_dead_since(properties), reason=why)
    ident, actor = _normal(message["message_id"]), message["actor_name"]
    since = _dead_since(properties, message)
    row = rows.get(ident)
    if row is None:
        why = "no job row" if actor in ACTOR_KINDS else f"no job row (actor {actor!r} is not a Conveyor job)"
        return DeadLetter(ident, queue, actor=actor, dead_since=since, reason=why)
    return DeadLetter(
        ident,
        queue,
        kind=row.kind,
        job_id=ident,
        actor=actor,
        status=row.status,
        dead_since=since,
        attempts=row.attempts,
        error=row.error,
        stored_key=row.group,
    )


def _dead_since(properties: Any, message: dict[str, Any] | None = None) -> datetime | None:
    """When RabbitMQ dead-lettered it (``x-death``), else when it was first enqueued."""
    deaths = (properties.headers or {}).get("x-death") or [None]
    moment = deaths[0].get("time") if isinstance(deaths, list) and isinstance(deaths[0], dict) else None
    stamp = (message or {}).get("message_timestamp")
    if not isinstance(moment, datetime) and isinstance(stamp, int) and not isinstance(stamp, bool):
        with suppress(ValueError, OverflowError, OSError):
            moment = datetime.fromtimestamp(stamp / 1000, UTC)
    return as_utc(moment) if isinstance(moment, datetime) else None


#: A UUID in its canonical text form (what :func:`_normal` makes of any UUID).
_UUID_TEXT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _normal(ident: str) -> str:
    """UUIDs compare in their canonical form (ids may be typed in upper case)."""
    if _UUID_TEXT.match(ident):  # already canonical: the common case, with no parsing
        return ident
    try:
        return str(uuid.UUID(ident))
    except ValueError:
        return ident.strip()
