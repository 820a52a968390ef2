"""Which code computed a run: a digest of each subpackage that computes, recorded with every
attempt in ``results.json``, so that a completed run trained before a change of code (a bug
fix in a loss) can be told from one trained by the code installed now.

The staleness check (:mod:`alrp_lab.tracking.staleness`) compares configs; a change of code
that leaves the config alone is invisible to it. The git commit alone does not say whether
the code that computes changed (most commits touch docs, tests or the report), and it is
missing outside a checkout (``pip install .``). So each attempt records, per subpackage of
:data:`COMPUTING_PACKAGES`, a digest of its modules' syntax trees with docstrings removed:
formatting, comments and docstrings do not change it; any change of a statement, a default
or a constant does, even one that computes the same thing (a rename). It says where the
code differs, not that the results would: a sweep reports such runs and keeps them.

The digest is of the syntax tree as :func:`ast.unparse` writes it, which another Python
minor version may write differently; runs recorded under another one are then reported as
changed in every package, which a note of the versions (``versions.python``) explains.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike[str]

# The subpackages whose code decides what a run computes. Left out: the command line, the
# sweeps, the report and the tracking (they decide which runs happen and how they are
# shown), config (the resolved config is compared on its own) and the test helpers.
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

# Hex digits kept of each sha256: 64 bits tell two versions of a package apart.
DIGEST_CHARS = 16

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "COMPUTING_PACKAGES",
    "DIGEST_CHARS",
    "changed_packages",
    "code_digests",
    "package_digests",
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


def source_digest(source: str) -> str:
    """sha256 hex digest of a module's code: its syntax tree without docstrings, as
    :func:`ast.unparse` writes it. Raises SyntaxError when ``source`` is not Python."""
    canonical = ast.unparse(_without_docstrings(ast.parse(source)))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def package_digests(
    package_root: PathLike, packages: Iterable[str] = COMPUTING_PACKAGES
) -> dict[str, str]:
    """``{subpackage: digest}`` for each of ``packages`` under ``package_root``: the first
    :data:`DIGEST_CHARS` hex digits of the sha256 over its ``.py`` files (sorted by path,
    each path with its :func:`source_digest`). A subpackage that is missing gets no entry."""
    root = Path(package_root)
    out: dict[str, str] = {}
    for name in packages:
        folder = root / name
        if not folder.is_dir():
            continue
        digest = hashlib.sha256()
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder).as_posix()
            digest.update(f"{relative}\0{source_digest(path.read_text('utf-8'))}\n".encode())
        out[name] = digest.hexdigest()[:DIGEST_CHARS]
    return out


@functools.cache
def _installed() -> tuple[tuple[str, str], ...]:
    return tuple(package_digests(_PACKAGE_ROOT).items())


def code_digests() -> dict[str, str]:
    """:func:`package_digests` of the installed ``alrp_lab``, computed once per process."""
    return dict(_installed())


def changed_packages(
    results: Mapping[str, Any], now: Mapping[str, str] | None = None
) -> list[str] | None:
    """The subpackages (sorted) whose code differs between any attempt ``results`` records
    and ``now`` (default: the installed code); None when no attempt recorded its code (a
    run recorded before the digests existed), since nothing can then be told.

    A package one side lacks counts as changed (added or removed)."""
    attempts = results.get("attempts")
    recorded = [
        attempt["code"]
        for attempt in (attempts if isinstance(attempts, list) else ())
        if isinstance(attempt, Mapping) and isinstance(attempt.get("code"), Mapping)
    ]
    if not recorded:
        return None
    now = code_digests() if now is None else now
    changed = {
        name for code in recorded for name in {*code, *now} if code.get(name) != now.get(name)
    }
    return sorted(changed)
