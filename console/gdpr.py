"""`conveyor gdpr export|erase --subject ADDRESS`: one person's records, shown or erased."""

from __future__ import annotations

import json
import sys

import click
from rich.markup import escape
from rich.table import Table

from console.common import AppState, err, json_option, out
from console.exit_codes import EXIT_FAILURE
from console.views import mask_payload, status_markup, when
from jobs.admin.gdpr import Found, Receipt

GDPR_EPILOG = """\b
Examples:
  conveyor gdpr export --subject ada@example.com --json > ada.json
  conveyor gdpr erase --subject ada@example.com            # shows what would go, then asks
  conveyor gdpr erase --subject ada@example.com --yes
"""


@click.group(epilog=GDPR_EPILOG)
def gdpr() -> None:
    """Export or erase everything stored about one e-mail address (GDPR articles 15 and 17)."""


@gdpr.command("export")
@click.option(
    "--subject",
    required=True,
    metavar="ADDRESS",
    help="The data subject's e-mail address (any case; Name <addr> and IDNA forms too).",
)
@json_option
@click.pass_obj
def gdpr_export(state: AppState, subject: str, as_json: bool) -> None:
    """Every job, attempt, delivery, artifact and outbox file that names ADDRESS (audited)."""
    found, subject_hash = state.ops.subjects.export(subject)
    if as_json:
        document = found.to_dict()
        for job in document["jobs"]:
            job["payload"] = mask_payload(job["payload"])
        click.echo(json.dumps({"subject": subject, "subject_hash": subject_hash, **document}, indent=2))
        return
    out.print(_found_table(found))
    out.print(_counts_line(found.counts()), markup=False)
    out.print(f"subject hash (as the audit log names it): {subject_hash}", markup=False)


@gdpr.command("erase")
@click.option(
    "--subject",
    required=True,
    metavar="ADDRESS",
    help="The data subject's e-mail address (any case; Name <addr> and IDNA forms too).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_obj
def gdpr_erase(state: AppState, subject: str, yes: bool, as_json: bool) -> None:
    """Delete finished jobs naming ADDRESS, redact waiting ones (cancelled), ask running ones to
    stop; delete their attempts, deliveries, artifacts (files too), held messages and outbox
    copies; print a receipt. Exit 1 when running jobs are left (erase again once they end)."""
    subjects = state.ops.subjects
    found = subjects.find(subject)
    if not yes:
        err.print(_found_table(found))
        err.print(f"would erase: {_counts_line(found.counts())}", markup=False)
        click.confirm("Erase all of it for good?", abort=True, err=True)
    receipt = subjects.erase(found, subject)
    if as_json:
        click.echo(json.dumps(receipt.to_dict(), indent=2))
    else:
        _print_receipt(receipt)
    if not receipt.complete:
        err.print(
            f"{len(receipt.running)} running job(s) were asked to stop and are not erased yet: "
            "run this command again once they have finished",
            markup=False,
        )
        sys.exit(EXIT_FAILURE)


def _found_table(found: Found) -> Table:
    records = found.records
    table = Table(title=f"{len(records.jobs)} job(s) name the subject (found by {found.lookup})")
    for column in ("id", "kind", "status", "created", "attempts", "artifacts"):
        table.add_column(column, no_wrap=True)
    per_job: dict[str, int] = {}
    for artifact in records.artifacts:
        if artifact.job_id:
            per_job[artifact.job_id] = per_job.get(artifact.job_id, 0) + 1
    for job in records.jobs:
        table.add_row(
            job.id,
            escape(job.kind),
            status_markup(job.status),
            when(job.created_at),
            str(len(records.attempts.get(job.id, []))),
            str(per_job.get(job.id, 0)),
        )
    return table


def _counts_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in counts.items())


def _print_receipt(receipt: Receipt) -> None:
    click.echo(f"erasure receipt (subject hash {receipt.subject_hash[:16]}…)")
    for name, count in receipt.counts.items():
        click.echo(f"  {name.replace('_', ' '):<22} {count}")
