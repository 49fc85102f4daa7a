"""The release artefacts work on their own: the sdist and wheel that ``python -m build`` makes, installed
into a fresh virtual environment, run ``conveyor --version`` and ``conveyor demo`` outside the checkout.

The build runs as a user's does (isolated, sdist first, the wheel built from the sdist), so a file the
sdist forgets is missing from the wheel too. Dependencies come from the package index (or pip's cache).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

# What the demo's lines say of each job: "<title>: <status> after <n> attempt(s)".
DEMO_OUTCOMES = {
    "a quick no-op": ("succeeded", 1),
    "a slower no-op": ("succeeded", 1),
    "fails twice, then succeeds": ("succeeded", 3),
    "delayed by 1 s": ("succeeded", 1),
    "a welcome email, to the outbox": ("succeeded", 1),
    "a thumbnail set from one photo": ("succeeded", 1),
    "fails permanently": ("failed", 1),
    "retries exhausted": ("failed", 2),
}
OUTCOME_LINE = re.compile(
    r"^\s+(?P<title>[^:]+): (?P<status>\w+) after (?P<attempts>\d+) attempt\(s\)$", re.M
)

# Files Conveyor reads from disk at run time, and the typing markers of its public packages.
PACKAGE_DATA = [
    "jobs/store/migrations/env.py",
    "jobs/store/migrations/script.py.mako",
    "jobs/store/migrations/versions/0001_initial.py",
    "templates/email/_layout.html",
    "templates/email/welcome/subject.txt",
    "templates/email/welcome/body.txt",
    "templates/email/welcome/body.html",
    "templates/email/report_ready/body.txt",
    "templates/reports/jobs_summary.html",
    "jobs/py.typed",
    "producers/py.typed",
    "workers/py.typed",
]


# Left out of the copy the build starts from: environments, caches and build outputs of the checkout.
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    ".conveyor",
    "outbox",
)


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without Conveyor's settings and without a path into the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_") and k != "PYTHONPATH"}
    return {**env, **extra}


def run(*args: str | Path, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def demo_outcomes(output: str) -> dict[str, tuple[str, int]]:
    """The demo's per-job outcome lines, as {title: (status, attempts)}."""
    return {m["title"]: (m["status"], int(m["attempts"])) for m in OUTCOME_LINE.finditer(output)}


def test_demo_outcomes_reads_the_demo_lines() -> None:
    output = (
        "enqueued 2 jobs\n  a quick no-op: succeeded after 1 attempt(s)\n  fails: failed after 2 attempt(s)\n"
    )

    assert demo_outcomes(output) == {"a quick no-op": ("succeeded", 1), "fails": ("failed", 2)}
    assert demo_outcomes("a quick no-op: succeeded") == {}


def check_sdist(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing = [name for name in [*PACKAGE_DATA, "pyproject.toml", "README.md", "cli.py"] if name not in names]
    assert not missing, f"the sdist lacks {missing}"


def check_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(f"conveyor-{VERSION}.dist-info/entry_points.txt").decode()
    missing = [name for name in [*PACKAGE_DATA, "cli.py", "console/__init__.py"] if name not in names]
    assert not missing, f"the wheel lacks {missing}"
    assert not [name for name in names if name.startswith(("tests/", "bench/", "docs/"))]
    assert "conveyor = cli:main" in entry_points


@pytest.mark.timeout(300)
def test_the_built_wheel_installs_into_a_fresh_venv_and_runs_the_demo(tmp_path: Path) -> None:
    source, dist, venv, work = tmp_path / "source", tmp_path / "dist", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    # From a copy: the sdist step writes its egg-info into the tree, which other tests build from too.
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    run(sys.executable, "-m", "build", "--outdir", dist, source, cwd=tmp_path)
    (sdist,) = dist.glob(f"conveyor-{VERSION}.tar.gz")
    (wheel,) = dist.glob(f"conveyor-{VERSION}-py3-none-any.whl")
    check_sdist(sdist)
    check_wheel(wheel)

    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    run(
        venv / "bin/python",
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        wheel,
        cwd=tmp_path,
    )

    version = run(venv / "bin/conveyor", "--version", cwd=work)
    assert version.stdout.strip() == f"conveyor {VERSION}"
    where = run(venv / "bin/python", "-c", "import cli, jobs; print(cli.__file__, jobs.__file__)", cwd=work)
    assert all(Path(path).is_relative_to(venv) for path in where.stdout.split())

    demo = run(venv / "bin/conveyor", "demo", cwd=work)
    assert demo_outcomes(demo.stdout) == DEMO_OUTCOMES
    assert "jobs_summary report of these jobs: succeeded" in demo.stdout
    assert len(list((work / "outbox").glob("*.eml"))) == 1
    assert (work / ".conveyor/demo.db").is_file()
