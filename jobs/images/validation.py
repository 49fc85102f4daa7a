"""Image operations and formats as a payload states them: checked when a job is enqueued.

Pillow-free, so that a producer validates image jobs without loading Pillow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

OUTPUT_FORMATS = {
    "jpeg": ("JPEG", "image/jpeg", "jpg"),
    "png": ("PNG", "image/png", "png"),
    "webp": ("WEBP", "image/webp", "webp"),
}
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
