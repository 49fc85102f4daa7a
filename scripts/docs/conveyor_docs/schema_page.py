"""``reference/schema.md``: the job store's tables, from the SQLAlchemy metadata of
``jobs/store/models.py`` (compiled for PostgreSQL, no database needed), and the Alembic migrations."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

from sqlalchemy import CheckConstraint, Column, ForeignKeyConstraint, Table, UniqueConstraint
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from conveyor_docs.comments import doc_comments, markdown_of_rst
from jobs.store.models import Base

_DIALECT = postgresql.dialect()
#: "(issue 15: the audit log)" in a migration's title: the history stays in the engineering log.
_ISSUE = re.compile(r"\(issue \d+:?\s*")


#: Meanings of columns whose model has no ``#:`` comment, by ``table.column`` (a name that is not
#: a column fails the build).
COLUMN_NOTES = {
    "jobs.id": "The Dramatiq `message_id`, a UUID; stable across retries. The client makes UUIDv7s, "
    "whose first 48 bits are the time: on PostgreSQL, the day partition `jobs_pYYYYMMDD` holds them "
    "([partitions](../operations/capacity.md#time-partitions-of-jobs)); other ids are in `jobs_default`.",
    "jobs.kind": "The job kind (`email`, `report`, `image`, `noop`, or a registered custom kind).",
    "jobs.queue": "The queue its message went to, `<namespace>.<queue>`.",
    "jobs.status": "One of the [job statuses](statuses.md#statuses).",
    "jobs.payload": "The job's input, as enqueued (encrypted when encryption keys are set).",
    "jobs.result": "What the job returned, once it succeeded.",
    "jobs.error": "The last error, as `Type: message`.",
    "jobs.attempts": "Runs started so far.",
    "jobs.max_retries": "Retries allowed after the first run.",
    "jobs.priority": "The message priority it was enqueued with, if any.",
    "jobs.progress": "0 to 100, as the job reports it.",
    "jobs.created_at": "When it was enqueued.",
    "jobs.started_at": "When its latest run started.",
    "jobs.finished_at": "When it reached a final status.",
    "job_attempts.job_id": "The job that ran. Deleted with it by a trigger (`jobs_deleted`), not by a "
    "foreign key: a check against the partitioned `jobs` for every attempt row cost too much.",
    "job_attempts.attempt": "1 for the first run, then 2, 3…",
    "job_attempts.worker": "The worker process that ran it.",
    "job_attempts.host": "The host of that worker.",
    "job_attempts.pid": "The process id of that worker.",
    "job_attempts.outcome": "How the run ended: one of the [attempt outcomes](statuses.md#attempt-outcomes); "
    "null while it runs.",
    "job_attempts.error": "The run's error, as `Type: message`.",
    "job_attempts.traceback": "The run's traceback.",
    "artifacts.sha256": "SHA-256 of the bytes, in hex.",
    "artifacts.data": "The bytes, in rows written by older releases; newer rows use `location`.",
    "artifacts.location": "The file holding the bytes, under `CONVEYOR_ARTIFACT_URL`.",
    "artifacts.job_id": "The job that made it or took it as input.",
    "email_deliveries.state": "`sending` or `sent` ([email deliveries](statuses.md#email-deliveries)).",
    "email_deliveries.message_id": "The email's `Message-ID`.",
    "email_deliveries.accepted": "The recipients the server accepted.",
    "email_deliveries.rejected": "The recipients the server refused, with its answer.",
    "delayed_messages.due_at": "When the message is published.",
}


def _meanings(table: Table, model: type) -> dict[str, str]:
    """Column → meaning: the model's ``#:`` comment, else :data:`COLUMN_NOTES`."""
    described = doc_comments(Path(inspect.getfile(model)), model.__name__)
    meanings = {}
    for column in table.columns:
        text = markdown_of_rst(described.get(column.key, ""))
        meanings[column.name] = text or COLUMN_NOTES.get(f"{table.name}.{column.name}", "")
    return meanings


def _check_notes() -> None:
    columns = {f"{t.name}.{c.name}" for t in Base.metadata.tables.values() for c in t.columns}
    stale = sorted(set(COLUMN_NOTES) - columns)
    if stale:
        raise LookupError(f"schema_page.COLUMN_NOTES names columns that do not exist: {', '.join(stale)}")


def _cell(text: str) -> str:
    return text.replace("|", "&#124;").replace("\n", " ")


