"""``reference/exit-codes.md``: the CLI's exit codes (``console/exit_codes.py``), the errors that
lead to each, and the exit codes of a worker process."""

from __future__ import annotations

import inspect
from pathlib import Path

import jobs.errors
from console import exit_codes
from conveyor_docs.comments import doc_comments, markdown_of_rst
from conveyor_docs.settings_page import MissingDescription
from workers.process import EXIT_CANNOT_CONSUME, EXIT_STOPPED_AT_ONCE


def _first_line(kind: type[BaseException]) -> str:
    doc = inspect.getdoc(kind) or ""
    return markdown_of_rst(doc.split("\n\n")[0].replace("\n", " "))


def codes(source: Path) -> dict[int, tuple[str, str]]:
    """Code → (constant name, meaning) for each ``EXIT_*`` of ``source``.

    Raises:
        MissingDescription: an ``EXIT_*`` constant has no ``#:`` comment.
    """
    described = {name: text for name, text in doc_comments(source).items() if name.startswith("EXIT_")}
    missing = [name for name, text in described.items() if not text]
    if missing:
        raise MissingDescription(f"{source}: exit codes without a `#:` description: {', '.join(missing)}")
    return {getattr(exit_codes, name): (name, markdown_of_rst(text)) for name, text in described.items()}


def _error_classes() -> list[type[BaseException]]:
    """Conveyor's errors (not the exceptions jobs raise to steer their retries)."""
    return [
        kind
        for _, kind in inspect.getmembers(jobs.errors, inspect.isclass)
        if issubclass(kind, jobs.errors.ConveyorError) and kind.__module__ == jobs.errors.__name__
    ]


def _errors() -> list[str]:
    lines = [
        "A command that an error stops ends with the code of the first rule its class matches:",
        "",
        "| rule | error class | code |",
        "|---:|---|---:|",
    ]
    rules = exit_codes.codes_by_error()
    for number, (kind, code) in enumerate(rules, start=1):
        lines.append(f"| {number} | `{kind.__module__}.{kind.__qualname__}` | {code} |")
    lines += [
        f"| {len(rules) + 1} | anything else | {exit_codes.EXIT_FAILURE} |",
        "",
        "Conveyor's errors (`jobs.errors`, also importable from `jobs`) and the code each gives:",
        "",
        "| error | code | raised when |",
        "|---|---:|---|",
    ]
    lines += [
        f"| `{kind.__name__}` | {exit_codes.code_for(kind)} | {_first_line(kind)} |"
        for kind in sorted(_error_classes(), key=lambda k: (exit_codes.code_for(k), k.__name__))
    ]
    return lines


def _worker_processes() -> list[str]:
    return [
        "`conveyor worker` supervises its worker processes and replaces one that dies while it "
        "runs. A worker process that does not stop cleanly exits with:",
        "",
        "| code | when |",
        "|---:|---|",
        f"| {EXIT_STOPPED_AT_ONCE} | a second SIGTERM or SIGINT stopped it at once; its unfinished "
        "messages went back to RabbitMQ |",
        f"| {EXIT_CANNOT_CONSUME} | it could not consume from RabbitMQ for "
        "[`CONVEYOR_CONSUME_TIMEOUT`](settings.md#conveyor_consume_timeout) seconds; it logs why "
        "before it exits |",
    ]


def exit_codes_page(source: Path) -> str:
    """The page's Markdown."""
    meanings = codes(source)
    lines = [
        "# Exit codes",
        "",
        "This page is for whoever scripts `conveyor` or supervises its workers: what each exit code "
        "means, and which errors end a command with which code. It is generated from "
        "`console/exit_codes.py` and `jobs/errors.py` when the site is built.",
        "",
        "## Commands { #commands }",
        "",
        "| code | name | meaning |",
        "|---:|---|---|",
        *(f"| {code} | `{name}` | {text} |" for code, (name, text) in sorted(meanings.items())),
        "",
        "Click's own usage errors (an unknown option, a missing argument) also end with 2. An error "
        "ends with one line on standard error, `conveyor: error: …`, passwords masked.",
        "",
        "## Which error gives which code { #errors }",
        "",
        *_errors(),
        "",
        "## Worker processes { #worker-processes }",
        "",
        *_worker_processes(),
        "",
    ]
    return "\n".join(lines)
