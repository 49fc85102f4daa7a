"""``/artifacts/<id>``: download an artifact, streamed in chunks as ``conveyor artifacts get`` reads it.

The name and content type come from whoever stored the artifact, so the answer is always an
attachment (never rendered by the dashboard's origin: ``nosniff`` and a sandboxing CSP), its
file name made safe, and a content type that is not one falls back to
``application/octet-stream``.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from console.web.page import not_found, state_of
from jobs.errors import ArtifactNotFound

_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*(?:\s*;\s*[\w.+-]+=[\w.+\"-]+)*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
#: The file name when the artifact's own is empty or only unsafe characters.
FALLBACK_NAME = "artifact"


def safe_media_type(content_type: str) -> str:
    """``content_type`` when it is a well-formed media type, else ``application/octet-stream``."""
    return content_type if _MEDIA_TYPE.match(content_type or "") else "application/octet-stream"


def content_disposition(name: str) -> str:
    """An ``attachment`` header for ``name`` (RFC 6266): its last path segment, with an ASCII
    ``filename`` (unsafe characters as ``_``, no leading dot) and the exact UTF-8 ``filename*``."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable())
    if base in ("", ".", ".."):
        base = FALLBACK_NAME
    ascii_name = _UNSAFE.sub("_", base).lstrip(".") or FALLBACK_NAME
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(base, safe='')}"


def download(request: Request) -> Response:
    """The artifact's bytes as an attachment; 404 for an unknown (or malformed) id."""
    ops = state_of(request).operations(request)
    try:
        info, chunks = ops.open_artifact(str(request.path_params["artifact_id"]))
    except ArtifactNotFound as exc:
        return not_found(request, str(exc))
    finally:
        ops.close()
    headers = {
        "Content-Disposition": content_disposition(info.name),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }
    return StreamingResponse(chunks, media_type=safe_media_type(info.content_type), headers=headers)


ROUTES: list[BaseRoute] = [Route("/artifacts/{artifact_id}", download, methods=["GET"])]
