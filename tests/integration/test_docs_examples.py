"""The Python examples of the getting-started and guide pages run, against a real `conveyor worker`.

Convention (for writers of those pages): a fenced block whose info string is
``python title="NAME.py"`` is runnable; a plain ``python`` block is a fragment and is not run.

- ``title="example_*.py"`` is a script: it runs with ``python NAME.py``, in the page's order,
  and must exit 0 (``Job.wait`` raises on a failed or unfinished job, so a stale call fails).
- Any other ``title="NAME.py"`` is a module that scripts import (e.g. an application's own job
  kind). Modules of every page are written beside the scripts, and the worker of every test
  imports them with ``--include NAME``.

Each page runs in its own namespace, with its own worker, SMTP outbox and artifact folder.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT, WorkerProcess

pytestmark = pytest.mark.integration

DOCS = ROOT / "docs"
#: The pages whose examples run; each must hold at least one ``example_*.py`` block.
PAGES = (
    "getting-started/real-stack.md",
    "guides/client.md",
    "guides/email.md",
    "guides/reports.md",
    "guides/images.md",
    "guides/custom-kinds.md",
    "guides/delays.md",
    "guides/idempotency.md",
    "guides/progress.md",
    "guides/cancellation.md",
)
#: Seconds one example script may take.
EXAMPLE_TIMEOUT = 60
_BLOCK = re.compile(r'^```python title="([A-Za-z0-9_]+\.py)"\n(.*?)^```$', re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class CodeFile:
    page: str
    name: str
    source: str

    @property
    def is_script(self) -> bool:
        return self.name.startswith("example_")


def code_files(page: str) -> list[CodeFile]:
    """The runnable blocks of ``page``, in order."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return [CodeFile(page, name, source) for name, source in _BLOCK.findall(text)]


def all_modules() -> list[CodeFile]:
    return [f for page in PAGES for f in code_files(page) if not f.is_script]


def test_the_convention_finds_blocks_and_skips_fragments() -> None:
    text = 'x\n```python title="example_a.py"\nprint(1)\n```\n```python\nprint(2)\n```\n'
    assert _BLOCK.findall(text) == [("example_a.py", "print(1)\n")]


@pytest.mark.parametrize("page", PAGES)
def test_the_examples_of_the_page_run(
    page: str, tmp_path: Path, service_env: dict[str, str], start_worker: WorkerProcess.Factory
) -> None:
    scripts = [f for f in code_files(page) if f.is_script]
    assert scripts, f"{page} has no runnable example (```python title=\"example_….py\"```)"
    for module in all_modules():
        (tmp_path / module.name).write_text(module.source, encoding="utf-8")
    env = {
        **service_env,
        "PYTHONPATH": str(tmp_path),
        "CONVEYOR_SMTP_URL": f"file://{tmp_path / 'outbox'}",
        "CONVEYOR_ARTIFACT_URL": f"file://{tmp_path / 'artifacts'}",
    }
    includes = [arg for m in all_modules() for arg in ("--include", m.name.removesuffix(".py"))]
    start_worker("--processes", "1", "--threads", "4", *includes, env=env)
    for script in scripts:
        path = tmp_path / script.name
        path.write_text(script.source, encoding="utf-8")
        done = subprocess.run(
            [sys.executable, str(path)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, f"{page}: {script.name} failed:\n{done.stdout}\n{done.stderr}"
