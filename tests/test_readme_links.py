"""Links of the Markdown docs resolve: every `](#anchor)` names a heading of its file (as
GitHub spells heading anchors) and every relative `](path)` names a file of the repo, so
the README's contents list and its figures do not rot when a heading or file moves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alrp_lab.report.readme import unfenced_lines

ROOT = Path(__file__).resolve().parents[1]
DOCS = (
    "README.md",
    "sweeps/README.md",
    "docs/notes.md",
    "docs/interfaces.md",
    "docs/history.md",
    "docs/runs.md",
    "docs/timings.md",
)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: lower case, punctuation but `-` and `_`
    dropped (after code spans lose their backticks), spaces to `-`."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of the headings outside fenced code; a repeated heading gets `-1`,
    `-2` ... as on GitHub."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for _, line in unfenced_lines(text):
        match = re.match(r"#{1,6} (.+)", line)
        if not match:
            continue
        base = slug(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def test_slug_follows_github():
    assert slug("Benchmarks (`bench/`, ratios measured in one run)") == (
        "benchmarks-bench-ratios-measured-in-one-run"
    )
    assert (
        slug("Figure A.7 at the cpu scale: a zero target")
        == "figure-a7-at-the-cpu-scale-a-zero-target"
    )
    assert slug("The paper's tables") == "the-papers-tables"


def test_repeated_headings_and_fenced_comments():
    text = "# A\n```bash\n# not a heading\n```\n## A\n"
    assert anchors(text) == {"a", "a-1"}


def test_a_shorter_or_other_fence_does_not_close_the_code():
    # "```" inside a "````" block, and "~~~" inside a "```" block, are code text: a
    # toggle on every backtick line would take "# B" and "# C" for headings.
    text = "````markdown\n```\n# B\n````\n```\n~~~\n# C\n```\n# D\n"
    assert anchors(text) == {"d"}


@pytest.mark.parametrize("name", DOCS)
def test_every_link_of_the_doc_resolves(name):
    path = ROOT / name
    text = path.read_text()
    known = anchors(text)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address: not checked offline
        file_part, _, anchor = target.partition("#")
        if file_part and not (path.parent / file_part).exists():
            broken.append(target)
        elif not file_part and anchor not in known:
            broken.append(target)
    assert not broken, f"{name}: links that lead nowhere: {broken}"


def test_the_readme_has_a_contents_list_to_check():
    assert "](#tables-3-and-4-at-the-cpu-scale" in (ROOT / "README.md").read_text()
