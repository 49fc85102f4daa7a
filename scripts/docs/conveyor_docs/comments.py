"""Doc comments of assignments, read the way Sphinx autodoc reads them.

A ``#:`` comment documents the assignment right below it; several ``#:`` lines in a row make one
description. A ``#:`` comment at the end of the assignment's own line counts too.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

_ROLE = re.compile(r":(?:class|data|func|meth|attr|mod|exc):`~?([^`]+)`")


def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """Line number → (the ``#:`` text, whether the comment is the only thing on its line)."""
    found: dict[int, tuple[str, bool]] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and token.string.startswith("#:"):
            alone = not token.line[: token.start[1]].strip()
            found[token.start[0]] = (token.string[2:].strip(), alone)
    return found


def _described(node: ast.stmt, comments: dict[int, tuple[str, bool]]) -> str:
    lines: list[str] = []
    line = node.lineno - 1
    while line in comments and comments[line][1]:
        lines.insert(0, comments[line][0])
        line -= 1
    trailing = comments.get(node.lineno)
    if trailing is not None and not trailing[1]:
        lines.append(trailing[0])
    return " ".join(lines).strip()


def _target(node: ast.stmt) -> str | None:
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return node.target.id
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    return None


def doc_comments(path: Path, class_name: str | None = None) -> dict[str, str]:
    """Name → description ("" when it has none) of each assignment in the module at ``path``,
    or in its class ``class_name``, in source order.

    Raises:
        LookupError: the module has no class ``class_name``.
    """
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    body: list[ast.stmt] = tree.body
    if class_name is not None:
        classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name]
        if not classes:
            raise LookupError(f"{path}: no class {class_name}")
        body = classes[0].body
    comments = _comments(source)
    return {name: _described(node, comments) for node in body if (name := _target(node)) is not None}


def markdown_of_rst(text: str) -> str:
    """The reStructuredText of docstrings and comments as Markdown: ``code`` → `code`, roles → code."""
    return _ROLE.sub(r"`\1`", text).replace("``", "`")
