"""Image operations: checked when a job is enqueued, applied in order in the worker."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from jobs.errors import PermanentError

#: Pixels: the largest width or height an operation may ask for.
MAX_SIDE = 10_000
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")
Operation = dict[str, Any]


def _side(op: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
        raise ValueError(f"image operation {op}: {key} must be a whole number of pixels from 1 to {MAX_SIDE}")
    return value


def _number(op: str, key: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"image operation {op}: {key} must be a number from {low:g} to {high:g}")
    return float(value)


def _check_keys(
    op: str, spec: Mapping[str, Any], required: set[str], optional: frozenset[str] | set[str] = frozenset()
) -> None:
    keys = set(spec) - {"op"}
    missing = required - keys
    unknown = keys - required - optional
    if missing:
        raise ValueError(f"image operation {op}: missing {', '.join(sorted(missing))}")
    if unknown:
        raise ValueError(f"image operation {op}: unknown parameter(s) {', '.join(sorted(unknown))}")


def _box(op: str, spec: Mapping[str, Any]) -> Operation:
    _check_keys(op, spec, {"width", "height"})
    return {
        "op": op,
        "width": _side(op, "width", spec["width"]),
        "height": _side(op, "height", spec["height"]),
    }


def _resize(op: str, spec: Mapping[str, Any]) -> Operation:
    _check_keys(op, spec, {"width", "height"}, {"mode"})
    mode = spec.get("mode", "fit")
    if mode not in ("fit", "fill"):
        raise ValueError("image operation resize: mode must be fit or fill")
    return {**_box(op, {k: v for k, v in spec.items() if k != "mode"}), "mode": mode}


def _crop(op: str, spec: Mapping[str, Any]) -> Operation:
    _check_keys(op, spec, {"left", "top", "right", "bottom"})
    left, top, right, bottom = (
        int(_number(op, k, spec[k], 0, MAX_SIDE * 10)) for k in ("left", "top", "right", "bottom")
    )
    if right <= left or bottom <= top:
        raise ValueError("image operation crop: right must exceed left and bottom must exceed top")
    return {"op": op, "left": left, "top": top, "right": right, "bottom": bottom}


def _rotate(op: str, spec: Mapping[str, Any]) -> Operation:
    _check_keys(op, spec, {"degrees"})
    return {"op": op, "degrees": _number(op, "degrees", spec["degrees"], -360, 360)}


def _plain(op: str, spec: Mapping[str, Any]) -> Operation:
    _check_keys(op, spec, set())
    return {"op": op}


def _blur(op: str, spec: Mapping[str, Any]) -> Operation:
    _check_keys(op, spec, {"radius"})
    return {"op": op, "radius": _number(op, "radius", spec["radius"], 0, 100)}


def _watermark(op: str, spec: Mapping[str, Any]) -> Operation:
    _check_keys(op, spec, {"text"}, {"corner", "opacity"})
    text = spec["text"]
    if not isinstance(text, str) or not text.strip() or len(text) > 200 or not text.isprintable():
        raise ValueError("image operation watermark: text must be 1 to 200 printable characters")
    corner = spec.get("corner", "bottom-right")
    if corner not in CORNERS:
        raise ValueError(f"image operation watermark: corner must be one of {', '.join(CORNERS)}")
    opacity = _number(op, "opacity", spec.get("opacity", 0.5), 0, 1)
    return {"op": op, "text": text, "corner": corner, "opacity": opacity}


_VALIDATORS: dict[str, Callable[[str, Mapping[str, Any]], Operation]] = {
    "thumbnail": _box,
    "resize": _resize,
    "crop": _crop,
    "rotate": _rotate,
    "grayscale": _plain,
    "blur": _blur,
    "watermark": _watermark,
}


def validate_operations(operations: object) -> list[Operation]:
    """Normalise a list of ``{"op": …}``; ``ValueError`` naming the bad one."""
    if not isinstance(operations, list):
        raise ValueError("image operations must be a list of {'op': …} objects")
    if len(operations) > 50:
        raise ValueError("image operations: at most 50")
    clean = []
    for spec in operations:
        if not isinstance(spec, Mapping) or not isinstance(spec.get("op"), str):
            raise ValueError(f"image operation {spec!r}: expected an object with an 'op'")
        validator = _VALIDATORS.get(spec["op"])
        if validator is None:
            raise ValueError(f"unknown image operation {spec['op']!r}; known: {', '.join(_VALIDATORS)}")
        clean.append(validator(spec["op"], spec))
    return clean


def target_side(operations: list[Operation]) -> int | None:
    """The largest side the first operation shrinks to, when it is a resize; else ``None``.

    JPEG draft mode may decode at a reduced scale no smaller than this.
    """
    if operations and operations[0]["op"] in ("thumbnail", "resize"):
        return max(int(operations[0]["width"]), int(operations[0]["height"]))
    return None


def apply(image: Image.Image, operations: list[Operation], background: tuple[int, int, int]) -> Image.Image:
    for operation in operations:
        image = _APPLY[operation["op"]](image, operation, background)
    return image


def _apply_thumbnail(image: Image.Image, op: Operation, _bg: tuple[int, int, int]) -> Image.Image:
    # Like Image.thumbnail (keep the aspect, never enlarge) but returning a new image: the
    # decoded source is shared by every variant and must stay untouched.
    scale = min(op["width"] / image.width, op["height"] / image.height, 1.0)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    # reducing_gap: shrink by an integer factor first (fast), then resample the rest well.
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _apply_resize(image: Image.Image, op: Operation, _bg: tuple[int, int, int]) -> Image.Image:
    size = (op["width"], op["height"])
    if op["mode"] == "fill":
        return ImageOps.fit(image, size, Image.Resampling.LANCZOS)
    return ImageOps.contain(image, size, Image.Resampling.LANCZOS)


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
