"""``reference/settings.md``: every ``CONVEYOR_*`` setting, from ``jobs.settings.Settings``.

The description of each setting is the ``#:`` comment above its field; a field without one
fails the build.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conveyor_docs.comments import doc_comments, markdown_of_rst
from jobs.settings import ENV_PREFIX, SECRET_FIELDS, Settings

#: The page's sections: (title, anchor, one-line introduction, the fields in it).
GROUPS: list[tuple[str, str, str, tuple[str, ...]]] = [
    (
        "Connections",
        "connections",
        "The services Conveyor talks to. TLS parameters of each URL are explained in "
        "[TLS to every service](../security/tls.md).",
        ("broker_url", "database_url", "redis_url", "rabbitmq_api_url", "broker_heartbeat"),
    ),
    (
        "Queues and messages",
        "queues",
        "How queues are named and declared, and what one message may carry.",
        ("namespace", "queue_type", "delivery_limit", "max_priority", "enqueue_timeout", "max_payload_bytes"),
    ),
    (
        "Email",
        "email",
        "The email jobs: where messages go, who sends them, how fast and to how many.",
        ("smtp_url", "email_from", "email_rate", "email_max_recipients", "templates_dir"),
    ),
    (
        "Images",
        "images",
        "Limits on the image jobs' inputs and outputs, checked before any pixel is decoded or "
        "written ([image safety](../security/images.md)).",
        (
            "image_max_bytes",
            "image_max_pixels",
            "image_max_output_pixels",
            "image_max_output_bytes",
            "image_draft",
        ),
    ),
    (
        "Reports and artifacts",
        "reports",
        "Where the files jobs make are kept, and how long a report's result is reused.",
        ("artifact_url", "report_cache_ttl"),
    ),
    (
        "Workers",
        "workers",
        "How worker processes show they are alive, when they give up, how often they look "
        "for orphaned jobs, and how many messages they take ahead.",
        ("worker_ttl", "consume_timeout", "reconcile_interval", "running_after", "prefetch"),
    ),
    (
        "Security",
        "security",
        "Message signing and encryption at rest ([signing](../security/signing.md), "
        "[encryption](../security/encryption.md)). Their values are secrets: they are never shown.",
        (
            "signing_key",
            "signing_key_previous",
            "signing_previous_until",
            "accept_unsigned",
            "encryption_keys",
        ),
    ),
    (
        "Retention",
        "retention",
        "How long finished jobs are kept before the scheduler deletes them "
        "([personal data](../security/gdpr.md)).",
        ("retention_days", "retention_days_by_kind"),
    ),
    (
        "Observability",
        "observability",
        "Prometheus metrics and log lines ([metrics](../operations/metrics.md), "
        "[logs and traces](../operations/logs-and-traces.md)).",
        ("metrics_port", "metrics_host", "log_format"),
    ),
    (
        "Web dashboard",
        "web",
        "`conveyor web` ([the dashboard](../operations/web-dashboard.md)).",
        ("web_token",),
    ),
]

#: The type of a field as a reader of the page sees it, by its annotation.
TYPES = {
    "str": "text",
    "str | None": "text",
    "int": "integer",
    "int | None": "integer",
    "float": "number",
    "bool": "boolean",
    "tuple[tuple[str, int], ...]": "list of `KIND=DAYS`",
}

#: The per-kind retention variables, which are not fields of their own.
RETENTION_PATTERN = f"{ENV_PREFIX}RETENTION_DAYS_<KIND>"
RETENTION_ANCHOR = "conveyor_retention_days_kind"


class MissingDescription(ValueError):
    """A setting has no ``#:`` comment (or another part of the page has nothing to say)."""


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def anchor(field: str) -> str:
    return env_name(field).lower()


