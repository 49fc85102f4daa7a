"""The jobs page's query string (filters, search box, cursor) and the artifact download's headers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from console.web.actions import BadRequest
from console.web.pages.artifacts import content_disposition, safe_media_type
from console.web.search import decode_cursor, encode_cursor, parse_query, payload_documents
from jobs.settings import Settings
from jobs.store.search import contains

SETTINGS = Settings(broker_url="memory://", database_url="sqlite://", namespace="web")
JOB_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def test_a_cursor_round_trips_to_the_same_position() -> None:
    moment = datetime(2026, 12, 7, 5, 30, 1, 123456, tzinfo=UTC)

    text = encode_cursor((moment, JOB_ID))

    assert decode_cursor(text) == (moment, JOB_ID)
    assert not set(text) & set("=/+")


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "%%%",
        "bm90IGEgY3Vyc29y",  # "not a cursor"
        encode_cursor((datetime(2026, 1, 1, tzinfo=UTC), JOB_ID)).replace("M", "Z", 3)[:-3],
        "MjAyNi0wMS0wMVQwMDowMDowMHxub3QtYS11dWlk",  # 2026-01-01T00:00:00|not-a-uuid (naive time too)
    ],
)
def test_a_malformed_cursor_is_a_bad_request(junk: str) -> None:
    with pytest.raises(BadRequest, match="malformed cursor"):
        decode_cursor(junk)


def test_filters_are_read_and_a_short_queue_is_namespaced() -> None:
    query = parse_query(
        {"status": "failed", "kind": "email", "queue": "email", "since": "1h", "q": ""}, SETTINGS
    )

    assert (query.status, query.kind, query.queue) == ("failed", "email", "web.email")
    assert query.since is not None
    assert query.since < datetime.now(UTC)
    assert (query.job_id, query.error, query.payload, query.before) == (None, None, (), None)


@pytest.mark.parametrize(
    ("q", "field", "value"),
    [
        (JOB_ID.upper(), "job_id", JOB_ID),
        ('{"to": "ada@example.com"}', "payload", ({"to": "ada@example.com"},)),
        ("to=ada@example.com", "payload", ({"to": "ada@example.com"}, {"to": ["ada@example.com"]})),
        ("context.name=Ada", "payload", ({"context": {"name": "Ada"}}, {"context": {"name": ["Ada"]}})),
        ("sleep=0.5", "payload", ({"sleep": 0.5}, {"sleep": [0.5]})),
        ("permanent=true", "payload", ({"permanent": True}, {"permanent": [True]})),
        ('context={"name": "Ada"}', "payload", ({"context": {"name": "Ada"}},)),
        ("SMTP refused", "error", "SMTP refused"),
        ("error:x=1", "error", "x=1"),
        ("refused: a=b", "error", "refused: a=b"),
    ],
)
def test_the_search_box_reads_an_id_a_payload_or_error_text(q: str, field: str, value: object) -> None:
    query = parse_query({"q": q}, SETTINGS)

    assert getattr(query, field) == value


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"status": "weird"}, "unknown status"),
        ({"statu": "failed"}, "unknown parameter"),
        ({"since": "yesterday"}, "since"),
        ({"until": "99999999999999d"}, "until"),
        ({"kind": "a b"}, "malformed kind"),
        ({"queue": "x" * 300}, "malformed queue"),
        ({"q": "x" * 600}, "longer than"),
        ({"q": "{not json"}, "not a JSON object"),
        ({"before": "garbage!"}, "malformed cursor"),
    ],
)
def test_junk_in_the_query_string_is_a_bad_request(params: dict[str, str], reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        parse_query(params, SETTINGS)


def test_only_a_json_object_or_key_value_is_a_payload_search() -> None:
    with pytest.raises(BadRequest, match="JSON object"):
        payload_documents('{"a": 1')
    assert payload_documents("no equals sign") is None
    assert payload_documents("[1, 2]") is None
    assert parse_query({"q": "[1, 2]"}, SETTINGS).error == "[1, 2]"


@pytest.mark.parametrize(
    ("document", "part", "expected"),
    [
        ({"to": "a", "n": 1}, {"to": "a"}, True),
        ({"to": "a"}, {"to": "b"}, False),
        ({"context": {"name": "Ada", "x": 1}}, {"context": {"name": "Ada"}}, True),
        ({"to": ["a", "b"]}, {"to": ["b"]}, True),
        ({"to": ["a", "b"]}, {"to": ["c"]}, False),
        ({"n": 1}, {"n": True}, False),
        ({"n": 1}, {"n": 1.0}, False),
        ({"n": 1}, {"m": None}, False),
        ({"to": "a"}, {}, True),
    ],
)
def test_contains_behaves_like_postgresql_jsonb_containment(
    document: object, part: object, expected: bool
) -> None:
    assert contains(document, part) is expected


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("report.csv", "attachment; filename=\"report.csv\"; filename*=UTF-8''report.csv"),
        ("../../etc/passwd", "attachment; filename=\"passwd\"; filename*=UTF-8''passwd"),
        ('a"b;c\r\n.txt', "attachment; filename=\"a_b_c.txt\"; filename*=UTF-8''a%22b%3Bc.txt"),
        (".hidden", "attachment; filename=\"hidden\"; filename*=UTF-8''.hidden"),
        ("résumé.pdf", "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"),
        ("..", "attachment; filename=\"artifact\"; filename*=UTF-8''artifact"),
    ],
)
def test_the_download_name_is_safe_and_exact(name: str, header: str) -> None:
    assert content_disposition(name) == header


@pytest.mark.parametrize(
    ("given", "served"),
    [
        ("image/webp", "image/webp"),
        ("text/csv; charset=utf-8", "text/csv; charset=utf-8"),
        ("text/html\r\nSet-Cookie: x=1", "application/octet-stream"),
        ("", "application/octet-stream"),
        ("nonsense", "application/octet-stream"),
    ],
)
def test_a_content_type_that_is_not_one_is_served_as_bytes(given: str, served: str) -> None:
    assert safe_media_type(given) == served
