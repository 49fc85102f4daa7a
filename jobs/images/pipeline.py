"""Decode once (with limits), apply each variant's operations, encode each variant."""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import IO, Any

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from jobs import defaults
from jobs.errors import PermanentError
from jobs.images.operations import Operation, apply, target_side
from jobs.images.sizes import next_size, over_cap
from jobs.images.validation import OUTPUT_FORMATS

#: Input formats Pillow may decode; anything else is refused before decoding.
ALLOWED_INPUT = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


@dataclass(frozen=True)
class Limits:
    """The caps of one image job (settings ``image_max_*``)."""

    #: Bytes and pixels of the input (checked from the file's size and header, before decoding).
    max_bytes: int
    max_pixels: int
    #: Let JPEG decode at a reduced scale when every output is small (faster, slightly softer).
    draft: bool = True
    #: Pixels of every image an operation makes (intermediates and outputs), checked before it runs.
    max_output_pixels: int = defaults.DEFAULT_IMAGE_MAX_OUTPUT_PIXELS
    #: Bytes of each encoded output: the encoder is stopped as soon as it writes more.
    max_output_bytes: int = defaults.DEFAULT_IMAGE_MAX_OUTPUT_BYTES


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
    #: Bytes: the most :meth:`save` writes before it fails (``None``: no cap).
    max_bytes: int | None = None

    @property
    def content_type(self) -> str:
        return OUTPUT_FORMATS[self.format][1]

    @property
    def extension(self) -> str:
        return OUTPUT_FORMATS[self.format][2]

    def save(self, target: IO[bytes] | Any) -> None:
        """Encode into ``target`` (a binary file or any object with ``write``).

        Raises:
            PermanentError: the encoded image is larger than ``max_bytes`` (what was written
                before is left to the caller to discard: an artifact is then not stored).
        """
        sink: Any = target if self.max_bytes is None else _CappedWriter(target, self.max_bytes, self.name)
        self.image.save(sink, OUTPUT_FORMATS[self.format][0], **self.options)


class _CappedWriter:
    """Passes writes on and fails as soon as more than ``limit`` bytes came. No ``fileno`` on
    purpose: Pillow then writes through :meth:`write`, so that every byte is counted."""

    def __init__(self, target: IO[bytes] | Any, limit: int, name: str) -> None:
        self._target = target
        self._limit = limit
        self._name = name
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.size > self._limit:
            variant = f"variant {self._name!r}" if self._name else "the output"
            raise PermanentError(
                f"image output ({variant}) exceeds CONVEYOR_IMAGE_MAX_OUTPUT_BYTES={self._limit:,} bytes"
            )
        written: int = self._target.write(data)
        return written

    def flush(self) -> None:
        flush = getattr(self._target, "flush", None)
        if flush is not None:
            flush()


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
    check_sizes(image.size, shared, variants, limits.max_output_pixels)
    cap = limits.max_output_pixels
    image = apply(image, shared, background, max_pixels=cap, where=_SHARED)
    for v in variants:
        made = apply(image, v.operations, background, max_pixels=cap, where=_where(v))
        rendered = prepare(made, v, background, exif if keep_metadata else None)
        yield replace(rendered, max_bytes=limits.max_output_bytes)


#: How errors name the top-level ``operations`` (shared by every variant) and a variant's own.
_SHARED = "the operations"


def _where(variant: Variant) -> str:
    return f"variant {variant.name!r}" if variant.name else _SHARED


def check_sizes(
    size: tuple[int, int], shared: list[Operation], variants: list[Variant], max_pixels: int
) -> None:
    """Follow every chain from the decoded size before any runs, so that a job over the pixel cap
    fails before it allocates anything or stores a first output.

    Raises:
        PermanentError: naming the operation, the size it would make and the cap.
    """
    after_shared = _walk(size, shared, _SHARED, max_pixels)
    for v in variants:
        _walk(after_shared, v.operations, _where(v), max_pixels)


def _walk(size: tuple[int, int], operations: list[Operation], where: str, max_pixels: int) -> tuple[int, int]:
    for index, operation in enumerate(operations):
        size = next_size(operation, size)
        problem = over_cap(index, operation, where, size, max_pixels)
        if problem:
            raise PermanentError(problem)
    return size


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
    """Open, check the limits from the header alone, then decode; EXIF orientation applied.

    Raises:
        PermanentError: too large, a decompression bomb, a format not allowed, a damaged file.
    """
    size = _size(source)
    if size > limits.max_bytes:
        raise PermanentError(f"image of {size} bytes exceeds CONVEYOR_IMAGE_MAX_BYTES={limits.max_bytes}")
    stream = io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source
    opened = _open(stream)
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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data"…: we fail or go on
            opened.load()
            exif = opened.getexif()
            image: Image.Image = opened
            if exif.get(0x0112, 1) != 1:  # only rotated images need the copy that transposing makes
                image = ImageOps.exif_transpose(opened) or opened
    except _UNREADABLE as exc:
        raise PermanentError(f"corrupt or truncated image: {exc}") from None
    return normalise_mode(image), exif


#: What Pillow raises for a file it cannot read (a damaged header or body, a header it refuses,
#: such as a PNG text chunk inflating past PngImagePlugin.MAX_TEXT_CHUNK): the file's fault, so
#: the job fails for good instead of being retried as if the error were transient.
_UNREADABLE = (OSError, SyntaxError, ValueError, EOFError, struct.error)


def _open(stream: IO[bytes]) -> ImageFile.ImageFile:
    """``Image.open`` (the header only) restricted to the allowed formats, errors made permanent."""
    try:
        with warnings.catch_warnings():
            # Our own pixel limit (checked next) decides; Pillow's warnings must not leak or abort.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            return Image.open(stream, formats=ALLOWED_INPUT)
    except UnidentifiedImageError:
        raise PermanentError(f"not an image in an allowed format ({', '.join(ALLOWED_INPUT)})") from None
    except Image.DecompressionBombError as exc:
        raise PermanentError(f"decompression bomb refused: {exc}") from None
    except _UNREADABLE as exc:
        raise PermanentError(f"corrupt or refused image header: {exc}") from None


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
        options["icc_profile"] = icc  # colour, not personal data: kept (README says so)
    strip_info(image)
    return Rendered(name=variant.name, image=image, format=variant.format, options=options)


#: What of ``Image.info`` may reach an encoder: pixel semantics only.
_KEPT_INFO = ("transparency",)


def strip_info(image: Image.Image) -> None:
    """Drop what the decoder read besides pixels (comments, XMP, EXIF, text chunks…) from
    ``image.info``: encoders copy some of it on their own (JPEG writes ``info["comment"]`` as a
    COM segment). Metadata to keep is given to the encoder explicitly (``exif=``, ``icc_profile=``).
    The image may be the decoded source every variant shares; all of them are stripped alike."""
    image.info = {key: image.info[key] for key in _KEPT_INFO if key in image.info}


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
