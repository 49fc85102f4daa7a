"""Error fingerprints: one group per (kind, exception type, normalised message)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from jobs.admin.dead_groups import group_dead, group_marked
from jobs.admin.dlq import DeadLetter
from jobs.fingerprint import MESSAGE_WIDTH, NO_TYPE, Fingerprint, fingerprint, normalise, split_error
from jobs.store.dead_letters import MarkedGroup


@pytest.mark.parametrize(
    ("message", "normal"),
    [
        ("timed out after 30 s", "timed out after <n> s"),
        ("retry 3 of 5, waited 1.25 s", "retry <n> of <n>, waited <n> s"),
        ("no job 0f8fad5b-d9cb-469f-a165-70867728950e", "no job <id>"),
        ("no job 0f8fad5bd9cb469fa16570867728950e", "no job <id>"),
        ("bad pointer 0x7f3a2c and digest deadbeef12", "bad pointer <hex> and digest <hex>"),
        ("template 'welcome' is missing", "template <str> is missing"),
        ('key "a b c" unknown', "key <str> unknown"),
        ("550 mailbox ada@example.com unknown", "<n> mailbox <email> unknown"),
        ("cannot reach smtp://user:pw@mail:25/x now", "cannot reach <url> now"),
        ("connect to 10.0.0.7:5672 refused", "connect to <ip> refused"),
        ("a\n  multi\tline   text", "a multi line text"),
        ("word2vec and v3 stay", "word2vec and v3 stay"),
    ],
)
def test_normalise_replaces_what_varies_from_job_to_job(message: str, normal: str) -> None:
    assert normalise(message) == normal


def test_normalise_keeps_at_most_the_message_width() -> None:
    assert len(normalise("x" * 1000)) == MESSAGE_WIDTH


@pytest.mark.parametrize(
    ("error", "split"),
    [
        ("PermanentError: noop asked to fail", ("PermanentError", "noop asked to fail")),
        ("smtplib.SMTPDataError: (550, b'no')", ("smtplib.SMTPDataError", "(550, b'no')")),
        ("TimeoutError", ("TimeoutError", "")),
        ("timed out", (NO_TYPE, "timed out")),
        ("Connection refused by peer", (NO_TYPE, "Connection refused by peer")),
        (None, (NO_TYPE, "")),
    ],
)
def test_split_error_reads_the_type_workers_record_before_the_colon(
    error: str | None, split: tuple[str, str]
) -> None:
    assert split_error(error) == split


def test_errors_differing_only_in_variable_parts_share_a_fingerprint() -> None:
    one = fingerprint("email", "SMTPRecipientsRefused: 'ada@example.com' refused (550)")
    two = fingerprint("email", "SMTPRecipientsRefused: 'bob@example.org' refused (551)")

    assert one == two == Fingerprint("email", "SMTPRecipientsRefused", "<str> refused (<n>)")
    assert one.key == two.key
    assert len(one.key) == 16


def test_the_kind_the_type_and_the_words_each_split_a_group() -> None:
    base = fingerprint("email", "SMTPDataError: 550 rejected")

    assert fingerprint("report", "SMTPDataError: 550 rejected").key != base.key
    assert fingerprint("email", "SMTPSenderRefused: 550 rejected").key != base.key
    assert fingerprint("email", "SMTPDataError: 550 refused").key != base.key


def test_foreign_messages_are_grouped_by_why_they_are_foreign() -> None:
    assert fingerprint("?", None, foreign_reason="not JSON") == Fingerprint("?", NO_TYPE, "foreign: not JSON")


def _letter(ident: str, error: str, minutes: int, queue: str = "ns.default") -> DeadLetter:
    when = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return DeadLetter(ident, queue, kind="noop", job_id=ident, status="failed", dead_since=when, error=error)


def test_group_dead_counts_members_and_their_first_and_last_sighting() -> None:
    letters = [
        _letter("a", "PermanentError: job 1 failed", 5),
        _letter("b", "PermanentError: job 22 failed", 1),
        _letter("c", "ValueError: bad input", 3),
        _letter("d", "PermanentError: job 333 failed", 9, queue="ns.other"),
    ]

    groups = group_dead(letters)

    assert [g.count for g in groups] == [3, 1]
    big = groups[0].to_dict()
    assert big["count"] == 3
    assert big["error_type"] == "PermanentError"
    assert big["message"] == "job <n> failed"
    assert big["first_seen"].startswith("2026-12-01T00:01")
    assert big["last_seen"].startswith("2026-12-01T00:09")
    assert big["queues"] == ["ns.default", "ns.other"]
    assert big["sample"] == "PermanentError: job 333 failed"  # the newest member's error
    assert sorted(big["ids"]) == ["a", "b", "d"]
    assert big["fingerprint"] == letters[0].fingerprint.key


def test_group_marked_shows_each_key_by_its_newest_members_error_largest_group_first() -> None:
    def when(minutes: int) -> datetime:
        return datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=minutes)

    small = MarkedGroup("k2", ("a",), when(5), when(5), ("ns.default",), "noop", "ValueError: bad input 5")
    big = MarkedGroup(
        "k1", ("c", "b"), when(1), when(9), ("ns.default", "ns.other"), "noop", "PermanentError: job 9 failed"
    )

    first, second = (group.to_dict() for group in group_marked([small, big]))

    assert (first["fingerprint"], first["count"], first["ids"]) == ("k1", 2, ["c", "b"])
    assert (first["error_type"], first["message"]) == ("PermanentError", "job <n> failed")
    assert first["sample"] == "PermanentError: job 9 failed"
    assert first["first_seen"].startswith("2026-12-01T00:01")
    assert first["last_seen"].startswith("2026-12-01T00:09")
    assert first["queues"] == ["ns.default", "ns.other"]
    assert (second["fingerprint"], second["count"], second["error_type"]) == ("k2", 1, "ValueError")


def test_a_letters_stored_key_names_its_group_and_stays_out_of_its_json() -> None:
    letter = replace(_letter("a", "PermanentError: job 1 failed", 0), stored_key="0123456789abcdef")

    assert letter.key == "0123456789abcdef"
    assert _letter("a", "PermanentError: job 1 failed", 0).key == letter.fingerprint.key
    assert "stored_key" not in letter.to_dict()
    assert [g.key for g in group_dead([letter])] == ["0123456789abcdef"]
