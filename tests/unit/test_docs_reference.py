"""The docs site's generated reference pages and its stale-reference checks (scripts/docs/)."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import click
import pytest

from cli import main
from jobs.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "docs"))

from conveyor_docs import (  # noqa: E402 (scripts/docs is not a package of the project)
    bench_page,
    cli_page,
    comments,
    exit_codes_page,
    refcheck,
    schema_page,
    settings_page,
    statuses_page,
)

SETTINGS_SOURCE = ROOT / "jobs" / "settings.py"


def _pages_on_disk() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


# ---------------------------------------------------------------- settings


def test_the_settings_page_lists_every_field_with_its_anchor_and_description() -> None:
    fields = settings_page.settings_fields(SETTINGS_SOURCE)
    page = settings_page.settings_page(SETTINGS_SOURCE)

    assert [f["name"] for f in fields] == [f.name for f in dataclasses.fields(Settings)]
    for field in fields:
        assert field["description"]
        assert f"### `{field['env']}` {{ #{field['env'].lower()} }}" in page
    assert "{ #conveyor_retention_days_kind }" in page


def test_secrets_and_url_passwords_are_masked_in_the_defaults() -> None:
    fields = {f["name"]: f for f in settings_page.settings_fields(SETTINGS_SOURCE)}

    assert fields["broker_url"]["default"] == "`amqp://guest:***@127.0.0.1:5672/%2F`"
    assert "guest:guest" not in settings_page.settings_page(SETTINGS_SOURCE)
    assert fields["signing_key"]["default"] == "unset"


def test_a_field_without_a_description_fails_the_build(tmp_path: Path) -> None:
    source = SETTINGS_SOURCE.read_text(encoding="utf-8")
    # The `#:` lines right above the field go; the field stays.
    without, count = re.subn(r"(?:\n    #:[^\n]*)+(?=\n    broker_heartbeat: )", "", source)
    assert count == 1
    stripped = tmp_path / "settings.py"
    stripped.write_text(without, encoding="utf-8")

    with pytest.raises(settings_page.MissingDescription, match="broker_heartbeat"):
        settings_page.settings_fields(stripped)


def test_doc_comments_are_read_like_autodoc_reads_them(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "class C:\n"
        "    #: One,\n"
        "    #: two lines.\n"
        "    a: int = 1\n"
        "    # a plain comment\n"
        "    b: int = 2\n"
        "    c: int = 3  #: trailing\n",
        encoding="utf-8",
    )

    assert comments.doc_comments(module, "C") == {"a": "One, two lines.", "b": "", "c": "trailing"}


# ---------------------------------------------------------------- the other pages


def test_every_command_has_its_anchor_on_the_cli_page() -> None:
    page = cli_page.cli_page(main)
    paths = [path for _, path in cli_page.commands(main)]

    assert ["conveyor", "jobs", "list"] in paths
    for path in paths:
        assert f"{{ #{'-'.join(path)} }}" in page
    assert "[`CONVEYOR_BROKER_URL`](settings.md#conveyor_broker_url)" in page


def test_every_table_and_migration_is_on_the_schema_page() -> None:
    versions = ROOT / "jobs" / "store" / "migrations" / "versions"
    page = schema_page.schema_page(versions)

    for table in ("jobs", "job_attempts", "artifacts", "email_deliveries", "audit_log"):
        assert f"## `{table}` {{ #{table} }}" in page
    assert "USING gin (subjects)" in page
    revisions = [revision for revision, _, _ in schema_page.migrations(versions)]
    assert revisions[0] == "0001"
    assert len(revisions) == len(list(versions.glob("0*.py")))
    assert "issue 15" not in page


def test_statuses_and_exit_codes_pages_come_from_the_code() -> None:
    statuses = statuses_page.statuses_page()
    codes = exit_codes_page.exit_codes_page(ROOT / "console" / "exit_codes.py")

    assert "| `purge` | `queued`, `retrying`, `failed` | `failed` |" in statuses
    assert "| 3 | `EXIT_UNAVAILABLE` | RabbitMQ, PostgreSQL or Redis cannot be reached. |" in codes
    assert "| `JobNotRecorded` | 3 |" in codes


def test_an_exit_code_without_a_description_fails_the_build(tmp_path: Path) -> None:
    source = tmp_path / "exit_codes.py"
    source.write_text("EXIT_OK = 0\n#: Failure.\nEXIT_FAILURE = 1\n", encoding="utf-8")

    with pytest.raises(settings_page.MissingDescription, match="EXIT_OK"):
        exit_codes_page.codes(source)


def test_the_latest_benchmark_is_the_newest_full_run_and_the_partial_runs_after_it(tmp_path: Path) -> None:
    for stem in ("2026-11-29", "2026-12-01-noop", "2026-12-06", "2026-12-07-noop", "2026-12-07-crypto"):
        (tmp_path / f"{stem}.json").write_text("{}", encoding="utf-8")
        (tmp_path / f"{stem}.md").write_text(
            f"# Title\n\n## Targets (issue 14)\n\n{stem}\n", encoding="utf-8"
        )
    (tmp_path / "latest.md").write_text("# copy\n", encoding="utf-8")

    runs = bench_page.latest_results(tmp_path)
    page = bench_page.latest_page(runs)

    assert [run.stem for run in runs] == ["2026-12-07-noop", "2026-12-07-crypto", "2026-12-06"]
    assert "### Targets\n" in page
    assert "# Title" not in page
    assert page.index("2026-12-07-noop\n") < page.index("2026-12-06\n")


# ---------------------------------------------------------------- stale references


def test_a_name_that_is_not_a_setting_is_reported() -> None:
    text = (
        "`CONVEYOR_BROKER_URL`, CONVEYOR_RETENTION_DAYS_EMAIL, `CONVEYOR_*`,\n"
        "CONVEYOR_RETENTION_DAYS_<KIND>, CONVEYOR_IMAGE_MAX_*\n"
        "CONVEYOR_BROKER_URI and CONVEYOR_NOTHING_*\n"
    )

    problems = refcheck.check_settings(text)

    assert [(p.line, p.reference) for p in problems] == [
        (3, "CONVEYOR_BROKER_URI"),
        (3, "CONVEYOR_NOTHING_*"),
    ]


def test_a_test_reference_that_does_not_exist_is_reported() -> None:
    this = "tests/unit/test_docs_reference.py"
    text = (
        f"{this}::test_a_test_reference_that_does_not_exist_is_reported and {this}\n"
        f"{this}::test_gone, tests/unit/test_nowhere.py::test_x\n"
        "tests/unit/test_settings.py::TestNothing::test_x\n"
    )

    problems = refcheck.check_tests(text, ROOT)

    assert [(p.line, p.why) for p in problems] == [
        (2, "no such test in that file"),
        (2, "no such test file"),
        (3, "no such test in that file"),
    ]


def test_a_command_the_cli_does_not_have_is_reported() -> None:
    text = (
        "`conveyor jobs list --status failed` and `conveyor --namespace staging dlq requeue ID`\n"
        "`conveyor enqueue KIND`, `conveyor worker extra words`\n"
        "`conveyor jobs lst`\n"
        "```console\n"
        "$ CONVEYOR_NAMESPACE=x conveyor queus | head\n"
        "conveyor output line, not a command\n"
        "```\n"
        "```bash\n"
        ".venv/bin/conveyor db upgrade && conveyor db downgrade\n"
        "```\n"
    )

    problems = refcheck.check_commands(text, main)

    assert [(p.line, p.why) for p in problems] == [
        (3, "`conveyor jobs` has no command `lst`"),
        (5, "`conveyor` has no command `queus`"),
        (9, "`conveyor db` has no command `downgrade`"),
    ]


def test_options_and_their_values_are_skipped_before_a_subcommand() -> None:
    group = click.Group(
        "conveyor", params=[click.Option(["--namespace"]), click.Option(["-v"], is_flag=True)]
    )
    group.add_command(click.Command("jobs"))

    assert refcheck.command_problem(["--namespace", "x", "-v", "jobs"], group) is None
    assert refcheck.command_problem(["-v", "x"], group) == "`conveyor` has no command `x`"


def test_a_line_marked_as_deliberate_is_not_checked() -> None:
    text = f"Renamed CONVEYOR_OLD_NAME. {refcheck.IGNORE_MARKER}\nCONVEYOR_OTHER_NAME\n"

    problems = refcheck.check(text, ROOT, main)

    assert [(p.line, p.reference) for p in problems] == [(2, "CONVEYOR_OTHER_NAME")]


@pytest.mark.parametrize("page", _pages_on_disk(), ids=lambda path: str(path.relative_to(ROOT)))
def test_the_readme_and_every_docs_page_name_only_what_exists(page: Path) -> None:
    problems = refcheck.check(page.read_text(encoding="utf-8"), ROOT, main)

    assert not problems, "\n".join(str(problem) for problem in problems)