def _column_row(table: Table, column: Column[object], meaning: str) -> str:
    keys = []
    if column.primary_key:
        keys.append("primary key")
    for fk in sorted(column.foreign_keys, key=lambda fk: fk.target_fullname):
        target_table = fk.column.table.name
        on_delete = f", on delete {fk.ondelete.lower()}" if fk.ondelete else ""
        keys.append(f"→ [`{fk.target_fullname}`](#{target_table}){on_delete}")
    if column.server_default is not None:
        default = f"`{getattr(column.server_default, 'arg', column.server_default)}`"
    elif table.autoincrement_column is column:
        default = "generated (serial)"
    else:
        default = ""
    kind = column.type.compile(dialect=_DIALECT)
    null = "null" if column.nullable else "not null"
    return f"| `{column.name}` | `{kind}` | {null} | {default} | {'; '.join(keys)} | {_cell(meaning)} |"


def _constraints(table: Table) -> list[str]:
    lines = []
    for constraint in sorted(table.constraints, key=lambda c: str(c.name)):
        columns = ", ".join(f"`{c.name}`" for c in getattr(constraint, "columns", ()))
        if isinstance(constraint, UniqueConstraint):
            lines.append(f"- unique `{constraint.name}` on ({columns})")
        elif isinstance(constraint, CheckConstraint):
            lines.append(f"- check `{constraint.name}`: `{constraint.sqltext}`")
        elif isinstance(constraint, ForeignKeyConstraint) and len(constraint.columns) > 1:
            lines.append(f"- foreign key `{constraint.name}` on ({columns})")
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        lines.append(f"- index `{str(CreateIndex(index).compile(dialect=_DIALECT)).strip()}`")
    return lines


def _summary(model: type) -> str:
    return markdown_of_rst((inspect.getdoc(model) or "").split("\n\n")[0].replace("\n", " "))


def table_markdown(table: Table, model: type) -> list[str]:
    """One table's section: what it holds, its columns, its constraints and indexes, its DDL."""
    meanings = _meanings(table, model)
    doc = _summary(model)
    lines = [f"## `{table.name}` {{ #{table.name} }}", "", doc, ""]
    lines += [
        "| column | type | null | default | key | meaning |",
        "|---|---|---|---|---|---|",
        *(_column_row(table, c, meanings[c.name]) for c in table.columns),
        "",
    ]
    constraints = _constraints(table)
    if constraints:
        lines += ["Constraints and indexes:", "", *constraints, ""]
    ddl = str(CreateTable(table).compile(dialect=_DIALECT)).strip()
    lines += [
        '??? note "DDL"',
        "",
        "    ```sql",
        *(f"    {line}" for line in ddl.splitlines()),
        "    ```",
        "",
    ]
    return lines


def migrations(versions: Path) -> list[tuple[str, str | None, str]]:
    """(revision, the revision it follows, the first line of its docstring), oldest first."""
    found = []
    for path in sorted(versions.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        values = {
            node.target.id: ast.literal_eval(node.value)
            for node in tree.body
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value
        }
        if "revision" not in values:
            continue
        title = (ast.get_docstring(tree) or "").splitlines()[0] if ast.get_docstring(tree) else ""
        found.append((values["revision"], values.get("down_revision"), _ISSUE.sub("(", title)))
    return found


def schema_page(versions: Path) -> str:
    """The page's Markdown."""
    _check_notes()
    models = {mapper.local_table.name: mapper.class_ for mapper in Base.registry.mappers}
    lines = [
        "# SQL schema",
        "",
        "This page is for operators and developers who query or back up the job store: every table "
        "Conveyor creates in PostgreSQL, with its columns, keys and indexes, and the migrations "
        "that build it (`conveyor db upgrade`). It is generated from `jobs/store/models.py` "
        "when the site is built; the migrations are tested to build exactly this schema. Types are "
        "PostgreSQL's; the demo's SQLite database has the same tables with SQLite's types.",
        "",
        "| table | holds |",
        "|---|---|",
    ]
    for name in Base.metadata.tables:
        lines.append(f"| [`{name}`](#{name}) | {_cell(_summary(models[name]))} |")
    lines.append("")
    for name, table in Base.metadata.tables.items():
        lines += table_markdown(table, models[name])
    lines += [
        "## Migrations { #migrations }",
        "",
        "Alembic revisions in `jobs/store/migrations/versions/`, applied in order by "
        "[`conveyor db upgrade`](cli.md#conveyor-db-upgrade).",
        "",
        "| revision | follows | what it does |",
        "|---|---|---|",
        *(
            f"| `{rev}` | {f'`{down}`' if down else '—'} | {_cell(markdown_of_rst(title))} |"
            for rev, down, title in migrations(versions)
        ),
        "",
    ]
    return "\n".join(lines)
