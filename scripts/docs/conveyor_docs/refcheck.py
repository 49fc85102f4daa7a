"""Stale references in Markdown: a ``CONVEYOR_*`` name that is no setting, a ``tests/…py::test``
that does not exist, a ``conveyor`` command the CLI does not have.

Each check takes the page's text and returns its :class:`Problem` list; :func:`check` runs all
three. The MkDocs hook (``scripts/docs/hooks.py``) runs them on every page of the site, and
``tests/unit/test_docs_reference.py`` on README.md and every page under docs/.
"""

from __future__ import annotations

import ast
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import click

from jobs.settings import _RETENTION_KEY_RE, ENV_PREFIX, Settings

#: Misspelt names shown on purpose, as examples of the "unknown setting" error.
DELIBERATE_TYPOS = frozenset({"CONVEYOR_BROKR_URL", "CONVEYOR_DATABSE_URL"})
#: Put at the end of a line (it is invisible in the page) that names something gone on purpose,
#: e.g. in the engineering log's history.
IGNORE_MARKER = "<!-- refcheck: ignore -->"

# CONVEYOR_NAME, then what may make it a pattern: CONVEYOR_* or CONVEYOR_RETENTION_DAYS_<KIND>.
_SETTING = re.compile(r"(?<![A-Za-z0-9_])CONVEYOR_[A-Z0-9_]*(?P<pattern>\*|<[A-Za-z_]+>|\\?\*)?")
# tests/unit/test_x.py, tests/unit/test_x.py::test_y, tests/x.py::Class::test_y[param]
_TEST = re.compile(r"(?<![\w/.-])(?P<file>tests/[\w/.-]+\.py)(?P<names>(?:::[A-Za-z_]\w*)*)")
_FENCE = re.compile(r"^\s*(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
_SHELL_LANGS = frozenset({"console", "shell", "bash", "sh", "shell-session", "zsh"})
_INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)(?P<code>.+?)(?<!`)\1(?!`)")
_COMMAND_WORD = re.compile(r"^[a-z][a-z0-9-]*$")
_SHELL_BREAKS = re.compile(r"\s*(?:&&|\|\||[|;(){}]|\$\()\s*")


@dataclass(frozen=True)
class Problem:
    """A stale reference: where it is, and what is wrong with it."""

    line: int
    reference: str
    why: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reference}: {self.why}"

    @property
    def why_in_full(self) -> str:
        """``why``, and how to keep a deliberate mention (history) from failing the build."""
        return f"{self.why} (if it is named on purpose, end the line with {IGNORE_MARKER})"


@cache
def setting_names() -> frozenset[str]:
    """Every ``CONVEYOR_*`` variable ``Settings.from_env`` reads by name."""
    return frozenset(f"{ENV_PREFIX}{name.upper()}" for name in Settings.__dataclass_fields__)


def is_setting(name: str, pattern: str | None = None) -> bool:
    """Whether ``name`` (followed by ``pattern``, e.g. ``*`` or ``<KIND>``) names a setting."""
    if name in setting_names() or name in DELIBERATE_TYPOS or name == ENV_PREFIX:
        return True
    if pattern:  # a family of names: some setting must start with what is written
        return (
            any(known.startswith(name) for known in setting_names())
            or _RETENTION_KEY_RE.match(f"{name}KIND") is not None
        )
    return _RETENTION_KEY_RE.match(name) is not None


def check_settings(text: str) -> list[Problem]:
    """``CONVEYOR_*`` names that are not settings."""
    return [
        Problem(number, match[0], "no such setting (see reference/settings.md)")
        for number, line in enumerate(text.splitlines(), start=1)
        for match in _SETTING.finditer(line)
        if not is_setting(match[0].removesuffix(match["pattern"] or ""), match["pattern"])
    ]


@cache
def _test_names(path: Path) -> frozenset[str]:
    """``name`` and ``Class::name`` of every function and class of a test module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {
                f"{node.name}::{item.name}"
                for item in node.body
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
            }
    return frozenset(names)


def check_tests(text: str, root: Path) -> list[Problem]:
    """``tests/….py`` and ``tests/….py::test_name`` (or ``::Class::test_name``) that do not exist
    under ``root``."""
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        for match in _TEST.finditer(line):
            path = root / match["file"]
            name = match["names"].removeprefix("::")
            if not path.is_file():
                problems.append(Problem(number, match[0], "no such test file"))
            elif name and name not in _test_names(path):
                problems.append(Problem(number, match[0], "no such test in that file"))
    return problems


def _code_spans(text: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each inline code span and each command line of a shell block."""
    fence: str | None = None
    lang = ""
    for number, line in enumerate(text.splitlines(), start=1):
        opening = _FENCE.match(line)
        if fence is None and opening:
            fence, lang = opening["fence"], opening["lang"].lower()
            continue
        if fence is not None:
            if line.strip().startswith(fence[:3]) and line.strip().strip(fence[0]) == "":
                fence = None
            elif lang in _SHELL_LANGS:
                command = line.strip()
                if lang == "console" or command.startswith("$ "):
                    if not command.startswith("$ "):
                        continue  # output, not a command
                    command = command[2:]
                yield number, command
            continue
        for match in _INLINE_CODE.finditer(line):
            yield number, match["code"]


def _options_taking_values(command: click.Command) -> set[str]:
    return {
        name
        for param in command.params
        if isinstance(param, click.Option) and not param.is_flag and not param.count
        for name in param.opts
    }


def command_problem(words: list[str], root: click.Command) -> str | None:
    """Why ``conveyor`` followed by ``words`` names a command that does not exist, or None.

    Only the words where a subcommand is expected count: options are skipped (with the value of
    an option that takes one), and the first word that does not look like a command name (an
    argument, ``KIND``, ``…``) or that follows a command without subcommands ends the check.
    """
    command, path = root, ["conveyor"]
    words = list(words)
    while words and isinstance(command, click.Group):
        word = words.pop(0)
        if word.startswith("-"):
            if word in _options_taking_values(command) and words:
                words.pop(0)
            continue
        if not _COMMAND_WORD.match(word):
            return None
        sub = command.get_command(click.Context(command), word)
        if sub is None:
            return f"`{' '.join(path)}` has no command `{word}`"
        command, path = sub, [*path, word]
    return None


def check_commands(text: str, root: click.Command) -> list[Problem]:
    """``conveyor <command> <sub>`` in inline code or shell blocks naming a missing command."""
    problems = []
    for number, code in _code_spans(text):
        for part in _SHELL_BREAKS.split(code):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                words = part.split()
            for start, word in enumerate(words):
                if word.rsplit("/", 1)[-1] == "conveyor":
                    why = command_problem(words[start + 1 :], root)
                    if why:
                        problems.append(Problem(number, part.strip(), why))
                    break
    return problems


def check(text: str, root: Path, cli: click.Command) -> list[Problem]:
    """All three checks, in line order, but for lines that carry :data:`IGNORE_MARKER`."""
    ignored = {n for n, line in enumerate(text.splitlines(), start=1) if IGNORE_MARKER in line}
    problems = check_settings(text) + check_tests(text, root) + check_commands(text, cli)
    return sorted((p for p in problems if p.line not in ignored), key=lambda problem: problem.line)
