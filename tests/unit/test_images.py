"""The image pipeline's logic, in process (Pillow only)."""

from __future__ import annotations

import os

import pytest
from PIL import ExifTags

from jobs.errors import PermanentError
from jobs.images.pipeline import Limits, Variant, process
from jobs.images.shorthand import parse_operation
from jobs.kinds.image import validate
from tests.images import animated_gif, jpeg, opened, png_bomb, png_with_alpha

LIMITS = Limits(max_bytes=20_000_000, max_pixels=50_000_000)
SOURCE = "9d1c1a0a-1111-4111-8111-111111111111"


def run(
    data: bytes,
    operations: list[dict[str, object]],
    fmt: str = "jpeg",
    *,
    keep: bool = False,
    limits: Limits = LIMITS,
):  # type: ignore[no-untyped-def]
    clean = validate({"source": SOURCE, "operations": operations, "format": fmt})["operations"]
    (output,) = process(
        data,
        [Variant("", clean, fmt, 85)],
        limits=limits,
        shared=[],
        background=(255, 255, 255),
        keep_metadata=keep,
    )
    return output


@pytest.mark.parametrize(("size", "expected"), [((1200, 800), (300, 200)), ((800, 1200), (200, 300))])
def test_thumbnails_keep_the_aspect_ratio(size: tuple[int, int], expected: tuple[int, int]) -> None:
    output = run(jpeg(size), [{"op": "thumbnail", "width": 300, "height": 300}])
    assert (output.width, output.height) == expected
    assert opened(output.data).size == expected


def test_exif_orientation_is_applied() -> None:
    # Stored landscape with the red quarter top-left; orientation 6 shows it rotated 90° clockwise.
    output = run(jpeg((400, 200), orientation=6), [{"op": "thumbnail", "width": 100, "height": 100}])
    image = opened(output.data).convert("RGB")
    assert image.size == (50, 100)
    red, _, blue = image.getpixel((40, 10))  # top-right now holds the red quarter
    assert red > 200
    assert blue < 60
    assert opened(output.data).getexif().get(ExifTags.Base.Orientation) is None


def test_gps_and_other_metadata_are_stripped_unless_kept() -> None:
    source = jpeg((300, 200), gps=True)
    assert opened(source).getexif().get_ifd(ExifTags.IFD.GPSInfo)

    stripped = opened(run(source, []).data).getexif()
    kept = opened(run(source, [], keep=True).data).getexif()

    assert not stripped.get_ifd(ExifTags.IFD.GPSInfo)
    assert ExifTags.Base.Make not in stripped
    assert kept.get_ifd(ExifTags.IFD.GPSInfo)
    assert kept[ExifTags.Base.Make] == "TestCam"


def test_transparency_is_flattened_onto_the_background_for_jpeg_and_kept_for_png() -> None:
    as_jpeg = opened(run(png_with_alpha(), [], "jpeg").data)
    as_png = opened(run(png_with_alpha(), [], "png").data)

    assert as_jpeg.mode == "RGB"
    assert as_jpeg.getpixel((2, 2)) == pytest.approx((255, 255, 255), abs=3)
    assert as_jpeg.getpixel((100, 50))[1] > 240
    assert as_png.mode == "RGBA"
    assert as_png.getpixel((2, 2))[3] == 0


def test_cmyk_jpeg_becomes_rgb() -> None:
    output = opened(run(jpeg((200, 200), mode="CMYK"), [{"op": "thumbnail", "width": 50, "height": 50}]).data)
    assert output.mode == "RGB"
    red, _green, blue = output.getpixel((5, 5))
    assert red > 200
    assert blue < 80


def test_an_animated_gif_gives_its_first_frame() -> None:
    output = opened(run(animated_gif(), [], "png").data)
    assert output.size == (120, 80)
    assert getattr(output, "n_frames", 1) == 1


def test_grayscale_output_is_mode_l() -> None:
    assert opened(run(jpeg((100, 100)), [{"op": "grayscale"}]).data).mode == "L"


