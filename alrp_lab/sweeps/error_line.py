"""A run's recorded error as one line, for a sweep's log and its dry run's listing.

An error recorded by the engine is one line ("FloatingPointError: ..."). One recorded for a
submitit job is not: a job that raised is a header, a rule of dashes and the traceback
(what it raised on the traceback's last line); one the cluster killed names its result
file on the first line, its state (TIMEOUT) on the second, then the job's error stream.
"""

from __future__ import annotations

import re

__all__ = ["ERROR_CHARS", "error_line"]

# A line's length: a cluster's error with the job's state at its end fits, with the
# result file's path, for a sweep folder of up to about 130 characters.
ERROR_CHARS = 240

_TRACEBACK = "Traceback (most recent call last):"
_RAISED = re.compile(r"[A-Za-z_][\w.]*: ")


def error_line(text: str, limit: int = ERROR_CHARS) -> str:
    """An error message as one line: the exception a traceback in it ends with (a job that
    raised under submitit: its header, then the trace), else its first paragraph, up to a
    blank line or a rule of dashes (before a job's error stream), cut at ``limit``
    characters."""
    lines = text.splitlines()
    if _TRACEBACK in lines:
        trace = lines[lines.index(_TRACEBACK) + 1 :]
        trace = _paragraph(trace, blank_ends=False)
        # "ValueError: boom" (a message may go on over lines of its own), else a bare name.
        raised = [line for line in trace if _RAISED.match(line)]
        raised = raised or [line for line in trace if line[:1].isalpha()]
        if raised:
            lines = [raised[-1]]
    head = _paragraph(lines, blank_ends=True)
    if len(head) > 1 and head[-1].endswith(":"):  # "Error stream produced:", cut off
        head = head[:-1]
    joined = " ".join(" ".join(head).split())
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def _paragraph(lines: list[str], *, blank_ends: bool) -> list[str]:
    """``lines`` up to the first rule of dashes (or blank line, with ``blank_ends``)."""
    kept = []
    for line in lines:
        if (line.strip() and set(line.strip()) == {"-"}) or (blank_ends and not line.strip()):
            break
        kept.append(line)
    return kept
