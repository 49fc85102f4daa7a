"""Signed messages (SPEC §10): an HMAC-SHA256 over everything in a message that decides what runs.

With ``CONVEYOR_SIGNING_KEY`` set, producers sign each message they create, and a worker holding
the key runs only messages whose signature verifies (``jobs/middleware/signature.py``). The
threat covered is a process that can publish to RabbitMQ but does not hold the key: it can
neither make a message of its own run, nor change a signed message's job, payload, queue or
delivery options (replaying a signed message unchanged is harmless: its job runs once, the store
skips a finished job's copies).

What is signed (:func:`canonical`): the queue (its canonical name: a ``.DQ`` or ``.XQ`` copy is
the same message), the actor, the args and kwargs, the message id and timestamp, and every option
except :data:`UNSIGNED_OPTIONS`, the bookkeeping that Dramatiq and Conveyor change while a message
travels (retry counts, tracebacks, a delay's ``eta``). So a retry, a delayed message published
when due, a requeued dead letter and a copy waiting for a running job all verify unchanged, and
no worker ever needs to sign a message it received.

The signature is the message option ``conveyor_signature``: ``v1:<key id>:<base64url MAC>``; the
key id (a fingerprint of the key, not the key) lets a worker pick the current or the previous key
during a rotation.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq.common import q_name

from jobs.errors import SignatureError

if TYPE_CHECKING:
    from jobs.settings import Settings

#: The message option holding the signature.
SIGNATURE_OPTION = "conveyor_signature"
_VERSION = "v1"
_KEY_ID_RE = re.compile(r"[0-9a-f]{12}")

#: Options left out of the signature: set or changed in transit by Dramatiq (``Retries``: retries,
#: traceback, requeue_timestamp; a delay: eta) or by Conveyor (``conveyor_held`` on a ``.DQ``
#: message taken over, ``conveyor_rechecks`` on a copy waiting for its running job,
#: ``conveyor_due_at`` on a held message). None of them
#: changes what a job does; ``conveyor dlq requeue`` drops the first three as well.
UNSIGNED_OPTIONS = frozenset(
    {
        SIGNATURE_OPTION,
        "eta",
        "retries",
        "traceback",
        "requeue_timestamp",
        "conveyor_held",
        "conveyor_rechecks",
        "conveyor_due_at",
    }
)


# Built once: ``json.dumps`` with options builds a new encoder on every call, a large part of
# the cost of signing.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
_PLAIN = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def key_id(secret: str) -> str:
    """The fingerprint naming a key in signatures: 12 hex digits of an HMAC of a fixed text, which
    tells nothing about the key."""
    return hmac.new(secret.encode(), b"conveyor/signing-key-id", hashlib.sha256).hexdigest()[:12]


def canonical(message: dramatiq.Message[Any] | dramatiq.MessageProxy) -> bytes:
    """The signed bytes of ``message``: compact JSON with sorted keys of what decides what runs.

    The same whether computed from the message a producer built or from the one a worker decoded
    (a producer signs the JSON form of its values: see :meth:`MessageSigner.sign`).
    """
    options = {k: v for k, v in message.options.items() if k not in UNSIGNED_OPTIONS}
    fields = {
        "actor": message.actor_name,
        "args": list(message.args),
        "id": message.message_id,
        "kwargs": message.kwargs,
        "options": options,
        "queue": q_name(message.queue_name),
        "timestamp": message.message_timestamp,
    }
    return _CANONICAL.encode(fields).encode()


@dataclass(frozen=True)
class SigningKey:
    """One signing secret and its fingerprint; ``until`` (previous key only): refused after it."""

    secret: bytes
    id: str
    until: datetime | None = None

    @classmethod
    def of(cls, secret: str, until: datetime | None = None) -> SigningKey:
        return cls(secret.encode(), key_id(secret), until)

    def __repr__(self) -> str:  # the secret never reaches a log or a traceback
        return f"SigningKey(id={self.id!r})"

    def mac(self, data: bytes) -> bytes:
        return hmac.new(self.secret, data, hashlib.sha256).digest()


class MessageSigner:
    """Signs messages with the current key; verifies them against the current or the previous key.

    Thread-safe (it holds no state beyond its keys).
    """

    def __init__(self, current: SigningKey, previous: SigningKey | None = None) -> None:
        self.current = current
        self.previous = previous

    @classmethod
    def from_settings(cls, settings: Settings) -> MessageSigner | None:
        """The signer of ``settings``; None without ``CONVEYOR_SIGNING_KEY``."""
        if settings.signing_key is None:
            return None
        previous = None
        if settings.signing_key_previous is not None:
            until = parse_until(settings.signing_previous_until)
            previous = SigningKey.of(settings.signing_key_previous, until)
        return cls(SigningKey.of(settings.signing_key), previous)

    def sign(self, message: dramatiq.Message[Any]) -> dramatiq.Message[Any]:
        """A copy of ``message`` signed with the current key (:data:`SIGNATURE_OPTION` added).

        Its args, kwargs and options are replaced by their JSON form, what a worker decodes, so
        that a tuple or an integer dict key signs as the worker will see it.

        Raises:
            TypeError, ValueError: a value JSON cannot hold (as Dramatiq's own encoding would).
        """
        args, kwargs, options = json.loads(_PLAIN.encode([message.args, message.kwargs, message.options]))
        options.pop(SIGNATURE_OPTION, None)
        signed = dataclasses.replace(message, args=tuple(args), kwargs=kwargs, options=options)
        tag = base64.urlsafe_b64encode(self.current.mac(canonical(signed))).rstrip(b"=").decode()
        options[SIGNATURE_OPTION] = f"{_VERSION}:{self.current.id}:{tag}"
        return signed

    def verify(
        self, message: dramatiq.Message[Any] | dramatiq.MessageProxy, now: datetime | None = None
    ) -> str:
        """Check ``message``'s signature; returns the id of the key that made it.

        Raises:
            SignatureError: no signature (``unsigned`` is True), or one that is malformed, made
                with an unknown key or an expired previous key, or that does not match the content.
        """
        signature = message.options.get(SIGNATURE_OPTION)
        if signature is None:
            raise SignatureError("message is not signed", unsigned=True)
        kid, tag = _parts(signature)
        key = self._key(kid, now or datetime.now(UTC))
        try:
            expected = key.mac(canonical(message))
        except (TypeError, ValueError) as exc:  # a value JSON cannot hold: no valid signature covers it
            raise SignatureError(f"message signature invalid: content cannot be encoded ({exc})") from None
        if not hmac.compare_digest(expected, tag):
            raise SignatureError("message signature invalid: it does not match the message's content")
        return key.id

    def _key(self, kid: str, now: datetime) -> SigningKey:
        if kid == self.current.id:
            return self.current
        previous = self.previous
        if previous is not None and kid == previous.id:
            if previous.until is not None and now >= previous.until:
                raise SignatureError(
                    f"message signature invalid: made with the previous key {kid}, "
                    f"refused since {previous.until.isoformat()}"
                )
            return previous
        raise SignatureError(f"message signature invalid: made with an unknown key {kid}")


def _parts(signature: object) -> tuple[str, bytes]:
    """``v1:<key id>:<MAC>`` split, the MAC decoded."""
    if isinstance(signature, str):
        pieces = signature.split(":")
        if len(pieces) == 3 and pieces[0] == _VERSION:
            try:
                tag = base64.urlsafe_b64decode(pieces[2] + "=" * (-len(pieces[2]) % 4))
            except (binascii.Error, ValueError):
                tag = b""
            # The key id is checked too: it is quoted in errors and logs, and comes from the sender.
            if len(tag) == hashlib.sha256().digest_size and _KEY_ID_RE.fullmatch(pieces[1]):
                return pieces[1], tag
    raise SignatureError("message signature invalid: malformed (expected v1:<key id>:<MAC>)")


def parse_until(text: str | None) -> datetime | None:
    """``CONVEYOR_SIGNING_PREVIOUS_UNTIL``: an ISO 8601 time (UTC when it names no offset).

    Raises:
        ValueError: not an ISO 8601 time.
    """
    if text is None:
        return None
    moment = datetime.fromisoformat(text.strip())
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
