"""``alrp-lab claims``: one table of every claim of every sweep folder found.

Each sweep folder's ``sweep.json`` gives its definition (with its claims) and expected seeds;
the verdicts come from the run folders' results files alone (:mod:`alrp_lab.report.claims`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence

from alrp_lab.errors import ResultsError
from alrp_lab.report.tables import (
    CLAIM_HEADER,
    claim_markdown_lines,
    claim_texts,
    load_sweep_table,
    sweep_folders,
)

PathLike = str | os.PathLike[str]

__all__ = ["render_claims"]

# The columns ``brief`` leaves out: the claim's words and its test, which the full table
# gives once; a sweep with many variants of the same claims (the regime study) then fits
# on a page.
_LONG_COLUMNS = ("paper says", "test")


def render_claims(paths: Sequence[PathLike], fmt: str = "md", *, brief: bool = False) -> str:
    """Every claim of every sweep folder at or below ``paths`` as Markdown or CSV, with the
    sweep's name and scale in front; a line saying so when no folder or claim is found.
    ``brief`` leaves out the columns "paper says" and "test".

    Raises :class:`FileNotFoundError` for a path that is not a folder."""
    if fmt not in ("md", "csv"):
        raise ResultsError(f"unknown claims format {fmt!r}: use md or csv")
    full = ("sweep", "scale", *CLAIM_HEADER)
    keep = [i for i, name in enumerate(full) if not (brief and name in _LONG_COLUMNS)]
    header = [full[i] for i in keep]
    lines = []
    for root in sweep_folders(paths):
        table = load_sweep_table(root)
        name = root.name
        for result in table.claims:
            line = [name, str(table.scale or "-"), *claim_texts(result)]
            lines.append([line[i] for i in keep])
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(lines)
        return buffer.getvalue()
    if not lines:
        where = ", ".join(map(str, paths))
        return f"No claims found under {where}: run a sweep first (alrp-lab sweep NAME).\n"
    verdicts = [line[-2] for line in lines]
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in ("holds", "fails", "inconclusive"))
    out = [*claim_markdown_lines(header, lines), "", f"{len(lines)} claims: {counts}."]
    return "\n".join(out) + "\n"
