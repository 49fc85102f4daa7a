"""``reference/cli.md``: every command of ``conveyor``, from its click tree (``cli.main``).

Each command gets a heading with the anchor ``conveyor-<command>-<sub>`` (``#conveyor-jobs-list``),
its usage line, its help, a table of its options (their defaults and environment variables as
``--help`` shows them) and its subcommands.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import click

from jobs.settings import ENV_PREFIX


def anchor(path: list[str]) -> str:
    """``["conveyor", "jobs", "list"]`` → ``conveyor-jobs-list``."""
    return "-".join(path).lower()


def commands(root: click.Command, name: str = "conveyor") -> Iterator[tuple[click.Context, list[str]]]:
    """Each command of the tree, depth first in ``--help`` order, with its context and path."""
    yield from _walk(root, _context(root, name, None), [name])


def _walk(
    command: click.Command, ctx: click.Context, path: list[str]
) -> Iterator[tuple[click.Context, list[str]]]:
    yield ctx, path
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from _walk(sub, _context(sub, name, ctx), [*path, name])


def _context(command: click.Command, name: str, parent: click.Context | None) -> click.Context:
    # make_context applies the command's context_settings (-h as well as --help); resilient
    # parsing lets it go without the arguments and options a real call needs.
    return command.make_context(name, [], parent=parent, resilient_parsing=True)


def _escape(text: str) -> str:
    """Help text is plain text: keep Markdown from reading ``*`` or ``<`` in it."""
    return text.replace("*", r"\*").replace("<", "&lt;")


def help_markdown(text: str) -> list[str]:
    """Click's help or epilog as Markdown: paragraphs rewrapped, ``\\b`` blocks kept as they are
    (as a console block when they list ``conveyor`` commands under ``Examples:``)."""
    lines: list[str] = []
    for block in inspect.cleandoc(text).split("\n\n"):
        if block.startswith("\b"):
            lines += _verbatim(block[1:].strip("\n").splitlines())
        else:
            lines += [_escape(" ".join(part.strip() for part in block.splitlines())), ""]
    return lines


def _verbatim(block: list[str]) -> list[str]:
    if block and block[0].rstrip(":") == "Examples":
        commands = [line.strip() for line in block[1:] if line.strip()]
        return ["Examples:", "", "```console", *(f"$ {line}" for line in commands), "```", ""]
    return ["```text", *block, "```", ""]


def _option_row(param: click.Option, ctx: click.Context) -> str:
    record = param.get_help_record(ctx)
    names = record[0] if record else ", ".join(param.opts)
    extra = param.get_help_extra(ctx)
    text = _escape(param.help or "")
    if "range" in extra:
        text = f"{text} Range: `{extra['range']}`.".strip()
    if extra.get("required"):
        text = f"Required. {text}"
    envvars = [
        f"[`{var}`](settings.md#{var.lower()})" if var.startswith(ENV_PREFIX) else f"`{var}`"
        for var in extra.get("envvars", ())
    ]
    default = f"`{extra['default']}`" if "default" in extra else ""
    return f"| `{names}` | {text.replace('|', '&#124;')} | {default} | {', '.join(envvars)} |"


def command_markdown(ctx: click.Context, path: list[str]) -> list[str]:
    """One command's section."""
    command = ctx.command
    level = "##" if len(path) <= 2 else "###"
    usage = f"Usage: {ctx.command_path} {' '.join(command.collect_usage_pieces(ctx))}".rstrip()
    lines = [f"{level} `{' '.join(path)}` {{ #{anchor(path)} }}", "", "```text", usage, "```", ""]
    lines += help_markdown(command.help or "")
    help_option = command.get_help_option(ctx)
    options = [
        p
        for p in command.get_params(ctx)
        if isinstance(p, click.Option) and not p.hidden and p is not help_option
    ]
    if options:
        lines += ["| option | meaning | default | environment |", "|---|---|---|---|"]
        lines += [_option_row(p, ctx) for p in options]
        lines.append("")
    if isinstance(command, click.Group):
        lines += ["| command | what it does |", "|---|---|"]
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                summary = _escape(sub.get_short_help_str(limit=200))
                lines.append(f"| [`{name}`](#{anchor([*path, name])}) | {summary} |")
        lines.append("")
    if command.epilog:
        lines += help_markdown(command.epilog)
    return lines


def cli_page(root: click.Command | None = None) -> str:
    """The page's Markdown (``root`` defaults to ``cli.main``)."""
    if root is None:
        from cli import main as root
    lines = [
        "# CLI commands",
        "",
        "This page is for operators and developers who run `conveyor` from a shell: every command, "
        "its options, their defaults and the environment variables they read. It is generated "
        "from the command's own definitions when the site is built, so it says what `--help` says. "
        "Every command also takes `-h`/`--help`. Exit codes are listed in "
        "[exit codes](exit-codes.md); a task-by-task guide is in [the CLI guide](../operations/cli.md).",
        "",
        "The global options (`--broker-url`, `--database-url`, `--redis-url`, `--namespace`, "
        "`--verbose`) come before the command: `conveyor --namespace staging jobs list`.",
        "",
    ]
    for ctx, path in commands(root):
        lines += command_markdown(ctx, path)
    return "\n".join(lines).rstrip("\n") + "\n"
