"""Test images made on the spot."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import ExifTags, Image


def jpeg(
    size: tuple[int, int], *, orientation: int | None = None, gps: bool = False, mode: str = "RGB"
) -> bytes:
    """A JPEG whose top-left quarter is red and the rest blue (CMYK when asked)."""
    image = Image.new("RGB", size, (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, size[0] // 2, size[1] // 2))
    if mode == "CMYK":
        image = image.convert("CMYK")
    exif = Image.Exif()
    if orientation:
        exif[ExifTags.Base.Orientation] = orientation
    if gps:
        exif[ExifTags.Base.Make] = "TestCam"
        gps_ifd = exif.get_ifd(ExifTags.IFD.GPSInfo)
        gps_ifd[ExifTags.GPS.GPSLatitudeRef] = "N"
        gps_ifd[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, exif=exif.tobytes())
    return buffer.getvalue()


def png_with_alpha(size: tuple[int, int] = (200, 100)) -> bytes:
    """Fully transparent, but for an opaque green square in the middle."""
    image = Image.new("RGBA", size, (255, 0, 0, 0))
    image.paste((0, 255, 0, 255), (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("P", (120, 80), i * 40) for i in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A tiny PNG whose header claims a huge image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def opened(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


SECRET = b"Ada Lovelace, 12 Baker St"  # a comment / text that must never reach an output


def _gps_exif() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "TestCam"
    gps_ifd = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps_ifd[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps_ifd[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
    return exif.tobytes()


def _xmp() -> bytes:
    return (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description>' + SECRET + b"</rdf:Description></x:xmpmeta>"
    )


def with_metadata(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    """An image in ``fmt`` carrying every kind of metadata that format can hold, each with SECRET:
    JPEG COM + EXIF (GPS) + XMP; GIF comment extension; PNG tEXt, zTXt, iTXt and eXIf; WebP EXIF
    and XMP chunks; TIFF ImageDescription."""
    from PIL import PngImagePlugin

    image = Image.new("RGB", size, (10, 120, 200))
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", comment=SECRET, exif=_gps_exif(), xmp=_xmp())
    elif fmt == "GIF":
        image.convert("P").save(buffer, "GIF", comment=SECRET)
    elif fmt == "PNG":
        text = PngImagePlugin.PngInfo()
        text.add_text("Comment", SECRET.decode())
        text.add_text("Author", SECRET.decode(), zip=True)
        text.add_itxt("Description", SECRET.decode(), lang="en", tkey="Description")
        text.add_itxt("XML:com.adobe.xmp", _xmp().decode())
        image.save(buffer, "PNG", pnginfo=text, exif=_gps_exif())
    elif fmt == "WEBP":
        image.save(buffer, "WEBP", exif=_gps_exif(), xmp=_xmp())
    elif fmt == "TIFF":
        image.save(buffer, "TIFF", tiffinfo={270: SECRET.decode()})
    else:
        raise ValueError(fmt)
    return buffer.getvalue()


def jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """The marker segments of a JPEG up to its scan, parsed from the bytes: ``(marker, payload)``."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    segments, position = [], 2
    while position < len(data):
        assert data[position] == 0xFF, f"no marker at {position}"
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        segments.append((marker, data[position + 4 : position + 2 + length]))
        position += 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
    return segments


def png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every chunk of a PNG, parsed from the bytes: ``(type, data)``."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        chunks.append((data[position + 4 : position + 8], data[position + 8 : position + 8 + length]))
        position += 12 + length
    return chunks


def webp_chunks(data: bytes) -> list[bytes]:
    """The chunk types of a WebP (RIFF) file, parsed from the bytes."""
    assert data[:4] == b"RIFF", "not a RIFF file"
    assert data[8:12] == b"WEBP", "not a WebP"
    kinds, position = [], 12
    while position + 8 <= len(data):
        kind, length = (
            data[position : position + 4],
            struct.unpack("<I", data[position + 4 : position + 8])[0],
        )
        kinds.append(kind)
        position += 8 + length + (length & 1)
    return kinds


#: What each output format may carry besides pixels: JPEG JFIF (APP0), the ICC profile (APP2,
#: kept on purpose), Adobe (APP14, colour transform); PNG's structural and colour chunks; WebP's.
JPEG_ALLOWED = {0xE0, 0xE2, 0xEE, 0xDB, 0xC0, 0xC1, 0xC2, 0xC4, 0xDD, 0xDA}
PNG_ALLOWED = {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"iCCP", b"sRGB", b"gAMA", b"cHRM", b"pHYs"}
WEBP_ALLOWED = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ICCP"}


def metadata_left(data: bytes) -> list[str]:
    """What metadata an output still carries, from its bytes (empty when none): segments or chunks
    outside the allowed sets, and SECRET or an EXIF header anywhere in the file."""
    found: list[str] = []
    if data[:2] == b"\xff\xd8":
        found += [f"JPEG marker {m:#04x}" for m, _ in jpeg_segments(data) if m not in JPEG_ALLOWED]
    elif data[:4] == b"\x89PNG":
        found += [f"PNG chunk {k.decode()}" for k, _ in png_chunks(data) if k not in PNG_ALLOWED]
    elif data[:4] == b"RIFF":
        found += [f"WebP chunk {k.decode()}" for k in webp_chunks(data) if k not in WEBP_ALLOWED]
    else:
        found.append("unknown format")
    if SECRET in data:
        found.append("the secret text")
    if b"Exif\x00\x00" in data:
        found.append("EXIF")
    return found


def png_text_bomb(megabytes: int = 50) -> bytes:
    """A 2×2 PNG with, before its pixels, a zTXt chunk that inflates to ``megabytes`` MB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    text = chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * megabytes * 1_000_000, 9))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
        + text
        + chunk(b"IDAT", zlib.compress(b"\0" * 14))
        + chunk(b"IEND", b"")
    )
