from __future__ import annotations

from pathlib import Path

import pytest

import alrp_lab
from alrp_lab.tracking.code_digest import (
    COMPUTING_PACKAGES,
    DIGEST_CHARS,
    changed_packages,
    code_digests,
    package_digests,
    source_digest,
)

MODULE = '''"""A loss."""

import math


class Loss:
    """Its docstring."""

    def __call__(self, x):
        """Another."""
        return math.exp(x) * 2  # a comment
'''


def test_formatting_comments_and_docstrings_leave_the_digest_alone():
    same = (
        "import math\n"
        "class Loss:\n"
        "    '''Reworded, on one line.'''\n"
        "    def __call__(self,x):\n"
        "        # a new comment\n"
        "        return (math.exp(x)*2)\n"
    )
    assert source_digest(same) == source_digest(MODULE)


@pytest.mark.parametrize(
    "edit",
    [
        ("* 2", "* 3"),  # a constant
        ("def __call__(self, x)", "def __call__(self, x=1)"),  # a default
        ("math.exp", "math.expm1"),  # a call
        ("return", "x = x\n        return"),  # a statement
    ],
)
def test_a_change_of_code_changes_the_digest(edit):
    assert source_digest(MODULE.replace(*edit)) != source_digest(MODULE)


def test_a_function_that_is_only_a_docstring_still_digests():
    only_doc = 'def f():\n    """Nothing else."""\n'
    assert source_digest(only_doc) == source_digest("def f():\n    pass\n")
    assert source_digest(only_doc) != source_digest("def g():\n    pass\n")
    with pytest.raises(SyntaxError):
        source_digest("def f(:\n")


def _package(root: Path) -> Path:
    for name, text in {
        "losses/__init__.py": "",
        "losses/alrp.py": MODULE,
        "models/head.py": "WIDTH = 256\n",
        "report/tables.py": "ROWS = 1\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_each_package_has_its_digest_and_a_change_moves_only_its_own(tmp_path):
    root = _package(tmp_path)
    before = package_digests(root)
    # report is no computing package; the missing ones get no entry.
    assert set(before) == {"losses", "models"}
    assert all(len(digest) == DIGEST_CHARS for digest in before.values())
    (root / "models" / "head.py").write_text("WIDTH = 128\n")
    (root / "report" / "tables.py").write_text("ROWS = 2\n")
    after = package_digests(root)
    assert after["losses"] == before["losses"] and after["models"] != before["models"]
    # A file moved within a package is a change of it too (imports name the path).
    (root / "models" / "head.py").rename(root / "models" / "heads.py")
    assert package_digests(root)["models"] != after["models"]


def test_the_installed_code_is_digested_per_computing_package():
    digests = code_digests()
    assert set(digests) == set(COMPUTING_PACKAGES)
    assert digests == package_digests(Path(alrp_lab.__file__).parent)
    digests["losses"] = "changed"
    assert code_digests()["losses"] != "changed", "callers get a copy"


def test_changed_packages_compares_every_attempt_with_the_code_now():
    now = {"losses": "a1", "models": "b1", "ops": "c1"}
    same = {"attempts": [{"code": dict(now)}]}
    assert changed_packages(same, now) == []
    # The first attempt ran other losses code, the second other models code: both count.
    two = {"attempts": [{"code": {**now, "losses": "a0"}}, {"code": {**now, "models": "b0"}}]}
    assert changed_packages(two, now) == ["losses", "models"]
    # A package added or removed since counts as changed.
    assert changed_packages({"attempts": [{"code": {"losses": "a1", "models": "b1"}}]}, now) == [
        "ops"
    ]
    # Nothing recorded (a run from before the digests, or no attempts at all): unknown.
    assert changed_packages({"attempts": [{"from_step": 0}]}, now) is None
    assert changed_packages({}, now) is None
    # An attempt without code beside one with it: judged by the one that has it.
    mixed = {"attempts": [{"from_step": 0}, {"code": dict(now)}]}
    assert changed_packages(mixed, now) == []
    assert changed_packages({"attempts": [{"code": code_digests()}]}) == []
