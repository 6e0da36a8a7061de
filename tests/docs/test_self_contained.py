"""The documentation is complete in a clone: no page, docstring or comment sends the reader to a file
outside the repository (the team's design folder, ``../shared/...``, is not part of a clone), and every
relative link of a Markdown page names a file of the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), ROOT / "clients" / "js" / "README.md"]
SUFFIXES = (".py", ".md", ".yaml", ".yml", ".conf", ".sql", ".toml")
SOURCES = [path for folder in ("server", "protocol", "loadtest", "tests", "deploy") for path in
           sorted((ROOT / folder).rglob("*")) if path.suffix in SUFFIXES]  # fmt: skip
OUTSIDE = re.compile(r"\.\./shared\b|\bshared/design\b|\bdesign/(architecture|protocol|dependencies|house-style)\.md")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_nothing_points_outside_the_repository() -> None:
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in [*PAGES, *SOURCES]
             if path != Path(__file__) for number, line in enumerate(path.read_text().splitlines(), 1)
             if OUTSIDE.search(line)]  # fmt: skip
    assert not found, "\n".join(found)


def test_every_relative_link_of_a_page_names_a_file_of_the_repository() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL, or an anchor of the page itself
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken
