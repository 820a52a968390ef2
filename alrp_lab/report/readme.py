"""Tables that write themselves: blocks of a Markdown file regenerated from results files.

A block is what one ``alrp-lab`` command prints, between two comment lines, the command in
the first (invisible on a rendered page)::

    <!-- alrp-lab table results/table2 --heading "#### Table 2, cpu scale" -->
    ... what the command printed ...
    <!-- alrp-lab end -->

``alrp-lab readme README.md`` reruns every block's command and puts what it printed between
the two lines; ``alrp-lab readme --check README.md`` only reports the blocks whose text
differs, so a test can keep a README's numbers equal to the committed results. The text
around the blocks is the author's and is never touched, line endings included. Markers
inside fenced code (an example of the syntax) are text, not blocks.

This module only finds and splices blocks; running a command is the caller's
(:func:`refresh` takes it as ``render``), so that it needs neither the command line nor
the results files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from alrp_lab.errors import ReadmeError

__all__ = ["CLOSE", "Block", "ReadmeError", "Refreshed", "find_blocks", "refresh", "unfenced_lines"]

# A whole line each (up to 3 spaces of indent, as Markdown allows before an HTML block);
# a command cannot contain "-->", which would end the comment.
_OPEN = re.compile(r"^ {0,3}<!-- alrp-lab (?P<command>(?:(?!-->).)+?) -->[ \t]*\r?$")
CLOSE = "<!-- alrp-lab end -->"
_CLOSE = re.compile(r"^ {0,3}" + re.escape(CLOSE) + r"[ \t]*\r?$")
_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})")
# A closing fence has no info string after it, only spaces (CommonMark).
_CLOSING_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})[ \t]*\r?\n?$")


@dataclass(frozen=True)
class Block:
    """One generated block of a file.

    Attributes:
        command: the words after ``alrp-lab`` in the opening line (``table results/x``).
        line: 1-based line number of the opening comment, for messages.
        start: character offset where the generated text begins (after the opening line).
        end: character offset of the closing comment line.
        newline: the opening line's line ending (``"\\n"`` or ``"\\r\\n"``), which the
            generated text takes.
    """

    command: str
    line: int
    start: int
    end: int
    newline: str = "\n"


class Refreshed(NamedTuple):
    """What :func:`refresh` made: the new text, every block, and those whose text changed."""

    text: str
    blocks: list[Block]
    changed: list[Block]


def _lines(text: str) -> list[str]:
    """``text`` cut at "\\n" only, each line keeping its ending (``str.splitlines`` also
    cuts at form feeds and U+2028, which would shift the line numbers an editor shows)."""
    lines = text.split("\n")
    return [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])


def _opens_fence(line: str) -> str | None:
    """The fence (three or more backticks or tildes, up to 3 spaces of indent) that
    ``line`` opens, or None."""
    match = _FENCE.match(line)
    return match["fence"] if match else None


def _closes_fence(fence: str, line: str) -> bool:
    """Whether ``line`` closes the code block opened by ``fence``: as in CommonMark, only a
    fence of the same character, at least as long, with nothing but spaces after it."""
    match = _CLOSING_FENCE.match(line)
    return bool(match) and match["fence"][0] == fence[0] and len(match["fence"]) >= len(fence)


def unfenced_lines(text: str) -> Iterator[tuple[int, str]]:
    """The lines of ``text`` outside fenced code, each with its 1-based number and without
    its line ending; the fence lines themselves are left out. The fences open and close as
    in :func:`find_blocks` (CommonMark's rule), so a check of headings or links skips what
    the block finder takes for code; unlike it, this knows nothing of generated blocks and
    follows fences inside them too."""
    fence: str | None = None
    for number, line in enumerate(_lines(text), start=1):
        if fence is not None:
            if _closes_fence(fence, line):
                fence = None
        elif (opened := _opens_fence(line)) is not None:
            fence = opened
        else:
            yield number, line.rstrip("\r\n")


def find_blocks(text: str, source: str = "the file") -> list[Block]:
    """The blocks of ``text``, in order.

    Raises :class:`ReadmeError` naming ``source`` and the line when an opening comment has
    no closing one before the next opening, or a closing comment has no opening one.
    """
    blocks: list[Block] = []
    opened: Block | None = None
    fence: str | None = None  # the opening fence of the code block we are in
    offset = 0
    for number, line in enumerate(_lines(text), start=1):
        at, offset = offset, offset + len(line)
        if fence is not None:
            if _closes_fence(fence, line):
                fence = None
            continue
        # A fence inside a generated block is the block's text, not the start of code.
        if opened is None and (fence := _opens_fence(line)) is not None:
            continue
        if _CLOSE.match(line):
            if opened is None:
                raise ReadmeError(
                    f"{source}, line {number}: {CLOSE} closes no block: remove it or add "
                    "<!-- alrp-lab COMMAND --> above the block's text"
                )
            blocks.append(Block(opened.command, opened.line, opened.start, at, opened.newline))
            opened = None
        elif (match := _OPEN.match(line)) is not None:
            if opened is not None:
                raise ReadmeError(
                    f"{source}, line {number}: a block opens before the one at line "
                    f"{opened.line} is closed: add {CLOSE} after that block's text"
                )
            newline = "\r\n" if line.endswith("\r\n") else "\n"
            opened = Block(match["command"].strip(), number, offset, offset, newline)
    if opened is not None:
        raise ReadmeError(
            f"{source}, line {opened.line}: the block of `alrp-lab {opened.command}` is not "
            f"closed: add {CLOSE} on a line of its own after the block's text"
        )
    return blocks


def refresh(text: str, render: Callable[[Block], str], source: str = "the file") -> Refreshed:
    """``text`` with every block's content replaced by ``render(block)``.

    Args:
        text: the whole file, read with its line endings as they are (``newline=""``).
        render: runs one block's command and returns what it prints ("\\n" line ends); a
            final line end is added when missing, and "\\n" becomes the block's own ending.
        source: the file's name, for messages.

    Raises :class:`ReadmeError` when a command's output holds a marker line of its own,
    which would break the file's blocks on the next run.
    """
    blocks = find_blocks(text, source)
    pieces: list[str] = []
    changed: list[Block] = []
    last = 0
    for block in blocks:
        fresh = render(block)
        if fresh and not fresh.endswith("\n"):
            fresh += "\n"
        if any(_OPEN.match(line) or _CLOSE.match(line) for line in _lines(fresh)):
            raise ReadmeError(
                f"{source}, line {block.line}: `alrp-lab {block.command}` printed a line "
                "that looks like a block marker (<!-- alrp-lab ... -->): the block cannot "
                "hold it"
            )
        fresh = fresh.replace("\r\n", "\n").replace("\n", block.newline)
        if text[block.start : block.end] != fresh:
            changed.append(block)
        pieces += [text[last : block.start], fresh]
        last = block.end
    pieces.append(text[last:])
    return Refreshed("".join(pieces), blocks, changed)
