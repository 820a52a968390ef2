"""Which code computed a run: a digest of each subpackage that computes, recorded with every
attempt in ``results.json``, so that a completed run trained before a change of code (a bug
fix in a loss) can be told from one trained by the code installed now.

The staleness check (:mod:`alrp_lab.tracking.staleness`) compares configs; a change of code
that leaves the config alone is invisible to it. The git commit alone does not say whether
the code that computes changed (most commits touch docs, tests or the report), and it is
missing outside a checkout (``pip install .``). So each attempt records, per subpackage of
:data:`COMPUTING_PACKAGES`, a digest of its modules' syntax trees with docstrings (the
first string of a module's, class's or function's body) removed: formatting, comments and
docstrings do not change it; any change of a statement, a default or a constant does, even
one that computes the same thing (a rename). It says where the code differs, not that the
results would: a sweep reports such runs and keeps them.

The digest is of the syntax tree as :func:`ast.unparse` writes it, which another Python
minor version writes differently (3.10 and 3.12 differ from 3.11 here), so the record
names its Python (``{"python": "3.11", "digests": {...}}``) and attempts made under
another one are not compared. A module that cannot be parsed (a scratch file with a
syntax error) is digested by its bytes: recording provenance never stops a run.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike[str]

# The subpackages whose code decides what a run computes.
COMPUTING_PACKAGES = (
    "assigners",
    "data",
    "engine",
    "eval",
    "losses",
    "models",
    "ops",
    "pretrain",
    "utils",
)
# Left out: they decide which runs happen and how they are shown (sweeps, report,
# tracking), are compared on their own (config: the resolved config is recorded), or are
# test helpers. tests/tracking/test_code_digest.py checks that every subpackage is in one
# of the two lists, so a new one is placed on purpose.
OTHER_PACKAGES = ("config", "report", "sweeps", "testing", "tracking")

# Hex digits kept of each sha256: 64 bits tell two versions of a package apart.
DIGEST_CHARS = 16

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "COMPUTING_PACKAGES",
    "DIGEST_CHARS",
    "OTHER_PACKAGES",
    "changed_packages",
    "code_record",
    "package_digests",
    "python_version",
    "source_digest",
]


def _without_docstrings(tree: ast.AST) -> ast.AST:
    """``tree`` with the docstring of the module and of every class and function removed
    (a body left empty gets ``pass``, as an empty body cannot be written)."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body = node.body
        if (
            body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(source: str | bytes) -> str:
    """sha256 hex digest of a module's code: its syntax tree without docstrings, as
    :func:`ast.unparse` writes it. Bytes are decoded as Python decodes a file (a BOM, a
    coding line). Raises SyntaxError (or ValueError) when ``source`` is not Python."""
    canonical = ast.unparse(_without_docstrings(ast.parse(source)))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _file_digest(path: Path) -> str:
    """:func:`source_digest` of a file, or the sha256 of its bytes when it does not parse
    (``bytes:`` in front, so that a file that parses again counts as changed)."""
    data = path.read_bytes()
    try:
        return source_digest(data)
    except (SyntaxError, ValueError):
        return "bytes:" + hashlib.sha256(data).hexdigest()


def package_digests(
    package_root: PathLike, packages: Iterable[str] = COMPUTING_PACKAGES
) -> dict[str, str]:
    """``{subpackage: digest}`` for each of ``packages`` under ``package_root``: the first
    :data:`DIGEST_CHARS` hex digits of the sha256 over its ``.py`` files (sorted by path,
    each path with its file's digest). Hidden files (an editor's ``.#x.py`` lock) and
    anything not a regular file are skipped, and a file that cannot be read is recorded as
    unreadable, so this never raises for the files it finds. A subpackage that is missing
    gets no entry."""
    root = Path(package_root)
    out: dict[str, str] = {}
    for name in packages:
        folder = root / name
        if not folder.is_dir():
            continue
        digest = hashlib.sha256()
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            try:
                each = _file_digest(path)
            except OSError as err:
                each = f"unreadable: {type(err).__name__}"
            digest.update(f"{relative.as_posix()}\0{each}\n".encode())
        out[name] = digest.hexdigest()[:DIGEST_CHARS]
    return out


def python_version() -> str:
    """``major.minor`` of the running Python: the digests are comparable within one."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@functools.cache
def _installed() -> tuple[tuple[str, str], ...]:
    return tuple(package_digests(_PACKAGE_ROOT).items())


def code_record() -> dict[str, Any]:
    """What an attempt records of the installed ``alrp_lab``: ``{"python": "3.11",
    "digests": {subpackage: digest}}``. The digests are computed once per process, so a
    training process that calls this when it starts records the code it loaded, not an
    edit made while it built its model."""
    return {"python": python_version(), "digests": dict(_installed())}


def changed_packages(
    results: Mapping[str, Any], now: Mapping[str, Any] | None = None
) -> list[str] | None:
    """The subpackages (sorted) whose code differs between any attempt ``results`` records
    and ``now`` (a :func:`code_record`; default: the installed code's). None when nothing
    can be told: no attempt recorded its code (a run recorded before the digests existed),
    or each that did ran under another Python minor version than ``now``'s. A package one
    side lacks counts as changed (added or removed)."""
    now = code_record() if now is None else now
    attempts = results.get("attempts")
    recorded = []
    for attempt in attempts if isinstance(attempts, list) else ():
        code = attempt.get("code") if isinstance(attempt, Mapping) else None
        if (
            isinstance(code, Mapping)
            and code.get("python") == now.get("python")
            and isinstance(code.get("digests"), Mapping)
        ):
            recorded.append(code["digests"])
    if not recorded:
        return None
    digests = now.get("digests") or {}
    return sorted(
        {
            name
            for each in recorded
            for name in {*each, *digests}
            if each.get(name) != digests.get(name)
        }
    )
