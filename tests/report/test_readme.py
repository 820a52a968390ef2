from __future__ import annotations

import pytest

from alrp_lab.report.readme import CLOSE, ReadmeError, find_blocks, refresh, unfenced_lines

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
A = 'table results/a --heading "#### A"'
B = "claims results/b"


def _by_command(texts):
    return lambda block: texts[block.command]


def test_find_blocks_gives_each_command_line_and_content():
    blocks = find_blocks(DOC)
    assert [b.command for b in blocks] == [A, B]
    assert [b.line for b in blocks] == [5, 10]
    assert [DOC[b.start : b.end] for b in blocks] == [
        "old a\n",
        "old b, line 1\nold b, line 2\n",
    ]


def test_refresh_replaces_only_the_blocks_and_reports_the_changed_ones():
    fresh = {A: "new a\n", B: "new b"}
    text, blocks, changed = refresh(DOC, _by_command(fresh))
    assert [b.command for b in changed] == [b.command for b in blocks] == [A, B]
    # Outside the blocks nothing moved; a block's text gets its final newline.
    assert text == DOC.replace("old a\n", "new a\n").replace(
        "old b, line 1\nold b, line 2\n", "new b\n"
    )
    again = refresh(text, _by_command(fresh))
    assert again.text == text and again.changed == []


def test_refresh_reports_only_the_blocks_whose_text_differs():
    result = refresh(DOC, _by_command({A: "old a\n", B: "new b\n"}))
    assert [b.command for b in result.changed] == [B]


def test_text_without_blocks_is_left_alone():
    result = refresh("# just prose\n", lambda block: pytest.fail("nothing to run"))
    assert result.text == "# just prose\n" and result.blocks == []


def test_crlf_line_endings_stay_as_they_are_outside_and_inside_the_blocks():
    crlf = DOC.replace("\n", "\r\n")
    assert [b.line for b in find_blocks(crlf)] == [5, 10]
    text, _, changed = refresh(crlf, _by_command({A: "new a\nline 2\n", B: "old b, line 1\n"}))
    assert len(changed) == 2
    assert "\n" not in text.replace("\r\n", "")  # no bare LF anywhere
    assert text == crlf.replace("old a\r\n", "new a\r\nline 2\r\n").replace("old b, line 2\r\n", "")


def test_a_file_ending_without_a_newline_keeps_its_last_line():
    text = f"<!-- alrp-lab {B} -->\nold\n{CLOSE}"
    assert refresh(text, lambda block: "new").text == f"<!-- alrp-lab {B} -->\nnew\n{CLOSE}"


def test_markers_in_fenced_code_are_examples_not_blocks():
    text = f"```markdown\n<!-- alrp-lab {B} -->\nexample\n{CLOSE}\n```\n~~~~\n{CLOSE}\n~~~~\n"
    assert find_blocks(text) == []
    assert refresh(text, lambda block: pytest.fail("nothing to run")).text == text


def test_markers_may_be_indented_as_markdown_allows_both_alike():
    text = f"   <!-- alrp-lab {B} -->\nold\n  {CLOSE}\n"
    (block,) = find_blocks(text)
    assert block.command == B and text[block.start : block.end] == "old\n"
    # Four spaces make an indented code line in Markdown: neither marker counts there.
    assert find_blocks(f"    <!-- alrp-lab {B} -->\n") == []


def test_line_numbers_count_newlines_only():
    text = f"a\x0cb\u2028c\n<!-- alrp-lab {B} -->\n"  # form feed and line separator
    with pytest.raises(ReadmeError, match="line 2:"):
        find_blocks(text)


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


def test_output_holding_a_marker_line_is_refused_before_it_breaks_the_file():
    with pytest.raises(ReadmeError, match="line 10: `alrp-lab claims results/b` printed a line"):
        refresh(DOC, _by_command({A: "new a\n", B: f"x\n{CLOSE}\n"}))


def test_a_marker_inside_a_line_of_prose_is_not_a_block():
    text = "Write `<!-- alrp-lab table DIR -->` above a table.\n"
    assert find_blocks(text) == []


def test_unfenced_lines_follow_the_block_finders_fence_rule():
    text = "a\n  ```py\nb\n~~~\n```\n````\nc\n```\n````\r\nd\r\n~~~~\ne\n"
    assert list(unfenced_lines(text)) == [(1, "a"), (10, "d")]
    # A fence with an info string opens code but never closes it.
    assert list(unfenced_lines("```\nb\n```bash\nc\n```  \nd")) == [(6, "d")]
    text = f"```\n<!-- alrp-lab {B} -->\n```bash\n{CLOSE}\n```\n"
    assert find_blocks(text) == []  # the markers are inside one code block
