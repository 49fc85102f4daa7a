"""`conveyor artifacts get`: the artifact's name comes from a producer, so it never picks a path
nor replaces a file in the admin's folder, as curl -O and wget do."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import text

from cli import main
from jobs.store import Database
from producers import Client

pytestmark = pytest.mark.integration


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The admin's current folder."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def get(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, ["artifacts", "get", *args], env=env)


def named(db: Database, name: str, data: bytes = b"evil") -> str:
    """An artifact with any name, as a foreign writer or an older release could have stored it."""
    artifact_id = str(uuid.uuid4())
    with db.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO artifacts (id, name, content_type, size, sha256, data, created_at) "
                "VALUES (:id, :name, 'text/plain', :size, 'x', :data, :now)"
            ),
            {"id": artifact_id, "name": name, "size": len(data), "data": data, "now": datetime.now(UTC)},
        )
    return artifact_id


def test_an_existing_file_of_the_same_name_is_kept_unless_forced(
    client: Client, service_env: dict[str, str], here: Path
) -> None:
    artifact = client.artifacts.put(b"from the producer", name="notes.txt")
    (here / "notes.txt").write_bytes(b"the admin's own notes")

    refused = get(service_env, artifact.id)

    assert refused.exit_code == 1
    assert "notes.txt already exists: give --force to replace it, or -o PATH" in refused.output
    assert (here / "notes.txt").read_bytes() == b"the admin's own notes"
    assert sorted(p.name for p in here.iterdir()) == ["notes.txt"]  # no temporary file left

    forced = get(service_env, artifact.id, "--force")

    assert forced.exit_code == 0, forced.output
    assert (here / "notes.txt").read_bytes() == b"from the producer"


def test_a_new_file_is_written_under_the_artifacts_name(
    client: Client, service_env: dict[str, str], here: Path
) -> None:
    artifact = client.artifacts.put(b"report", name="report.csv")

    result = get(service_env, artifact.id)

    assert result.exit_code == 0, result.output
    assert (here / "report.csv").read_bytes() == b"report"


def test_output_names_the_file_and_may_replace_it(
    client: Client, service_env: dict[str, str], here: Path
) -> None:
    artifact = client.artifacts.put(b"new", name="x.bin")
    (here / "chosen.bin").write_bytes(b"old")

    result = get(service_env, artifact.id, "-o", "chosen.bin")

    assert result.exit_code == 0, result.output
    assert (here / "chosen.bin").read_bytes() == b"new"


@pytest.mark.parametrize(
    "name",
    ["../escaped.txt", "{tmp}/absolute.txt", "sub/dir.txt", "..", ".bashrc", "a\x1b[2Jb"],
)
def test_a_name_that_is_a_path_or_hidden_is_refused(
    db: Database, service_env: dict[str, str], here: Path, name: str
) -> None:
    artifact_id = named(db, name.format(tmp=here.parent))

    result = get(service_env, artifact_id)

    assert result.exit_code == 1
    assert "is not a safe file name here" in result.output
    assert "choose the file with -o PATH" in result.output
    assert "\x1b" not in result.output
    assert list(here.iterdir()) == []
    assert not (here.parent / "escaped.txt").exists()
    assert not Path("{tmp}/absolute.txt").exists()

    chosen = get(service_env, artifact_id, "-o", "safe.txt")

    assert chosen.exit_code == 0, chosen.output
    assert (here / "safe.txt").read_bytes() == b"evil"
