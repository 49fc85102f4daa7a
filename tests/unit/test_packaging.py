"""A non-editable install carries what Conveyor reads from disk: migrations and templates."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from jobs.settings import Settings
from jobs.store.migrate import head_revision
from templates import SHIPPED_DIR, search_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_the_wheel_ships_migrations_templates_and_the_cli(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("conveyor-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    assert "cli.py" in names
    assert "jobs/store/migrations/env.py" in names
    assert "jobs/store/migrations/versions/0001_initial.py" in names
    assert "jobs/store/migrations/script.py.mako" in names
    assert "templates/__init__.py" in names
    assert "templates/email/welcome/body.html" in names
    assert "templates/email/_layout.html" in names
    assert "producers/py.typed" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "conveyor = cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    # Installed from the wheel alone, Alembic still finds the migrations.
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = subprocess.run(
        [sys.executable, "-c", "import jobs.store.migrate as m; print(m.MIGRATIONS_DIR, m.head_revision())"],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert probe.stdout.split() == [str(target / "jobs/store/migrations"), head_revision()]


def test_templates_dir_is_searched_before_the_shipped_templates(tmp_path: Path) -> None:
    settings = Settings(templates_dir=str(tmp_path))

    assert search_path(settings) == [tmp_path, SHIPPED_DIR]
    assert search_path(Settings()) == [SHIPPED_DIR]