def test_watermark_changes_the_corner_it_is_put_in() -> None:
    plain = opened(run(jpeg((400, 300)), [], "png").data)
    marked = opened(run(jpeg((400, 300)), [{"op": "watermark", "text": "© Ada", "opacity": 1}], "png").data)

    corner = (300, 250, 400, 300)
    assert plain.crop(corner).tobytes() != marked.crop(corner).tobytes()
    assert plain.crop((0, 0, 100, 50)).tobytes() == marked.crop((0, 0, 100, 50)).tobytes()


def test_resize_fill_crops_to_exactly_the_box_and_crop_rotate_blur_work() -> None:
    assert (
        run(jpeg((1000, 500)), [{"op": "resize", "width": 200, "height": 200, "mode": "fill"}]).width,
    ) == (200,)
    out = run(
        jpeg((1000, 500)),
        [
            {"op": "crop", "left": 0, "top": 0, "right": 500, "bottom": 250},
            {"op": "rotate", "degrees": 90},
            {"op": "blur", "radius": 2},
        ],
    )
    assert (out.width, out.height) == (250, 500)


def test_variants_come_from_one_decode_and_do_not_disturb_each_other() -> None:
    outputs = process(
        jpeg((2000, 1000)),
        [
            Variant("s", [{"op": "thumbnail", "width": 100, "height": 100}], "jpeg", 80),
            Variant("m", [{"op": "thumbnail", "width": 500, "height": 500}], "webp", 80),
        ],
        limits=LIMITS,
        shared=[],
        background=(255, 255, 255),
        keep_metadata=False,
    )
    assert [(o.name, o.width, o.height, o.format) for o in outputs] == [
        ("s", 100, 50, "jpeg"),
        ("m", 500, 250, "webp"),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (png_bomb(), "decompression bomb|exceeds CONVEYOR_IMAGE_MAX_PIXELS"),
        (png_bomb(8000, 8000), "exceeds CONVEYOR_IMAGE_MAX_PIXELS"),
        (os.urandom(5000), "not an image"),
        (jpeg((800, 600))[:3000], "corrupt or truncated"),
        (b"x" * 20_000_001, "exceeds CONVEYOR_IMAGE_MAX_BYTES"),
    ],
)
def test_bad_inputs_fail_permanently_with_the_reason(data: bytes, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        run(data, [])


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"operations": [{"op": "sharpen"}]}, "unknown image operation 'sharpen'"),
        ({"operations": [{"op": "thumbnail", "width": -5, "height": 10}]}, "width must be a whole number"),
        ({"operations": [{"op": "thumbnail", "width": 100_000, "height": 10}]}, "from 1 to 10000"),
        ({"operations": [{"op": "resize", "width": 10, "height": 10, "mode": "zoom"}]}, "fit or fill"),
        ({"operations": [{"op": "crop", "left": 5, "top": 0, "right": 5, "bottom": 9}]}, "right must exceed"),
        ({"operations": [{"op": "blur"}]}, "missing radius"),
        ({"operations": [{"op": "watermark", "text": "x", "size": 3}]}, "unknown parameter"),
        ({"format": "gif"}, "format must be one of"),
        ({"quality": 0}, "quality must be"),
        ({"variants": [{"name": "a"}, {"name": "a"}]}, "must be unique"),
        ({"source": "photo.jpg"}, "source must be an artifact id"),
    ],
)
def test_bad_operations_are_value_errors(payload: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate({"source": SOURCE, **payload})


def test_the_shell_shorthand_for_operations() -> None:
    assert parse_operation("thumbnail=256x128") == {"op": "thumbnail", "width": 256, "height": 128}
    assert parse_operation("resize=80x60:fill") == {"op": "resize", "width": 80, "height": 60, "mode": "fill"}
    assert parse_operation("crop=1,2,3,4") == {"op": "crop", "left": 1, "top": 2, "right": 3, "bottom": 4}
    assert parse_operation("rotate=90") == {"op": "rotate", "degrees": 90.0}
    assert parse_operation("watermark=© Ada") == {"op": "watermark", "text": "© Ada"}
    assert parse_operation('{"op": "blur", "radius": 2}') == {"op": "blur", "radius": 2}
    with pytest.raises(ValueError, match="unknown operation"):
        parse_operation("sharpen=3")