def settings_fields(source: Path) -> list[dict[str, str]]:
    """Each field of ``Settings``: name, variable, type, default (masked) and description.

    Raises:
        MissingDescription: a field has no ``#:`` comment in ``source``.
    """
    described = doc_comments(source, "Settings")
    annotations = {f.name: str(f.type) for f in dataclasses.fields(Settings)}
    missing = [name for name in annotations if not described.get(name)]
    if missing:
        raise MissingDescription(
            f"{source}: Settings fields without a `#:` description: {', '.join(missing)}"
        )
    masked = Settings().masked()
    fields = []
    for name, annotation in annotations.items():
        if annotation not in TYPES:
            raise MissingDescription(f"Settings.{name}: no reader's name for the type {annotation!r}")
        fields.append(
            {
                "name": name,
                "env": env_name(name),
                "type": TYPES[annotation],
                "default": _default(name, masked[name]),
                # ``None`` is how the code says "unset".
                "description": markdown_of_rst(described[name]).replace("`None`", "unset"),
            }
        )
    return fields


def _default(name: str, value: Any) -> str:
    if value is None or value == ():
        return "unset"
    if name in SECRET_FIELDS:
        return "`***`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def _check_groups(fields: list[dict[str, str]]) -> None:
    grouped = [name for *_, names in GROUPS for name in names]
    known = {field["name"] for field in fields}
    unknown = sorted(set(grouped) - known)
    ungrouped = sorted(known - set(grouped))
    twice = sorted({name for name in grouped if grouped.count(name) > 1})
    if unknown or ungrouped or twice:
        raise MissingDescription(
            "reference/settings.md groups: "
            f"not settings {unknown}, in no group {ungrouped}, in two groups {twice}"
        )


def settings_page(source: Path) -> str:
    """The page's Markdown."""
    fields = settings_fields(source)
    _check_groups(fields)
    by_name: Mapping[str, dict[str, str]] = {field["name"]: field for field in fields}
    lines = [
        "# Settings",
        "",
        "This page is for whoever runs Conveyor: it lists every setting, its type, its default and "
        "what it does. It is generated from the code (`jobs/settings.py`) when the site is built.",
        "",
        "Settings come from `CONVEYOR_*` environment variables; there is no configuration file. "
        "The command line's global options `--broker-url`, `--database-url`, `--redis-url` and "
        "`--namespace` override the variables of the same name ([`conveyor`](cli.md#conveyor)). "
        "An unknown `CONVEYOR_*` variable is an error, not ignored (it suggests the closest known "
        "name), and a malformed value stops the command or worker at start-up. Booleans take `true`/`false`, "
        "`1`/`0`, `yes`/`no` or `on`/`off`. Defaults are shown as `conveyor config` shows them: "
        "passwords in URLs as `***`.",
        "",
        "| setting | type | default |",
        "|---|---|---|",
    ]
    for *_, names in GROUPS:
        for name in names:
            field = by_name[name]
            lines.append(f"| [`{field['env']}`](#{anchor(name)}) | {field['type']} | {field['default']} |")
    lines.append(f"| [`{RETENTION_PATTERN}`](#{RETENTION_ANCHOR}) | integer | unset |")
    for title, group_anchor, intro, names in GROUPS:
        lines += ["", f"## {title} {{ #{group_anchor} }}", "", intro]
        for name in names:
            lines += _setting(by_name[name])
        if group_anchor == "retention":
            lines += _retention_pattern()
    return "\n".join(lines) + "\n"


def _setting(field: dict[str, str]) -> list[str]:
    return [
        "",
        f"### `{field['env']}` {{ #{anchor(field['name'])} }}",
        "",
        f"{field['description']}",
        "",
        f"Type: {field['type']}. Default: {field['default']}.",
    ]


def _retention_pattern() -> list[str]:
    return [
        "",
        f"### `{RETENTION_PATTERN}` {{ #{RETENTION_ANCHOR} }}",
        "",
        "Days a finished job of one kind is kept, one variable per kind: "
        f"`{ENV_PREFIX}RETENTION_DAYS_EMAIL=30` keeps email jobs 30 days. It overrides "
        f"[`{ENV_PREFIX}RETENTION_DAYS`](#{anchor('retention_days')}) for that kind, and wins over "
        f"the same kind in [`{ENV_PREFIX}RETENTION_DAYS_BY_KIND`](#{anchor('retention_days_by_kind')}). "
        "The scheduler checks that the kind is registered.",
        "",
        "Type: integer (days, at least 1). Default: unset.",
    ]
