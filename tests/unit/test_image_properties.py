"""Property-based tests (Hypothesis) over the image operations, with hostile inputs.

Any payload - any chain of operations with any parameters, in range or not - on a small generated
image either is refused at enqueue with a ``ValueError`` naming the operation or field, or runs
in process to a clean outcome: outputs within the pixel and byte caps and without metadata, or a
``PermanentError`` naming its reason. Never another exception (which would be retried as if
transient), never an image over the cap.
"""

from __future__ import annotations

import io
import re
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from jobs.errors import PermanentError
from jobs.images.operations import apply
from jobs.images.pipeline import Limits, Output, Variant, process
from jobs.images.sizes import bound_size, next_size
from jobs.images.validation import validate_operations
from jobs.kinds.image import validate
from jobs.settings import Settings
from tests.images import SECRET, metadata_left, opened

SOURCE = "9d1c1a0a-1111-4111-8111-111111111111"
PROPERTY = settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
#: A refusal at enqueue names an operation, a field of the payload or of a variant.
REFUSAL = re.compile(r"^(image operation|unknown image operation|image payload|image variant)")
#: What a clean failure in the worker says.
FAILURE = re.compile(
    r"CONVEYOR_IMAGE_MAX_OUTPUT_(PIXELS|BYTES)|crop box .* lies outside|corrupt or truncated"
)
SIZING = ("thumbnail", "resize", "crop")

# Parameters in range (most chains), and anything a JSON payload could hold (the rest).
good_side = st.integers(1, 300)
big_side = st.integers(1, 10_000)
wild = st.one_of(
    st.integers(-5, 120_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=2),
    st.none(),
)

valid_operation = st.one_of(
    st.fixed_dictionaries({"op": st.just("thumbnail"), "width": good_side, "height": good_side}),
    st.fixed_dictionaries(
        {
            "op": st.just("resize"),
            "width": st.one_of(good_side, big_side),
            "height": st.one_of(good_side, big_side),
        },
        optional={"mode": st.sampled_from(["fit", "fill"])},
    ),
    st.builds(
        lambda left, top, width, height: {
            "op": "crop",
            "left": left,
            "top": top,
            "right": left + width,
            "bottom": top + height,
        },
        st.integers(0, 30),
        st.integers(0, 30),
        st.integers(1, 40),
        st.integers(1, 40),
    ),
    st.fixed_dictionaries(
        {
            "op": st.just("rotate"),
            "degrees": st.one_of(st.floats(-360, 360), st.sampled_from([45, 90, -90, 180, 360])),
        }
    ),
    st.just({"op": "grayscale"}),
    st.fixed_dictionaries({"op": st.just("blur"), "radius": st.floats(0, 4)}),
    st.fixed_dictionaries(
        {"op": st.just("watermark"), "text": st.sampled_from(["© Ada", "x", "日本"])},
        optional={
            "corner": st.sampled_from(["top-left", "center", "bottom-right"]),
            "opacity": st.floats(0, 1),
        },
    ),
)
wild_operation = st.one_of(
    st.fixed_dictionaries({"op": st.sampled_from(["thumbnail", "resize"]), "width": wild, "height": wild}),
    st.fixed_dictionaries({"op": st.just("crop"), "left": wild, "top": wild, "right": wild, "bottom": wild}),
    st.fixed_dictionaries({"op": st.just("rotate")}, optional={"degrees": wild, "turns": st.just(2)}),
    st.fixed_dictionaries({"op": st.sampled_from(["blur", "grayscale"])}, optional={"radius": wild}),
    st.fixed_dictionaries(
        {"op": st.just("watermark"), "text": st.one_of(st.text(max_size=8), wild)},
        optional={"corner": st.sampled_from(["middle", "center"]), "opacity": wild},
    ),
    st.sampled_from([{"op": "sharpen"}, {"op": None}, {}, "grayscale"]),
)
operation = st.one_of(valid_operation, valid_operation, valid_operation, wild_operation)


@st.composite
def source_image(draw: st.DrawFn) -> bytes:
    """A small image in any input format and mode, with a comment and EXIF when the format has them."""
    size = (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    mode = draw(st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16"]))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"]))
    image = Image.new(mode, size, draw(st.integers(0, 255)))
    buffer = io.BytesIO()
    try:
        image.save(buffer, fmt, comment=SECRET)
    except (OSError, ValueError, KeyError):
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, fmt)
    return buffer.getvalue()


