"""The ``image`` kind: a Pillow pipeline from one source artifact to one or more image artifacts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from PIL import ImageColor

from jobs.context import check_cancelled, current_job
from jobs.defaults import DEFAULT_IMAGE_TIME_LIMIT
from jobs.errors import ArtifactNotFound, PermanentError
from jobs.ids import is_uuid
from jobs.images.operations import validate_operations
from jobs.images.pipeline import OUTPUT_FORMATS, Limits, Variant, process
from jobs.kinds.base import JobKind, Payload, Result, require_keys
from jobs.services import Services
from jobs.settings import Settings

_FIELDS = {"source", "operations", "format", "quality", "variants", "keep_metadata", "background"}
_VARIANT_FIELDS = {"name", "operations", "format", "quality"}
_VARIANT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
DEFAULT_FORMAT = "jpeg"
DEFAULT_QUALITY = 85


def validate(payload: Mapping[str, Any], settings: Settings | None = None) -> Payload:
    """``source`` (artifact id), ``operations``, ``format``, ``quality``; or ``variants`` (several
    outputs from one decode; top-level ``operations`` then run first, for all); ``keep_metadata``,
    ``background`` (the colour transparency is flattened onto for JPEG)."""
    require_keys("image", payload, _FIELDS)
    source = payload.get("source")
    if not isinstance(source, str) or not is_uuid(source):
        raise ValueError("image payload: source must be an artifact id")
    clean: Payload = {"source": source, "operations": validate_operations(payload.get("operations", []))}
    clean["format"] = _format(payload.get("format", DEFAULT_FORMAT))
    clean["quality"] = _quality(payload.get("quality", DEFAULT_QUALITY))
    if "variants" in payload:
        clean["variants"] = _variants(payload["variants"], clean["format"], clean["quality"])
    keep = payload.get("keep_metadata", False)
    if not isinstance(keep, bool):
        raise ValueError("image payload: keep_metadata must be true or false")
    clean["keep_metadata"] = keep
    background = payload.get("background", "#ffffff")
    try:
        ImageColor.getrgb(background)
    except (ValueError, AttributeError):
        raise ValueError(f"image payload: background {background!r} is not a colour") from None
    clean["background"] = background
    return clean


def _format(value: object) -> str:
    if value not in OUTPUT_FORMATS:
        raise ValueError(f"image payload: format must be one of {', '.join(OUTPUT_FORMATS)}")
    return str(value)


def _quality(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise ValueError("image payload: quality must be a whole number from 1 to 100")
    return value


def _variants(value: object, default_format: str, default_quality: int) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not 1 <= len(value) <= 20:
        raise ValueError("image payload: variants must be a list of 1 to 20 objects")
    variants, names = [], set()
    for spec in value:
        if not isinstance(spec, Mapping):
            raise ValueError("image payload: each variant is an object with a name and operations")
        require_keys("image variant", spec, _VARIANT_FIELDS)
        name = spec.get("name")
        if not isinstance(name, str) or not _VARIANT_NAME.match(name) or name in names:
            raise ValueError(f"image payload: variant name {name!r} must be unique, letters, digits, _ or -")
        names.add(name)
        variants.append(
            {
                "name": name,
                "operations": validate_operations(spec.get("operations", [])),
                "format": _format(spec.get("format", default_format)),
                "quality": _quality(spec.get("quality", default_quality)),
            }
        )
    return variants


def _rgb(colour: str) -> tuple[int, int, int]:
    red, green, blue = ImageColor.getrgb(colour)[:3]
    return red, green, blue


def artifact_ids(payload: Payload) -> list[str]:
    return [payload["source"]]


def run(services: Services, **payload: Any) -> Result:
    """Decode the source once, write every output as an artifact; returns their descriptions."""
    ctx = current_job()
    settings = services.settings
    try:
        source, data = services.artifacts.read(payload["source"])
    except ArtifactNotFound:
        raise PermanentError(f"source artifact {payload['source']} does not exist") from None
    variants = [Variant(**v) for v in payload.get("variants", [])] or [
        Variant(name="", operations=[], format=payload["format"], quality=payload["quality"])
    ]
    shared = payload["operations"]
    check_cancelled()
    outputs = process(
        data,
        variants,
        limits=Limits(settings.image_max_bytes, settings.image_max_pixels, settings.image_draft),
        shared=shared,
        background=_rgb(payload["background"]),
        keep_metadata=payload["keep_metadata"],
    )
    stem = PurePath(source.name).stem or "image"
    artifacts = []
    for output in outputs:
        check_cancelled()
        name = f"{stem}-{output.name}.{output.extension}" if output.name else f"{stem}.{output.extension}"
        info = services.artifacts.put(
            output.data, name=name, content_type=output.content_type, job_id=ctx.job_id if ctx else None
        )
        artifacts.append(
            {
                **info.to_dict(),
                "variant": output.name or None,
                "width": output.width,
                "height": output.height,
                "format": output.format,
            }
        )
    return {"artifacts": artifacts}


KIND = JobKind(
    name="image",
    actor_name="process_image",
    queue="images",
    max_retries=3,
    min_backoff=2.0,
    max_backoff=300.0,
    validate=validate,
    run=run,
    artifact_ids=artifact_ids,
    time_limit=DEFAULT_IMAGE_TIME_LIMIT,
)
