"""The shell's shorthand for image operations: ``thumbnail=256x256``, ``crop=0,0,100,100``…"""

from __future__ import annotations

import json
import re
from typing import Any

_SIZE = re.compile(r"^(\d+)x(\d+)(?::(fit|fill))?$")


def parse_operation(text: str) -> dict[str, Any]:
    """One ``--op`` value as an operation object (checked later, with the payload).

    Raises:
        ValueError: the text matches no form.
    """
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--op {text!r}: not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError(f"--op {text!r}: expected a JSON object")
        return value
    name, _, argument = text.partition("=")
    if name in ("thumbnail", "resize"):
        match = _SIZE.match(argument)
        if not match:
            raise ValueError(
                f"--op {text!r}: expected {name}=WIDTHxHEIGHT" + ("[:fill]" if name == "resize" else "")
            )
        op: dict[str, Any] = {"op": name, "width": int(match.group(1)), "height": int(match.group(2))}
        if name == "resize":
            op["mode"] = match.group(3) or "fit"
        elif match.group(3):
            raise ValueError(f"--op {text!r}: thumbnail takes no mode")
        return op
    if name == "crop":
        parts = argument.split(",")
        if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"--op {text!r}: expected crop=LEFT,TOP,RIGHT,BOTTOM")
        return dict(zip(("op", "left", "top", "right", "bottom"), ["crop", *map(int, parts)], strict=True))
    if name in ("rotate", "blur"):
        key = "degrees" if name == "rotate" else "radius"
        try:
            return {"op": name, key: float(argument)}
        except ValueError:
            raise ValueError(f"--op {text!r}: expected {name}=NUMBER") from None
    if name == "grayscale" and not argument:
        return {"op": "grayscale"}
    if name == "watermark" and argument:
        return {"op": "watermark", "text": argument}
    raise ValueError(f"--op {text!r}: unknown operation (see --help)")