payloads = st.fixed_dictionaries(
    {"source": st.just(SOURCE), "operations": st.lists(operation, max_size=4)},
    optional={
        "format": st.sampled_from(["jpeg", "png", "webp", "gif"]),
        "quality": st.one_of(st.integers(1, 100), wild),
        "variants": st.lists(
            st.fixed_dictionaries(
                {
                    "name": st.sampled_from(["a", "b", "c", "d e"]),
                    "operations": st.lists(operation, max_size=3),
                },
                optional={"format": st.sampled_from(["jpeg", "png", "webp"])},
            ),
            max_size=3,
            unique_by=lambda v: str(v["name"]),
        ),
    },
)


@PROPERTY
@given(
    data=source_image(),
    payload=payloads,
    max_pixels=st.sampled_from([2_000, 40_000, 1_000_000]),
    max_bytes=st.sampled_from([600, 1_000_000]),
)
def test_any_payload_is_refused_at_enqueue_or_runs_to_a_clean_outcome_within_the_caps(
    data: bytes, payload: dict[str, Any], max_pixels: int, max_bytes: int
) -> None:
    clean = _enqueue(payload, max_pixels)
    if isinstance(clean, str):
        assert REFUSAL.match(clean), clean
        event("refused at enqueue")
        return
    outputs = _run(data, clean, Limits(10_000_000, 10_000_000, True, max_pixels, max_bytes))
    if isinstance(outputs, str):
        reason = FAILURE.search(outputs)
        assert reason, outputs
        event(f"failed: {reason.group(0)[:30]}")
        # The enqueue check leaves only chains whose size comes from the input to the worker.
        chain = clean["operations"]
        assert "PIXELS" not in outputs or not chain or chain[0]["op"] not in SIZING, outputs
        return
    event("ran")
    for output in outputs:
        assert output.width * output.height <= max_pixels
        assert len(output.data) <= max_bytes
        assert opened(output.data).size == (output.width, output.height)
        assert metadata_left(output.data) == []


def _enqueue(payload: dict[str, Any], max_pixels: int) -> dict[str, Any] | str:
    """The clean payload, or the message it is refused with."""
    try:
        return validate(payload, Settings(image_max_output_pixels=max_pixels))
    except ValueError as exc:
        return str(exc)


def _run(data: bytes, clean: dict[str, Any], limits: Limits) -> list[Output] | str:
    """The outputs, or the message of the permanent failure."""
    variants = [Variant(**v) for v in clean.get("variants", [])] or [
        Variant("", [], clean["format"], clean["quality"])
    ]
    try:
        return process(
            data,
            variants,
            limits=limits,
            shared=clean["operations"],
            background=(9, 9, 9),
            keep_metadata=False,
        )
    except PermanentError as exc:
        return str(exc)


@PROPERTY
@given(
    size=st.tuples(st.integers(1, 60), st.integers(1, 60)),
    spec=operation,
    slack=st.tuples(st.integers(0, 30), st.integers(0, 30)),
)
def test_the_size_predicted_for_an_operation_is_the_size_pillow_makes_and_within_its_bound(
    size: tuple[int, int], spec: dict[str, Any], slack: tuple[int, int]
) -> None:
    try:
        (op,) = validate_operations([spec])
    except ValueError:
        return
    if op["op"] == "crop" and (op["right"] > size[0] or op["bottom"] > size[1]):
        return  # fails in the worker, with the reason (above)
    predicted = next_size(op, size)
    made = apply(Image.new("RGB", size), [op], (0, 0, 0))

    assert made.size == predicted
    bound = bound_size(op, (size[0] + slack[0], size[1] + slack[1]))
    assert bound is not None
    assert predicted[0] <= bound[0]
    assert predicted[1] <= bound[1]


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A small image with a few bytes changed, cut off or inserted (a hostile or broken upload)."""
    data = bytearray(draw(source_image()))
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["set", "cut", "insert"]))
        if edit == "set" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif edit == "cut":
            del data[position:]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=damaged())
def test_a_damaged_file_gives_a_clean_image_or_a_permanent_failure_never_another_error(data: bytes) -> None:
    # Any other exception would be retried as if transient.
    clean = validate({"source": SOURCE, "format": "png"})
    outputs = _run(data, clean, Limits(10_000_000, 1_000_000, True, 1_000_000, 1_000_000))
    if isinstance(outputs, str):
        event(outputs.split(":")[0])
        return
    event("decoded")
    (output,) = outputs
    assert output.width * output.height <= 1_000_000
    assert metadata_left(output.data) == []
