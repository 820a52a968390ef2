from __future__ import annotations

import pytest

from alrp_lab.report.readme import CLOSE, ReadmeError, find_blocks, refresh

DOC = f"""\
# Title

Prose before.

<!-- alrp-lab table results/a --heading "#### A" -->
old a
{CLOSE}

Prose between.
<!-- alrp-lab claims results/b -->
old b, line 1
old b, line 2
{CLOSE}
Prose after.
"""


def test_find_blocks_gives_each_command_line_and_content():
    blocks = find_blocks(DOC)
    assert [b.command for b in blocks] == [
        'table results/a --heading "#### A"',
        "claims results/b",
    ]
    assert [b.line for b in blocks] == [5, 10]
    assert [DOC[b.start : b.end] for b in blocks] == [
        "old a\n",
        "old b, line 1\nold b, line 2\n",
    ]


def test_refresh_replaces_only_the_blocks_and_reports_the_changed_ones():
    fresh = {'table results/a --heading "#### A"': "new a\n", "claims results/b": "new b"}
    text, changed = refresh(DOC, fresh.__getitem__)
    assert [b.command for b in changed] == list(fresh)
    # Outside the blocks nothing moved; a block's text gets its final newline.
    assert text == DOC.replace("old a\n", "new a\n").replace(
        "old b, line 1\nold b, line 2\n", "new b\n"
    )
    again, changed = refresh(text, fresh.__getitem__)
    assert again == text and changed == []


def test_refresh_of_a_current_block_reports_nothing():
    same = {'table results/a --heading "#### A"': "old a\n", "claims results/b": "new b\n"}
    _, changed = refresh(DOC, same.__getitem__)
    assert [b.command for b in changed] == ["claims results/b"]


def test_text_without_blocks_is_left_alone():
    assert refresh("# just prose\n", lambda c: pytest.fail("nothing to run")) == (
        "# just prose\n",
        [],
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "a\n<!-- alrp-lab table x -->\nb\n",
            "line 2: the block of `alrp-lab table x` is not closed",
        ),
        (
            "<!-- alrp-lab table x -->\n<!-- alrp-lab table y -->\n" + CLOSE + "\n",
            "line 2: a block opens before the one at line 1 is closed",
        ),
        ("a\n" + CLOSE + "\n", "line 2: " + CLOSE + " closes no block"),
    ],
)
def test_broken_markers_are_one_error_naming_the_line(text, needle):
    with pytest.raises(ReadmeError, match="README.md, " + needle.replace("(", r"\(")) as err:
        find_blocks(text, "README.md")
    assert isinstance(err.value, ValueError)  # a user's file, not a bug


def test_a_marker_inside_a_line_of_prose_is_not_a_block():
    text = "Write `<!-- alrp-lab table DIR -->` above a table.\n"
    assert find_blocks(text) == []
