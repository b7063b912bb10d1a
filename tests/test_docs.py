"""Tests of README.md and docs/*.md: every relative link resolves (file and, where given,
heading anchor), every `python X.py` they name exists, and the README stays short."""

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 350

# [text](target) and ![alt](target); the text may span lines. Targets hold no spaces here.
LINK = re.compile(r"!?\[(?:[^\]\[]|\n)*?\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# `python X.py`, also `python3`, `python3.13` and paths such as docs/make_readme_figure.py.
PYTHON_SCRIPT = re.compile(r"\bpython(?:3(?:\.\d+)?)?\s+((?:[\w.-]+/)*[\w.-]+\.py)\b")
EXTERNAL = ("http://", "https://", "mailto:", "ftp://")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    kept = "".join(c for c in text if c in " -" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The heading anchors of a Markdown file (duplicates get -1, -2, ... as on GitHub)."""
    found: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#{1,6}\s+(.*)", line)):
            anchor = base = github_anchor(match.group(1))
            count = 0
            while anchor in found:
                count += 1
                anchor = f"{base}-{count}"
            found.add(anchor)
    return found


def broken_links(path: Path) -> list[str]:
    """The relative links of a Markdown file whose file or heading anchor does not exist."""
    broken = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if target.startswith(EXTERNAL):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with anchor #{anchor} in {linked.name}")
    return broken


def missing_scripts(path: Path) -> list[str]:
    """The `python X.py` scripts a Markdown file names that are not in the repository."""
    return sorted({s for s in PYTHON_SCRIPT.findall(path.read_text(encoding="utf-8")) if not (ROOT / s).is_file()})


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_named_scripts_exist(path):
    assert missing_scripts(path) == []


def test_every_docs_page_is_linked_from_the_readme():
    readme_targets = {t.partition("#")[0] for t in LINK.findall((ROOT / "README.md").read_text(encoding="utf-8"))}
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")}
    assert pages - readme_targets == set()


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_the_checks_catch_what_they_look_for(tmp_path):
    (tmp_path / "exists.md").write_text("# A heading, with `code`\n\n## Repeated\n\n## Repeated\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](exists.md) [ok](exists.md#a-heading-with-code) [ok](exists.md#repeated-1) [ok](#here)\n"
        "# Here\n[gone](missing.md) ![gone](figure.png) [bad anchor](exists.md#nowhere)\n"
        "[split\nacross lines](also_missing.md) [web](https://example.org/x.md)\n"
        "    python padding.py --x\n    python3.13 no_such_script.py\n    python -m pytest\n"
    )
    assert broken_links(page) == [
        "missing.md: no such file",
        "figure.png: no such file",
        "exists.md#nowhere: no heading with anchor #nowhere in exists.md",
        "also_missing.md: no such file",
    ]
    assert missing_scripts(page) == ["no_such_script.py"]
