"""`conveyor enqueue KIND …`: enqueue any kind of job from the shell."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from console.common import (
    AppState,
    Seconds,
    delivery_options,
    echo_json,
    fail,
)
from console.exit_codes import EXIT_FAILURE
from jobs import defaults
from jobs.errors import JobFailed
from jobs.images.shorthand import parse_operation
from jobs.kinds.image import validate as validate_image
from jobs.store import JobInfo
from producers import DeliveryOptions


@click.group()
def enqueue() -> None:
    """Enqueue a job from the shell; prints its id."""


@enqueue.command("noop")
@click.option("--sleep", type=Seconds(0, defaults.NOOP_MAX_SLEEP), help="Seconds to sleep.")
@click.option("--fail-attempts", type=click.IntRange(0), help="Fail the first N attempts (retried).")
@click.option("--permanent", is_flag=True, default=None, help="Fail at once, without retries.")
@delivery_options
@click.pass_obj
def enqueue_noop(
    state: AppState, /, sleep: float | None, fail_attempts: int | None, permanent: bool | None, **options: Any
) -> None:
    """A job that sleeps (and fails when asked): tests the whole stack."""
    payload = {"sleep": sleep, "fail_attempts": fail_attempts, "permanent": permanent}
    _enqueue(state, "noop", {k: v for k, v in payload.items() if v is not None}, **options)


@enqueue.command("email")
@click.option("--to", "to", multiple=True, required=True, help="Recipient (repeat for more).")
@click.option("--cc", multiple=True, help="Copy recipient (repeat for more).")
@click.option("--bcc", multiple=True, help="Blind copy recipient (repeat for more).")
@click.option("--reply-to", multiple=True, help="Reply-To address.")
@click.option("--template", required=True, help="Template name: the folder email/NAME/.")
@click.option("--context", "context_json", help='Template variables as a JSON object: \'{"name": "Ada"}\'.')
@click.option(
    "--var", "variables", multiple=True, metavar="KEY=VALUE", help="One template variable (repeatable)."
)
@click.option("--subject", help="Overrides the template's subject.")
@click.option("--attach", "attachments", multiple=True, metavar="ARTIFACT_ID", help="Attach an artifact.")
@delivery_options
@click.pass_obj
def enqueue_email(
    state: AppState,
    /,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    reply_to: tuple[str, ...],
    template: str,
    context_json: str | None,
    variables: tuple[str, ...],
    subject: str | None,
    attachments: tuple[str, ...],
    **options: Any,
) -> None:
    """A templated email (SMTP or the .eml outbox)."""
    payload: dict[str, Any] = {
        "to": list(to),
        "template": template,
        "context": _template_context(context_json, variables),
    }
    extras = {"cc": list(cc), "bcc": list(bcc), "reply_to": list(reply_to), "attachments": list(attachments)}
    payload.update({k: v for k, v in extras.items() if v})
    if subject is not None:
        payload["subject"] = subject
    _enqueue(state, "email", payload, **options)


@enqueue.command("image")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Upload this image as the source.",
)
@click.option("--source", help="Or: the artifact id of an image already stored.")
@click.option(
    "--op",
    "ops",
    multiple=True,
    metavar="OP",
    help="thumbnail=WxH, resize=WxH[:fill], crop=L,T,R,B, rotate=DEG, grayscale, blur=R, "
    "watermark=TEXT, or a JSON object (repeatable, applied in order).",
)
@click.option(
    "--format", "output_format", type=click.Choice(["jpeg", "png", "webp"]), default="jpeg", show_default=True
)
@click.option("--quality", type=click.IntRange(1, 100), default=85, show_default=True)
@click.option("--keep-metadata", is_flag=True, help="Keep EXIF (GPS included); stripped by default.")
@delivery_options
@click.pass_obj
def enqueue_image(
    state: AppState,
    /,
    path: Path | None,
    source: str | None,
    ops: tuple[str, ...],
    output_format: str,
    quality: int,
    keep_metadata: bool,
    **options: Any,
) -> None:
    """An image job: operations on one image, stored as a new artifact."""
    if (path is None) == (source is None):
        raise click.UsageError("give exactly one of --file and --source")
    operations = [parse_operation(op) for op in ops]
    payload = {
        "source": source,
        "operations": operations,
        "format": output_format,
        "quality": quality,
        "keep_metadata": keep_metadata,
    }
    if path is not None:
        # Refuse a bad chain (one over the size caps, say) before uploading: a refused job must not
        # leave the photo, GPS and all, behind as an artifact nobody uses.
        validate_image({**payload, "source": _NOT_YET_UPLOADED}, state.settings)
        payload["source"] = state.client.put_artifact(path.read_bytes(), name=path.name)
    _enqueue(state, "image", payload, **options)


#: An artifact id that stands for the file while the payload is checked before its upload.
_NOT_YET_UPLOADED = "00000000-0000-4000-8000-000000000000"


@enqueue.command("report")
@click.argument("name")
@click.option(
    "--param", "params", multiple=True, metavar="KEY=VALUE", help="A report parameter (repeatable)."
)
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(["html", "csv", "pdf"]),
    help="Output format (repeatable; default html).",
)
@click.option("--email-to", multiple=True, help="Email the finished report to this address (repeatable).")
@delivery_options
@click.pass_obj
def enqueue_report(
    state: AppState,
    /,
    name: str,
    params: tuple[str, ...],
    formats: tuple[str, ...],
    email_to: tuple[str, ...],
    **options: Any,
) -> None:
    """A report (e.g. jobs_summary --param since=2026-11-01), stored as artifacts."""
    payload: dict[str, Any] = {
        "report": name,
        "params": _key_values(params, "--param"),
        "formats": list(formats) or ["html"],
    }
    if email_to:
        payload["email_to"] = list(email_to)
    _enqueue(state, "report", payload, **options)


def _key_values(items: tuple[str, ...], option: str) -> dict[str, str]:
    values = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        values[key] = value
    return values


def _template_context(context_json: str | None, variables: tuple[str, ...]) -> dict[str, Any]:
    context: Any = {}
    if context_json:
        try:
            context = json.loads(context_json)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--context") from None
        if not isinstance(context, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--context")
    context.update(_key_values(variables, "--var"))
    return dict(context)


def _enqueue(
    state: AppState,
    kind: str,
    payload: dict[str, Any],
    *,
    as_json: bool,
    wait_timeout: float | None,
    **options: Any,
) -> None:
    publisher = state.publisher()
    # The row names the job, never its payload (which may hold personal data).
    with state.ops.audit(f"enqueue.{kind}") as record:
        job = publisher.enqueue_with_options(kind, payload, DeliveryOptions(**options))
        record.count, record.job_ids = 1, [job.id]
    if wait_timeout is not None:
        try:
            job.wait(timeout=wait_timeout)
        except JobFailed as exc:
            _print_enqueued(job.info, as_json)
            fail(str(exc), EXIT_FAILURE)
        except TimeoutError as exc:
            _print_enqueued(job.info, as_json)
            fail(str(exc), EXIT_FAILURE)
    _print_enqueued(job.info, as_json)


def _print_enqueued(info: JobInfo, as_json: bool) -> None:
    if as_json:
        echo_json(info.to_dict(), indent=None)
    else:
        click.echo(info.id)
