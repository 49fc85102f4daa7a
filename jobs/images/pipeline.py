"""Decode once (with limits), apply each variant's operations, encode each variant."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from PIL import Image, ImageOps, UnidentifiedImageError

from jobs.errors import PermanentError
from jobs.images.operations import Operation, apply, target_side
from jobs.images.validation import OUTPUT_FORMATS

#: Input formats Pillow may decode; anything else is refused before decoding.
ALLOWED_INPUT = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
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


@dataclass(frozen=True)
class Rendered:
    """One variant's final image and how to encode it; :meth:`save` writes it to a file."""

    name: str
    image: Image.Image
    format: str
    options: dict[str, Any]

    @property
    def content_type(self) -> str:
        return OUTPUT_FORMATS[self.format][1]

    @property
    def extension(self) -> str:
        return OUTPUT_FORMATS[self.format][2]

    def save(self, target: IO[bytes] | Any) -> None:
        self.image.save(target, OUTPUT_FORMATS[self.format][0], **self.options)


def process(
    source: bytes | IO[bytes],
    variants: list[Variant],
    *,
    limits: Limits,
    shared: list[Operation],
    background: tuple[int, int, int],
    keep_metadata: bool,
) -> list[Output]:
    """Every variant from one decode, encoded in memory (see :func:`render` to write to files).

    Raises:
        PermanentError: too large, a decompression bomb, a format not allowed, a corrupt file.
    """
    outputs = []
    for rendered in render(
        source, variants, limits=limits, shared=shared, background=background, keep_metadata=keep_metadata
    ):
        buffer = io.BytesIO()
        rendered.save(buffer)
        outputs.append(
            Output(
                name=rendered.name,
                data=buffer.getvalue(),
                width=rendered.image.width,
                height=rendered.image.height,
                format=rendered.format,
                content_type=rendered.content_type,
                extension=rendered.extension,
            )
        )
    return outputs


def render(
    source: bytes | IO[bytes],
    variants: list[Variant],
    *,
    limits: Limits,
    shared: list[Operation],
    background: tuple[int, int, int],
    keep_metadata: bool,
) -> Iterator[Rendered]:
    """Every variant from one decode of ``source`` (bytes, or a binary file read as it decodes),
    one at a time, so that each can be written out before the next is made.

    Raises:
        PermanentError: too large, a decompression bomb, a format not allowed, a corrupt file.
    """
    sides = [target_side(shared + v.operations) for v in variants]
    known = [side for side in sides if side is not None]
    draft_side = max(known) if limits.draft and known and len(known) == len(sides) else None
    image, exif = decode(source, limits, draft_side)
    image = apply(image, shared, background)
    for v in variants:
        yield prepare(apply(image, v.operations, background), v, background, exif if keep_metadata else None)


def _size(source: bytes | IO[bytes]) -> int:
    if isinstance(source, bytes | bytearray | memoryview):
        return len(source)
    try:
        return os.fstat(source.fileno()).st_size
    except (AttributeError, OSError, io.UnsupportedOperation):
        position = source.tell()
        size = source.seek(0, io.SEEK_END)
        source.seek(position)
        return size


def decode(
    source: bytes | IO[bytes], limits: Limits, draft_side: int | None
) -> tuple[Image.Image, Image.Exif]:
    """Open, check the limits from the header alone, then decode; EXIF orientation applied."""
    size = _size(source)
    if size > limits.max_bytes:
        raise PermanentError(f"image of {size} bytes exceeds CONVEYOR_IMAGE_MAX_BYTES={limits.max_bytes}")
    stream = io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source
    try:
        with warnings.catch_warnings():
            # Our own pixel limit (below) decides; Pillow's warning must not leak or abort.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(stream, formats=ALLOWED_INPUT)
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


def prepare(
    image: Image.Image, variant: Variant, background: tuple[int, int, int], exif: Image.Exif | None
) -> Rendered:
    """The image as the variant's format stores it (alpha flattened for JPEG), with its encoder options."""
    pil_format = OUTPUT_FORMATS[variant.format][0]
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
    return Rendered(name=variant.name, image=image, format=variant.format, options=options)


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
