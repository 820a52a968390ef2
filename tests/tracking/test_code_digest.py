from __future__ import annotations

from pathlib import Path

import pytest

import alrp_lab
from alrp_lab.tracking.code_digest import (
    COMPUTING_PACKAGES,
    DIGEST_CHARS,
    OTHER_PACKAGES,
    changed_packages,
    code_record,
    package_digests,
    python_version,
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


def test_every_docstring_goes_and_no_other_string():
    nested = (
        "async def f():\n"
        "    'Doc.'\n"
        "    def g():\n"
        "        'Doc.'\n"
        "        return 1\n"
        "    return g\n"
        "class C:\n"
        "    'Doc.'\n"
    )
    bare = "async def f():\n    def g():\n        return 1\n    return g\nclass C:\n    pass\n"
    assert source_digest(nested) == source_digest(bare)
    # A string that is not a body's first statement is code (a value, a later expression).
    assert source_digest("X = 1\n'a note'\n") != source_digest("X = 1\n")
    assert source_digest("def f():\n    return 'a'\n") != source_digest(
        "def f():\n    return 'b'\n"
    )


def test_a_function_that_is_only_a_docstring_still_digests():
    only_doc = "def f():\n    'Nothing else.'\n"
    assert source_digest(only_doc) == source_digest("def f():\n    pass\n")
    assert source_digest(only_doc) != source_digest("def g():\n    pass\n")
    with pytest.raises(SyntaxError):
        source_digest("def f(:\n")


def test_bytes_are_read_as_python_reads_a_file():
    assert source_digest(b"\xef\xbb\xbfX = 1\n") == source_digest("X = 1\n")  # a BOM
    latin = "# -*- coding: latin-1 -*-\nX = 'caf\xe9'\n"
    assert source_digest(latin.encode("latin-1")) == source_digest(latin)


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


def test_files_that_do_not_parse_or_are_not_modules_never_stop_the_digest(tmp_path):
    root = _package(tmp_path)
    before = package_digests(root)
    (root / "losses" / ".#alrp.py").symlink_to(root / "nowhere")  # an editor's lock file
    (root / "losses" / ".hidden.py").write_text("X = 1\n")
    assert package_digests(root) == before
    (root / "losses" / "scratch.py").write_text("def f(:\n")  # digested by its bytes
    broken = package_digests(root)["losses"]
    assert broken != before["losses"]
    (root / "losses" / "scratch.py").write_text("def f(:\n\n")
    assert package_digests(root)["losses"] != broken, "its bytes count"


def test_every_subpackage_is_placed_in_one_list():
    root = Path(alrp_lab.__file__).parent
    subpackages = {path.parent.name for path in root.glob("*/__init__.py")}
    assert subpackages == set(COMPUTING_PACKAGES) | set(OTHER_PACKAGES)
    assert not set(COMPUTING_PACKAGES) & set(OTHER_PACKAGES)


def test_the_installed_code_is_recorded_with_its_python():
    record = code_record()
    assert record["python"] == python_version()
    assert set(record["digests"]) == set(COMPUTING_PACKAGES)
    assert record["digests"] == package_digests(Path(alrp_lab.__file__).parent)
    record["digests"]["losses"] = "changed"
    assert code_record()["digests"]["losses"] != "changed", "callers get a copy"


def _attempt(digests: dict[str, str], python: str = "3.11") -> dict:
    return {"code": {"python": python, "digests": dict(digests)}}


def test_changed_packages_compares_every_attempt_with_the_code_now():
    digests = {"losses": "a1", "models": "b1", "ops": "c1"}
    now = {"python": "3.11", "digests": digests}
    assert changed_packages({"attempts": [_attempt(digests)]}, now) == []
    # The first attempt ran other losses code, the second other models code: both count.
    two = [_attempt({**digests, "losses": "a0"}), _attempt({**digests, "models": "b0"})]
    assert changed_packages({"attempts": two}, now) == ["losses", "models"]
    # A package added or removed since counts as changed.
    fewer = {"attempts": [_attempt({"losses": "a1", "models": "b1"})]}
    assert changed_packages(fewer, now) == ["ops"]
    # Nothing recorded (a run from before the digests, or no attempts at all): unknown.
    assert changed_packages({"attempts": [{"from_step": 0}]}, now) is None
    assert changed_packages({}, now) is None
    # An attempt without code beside one with it: judged by the one that has it.
    assert changed_packages({"attempts": [{"from_step": 0}, _attempt(digests)]}, now) == []
    # Another Python writes the trees differently: its attempts are not compared.
    other = _attempt({**digests, "losses": "x"}, python="3.10")
    assert changed_packages({"attempts": [other]}, now) is None
    assert changed_packages({"attempts": [other, _attempt(digests)]}, now) == []
    assert changed_packages({"attempts": [{"code": code_record()}]}) == []
