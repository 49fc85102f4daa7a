"""Generates the docs site's reference pages at build time (mkdocs-gen-files).

Placeholder: each generated page is filled in by its generator.
"""

from __future__ import annotations

from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parents[2]

PAGES = {
    "reference/settings.md": "Settings",
    "reference/cli.md": "CLI commands",
    "reference/schema.md": "SQL schema",
    "reference/statuses.md": "Job statuses",
    "reference/exit-codes.md": "Exit codes",
    "performance/latest.md": "Latest benchmark",
}

for path, title in PAGES.items():
    with mkdocs_gen_files.open(path, "w") as page:
        page.write(f"# {title}\n\nGenerated at build time.\n")

with mkdocs_gen_files.open("changelog.md", "w") as page:
    page.write((ROOT / "CHANGELOG.md").read_text(encoding="utf-8"))
