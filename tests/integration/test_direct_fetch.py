"""``DirectConnection.fetch``: a statement with psycopg's placeholders, run through libpq's own
prepared-statement call (the worker's claims and batched writes), gives the rows psycopg's cursor
gives, on a real PostgreSQL; survives its prepared statement being dropped; and refuses a
parameter it cannot send as text instead of sending something else."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from jobs.errors import ServiceUnavailable
from jobs.store import Database
from jobs.store.direct import DirectConnection, _libpq_form

pytestmark = [pytest.mark.integration]

#: Every kind of parameter the store sends, each cast as the store's statements cast them; a
#: name used twice, and a literal ``%`` (doubled, as psycopg and SQLAlchemy write it).
STATEMENT = """
SELECT %(text)s::varchar, %(flag)s::bool, %(count)s::int, %(ratio)s::float8, %(id)s::uuid,
       %(at)s::timestamptz, %(doc)s::jsonb, %(missing)s::text, %(ids)s::uuid[],
       %(count)s::int + 1, 'a%%b'
"""


def _params() -> dict[str, Any]:
    return {
        "text": 'quote " backslash \\ comma , brace { and é',
        "flag": False,
        "count": 41,
        "ratio": 0.25,
        "id": uuid.uuid4(),
        "at": datetime(2026, 12, 7, 21, 30, 1, 123456, tzinfo=timezone(timedelta(hours=2))),
        "doc": Jsonb({"to": ["a@example.com"], "n": 1, "nested": {"ok": True}}),
        "missing": None,
        "ids": "{" + ",".join(f'"{uuid.uuid4()}"' for _ in range(3)) + "}",
    }


@pytest.fixture
def direct(db: Database) -> Iterator[DirectConnection]:
    connection = DirectConnection(db.url, db.translate)
    yield connection
    connection.close()


def test_fetch_gives_the_rows_a_cursor_gives(db: Database, direct: DirectConnection) -> None:
    params = _params()
    with direct.connect() as pg:
        expected = pg.execute(STATEMENT, params).fetchall()
    rows = direct.fetch(STATEMENT, params)
    assert rows == expected
    (row,) = rows
    assert row[0] == params["text"]
    assert row[1] is False
    assert row[5] == params["at"].astimezone(UTC)
    assert row[6] == {"to": ["a@example.com"], "n": 1, "nested": {"ok": True}}
    assert row[7] is None
    assert row[9] == 42
    assert row[10] == "a%b"


def test_the_libpq_form_numbers_each_name_once() -> None:
    form = _libpq_form(STATEMENT)
    assert form.names == ("text", "flag", "count", "ratio", "id", "at", "doc", "missing", "ids")
    assert "$3::int + 1" in form.text
    assert "'a%b'" in form.text
    assert "%(" not in form.text
    assert _libpq_form(STATEMENT) is form  # made once


def test_a_dropped_prepared_statement_is_prepared_again(direct: DirectConnection) -> None:
    params = _params()
    first = direct.fetch(STATEMENT, params)
    with direct.connect() as pg:
        pg.execute("DEALLOCATE ALL")
    assert direct.fetch(STATEMENT, params) == first


def test_a_new_connection_prepares_again(db: Database, direct: DirectConnection) -> None:
    params = _params()
    first = direct.fetch(STATEMENT, params)
    with direct.connect() as pg:
        backend = pg.info.backend_pid
    with psycopg.connect(db.url.replace("+psycopg", ""), autocommit=True) as other:
        # With a timeout, it returns once the backend is gone (not as soon as it is signalled).
        other.execute("SELECT pg_terminate_backend(%s, 5000)", (backend,))
    with pytest.raises(ServiceUnavailable):
        direct.fetch(STATEMENT, params)
    assert direct.fetch(STATEMENT, params) == first  # reconnected, and prepared on the new one


def test_a_parameter_without_a_text_form_is_refused(direct: DirectConnection) -> None:
    with pytest.raises(TypeError, match="no text form for a list parameter"):
        direct.fetch("SELECT %(ids)s::uuid[]", {"ids": [uuid.uuid4()]})
