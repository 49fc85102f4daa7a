"""Generates the docs site's reference pages at build time (mkdocs-gen-files).

The pages (reference/*.md, performance/latest.md, changelog.md) exist only inside the build:
each is made from the code, the bench results or CHANGELOG.md, so none can drift from them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from conveyor_docs import (  # noqa: E402 (the path above first)
    bench_page,
    cli_page,
    exit_codes_page,
    schema_page,
    settings_page,
    statuses_page,
)


def _write(path: str, text: str) -> None:
    with mkdocs_gen_files.open(path, "w") as page:
        page.write(text)


_write("reference/settings.md", settings_page.settings_page(ROOT / "jobs" / "settings.py"))
_write("reference/cli.md", cli_page.cli_page())
_write("reference/schema.md", schema_page.schema_page(ROOT / "jobs" / "store" / "migrations" / "versions"))
_write("reference/statuses.md", statuses_page.statuses_page())
_write("reference/exit-codes.md", exit_codes_page.exit_codes_page(ROOT / "console" / "exit_codes.py"))
runs = bench_page.latest_results(ROOT / "bench" / "results")
charts = bench_page.charts(runs)
_write("performance/latest.md", bench_page.latest_page(runs, charts))
for name, image in charts.items():
    with mkdocs_gen_files.open(f"performance/{name}", "wb") as png:
        png.write(image)
_write("changelog.md", (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"))
