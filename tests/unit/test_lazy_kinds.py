"""The kind registry loads no kind's module until it is used: a no-op worker or a producer
never imports Pillow, WeasyPrint or the report and email machinery."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys

import pytest

from jobs.kinds import KINDS
from jobs.kinds.base import Deferred

HEAVY = ("PIL", "weasyprint", "jinja2", "jobs.reports.render", "jobs.kinds.email", "jobs.kinds.report")


@pytest.mark.parametrize("name", ["email", "image", "report"])
def test_each_deferred_function_of_a_kind_is_found_in_its_module(name: str) -> None:
    registered = KINDS[name]
    module = importlib.import_module(f"jobs.kinds.{name}")
    deferred = [getattr(registered, f.name) for f in dataclasses.fields(registered)]
    deferred = [value for value in deferred if isinstance(value, Deferred)]
    assert {value.attribute for value in deferred} >= {"validate", "run"}
    for value in deferred:
        assert value.module == module.__name__
        assert callable(getattr(module, value.attribute))


def _loaded_after(code: str) -> list[str]:
    script = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_a_noop_worker_process_imports_no_heavy_kind() -> None:
    code = (
        "from jobs.settings import Settings\n"
        "from workers.process import run_worker_process\n"
        "from workers.runtime import build_worker_stack, resolve_queues\n"
        "from jobs.kinds import KINDS\n"
        "s = Settings(database_url='sqlite://', broker_url='memory://')\n"
        "resolve_queues(s, ['default'])\n"
        "KINDS['noop'].run(None)\n"
    )
    assert _loaded_after(code) == []


def test_a_producer_validates_image_jobs_without_pillow() -> None:
    code = (
        "import producers\n"
        "from jobs.kinds import get_kind\n"
        "get_kind('image').validate({'source': '9d1c1a0a-1111-4111-8111-111111111111',"
        " 'operations': [{'op': 'thumbnail', 'width': 9, 'height': 9}]}, None)\n"
        "get_kind('noop').validate({}, None)\n"
    )
    assert _loaded_after(code) == []


def test_a_kind_module_is_imported_on_first_use() -> None:
    code = "from jobs.kinds import get_kind\nget_kind('report').validate({'report': 'jobs_summary'}, None)\n"
    assert "jobs.kinds.report" in _loaded_after(code)
