"""The size every image operation makes, computed before it runs (Pillow-free).

Two uses, one set of rules: at enqueue, :func:`check_bounds` follows an operation chain from the
sizes it requests (the input's size is unknown then) and refuses a chain that may grow past the
pixel cap; in the worker, :func:`check_chain` follows the same chain from the decoded image's
real size and refuses it before a single pixel is allocated. ``thumbnail`` and ``resize fit``
are computed here and applied with these very sizes, so prediction and result cannot disagree;
``rotate`` mirrors Pillow's own ``Image.rotate(expand=True)`` arithmetic (a property test checks
it against Pillow).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

Size = tuple[int, int]


def thumbnail_size(size: Size, box: Size) -> Size:
    """Shrink into ``box`` keeping the aspect, never enlarge (as ``Image.thumbnail``)."""
    width, height = size
    scale = min(box[0] / width, box[1] / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def fit_size(size: Size, box: Size) -> Size:
    """The largest size with the image's aspect inside ``box`` (as ``ImageOps.contain``, but a side
    is never rounded down to 0 pixels, which Pillow would refuse for a very long, thin image)."""
    width, height = size
    if width * box[1] > height * box[0]:  # wider than the box: the width decides
        return box[0], max(1, min(box[1], round(height / width * box[0])))
    if width * box[1] < height * box[0]:
        return max(1, min(box[0], round(width / height * box[1]))), box[1]
    return box


def _rotation(degrees: float) -> tuple[float, float, float]:
    """Pillow's angle (mod 360) and the cosine and sine it rounds its matrix to."""
    angle = -float(degrees) % 360.0  # our rotate turns clockwise: Pillow is given -degrees
    radians = -math.radians(angle)
    return angle, round(math.cos(radians), 15), round(math.sin(radians), 15)


def rotated_size(size: Size, degrees: float) -> Size:
    """The size ``Image.rotate(-degrees, expand=True)`` gives (Pillow 10-12 arithmetic)."""
    width, height = size
    angle, cos, sin = _rotation(degrees)
    if angle in (0.0, 180.0):
        return size
    if angle in (90.0, 270.0):
        return height, width
    # The matrix maps output to input around the centre; expand measures the transformed corners.
    cx, cy = width / 2, height / 2
    offset_x = cos * -cx + sin * -cy + cx
    offset_y = -sin * -cx + cos * -cy + cy
    xs = [cos * x + sin * y + offset_x for x, y in ((0, 0), (width, 0), (width, height), (0, height))]
    ys = [-sin * x + cos * y + offset_y for x, y in ((0, 0), (width, 0), (width, height), (0, height))]
    return math.ceil(max(xs)) - math.floor(min(xs)), math.ceil(max(ys)) - math.floor(min(ys))


def next_size(operation: Mapping[str, Any], size: Size) -> Size:
    """The exact size ``operation`` makes of an image of ``size`` (a validated operation)."""
    op = operation["op"]
    if op == "thumbnail":
        return thumbnail_size(size, (operation["width"], operation["height"]))
    if op == "resize":
        box = (int(operation["width"]), int(operation["height"]))
        return box if operation["mode"] == "fill" else fit_size(size, box)
    if op == "crop":
        return operation["right"] - operation["left"], operation["bottom"] - operation["top"]
    if op == "rotate":
        return rotated_size(size, operation["degrees"])
    return size  # grayscale, blur, watermark: same size


def bound_size(operation: Mapping[str, Any], bound: Size | None) -> Size | None:
    """The largest size ``operation`` can make of any image within ``bound`` (``None``: unknown,
    as the input is at enqueue until an operation sets the size)."""
    op = operation["op"]
    if op == "resize":
        return int(operation["width"]), int(operation["height"])  # fit stays inside the box
    if op == "crop":
        return next_size(operation, bound or (1, 1))  # the crop's own size, whatever the input
    if op == "thumbnail":
        box = (int(operation["width"]), int(operation["height"]))
        return box if bound is None else (min(box[0], bound[0]), min(box[1], bound[1]))
    if op == "rotate" and bound is not None:
        angle, cos, sin = _rotation(operation["degrees"])
        if angle in (0.0, 180.0, 90.0, 270.0):
            return rotated_size(bound, operation["degrees"])
        # The corners span w|cos| + h|sin| across; ceil and floor add at most one pixel each side.
        width, height = bound
        return (
            math.ceil(width * abs(cos) + height * abs(sin)) + 2,
            math.ceil(width * abs(sin) + height * abs(cos)) + 2,
        )
    return bound


def describe(index: int, operation: Mapping[str, Any], where: str) -> str:
    """``image operation rotate (#3 of variant 'large')``: how errors name an operation."""
    return f"image operation {operation['op']} (#{index + 1} of {where})"


def check_bounds(
    operations: list[Mapping[str, Any]], max_pixels: int, *, where: str, bound: Size | None = None
) -> Size | None:
    """Follow a chain from the sizes it requests; the bound it ends with.

    Raises:
        ValueError: an operation may make more than ``max_pixels`` pixels (named, with the size).
    """
    for index, operation in enumerate(operations):
        bound = bound_size(operation, bound)
        if bound is not None and bound[0] * bound[1] > max_pixels:
            raise ValueError(
                f"{describe(index, operation, where)} may make an image of up to {bound[0]}×{bound[1]} = "
                f"{bound[0] * bound[1]:,} pixels, over CONVEYOR_IMAGE_MAX_OUTPUT_PIXELS={max_pixels:,}"
            )
    return bound


def over_cap(index: int, operation: Mapping[str, Any], where: str, size: Size, max_pixels: int) -> str | None:
    """The error message when ``size`` (what ``operation`` would make) is over the cap; else ``None``."""
    if size[0] * size[1] <= max_pixels:
        return None
    return (
        f"{describe(index, operation, where)} would make an image of {size[0]}×{size[1]} = "
        f"{size[0] * size[1]:,} pixels, over CONVEYOR_IMAGE_MAX_OUTPUT_PIXELS={max_pixels:,}"
    )
