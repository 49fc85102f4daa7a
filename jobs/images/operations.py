"""Image operations, applied in order in the worker (checked at enqueue by ``validation``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from jobs.errors import PermanentError
from jobs.images.sizes import fit_size, next_size, over_cap, thumbnail_size
from jobs.images.validation import Operation, target_side, validate_operations

__all__ = ["Operation", "apply", "target_side", "validate_operations"]


def apply(
    image: Image.Image,
    operations: list[Operation],
    background: tuple[int, int, int],
    *,
    max_pixels: int | None = None,
    where: str = "the operations",
) -> Image.Image:
    """Each operation in turn; with ``max_pixels``, none may make a larger image.

    Raises:
        PermanentError: an operation would exceed ``max_pixels`` (checked from the size it
            would make, before it runs), or a crop box outside the image.
    """
    for index, operation in enumerate(operations):
        if max_pixels is not None:
            problem = over_cap(index, operation, where, next_size(operation, image.size), max_pixels)
            if problem:
                raise PermanentError(problem)
        image = _APPLY[operation["op"]](image, operation, background)
    return image


def _apply_thumbnail(image: Image.Image, op: Operation, _bg: tuple[int, int, int]) -> Image.Image:
    # Like Image.thumbnail (keep the aspect, never enlarge) but returning a new image: the
    # decoded source is shared by every variant and must stay untouched.
    size = thumbnail_size(image.size, (op["width"], op["height"]))
    if size == image.size:
        return image
    # reducing_gap: shrink by an integer factor first (fast), then resample the rest well; 2.0
    # is what Image.thumbnail uses.
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def _apply_resize(image: Image.Image, op: Operation, _bg: tuple[int, int, int]) -> Image.Image:
    size = (op["width"], op["height"])
    if op["mode"] == "fill":
        return ImageOps.fit(image, size, Image.Resampling.LANCZOS)
    # The size the cap was checked against (sizes.fit_size), never a side of 0 pixels.
    return image.resize(fit_size(image.size, size), Image.Resampling.LANCZOS)


def _apply_crop(image: Image.Image, op: Operation, _bg: tuple[int, int, int]) -> Image.Image:
    box = (op["left"], op["top"], op["right"], op["bottom"])
    if op["right"] > image.width or op["bottom"] > image.height:
        raise PermanentError(f"crop box {box} lies outside the {image.width}×{image.height} image")
    return image.crop(box)


def _apply_rotate(image: Image.Image, op: Operation, background: tuple[int, int, int]) -> Image.Image:
    fill: Any = (*background, 0) if image.mode == "RGBA" else background if image.mode == "RGB" else 0
    return image.rotate(-op["degrees"], resample=Image.Resampling.BICUBIC, expand=True, fillcolor=fill)


def _apply_grayscale(image: Image.Image, _op: Operation, _bg: tuple[int, int, int]) -> Image.Image:
    return image.convert("LA") if image.mode == "RGBA" else image.convert("L")


def _apply_blur(image: Image.Image, op: Operation, _bg: tuple[int, int, int]) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(op["radius"]))


def _apply_watermark(image: Image.Image, op: Operation, _bg: tuple[int, int, int]) -> Image.Image:
    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    font = ImageFont.load_default(size=max(12, base.width // 20))
    left, top, right, bottom = draw.textbbox((0, 0), op["text"], font=font)
    width, height = right - left, bottom - top
    margin = max(4, base.width // 50)
    x = {"left": margin, "right": base.width - width - margin}.get(
        op["corner"].split("-")[-1], (base.width - width) // 2
    )
    y = {"top": margin, "bottom": base.height - height - margin}.get(
        op["corner"].split("-")[0], (base.height - height) // 2
    )
    alpha = round(255 * op["opacity"])
    draw.text((x - left + 1, y - top + 1), op["text"], font=font, fill=(0, 0, 0, alpha))
    draw.text((x - left, y - top), op["text"], font=font, fill=(255, 255, 255, alpha))
    composed = Image.alpha_composite(base, overlay)
    return (
        composed
        if image.mode in ("RGBA", "LA", "PA")
        else composed.convert(image.mode if image.mode != "P" else "RGB")
    )


_APPLY: dict[str, Callable[[Image.Image, Operation, tuple[int, int, int]], Image.Image]] = {
    "thumbnail": _apply_thumbnail,
    "resize": _apply_resize,
    "crop": _apply_crop,
    "rotate": _apply_rotate,
    "grayscale": _apply_grayscale,
    "blur": _apply_blur,
    "watermark": _apply_watermark,
}
