"""The ``image`` kind: a Pillow pipeline from one source artifact to one or more image artifacts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from jobs.context import check_cancelled, current_job
from jobs.defaults import DEFAULT_IMAGE_MAX_OUTPUT_PIXELS
from jobs.errors import ArtifactNotFound, PermanentError
from jobs.ids import is_uuid
from jobs.images.sizes import check_bounds
from jobs.images.validation import OUTPUT_FORMATS, validate_operations
from jobs.kinds.base import Payload, Result, require_keys

if TYPE_CHECKING:
    from jobs.services import Services
    from jobs.settings import Settings

_FIELDS = {"source", "operations", "format", "quality", "variants", "keep_metadata", "background"}
_VARIANT_FIELDS = {"name", "operations", "format", "quality"}
_VARIANT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
DEFAULT_FORMAT = "jpeg"
DEFAULT_QUALITY = 85
DEFAULT_BACKGROUND = "#ffffff"


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
    background = payload.get("background", DEFAULT_BACKGROUND)
    if background != DEFAULT_BACKGROUND:
        _rgb(background)
    clean["background"] = background
    _check_sizes(clean, settings)
    return clean


def _check_sizes(clean: Payload, settings: Settings | None) -> None:
    """Refuse a chain whose requested sizes may grow past the pixel cap (``resize 10000x10000``
    then three ``rotate 45`` would make a tiny image 800 megapixels). The input's own size is
    unknown here: chains that never set a size are checked in the worker, from the header."""
    cap = settings.image_max_output_pixels if settings is not None else DEFAULT_IMAGE_MAX_OUTPUT_PIXELS
    bound = check_bounds(clean["operations"], cap, where="the operations")
    for variant in clean.get("variants", []):
        check_bounds(variant["operations"], cap, where=f"variant {variant['name']!r}", bound=bound)


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
    """Raises ``ValueError`` for what is not a colour. Pillow is imported only for a colour other
    than the default, so that a producer validates the usual image job without loading it."""
    if colour == DEFAULT_BACKGROUND:
        return 255, 255, 255
    from PIL import ImageColor

    try:
        red, green, blue = ImageColor.getrgb(colour)[:3]
    except (ValueError, AttributeError):
        raise ValueError(f"image payload: background {colour!r} is not a colour") from None
    return red, green, blue


def artifact_ids(payload: Payload) -> list[str]:
    return [payload["source"]]


def run(services: Services, **payload: Any) -> Result:
    """Decode the source once, straight from its file; write every output to its artifact file.
    Returns their descriptions."""
    from jobs.images.pipeline import Limits, Variant, render  # Pillow: only where images are made

    ctx = current_job()
    settings = services.settings
    variants = [Variant(**v) for v in payload.get("variants", [])] or [
        Variant(name="", operations=[], format=payload["format"], quality=payload["quality"])
    ]
    check_cancelled()
    try:
        with services.artifacts.source(payload["source"]) as (source, handle):
            stem = PurePath(source.name).stem or "image"
            outputs = render(
                handle,
                variants,
                limits=Limits(
                    settings.image_max_bytes,
                    settings.image_max_pixels,
                    settings.image_draft,
                    max_output_pixels=settings.image_max_output_pixels,
                    max_output_bytes=settings.image_max_output_bytes,
                ),
                shared=payload["operations"],
                background=_rgb(payload["background"]),
                keep_metadata=payload["keep_metadata"],
            )
            artifacts = []
            for output in outputs:
                check_cancelled()
                name = (
                    f"{stem}-{output.name}.{output.extension}"
                    if output.name
                    else f"{stem}.{output.extension}"
                )
                job_id = ctx.job_id if ctx else None
                with services.artifacts.create(
                    name=name, content_type=output.content_type, job_id=job_id
                ) as sink:
                    output.save(sink)
                assert sink.info is not None
                artifacts.append(
                    {
                        **sink.info.to_dict(),
                        "variant": output.name or None,
                        "width": output.image.width,
                        "height": output.image.height,
                        "format": output.format,
                    }
                )
    except ArtifactNotFound:
        raise PermanentError(f"source artifact {payload['source']} does not exist") from None
    return {"artifacts": artifacts}
