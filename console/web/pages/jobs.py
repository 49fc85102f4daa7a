"""``/jobs`` (filters, search, keyset pages), ``/jobs/<id>`` (one job), and its retry and cancel.

The JSON twins carry the CLI's documents: each job of ``/api/jobs`` has the keys of a row of
``conveyor jobs list --json``, and ``/api/jobs/<id>`` is ``conveyor jobs show ID --json``. Both
are masked as the CLI masks them (:func:`jobs.logs.mask_document`), for the HTML too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request

from console.views import ARTIFACTS_SHOWN, job_document
from console.web.actions import Action, BadRequest, confirmed
from console.web.page import Page, state_of
from console.web.search import encode_cursor, parse_query
from jobs.admin.operations import Operations
from jobs.ids import is_uuid
from jobs.kinds import KINDS
from jobs.logs import mask_document
from jobs.status import Event, JobStatus, sources

#: Statuses a cancel stops at once, and those it asks to stop at their next step.
_CANCELLABLE = frozenset(s.value for s in sources(Event.CANCEL))
_STOPPABLE = frozenset(s.value for s in sources(Event.REQUEST_CANCEL))


def load_jobs(request: Request, ops: Operations) -> Mapping[str, Any]:
    """A page of jobs, newest first: ``jobs`` (rows as ``jobs list --json``), the cursor of the
    ``next`` (older) page and its link, and the filters used."""
    params = dict(request.query_params)
    query = parse_query(params, ops.settings)
    try:
        page = ops.search_jobs(query)
    except ValueError as exc:  # a payload search on encrypted payloads
        raise BadRequest(str(exc)) from None
    filters = {k: v for k, v in params.items() if k != "before" and v.strip()}
    cursor = encode_cursor(page.next) if page.next else None
    return {
        "jobs": [mask_document(job.to_dict()) for job in page.jobs],
        "next": cursor,
        "older": f"/jobs?{urlencode({**filters, 'before': cursor})}" if cursor else None,
        "truncated": page.truncated,
        "filters": mask_document(filters),
        "statuses": [s.value for s in JobStatus],
        "kinds": sorted(KINDS),
    }


def job_id_of(request: Request) -> str:
    """The job id in the path.

    Raises:
        BadRequest: it is not a UUID.
    """
    job_id = str(request.path_params["job_id"])
    if not is_uuid(job_id):
        raise BadRequest(f"malformed job id {job_id[:40]!r}: a job id is a UUID")
    return job_id


def load_job(request: Request, ops: Operations) -> Mapping[str, Any]:
    """``conveyor jobs show ID --json``, masked."""
    info, attempts, children = ops.job(job_id_of(request))
    artifacts = ops.artifacts(job_id=info.id, limit=ARTIFACTS_SHOWN)
    document: dict[str, Any] = mask_document(job_document(info, attempts, children, artifacts))
    return document


def retry(request: Request, ops: Operations, form: Mapping[str, str]) -> Mapping[str, Any]:
    """Run a failed or cancelled job again (audited as ``jobs.retry``, as the CLI does)."""
    job_id = job_id_of(request)
    ops.job(job_id)  # an unknown job: 404, and no audit row (nothing was done)
    with ops.audit("jobs.retry", job_ids=[job_id]) as record:
        outcome = "retried" if state_of(request).client().retry(job_id) else "skipped (not failed)"
        record.count = int(outcome == "retried")
        record.details["outcomes"] = {outcome: 1}
    message = f"job {job_id} retried" if outcome == "retried" else f"job {job_id}: {outcome}, nothing done"
    return {"outcomes": {job_id: outcome}, "count": record.count, "message": message}


def cancel(request: Request, ops: Operations, form: Mapping[str, str]) -> Mapping[str, Any]:
    """Cancel a waiting job, or ask a running one to stop. Without ``confirm=yes``, only says
    what it would do (a dry run: nothing changes, nothing is audited)."""
    job_id = job_id_of(request)
    info, _, _ = ops.job(job_id)
    if not confirmed(form):
        would = (
            "cancelled" if info.status in _CANCELLABLE else "requested" if info.status in _STOPPABLE else None
        )
        if would is None:
            message = f"job {job_id} is {info.status}: nothing to cancel"
        else:
            message = f"Cancel job {job_id} ({info.status})? Confirm to go ahead."
        return {"dry_run": True, "count": int(would is not None), "would": would, "message": message}
    with ops.audit("jobs.cancel", job_ids=[job_id]) as record:
        outcome = state_of(request).client().cancel(job_id)
        record.count = int(outcome in ("cancelled", "requested"))
        record.details["outcomes"] = {outcome: 1}
    message = {
        "cancelled": f"job {job_id} cancelled",
        "requested": f"job {job_id} asked to stop at its next step",
    }.get(outcome, f"job {job_id} is {outcome}: nothing to cancel")
    return {"dry_run": False, "count": record.count, "outcomes": {job_id: outcome}, "message": message}


PAGES = [
    Page("/jobs", "jobs.html", load_jobs, title="Jobs"),
    Page("/jobs/{job_id}", "job.html", load_job),
]
ACTIONS = [
    Action("/api/jobs/{job_id}/retry", "retry", retry),
    Action("/api/jobs/{job_id}/cancel", "cancel", cancel),
]
