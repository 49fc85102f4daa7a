"""`conveyor keys generate|status|rotate`: the keys that encrypt data at rest (SPEC §10)."""

from __future__ import annotations

import json
import sys

import click
from rich.progress import Progress, TaskID
from rich.table import Table

from console.common import AppState, err, json_option, out
from console.exit_codes import EXIT_FAILURE
from jobs.admin.keys import PLAINTEXT, KeyAdmin, KeyStatus, Rotation, generate_key
from jobs.errors import SettingsError

ROTATE_EPILOG = """\b
To rotate: generate a key, put it FIRST in CONVEYOR_ENCRYPTION_KEYS (keep the old
ones after it) on every worker, producer and admin host, restart them, then run
  conveyor keys rotate
until `conveyor keys status` shows nothing under the old key; then remove it.
"""


@click.group(epilog=ROTATE_EPILOG)
def keys() -> None:
    """Encryption keys at rest: generate one, see where each is used, rotate."""


@keys.command()
@click.option(
    "--id", "key_id", default="k1", show_default=True, help="The new key's id (1-16 of A-Z a-z 0-9 _ -)."
)
def generate(key_id: str) -> None:
    """Print a new key (id:base64 of 32 random bytes) for CONVEYOR_ENCRYPTION_KEYS."""
    try:
        click.echo(generate_key(key_id))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--id") from None


@keys.command()
@json_option
@click.pass_obj
def status(state: AppState, as_json: bool) -> None:
    """Stored values per key id (and in the clear), per table and column; exits 1 when some
    value names a key that is not configured."""
    found = KeyAdmin(state.database).status()
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=2))
    else:
        out.print(_status_table(found))
        _status_notes(found)
    if found.unknown():
        sys.exit(EXIT_FAILURE)


def _status_table(found: KeyStatus) -> Table:
    ids = [*found.configured, *found.unknown()]
    table = Table(title=f"values at rest per key (current: {found.current or 'none'})", title_justify="left")
    table.add_column("table.column")
    for kid in [*ids, PLAINTEXT]:
        table.add_column(kid + (" (current)" if kid == found.current else ""), justify="right")
    for name, counts in found.columns.items():
        table.add_row(name, *(str(counts.get(kid, 0)) for kid in [*ids, PLAINTEXT]))
    return table


def _status_notes(found: KeyStatus) -> None:
    totals = found.totals()
    if found.current is None:
        err.print("encryption at rest is off (CONVEYOR_ENCRYPTION_KEYS is not set)")
    elif totals.get(PLAINTEXT) or any(totals.get(k) for k in found.configured[1:]):
        err.print("values outside the current key remain: `conveyor keys rotate` re-seals them")
    for kid in found.unknown():
        err.print(f"[red]key {kid!r} is not configured: its values cannot be read[/]")
    for kid in found.retirable():
        err.print(f"key {kid!r} seals nothing any more: it can be removed from CONVEYOR_ENCRYPTION_KEYS")


@keys.command(epilog=ROTATE_EPILOG)
@json_option
@click.pass_obj
def rotate(state: AppState, as_json: bool) -> None:
    """Re-encrypt every stored value and artifact file with the current key (values stored in
    the clear too). Works in batches; safe to stop and run again, and beside running workers."""
    if not state.settings.encryption_keys:  # a usage error, before any connection or audit row
        raise SettingsError("keys rotate needs CONVEYOR_ENCRYPTION_KEYS (the new key first)")
    admin = KeyAdmin(state.database)
    with Progress(console=err, transient=True, disable=as_json) as bar:
        tasks: dict[str, TaskID] = {}

        def advance(table: str, done: int, total: int) -> None:
            if table not in tasks:
                tasks[table] = bar.add_task(table, total=total)
            bar.update(tasks[table], completed=done, total=total)

        try:
            with state.ops.audit("keys.rotate") as record:  # an interrupted rotation is a row too
                rotation = admin.rotate(advance)
                record.count = rotation.resealed
                record.details.update(current=rotation.current, raced=rotation.raced)
        except KeyboardInterrupt:
            err.print(
                "interrupted: what was re-encrypted stays so; run `conveyor keys rotate` again to go on"
            )
            sys.exit(EXIT_FAILURE)
    rotated(state, rotation, as_json)


def rotated(state: AppState, rotation: Rotation, as_json: bool) -> None:
    """Where `keys rotate` finishes: its report (its audit row is written by then)."""
    if as_json:
        click.echo(json.dumps(rotation.to_dict(), indent=2))
        return
    table = Table(title=f"re-encrypted with key {rotation.current!r}", title_justify="left")
    for column in ("table", "values", "re-encrypted", "already current", "changed meanwhile", "missing"):
        table.add_column(column, justify="left" if column == "table" else "right")
    for name, t in rotation.tables.items():
        cells = (t.values, sum(t.resealed.values()), t.current, t.raced, t.missing)
        table.add_row(name, *(str(n) for n in cells))
    out.print(table)
    click.echo(f"re-encrypted {rotation.resealed} value(s) in {rotation.seconds:.1f} s")
