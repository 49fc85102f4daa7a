"""The Python examples of the getting-started and guide pages run, against a real `conveyor worker`.

Convention (for writers of those pages): a fenced block whose info string is
``python title="NAME.py"`` is runnable; a plain ``python`` block is a fragment and is not run.

- ``title="example_*.py"`` is a script: it runs with ``python NAME.py``, in the page's order,
  with the ``CONVEYOR_*`` environment of the test, and must exit 0. ``Job.wait`` raises on a
  failed or unfinished job, so a call that went stale fails the test.
- Any other ``title="NAME.py"`` is a module that scripts import (e.g. an application's own job
  kind). Modules of every page are put on ``PYTHONPATH`` and the worker imports each one with
  ``--include NAME``, as the custom-kinds guide tells users to.

One worker serves every page, in a namespace of this module's own; each page's scripts run in a
folder of their own. Email goes to an ``.eml`` outbox and artifacts to a temporary folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pika
import pytest

from tests.helpers import AMQP_URL, ROOT, WorkerProcess

# One xdist worker runs them all (`make test` uses --dist loadgroup), so one `conveyor worker` serves them.
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("docs_examples")]

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
    "guides/transactional-enqueue.md",
)
#: Seconds one example script may take.
EXAMPLE_TIMEOUT = 60
_BLOCK = re.compile(r'^```python title="([A-Za-z0-9_]+\.py)"\n(.*?)^```$', re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class CodeFile:
    name: str
    source: str

    @property
    def is_script(self) -> bool:
        return self.name.startswith("example_")


def code_files(page: str) -> list[CodeFile]:
    """The runnable blocks of ``page``, in order."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return [CodeFile(name, source) for name, source in _BLOCK.findall(text)]


@dataclass(frozen=True)
class DocsStack:
    env: dict[str, str]
    root: Path


@pytest.fixture(scope="module")
def docs_stack(
    database_url: str, session_token: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DocsStack]:
    """A worker that imports every page's modules, in a namespace of its own."""
    root = tmp_path_factory.mktemp("docs-examples")
    modules = [f for page in PAGES for f in code_files(page) if not f.is_script]
    for module in modules:
        (root / module.name).write_text(module.source, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        CONVEYOR_BROKER_URL=AMQP_URL,
        CONVEYOR_DATABASE_URL=database_url,
        CONVEYOR_NAMESPACE=f"t{session_token}-docs",
        CONVEYOR_SMTP_URL=f"file://{root / 'outbox'}",
        CONVEYOR_ARTIFACT_URL=f"file://{root / 'artifacts'}",
        PYTHONPATH=str(root),
    )
    names = [m.name.removesuffix(".py") for m in modules]
    worker = WorkerProcess.start(
        env, "--processes", "1", "--threads", "4", *(a for n in names for a in ("--include", n))
    )
    try:
        yield DocsStack(env, root)
    finally:
        worker.terminate()
        _delete_queues(env, names)


def _delete_queues(env: dict[str, str], modules: list[str]) -> None:
    """Delete the namespace's queues, the pages' own kinds' included (named in a subprocess, so
    that this test session's registry keeps the shipped kinds alone)."""
    program = f"import {', '.join(modules) or 'jobs'}; from tests.helpers import queue_names; "
    program += f"print(*queue_names({env['CONVEYOR_NAMESPACE']!r}))"
    listed = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        for name in listed.stdout.split():
            channel.queue_delete(name)
    finally:
        connection.close()


def test_the_convention_finds_titled_blocks_and_skips_fragments() -> None:
    text = 'x\n```python title="example_a.py"\nprint(1)\n```\n```python\nprint(2)\n```\n'
    assert _BLOCK.findall(text) == [("example_a.py", "print(1)\n")]


@pytest.mark.parametrize("page", PAGES)
def test_the_examples_of_the_page_run(page: str, docs_stack: DocsStack) -> None:
    scripts = [f for f in code_files(page) if f.is_script]
    assert scripts, f'{page} has no runnable example (```python title="example_….py"```)'
    folder = docs_stack.root / page.replace("/", "_").removesuffix(".md")
    folder.mkdir()
    for script in scripts:
        path = folder / script.name
        path.write_text(script.source, encoding="utf-8")
        done = subprocess.run(
            [sys.executable, str(path)],
            cwd=folder,
            env=docs_stack.env,
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, f"{page}: {script.name} failed:\n{done.stdout}\n{done.stderr}"
