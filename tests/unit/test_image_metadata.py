"""Comments and other metadata must not survive into a "metadata stripped"
output. Checked by parsing the output's bytes (segments, chunks), not by asking Pillow."""

from __future__ import annotations

import pytest

from jobs.images.pipeline import Limits, Variant, process
from tests.images import SECRET, jpeg_segments, metadata_left, opened, png_chunks, with_metadata

LIMITS = Limits(max_bytes=20_000_000, max_pixels=50_000_000)
SOURCES = ("JPEG", "GIF", "PNG", "WEBP", "TIFF")


def outputs(data: bytes, fmt: str, *, keep: bool = False, operations: list[dict[str, object]] | None = None):  # type: ignore[no-untyped-def]
    return process(
        data,
        [Variant("", operations or [], fmt, 85)],
        limits=LIMITS,
        shared=[],
        background=(255, 255, 255),
        keep_metadata=keep,
    )


def test_every_source_format_carries_the_metadata_the_test_looks_for() -> None:
    for source in SOURCES:
        assert SECRET in with_metadata(source) or source == "PNG", source
    assert 0xFE in [marker for marker, _ in jpeg_segments(with_metadata("JPEG"))]
    assert {b"tEXt", b"zTXt", b"iTXt", b"eXIf"} <= {kind for kind, _ in png_chunks(with_metadata("PNG"))}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
@pytest.mark.parametrize("operations", [[], [{"op": "thumbnail", "width": 32, "height": 32}]])
def test_no_comment_text_xmp_or_exif_reaches_an_output(
    source: str, fmt: str, operations: list[dict[str, object]]
) -> None:
    (output,) = outputs(with_metadata(source), fmt, operations=operations)

    assert metadata_left(output.data) == []


def test_keep_metadata_keeps_exif_but_never_comments_or_xmp() -> None:
    (output,) = outputs(with_metadata("JPEG"), "jpeg", keep=True)

    markers = [marker for marker, _ in jpeg_segments(output.data)]
    assert 0xE1 in markers  # APP1: EXIF, as asked
    assert 0xFE not in markers  # COM
    assert SECRET not in output.data
    assert opened(output.data).getexif()[0x010F] == "TestCam"
