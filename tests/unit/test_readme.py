"""README.md stays short and its links work on GitHub: every relative link names a file in the
repository (and an anchor, a heading of that file), and none points at a page that exists only
in the built docs site."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_README_BYTES = 12_000

# Pages scripts/docs/gen_pages.py writes at build time: they are never in docs/.
GENERATED = ("docs/reference/", "docs/performance/latest.md", "docs/changelog.md")

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\]\n]|\][^(])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def prose(markdown: str) -> str:
    """The text outside fenced code blocks and inline code spans (links there are not links)."""
    return INLINE_CODE.sub("", FENCE.sub("", markdown))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text without markup, lower case, punctuation dropped,
    spaces as hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays
    text = text.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every anchor GitHub makes for the headings of a file; a repeated slug gets -1, -2, …"""
    seen: Counter[str] = Counter()
    found = set()
    for heading in HEADING.findall(FENCE.sub("", markdown)):
        base = slug(heading)
        found.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return found


def link_problems(page: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the relative links of ``page``, one line per bad link."""
    problems = []
    for target in LINK.findall(prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # https:, mailto: …
        path_part, _, anchor = target.partition("#")
        file = (page.parent / path_part).resolve() if path_part else page
        shown = file.relative_to(root).as_posix() if file.is_relative_to(root) else str(file)
        if shown.startswith(GENERATED):
            problems.append(f"{target}: generated at build time, not in the repository")
        elif not file.is_relative_to(root) or not file.is_file():
            problems.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(file.read_text()):
            problems.append(f"{target}: no heading #{anchor} in {shown}")
    return problems


def test_readme_is_at_most_12_kb() -> None:
    assert len(README.read_bytes()) <= MAX_README_BYTES


def test_readme_links_resolve_to_files_and_headings() -> None:
    assert link_problems(README) == []


def test_readme_links_into_the_docs() -> None:
    targets = LINK.findall(prose(README.read_text()))

    assert "docs/index.md" in targets
    assert len([t for t in targets if t.startswith("docs/")]) >= 8


def test_link_problems_finds_each_kind_of_bad_link(tmp_path: Path) -> None:
    (tmp_path / "docs/guides").mkdir(parents=True)
    (tmp_path / "docs/guides/client.md").write_text("# The client\n\n## Delivery options\n")
    page = tmp_path / "README.md"
    page.write_text(
        "# Title\n\n## Two commands\n\n"
        "[ok](docs/guides/client.md) [ok](docs/guides/client.md#delivery-options) [ok](#two-commands)\n"
        "[web](https://example.com/x.md) `[code](missing.md)`\n"
        "```\n[fenced](missing.md)\n```\n"
        "[gone](docs/guides/missing.md) [bad anchor](docs/guides/client.md#options)\n"
        "[self](#nowhere) [generated](docs/reference/settings.md#conveyor_broker_url)\n"
        "[outside](../elsewhere.md)\n"
    )

    assert link_problems(page, root=tmp_path) == [
        "docs/guides/missing.md: no such file",
        "docs/guides/client.md#options: no heading #options in docs/guides/client.md",
        "#nowhere: no heading #nowhere in README.md",
        "docs/reference/settings.md#conveyor_broker_url: generated at build time, not in the repository",
        "../elsewhere.md: no such file",
    ]


def test_slugs_follow_githubs_rule() -> None:
    markdown = (
        "# Conveyor\n## Performance: side by side with Dramatiq and Celery\n"
        "### Who is working: `conveyor workers`\n## Set up [the CLI](x.md) — v0.2.0\n"
        "## Notes\n## Notes\n```\n# not a heading\n```\n"
    )

    assert anchors(markdown) == {
        "conveyor",
        "performance-side-by-side-with-dramatiq-and-celery",
        "who-is-working-conveyor-workers",
        "set-up-the-cli--v020",
        "notes",
        "notes-1",
    }
