"""The documentation holds together: links and named paths resolve, every page is reachable from
the README, and CI runs the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
RESULTS_INDEX = ROOT / "benchmarks" / "results" / "README.md"
PAGES = [README, *DOCS, RESULTS_INDEX]

# [text](target) and ![alt](target); the target ends at whitespace or ')'
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def _text_outside_code(path: Path) -> str:
    """The page without fenced code blocks or inline code, where brackets are not links."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return re.sub(r"`[^`\n]*`", "", text)


def _relative_links(path: Path) -> list[str]:
    targets = LINK.findall(_text_outside_code(path))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", path.read_text()), re.M)
    return {_slug(h) for h in headings}


def _resolve(page: Path, target: str) -> tuple[Path, str]:
    file_part, _, anchor = target.partition("#")
    return ((page.parent / file_part).resolve() if file_part else page), anchor


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(page: Path) -> None:
    assert page.is_file(), f"{page} is missing"
    broken = []
    for target in _relative_links(page):
        path, anchor = _resolve(page, target)
        if not path.exists():
            broken.append(f"{target} (no file {path})")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target} (no heading #{anchor} in {path.name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


# a repository path named in prose or code (`benchmarks/record.py`); `<op>` placeholders skipped
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:benchmarks|csrc|fastspec|tests|docs|\.ci)/[\w./-]*[\w/])(?![<\w./-])"
)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_repository_paths_exist(page: Path) -> None:
    missing = sorted({m for m in REPO_PATH.findall(page.read_text()) if not (ROOT / m).exists()})
    assert not missing, f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    assert DOCS, "docs/ holds no pages"
    linked = {_resolve(README, t)[0] for t in _relative_links(README)}
    missing = [p.name for p in DOCS if p.resolve() not in linked]
    assert not missing, f"docs pages not linked from README.md: {missing}"


def _readme_test_command() -> str:
    blocks = re.findall(r"^```bash\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)
    commands = [b.strip() for b in blocks if b.strip().endswith("&& pytest")]
    assert len(commands) == 1, f"expected one README command ending in '&& pytest': {commands}"
    return commands[0]


def test_ci_runs_the_readme_test_command() -> None:
    command = _readme_test_command()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    run_lines = [line.strip() for line in ci if not line.lstrip().startswith("#")]
    assert command in run_lines, f".ci/run does not run the README's test command:\n  {command}"
