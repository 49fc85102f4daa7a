"""The ``report`` kind: a named report rendered to HTML, CSV and PDF, stored as artifacts."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import redis

from jobs.context import current_job, report_progress
from jobs.delivery import DeliveryOptions
from jobs.email.addresses import normalise_addresses
from jobs.kinds.base import Payload, Result, require_keys
from jobs.reports.base import ReportData
from jobs.reports.registry import get_report
from jobs.reports.render import ReportRenderer, csv_chunks, pdf
from jobs.services import Services
from jobs.settings import Settings
from jobs.store.artifacts import ArtifactInfo
from templates import search_path

logger = logging.getLogger("conveyor.reports")

_FIELDS = {"report", "params", "formats", "email_to"}
FORMATS = {
    "html": ("text/html; charset=utf-8", "html"),
    "csv": ("text/csv; charset=utf-8", "csv"),
    "pdf": ("application/pdf", "pdf"),
}


def validate(payload: Mapping[str, Any], settings: Settings | None = None) -> Payload:
    """``report`` (name), ``params`` (a JSON object the report checks), ``formats`` (html, csv,
    pdf), ``email_to`` (addresses the finished report is emailed to, as attachments)."""
    require_keys("report", payload, _FIELDS)
    report = get_report(payload.get("report"))
    params = payload.get("params", {})
    if not isinstance(params, Mapping):
        raise ValueError("report payload: params must be a JSON object")
    formats = payload.get("formats", ["html"])
    if not isinstance(formats, list) or not formats or any(f not in FORMATS for f in formats):
        raise ValueError(f"report payload: formats must be a non-empty list of {', '.join(FORMATS)}")
    clean: Payload = {
        "report": report.name,
        "params": report.check_params(params),
        "formats": list(dict.fromkeys(formats)),
    }
    if payload.get("email_to"):
        clean["email_to"] = normalise_addresses("email_to", payload["email_to"])
    return clean


def run(services: Services, **payload: Any) -> Result:
    """Compute (or reuse from the cache) the report; store each format; email it when asked."""
    ctx = current_job()
    job_id = ctx.job_id if ctx else None
    cache = ReportCache(services)
    key = cache.key(payload)
    result = cache.get(key)
    if result is None:
        result = _compute(services, payload, job_id)
        cache.put(key, result)
        result = {**result, "cache": "miss"}
    else:
        result = {**result, "cache": "hit"}
    if payload.get("email_to") and job_id is not None:
        result["email_job"] = _email_report(services, job_id, payload, result)
    return result


def _compute(services: Services, payload: dict[str, Any], job_id: str | None) -> dict[str, Any]:
    report = get_report(payload["report"])
    data = report.data(services.db, payload["params"], lambda f: report_progress(f * 50))
    renderer = services.resource("reports.renderer", lambda: ReportRenderer(search_path(services.settings)))
    artifacts: list[ArtifactInfo] = []
    html: str | None = None
    if {"html", "pdf"} & set(payload["formats"]):
        html = renderer.html(report.name, data, payload["params"])
    stem = f"{report.name}-{(job_id or 'report')[:8]}"
    for fmt in payload["formats"]:
        content_type, extension = FORMATS[fmt]
        name = f"{stem}.{extension}"
        if fmt == "csv":
            chunks = csv_chunks(data, lambda n: report_progress(50 + 40 * n / max(data.row_count, 1)))
            artifacts.append(
                services.artifacts.put_stream(chunks, name=name, content_type=content_type, job_id=job_id)
            )
        else:
            assert html is not None
            body = html.encode() if fmt == "html" else pdf(html)
            artifacts.append(
                services.artifacts.put(body, name=name, content_type=content_type, job_id=job_id)
            )
    report_progress(100)
    return {
        "artifacts": [_describe(a) for a in artifacts],
        "rows": data.row_count,
        "title": data.title,
        "summary": _short_summary(data),
    }


def _describe(info: ArtifactInfo) -> dict[str, Any]:
    return {k: v for k, v in info.to_dict().items() if k in ("id", "name", "content_type", "size", "sha256")}


def _short_summary(data: ReportData) -> dict[str, Any]:
    return {k: data.summary[k] for k in ("since", "until", "totals") if k in data.summary}


def _email_report(services: Services, job_id: str, payload: dict[str, Any], result: dict[str, Any]) -> str:
    """A follow-up ``email`` job with the artifacts attached, linked to this job. Its
    idempotency key makes a retry or redelivery of this job reuse it, not send again."""
    assert services.producer is not None, "the worker runtime sets a producer"
    email = services.producer.enqueue_with_options(
        "email",
        {
            "to": payload["email_to"],
            "template": "report_ready",
            "context": {
                "title": result["title"],
                "report": payload["report"],
                "rows": result["rows"],
                "files": [a["name"] for a in result["artifacts"]],
            },
            "attachments": [a["id"] for a in result["artifacts"]],
        },
        DeliveryOptions(idempotency_key=f"report-email:{job_id}"),
        parent_id=job_id,
    )
    return str(email.id)


class ReportCache:
    """Identical requests within ``CONVEYOR_REPORT_CACHE_TTL`` reuse the stored artifacts.

    Redis down, or the artifacts gone: compute as usual.
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self.ttl = services.settings.report_cache_ttl

    def key(self, payload: dict[str, Any]) -> str:
        request = {k: payload.get(k) for k in ("report", "params", "formats")}
        digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        return f"{self.services.settings.namespace}:report-cache:{digest}"

    def get(self, key: str) -> dict[str, Any] | None:
        if not self.ttl:
            return None
        try:
            cached = self.services.redis.get(key)
        except redis.RedisError as exc:
            logger.warning("report cache unavailable (%s): computing", exc)
            return None
        if cached is None:
            return None
        result: dict[str, Any] = json.loads(cached)
        if self.services.artifacts.missing(a["id"] for a in result["artifacts"]):
            return None
        return result

    def put(self, key: str, result: dict[str, Any]) -> None:
        if not self.ttl:
            return
        try:
            self.services.redis.set(key, json.dumps(result), ex=self.ttl)
        except redis.RedisError as exc:
            logger.warning("report cache unavailable (%s): not cached", exc)
