"""Decode once (with limits), apply each variant's operations, encode each variant."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from jobs.errors import PermanentError
from jobs.images.operations import Operation, apply, target_side

#: Input formats Pillow may decode; anything else is refused before decoding.
ALLOWED_INPUT = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
OUTPUT_FORMATS = {
    "jpeg": ("JPEG", "image/jpeg", "jpg"),
    "png": ("PNG", "image/png", "png"),
    "webp": ("WEBP", "image/webp", "webp"),
}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pixels: int
    #: Let JPEG decode at a reduced scale when every output is small (faster, slightly softer).
    draft: bool = True


@dataclass(frozen=True)
class Variant:
    name: str
    operations: list[Operation]
    format: str
    quality: int


@dataclass(frozen=True)
class Output:
    name: str
    data: bytes
    width: int
    height: int
    format: str
    content_type: str
    extension: str


def process(
    data: bytes,
    variants: list[Variant],
    *,
    limits: Limits,
    shared: list[Operation],
    background: tuple[int, int, int],
    keep_metadata: bool,
) -> list[Output]:
    """Every variant from one decode.

    Raises:
        PermanentError: too large, a decompression bomb, a format not allowed, a corrupt file.
    """
    sides = [target_side(shared + v.operations) for v in variants]
    known = [side for side in sides if side is not None]
    draft_side = max(known) if limits.draft and known and len(known) == len(sides) else None
    image, exif = decode(data, limits, draft_side)
    image = apply(image, shared, background)
    return [
        encode(apply(image, v.operations, background), v, background, exif if keep_metadata else None)
        for v in variants
    ]


def decode(data: bytes, limits: Limits, draft_side: int | None) -> tuple[Image.Image, Image.Exif]:
    """Open, check the limits from the header alone, then decode; EXIF orientation applied."""
    if len(data) > limits.max_bytes:
        raise PermanentError(
            f"image of {len(data)} bytes exceeds CONVEYOR_IMAGE_MAX_BYTES={limits.max_bytes}"
        )
    try:
        with warnings.catch_warnings():
            # Our own pixel limit (below) decides; Pillow's warning must not leak or abort.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(io.BytesIO(data), formats=ALLOWED_INPUT)
    except UnidentifiedImageError:
        raise PermanentError(f"not an image in an allowed format ({', '.join(ALLOWED_INPUT)})") from None
    except Image.DecompressionBombError as exc:
        raise PermanentError(f"decompression bomb refused: {exc}") from None
    width, height = opened.size
    if width * height > limits.max_pixels:
        raise PermanentError(
            f"image of {width}×{height} = {width * height:,} pixels exceeds "
            f"CONVEYOR_IMAGE_MAX_PIXELS={limits.max_pixels:,} (refused before decoding)"
        )
    if draft_side is not None and opened.format == "JPEG":
        # EXIF rotation may swap the sides, so ask for the long side in both directions.
        opened.draft("RGB" if opened.mode != "L" else "L", (draft_side, draft_side))
    try:
        opened.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise PermanentError(f"corrupt or truncated image: {exc}") from None
    exif = opened.getexif()
    image: Image.Image = opened
    if exif.get(0x0112, 1) != 1:  # only rotated images need the copy that transposing makes
        image = ImageOps.exif_transpose(opened) or opened
    return normalise_mode(image), exif


def normalise_mode(image: Image.Image) -> Image.Image:
    """Bring any mode to L, LA, RGB or RGBA (CMYK, palette, 16-bit…)."""
    if image.mode in ("L", "LA", "RGB", "RGBA"):
        return image
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return image.convert("I").point(lambda v: v / 256).convert("L")
    if image.mode in _ALPHA_MODES:
        return image.convert("RGBA")
    return image.convert("RGB")


def encode(
    image: Image.Image, variant: Variant, background: tuple[int, int, int], exif: Image.Exif | None
) -> Output:
    pil_format, content_type, extension = OUTPUT_FORMATS[variant.format]
    if pil_format == "JPEG" and image.mode in ("RGBA", "LA"):
        image = flatten(image, background)
    options: dict[str, Any] = {}
    if pil_format == "JPEG":
        options = {"quality": variant.quality, "optimize": True, "progressive": True}
    elif pil_format == "WEBP":
        options = {"quality": variant.quality, "method": 4}
    else:
        options = {"optimize": False, "compress_level": 6}
    if exif is not None:
        exif[0x0112] = 1  # orientation already applied to the pixels
        options["exif"] = exif.tobytes()
    icc = image.info.get("icc_profile")
    if icc:
        options["icc_profile"] = icc
    buffer = io.BytesIO()
    image.save(buffer, pil_format, **options)
    return Output(
        name=variant.name,
        data=buffer.getvalue(),
        width=image.width,
        height=image.height,
        format=variant.format,
        content_type=content_type,
        extension=extension,
    )


def flatten(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Composite an image with alpha onto an opaque background."""
    if image.mode == "LA":
        gray = round(0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2])
        canvas = Image.new("L", image.size, gray)
        canvas.paste(image.getchannel("L"), mask=image.getchannel("A"))
        return canvas
    rgba = image.convert("RGBA")
    canvas = Image.new("RGB", rgba.size, background)
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas
