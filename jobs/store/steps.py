"""Statements defined once with SQLAlchemy Core, for SQLAlchemy and for a psycopg connection.

A :class:`Step` is a Core statement with the same compiled once to psycopg's SQL (its
constants apart, as parameters). :func:`through` runs steps at once on a SQLAlchemy
connection, PostgreSQL or SQLite; a runner on another connection only has to return
something :class:`Written`-like, read once its transaction is done. A statement built from
:class:`Rows` serves one job or a batch (:func:`batch` compiles both, for a psycopg
connection). The store's transitions (``jobs/store/transitions.py``) are written with these,
once for every path.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol, TypeVar

from psycopg.types.json import Jsonb
from sqlalchemy import ARRAY, JSON, Connection, Text, any_, bindparam, cast, column, func, literal, select
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.sql import ColumnElement, Insert
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import BindParameter

_PSYCOPG = psycopg_dialect.dialect()  # type: ignore[no-untyped-call]
_Insert = TypeVar("_Insert", bound=Insert)


@dataclass(frozen=True)
class Step:
    """One statement: the Core statement, and the same compiled for a psycopg connection."""

    statement: Executable
    sql: str
    #: The parameters a caller supplies.
    names: frozenset[str]
    #: The statement's own constants (statuses, outcomes), sent as parameters by psycopg.
    constants: Mapping[str, Any]
    #: Parameters that carry JSON (psycopg needs them wrapped).
    json: frozenset[str]

    def core_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {name: params[name] for name in self.names}

    def psycopg_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        values = dict(self.constants)
        for name in self.names:
            value = params[name]
            values[name] = Jsonb(value) if name in self.json and value is not None else value
        return values


def step(statement: Executable) -> Step:
    """``statement`` with its psycopg SQL, compiled once (at import, so a bad one fails early)."""
    compiled = statement.compile(dialect=_PSYCOPG)  # type: ignore[attr-defined]
    binds: dict[BindParameter[Any], str] = compiled.bind_names
    return Step(
        statement=statement,
        sql=compiled.string,
        names=frozenset(name for bind, name in binds.items() if bind.required),
        constants={name: bind.effective_value for bind, name in binds.items() if not bind.required},
        json=frozenset(name for bind, name in binds.items() if isinstance(bind.type, JSON)),
    )


class Written(Protocol):
    """What a statement wrote, readable once its transaction is done."""

    def rows(self) -> list[tuple[Any, ...]]: ...

    def count(self) -> int: ...


#: Runs a step with its parameters, in the caller's transaction.
Run = Callable[[Step, Mapping[str, Any]], Written]


@dataclass(frozen=True)
class _Read:
    written: list[tuple[Any, ...]]
    affected: int

    def rows(self) -> list[tuple[Any, ...]]:
        return self.written

    def count(self) -> int:
        return self.affected


def through(connection: Connection) -> Run:
    """Run steps at once on a SQLAlchemy connection (PostgreSQL or SQLite)."""

    def run(statement: Step, params: Mapping[str, Any]) -> Written:
        result = connection.execute(statement.statement, statement.core_params(params))
        rows = [tuple(row) for row in result] if result.returns_rows else []
        return _Read(rows, result.rowcount)

    return run


def param(name: str, type_: Any) -> BindParameter[Any]:
    """A parameter the caller supplies (named apart from any column: SQLAlchemy reserves those)."""
    return bindparam(name, type_=type_, required=True)


# ---------------------------------------------------------------- row sources


@dataclass(frozen=True)
class Rows:
    """Where a statement's rows come from, so that one definition serves one job and a batch.

    ``c`` names a column expression per value: one job's bound parameter, or that column of
    an ``unnest`` of arrays (one element per job, the same names, one statement per batch).
    ``JSON`` values of a batch travel as text, cast back in the statement.
    """

    c: Mapping[str, ColumnElement[Any]]
    #: Whether the rows are a batch's arrays (else one job's parameters).
    batch: bool
    #: A batch's arrays, by name.
    arrays: Mapping[str, BindParameter[Any]] = field(default_factory=dict)

    def pruning(self, key: ColumnElement[Any], name: str) -> list[ColumnElement[bool]]:
        """For a batch, ``key = ANY`` of the array ``name``: said besides the join on ``c[name]``,
        it lets PostgreSQL plan the statement for the partitions of ``jobs`` that hold the batch's
        ids only, rather than open every partition (``jobs/store/partitions.py``). Nothing for
        one job: ``key = c[name]`` prunes already."""
        return [key == any_(self.arrays[name])] if self.batch else []

    def insert(self, statement: _Insert, values: Mapping[str, Any]) -> _Insert:
        """``statement`` inserting ``values`` (column name → expression): ``VALUES`` for one
        job (no ``SELECT``: SQLite's upsert would need a ``WHERE`` to parse it), else ``SELECT``."""
        if not self.batch:
            return statement.values(dict(values))
        return statement.from_select(list(values), select(*(literal_of(v) for v in values.values())))


def literal_of(value: Any) -> ColumnElement[Any]:
    return value if isinstance(value, ColumnElement) else literal(value)


def one_row(columns: Mapping[str, Any], *, scalars: Mapping[str, Any]) -> Rows:
    """One job's values as bound parameters."""
    return Rows({name: param(name, type_) for name, type_ in {**columns, **scalars}.items()}, batch=False)


def unnested(columns: Mapping[str, Any], *, scalars: Mapping[str, Any], once: bool = False) -> Rows:
    """A batch's values as arrays, ``unnest``-ed side by side; ``scalars`` stay one parameter.

    ``once``: unnest them in a ``WITH`` of their own, for a statement that reads them twice.
    """
    types = {name: Text() if isinstance(type_, JSON) else type_ for name, type_ in columns.items()}
    params = {name: param(name, ARRAY(type_)) for name, type_ in types.items()}
    arrays = func.unnest(*params.values())
    rows: Any = arrays.table_valued(*(column(name, type_) for name, type_ in types.items())).render_derived(
        name="v"
    )
    if once:
        rows = select(rows).cte("v")
    c: dict[str, ColumnElement[Any]] = {
        name: cast(rows.c[name], columns[name]) if isinstance(columns[name], JSON) else rows.c[name]
        for name in columns
    }
    c.update((name, param(name, type_)) for name, type_ in scalars.items())
    return Rows(c, batch=True, arrays=params)


_BY_JOB = operator.itemgetter("job")


@dataclass(frozen=True)
class Batch:
    """A statement compiled twice for the writer: for one job, and over arrays for many."""

    one: Step
    many: Step
    #: The per-job values (the rest, such as ``now``, are one for the batch).
    columns: frozenset[str]
    #: Per-job values that carry JSON: a batch sends them as text.
    json: frozenset[str]

    def compiled(self, rows: Sequence[Mapping[str, Any]], **scalars: Any) -> tuple[str, dict[str, Any]]:
        """The SQL and psycopg parameters for ``rows`` (without ``unnest`` when there is one)."""
        if len(rows) == 1:
            return self.one.sql, self.one.psycopg_params({**rows[0], **scalars})
        # In job order, as a producer's rows are copied (``JobStore.create_many_sent``): two
        # statements that make or lock the same job rows never wait on each other in a cycle.
        rows = sorted(rows, key=_BY_JOB)
        arrays: dict[str, Any] = {}
        for name in self.columns:
            values = [row[name] for row in rows]
            if name in self.json:
                values = [None if value is None else json.dumps(value) for value in values]
            arrays[name] = array_literal(values)
        return self.many.sql, self.many.psycopg_params({**arrays, **scalars})


def array_literal(values: Sequence[Any]) -> str:
    """``values`` as one PostgreSQL array literal (``{"a","b",NULL}``), cast by the statement.

    psycopg's list dumper inspects and dumps every element in Python, which cost the batched
    writer more CPU than anything else it does; one string of quoted elements costs a join.
    Every element is quoted (so a comma, a brace or the text ``NULL`` stays itself); a quote
    and a backslash are escaped. A time is sent as its ISO text, which PostgreSQL reads back.
    """
    return "{" + ",".join(_element(value) for value in values) + "}"


def _element(value: Any) -> str:
    if value is None:
        return "NULL"
    text = value.isoformat() if isinstance(value, datetime | date) else str(value)
    if "\\" in text or '"' in text:
        text = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text + '"'


def batch(
    build: Callable[[Rows], Executable],
    columns: Mapping[str, Any],
    *,
    scalars: Mapping[str, Any],
    once: bool = False,
) -> Batch:
    """``build``'s statement, compiled for one job's parameters and for a batch's arrays.
    ``columns`` name the job's id ``job``: a batch is sent in its order."""
    if "job" not in columns:
        raise ValueError("a batch's columns name the job's id `job`")
    return Batch(
        one=step(build(one_row(columns, scalars=scalars))),
        many=step(build(unnested(columns, scalars=scalars, once=once))),
        columns=frozenset(columns),
        json=frozenset(name for name, type_ in columns.items() if isinstance(type_, JSON)),
    )
