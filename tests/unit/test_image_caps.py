"""A tiny image must not become a huge job (a 69-byte PNG asking for 800 megapixels). Every
intermediate and output is capped in pixels, every output in bytes; what the requested
sizes decide is refused at enqueue, the rest in the worker before any pixel is allocated."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image

from jobs.errors import PermanentError
from jobs.images.pipeline import Limits, Variant, process, render
from jobs.images.sizes import check_bounds, fit_size, rotated_size
from jobs.images.validation import validate_operations
from jobs.kinds.image import validate
from jobs.settings import Settings
from tests.images import png_text_bomb

SOURCE = "9d1c1a0a-1111-4111-8111-111111111111"
ROTATE_45 = {"op": "rotate", "degrees": 45}


def png(size: tuple[int, int], mode: str = "RGB", *, noise: bool = False) -> bytes:
    image = (
        Image.frombytes(mode, size, os.urandom(size[0] * size[1] * len(mode)))
        if noise
        else Image.new(mode, size, 128 if mode == "L" else (40, 90, 200))
    )
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def run(data: bytes, operations: list[dict[str, object]], limits: Limits, fmt: str = "jpeg"):  # type: ignore[no-untyped-def]
    return process(
        data,
        [Variant("", validate_operations(operations), fmt, 85)],
        limits=limits,
        shared=[],
        background=(255, 255, 255),
        keep_metadata=False,
    )


def test_the_issue_s_tiny_png_resized_and_rotated_is_refused_at_enqueue_naming_the_rotate() -> None:
    operations = [{"op": "resize", "width": 10000, "height": 10000}, ROTATE_45, ROTATE_45, ROTATE_45]
    assert len(png((1, 1))) < 100

    with pytest.raises(
        ValueError,
        match=r"image operation rotate \(#2 of the operations\) may make .* pixels, "
        r"over CONVEYOR_IMAGE_MAX_OUTPUT_PIXELS=100,000,000",
    ):
        validate({"source": SOURCE, "operations": operations})


def test_enqueue_checks_variants_after_the_shared_operations_against_the_configured_cap() -> None:
    settings = Settings(image_max_output_pixels=1_000_000)
    payload = {
        "source": SOURCE,
        "operations": [{"op": "resize", "width": 1000, "height": 1000, "mode": "fill"}],
        "variants": [
            {"name": "ok", "operations": [{"op": "rotate", "degrees": 90}]},
            {"name": "big", "operations": [ROTATE_45]},
        ],
    }

    with pytest.raises(
        ValueError, match=r"rotate \(#1 of variant 'big'\) .* over CONVEYOR_IMAGE_MAX_OUTPUT_PIXELS=1,000,000"
    ):
        validate(payload, settings)
    assert validate({**payload, "variants": payload["variants"][:1]}, settings)
    with pytest.raises(ValueError, match=r"crop \(#1 of the operations\)"):
        validate(
            {
                "source": SOURCE,
                "operations": [{"op": "crop", "left": 0, "top": 0, "right": 2000, "bottom": 600}],
            },
            settings,
        )


def test_a_chain_whose_size_comes_from_the_input_fails_in_the_worker_before_allocating() -> None:
    # 1×14200 gray pixels (a 100-byte file) turned by 45° would be 10043×10042 (100.9 megapixels):
    # the input's size is unknown at enqueue, so the worker refuses it from the header.
    data = png((1, 14_200), "L")
    assert validate({"source": SOURCE, "operations": [ROTATE_45]})

    with pytest.raises(
        PermanentError,
        match=r"image operation rotate \(#1 of the operations\) would make an image of 10043×10042 = "
        r".* over CONVEYOR_IMAGE_MAX_OUTPUT_PIXELS=100,000,000",
    ):
        run(data, [ROTATE_45], Limits(max_bytes=10_000_000, max_pixels=50_000_000))


def test_an_intermediate_over_the_cap_fails_even_when_the_output_is_small() -> None:
    limits = Limits(max_bytes=10_000_000, max_pixels=50_000_000, max_output_pixels=250_000)
    chain = [
        {"op": "resize", "width": 1000, "height": 1000, "mode": "fill"},
        {"op": "thumbnail", "width": 10, "height": 10},
    ]

    with pytest.raises(
        PermanentError, match=r"resize \(#1 of the operations\) would make an image of 1000×1000"
    ):
        run(png((20, 20)), chain, limits)


def test_no_variant_is_made_when_a_later_one_is_over_the_cap() -> None:
    limits = Limits(max_bytes=10_000_000, max_pixels=50_000_000, max_output_pixels=10_000)
    variants = [
        Variant("small", [{"op": "thumbnail", "width": 50, "height": 50}], "png", 85),
        Variant("big", [ROTATE_45], "png", 85),
    ]
    outputs = render(
        png((100, 100)), variants, limits=limits, shared=[], background=(0, 0, 0), keep_metadata=False
    )

    with pytest.raises(PermanentError, match=r"rotate \(#1 of variant 'big'\)"):
        next(outputs)


def test_an_output_larger_than_the_byte_cap_fails_naming_the_cap() -> None:
    limits = Limits(max_bytes=10_000_000, max_pixels=50_000_000, max_output_bytes=20_000)
    data = png((200, 200), noise=True)

    with pytest.raises(
        PermanentError,
        match=r"image output \(the output\) exceeds CONVEYOR_IMAGE_MAX_OUTPUT_BYTES=20,000 bytes",
    ):
        run(data, [], limits, "png")
    assert run(data, [{"op": "thumbnail", "width": 40, "height": 40}], limits, "png")[0].width == 40


def test_resize_fit_of_a_long_thin_image_never_asks_pillow_for_a_side_of_zero() -> None:
    (output,) = run(
        png((4000, 1)), [{"op": "resize", "width": 10, "height": 10}], Limits(10_000_000, 50_000_000)
    )

    assert (output.width, output.height) == (10, 1)
    assert fit_size((4000, 1), (10, 10)) == (10, 1)


def test_the_enqueue_bound_of_a_rotation_covers_pillow_s_exact_size() -> None:
    for degrees in (1, 30, 45, 89.5, 135, -45, 200, 359.9):
        bound = check_bounds([ROTATE_45 | {"degrees": degrees}], 10**12, where="x", bound=(300, 200))
        assert bound is not None
        exact = Image.new("L", (300, 200)).rotate(-degrees, expand=True).size
        assert rotated_size((300, 200), degrees) == exact
        assert exact[0] <= bound[0]
        assert exact[1] <= bound[1]


def test_output_caps_are_settings_that_must_be_positive() -> None:
    settings = Settings.from_env(
        {"CONVEYOR_IMAGE_MAX_OUTPUT_PIXELS": "5000", "CONVEYOR_IMAGE_MAX_OUTPUT_BYTES": "70000"}
    )
    assert (settings.image_max_output_pixels, settings.image_max_output_bytes) == (5000, 70000)
    with pytest.raises(ValueError, match="CONVEYOR_IMAGE_MAX_OUTPUT_BYTES must be a positive number"):
        Settings(image_max_output_bytes=0)


def test_only_the_first_frame_of_an_animation_is_decoded_so_frames_never_multiply_the_pixels() -> None:
    # 12 frames of 100×100 (120,000 frame-pixels, over the 20,000 cap) whose later frames are
    # garbage: had any been decoded, the job would fail or exceed the cap.
    frames = [Image.frombytes("L", (100, 100), os.urandom(10_000)).convert("P") for _ in range(12)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50)
    animated = buffer.getvalue()
    assert Image.open(io.BytesIO(animated)).n_frames == 12  # type: ignore[attr-defined]
    damaged = animated[: len(animated) // 4] + b"\0garbage" * 100
    limits = Limits(max_bytes=10_000_000, max_pixels=20_000, max_output_pixels=20_000)

    for fmt in ("png", "webp"):
        (output,) = run(damaged, [], limits, fmt)
        assert (output.width, output.height) == (100, 100)
        assert getattr(Image.open(io.BytesIO(output.data)), "n_frames", 1) == 1


def test_a_png_whose_text_chunk_inflates_past_pillow_s_limit_fails_permanently() -> None:
    # Pillow refuses it with a bare ValueError at open, which a worker retries as if transient.
    data = png_text_bomb()
    assert len(data) < 100_000

    with pytest.raises(PermanentError, match=r"corrupt or refused image header: .*MAX_TEXT_CHUNK"):
        run(data, [], Limits(10_000_000, 1_000_000), "png")
