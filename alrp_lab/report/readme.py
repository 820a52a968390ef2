"""Tables that write themselves: blocks of a Markdown file regenerated from results files.

A block is what one ``alrp-lab`` command prints, between two comment lines, the command in
the first (invisible on a rendered page)::

    <!-- alrp-lab table results/table2 --heading "#### Table 2, cpu scale" -->
    ... what the command printed ...
    <!-- alrp-lab end -->

``alrp-lab readme README.md`` reruns every block's command and puts what it printed between
the two lines; ``alrp-lab readme --check README.md`` only reports the blocks whose text
differs, so a test can keep a README's numbers equal to the committed results. The text
around the blocks is the author's and is never touched.

This module only finds and splices blocks; running a command is the caller's
(:func:`refresh` takes it as ``render``), so that it needs neither the command line nor
the results files.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from alrp_lab.errors import ResultsError

__all__ = ["CLOSE", "Block", "ReadmeError", "find_blocks", "refresh"]

# A whole line each: a command cannot contain "-->", which would end the comment.
_OPEN = re.compile(r"^<!-- alrp-lab (?P<command>(?:(?!-->).)+?) -->[ \t]*$")
CLOSE = "<!-- alrp-lab end -->"


class ReadmeError(ResultsError):
    """A Markdown file whose blocks cannot be read (unclosed, nested or stray markers)."""


@dataclass(frozen=True)
class Block:
    """One generated block of a file.

    Attributes:
        command: the words after ``alrp-lab`` in the opening line (``table results/x``).
        line: 1-based line number of the opening comment, for messages.
        start: character offset where the generated text begins (after the opening line).
        end: character offset of the closing comment line.
    """

    command: str
    line: int
    start: int
    end: int


def find_blocks(text: str, source: str = "the file") -> list[Block]:
    """The blocks of ``text``, in order.

    Raises :class:`ReadmeError` naming ``source`` and the line when an opening comment has
    no closing one before the next opening, or a closing comment has no opening one.
    """
    blocks: list[Block] = []
    opened: tuple[str, int, int] | None = None  # command, line number, content offset
    offset = 0
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        bare = line.rstrip("\r\n")
        match = _OPEN.match(bare)
        if bare.strip() == CLOSE:
            if opened is None:
                raise ReadmeError(
                    f"{source}, line {number}: {CLOSE} closes no block: remove it or add "
                    "<!-- alrp-lab COMMAND --> above the block's text"
                )
            blocks.append(Block(opened[0], opened[1], opened[2], offset))
            opened = None
        elif match is not None:
            if opened is not None:
                raise ReadmeError(
                    f"{source}, line {number}: a block opens before the one at line "
                    f"{opened[1]} is closed: add {CLOSE} after that block's text"
                )
            opened = (match["command"].strip(), number, offset + len(line))
        offset += len(line)
    if opened is not None:
        raise ReadmeError(
            f"{source}, line {opened[1]}: the block of `alrp-lab {opened[0]}` is not "
            f"closed: add {CLOSE} on a line of its own after the block's text"
        )
    return blocks


def refresh(
    text: str, render: Callable[[str], str], source: str = "the file"
) -> tuple[str, list[Block]]:
    """``text`` with every block's content replaced by ``render(block.command)``.

    Args:
        text: the whole file.
        render: runs one block's command and returns what it prints; a newline is added
            when it does not end with one.
        source: the file's name, for messages.

    Returns:
        The new text and the blocks whose content changed (empty when it was current).
    """
    blocks = find_blocks(text, source)
    pieces: list[str] = []
    changed: list[Block] = []
    last = 0
    for block in blocks:
        fresh = render(block.command)
        if fresh and not fresh.endswith("\n"):
            fresh += "\n"
        if text[block.start : block.end] != fresh:
            changed.append(block)
        pieces += [text[last : block.start], fresh]
        last = block.end
    pieces.append(text[last:])
    return "".join(pieces), changed
