"""Statements defined once with SQLAlchemy Core, for SQLAlchemy and for a psycopg connection.

A :class:`Step` is a Core statement with the same compiled once to psycopg's SQL (its
constants apart, as parameters). :func:`through` runs steps at once on a SQLAlchemy
connection, PostgreSQL or SQLite; a runner on another connection only has to return
something :class:`Written`-like, read once its transaction is done. The store's transitions
(``jobs/store/transitions.py``) are written with these, once for every path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from psycopg.types.json import Jsonb
from sqlalchemy import JSON, Connection, bindparam
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import BindParameter

_PSYCOPG = psycopg_dialect.dialect()  # type: ignore[no-untyped-call]


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
