import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from alrp_lab.utils import io
from alrp_lab.utils.io import (
    append_jsonl,
    atomic_copy_file,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    to_jsonable,
)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_text_replaces_content_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert _leftovers(target.parent) == []


def test_atomic_copy_file_copies_bytes_into_new_folders(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(bytes(range(256)) * 100)
    target = tmp_path / "x" / "y" / "a.bin"
    atomic_copy_file(source, target)
    assert target.read_bytes() == source.read_bytes()
    assert _leftovers(target.parent) == []


def test_new_file_gets_umask_permissions_not_mkstemp_0600(tmp_path):
    target = tmp_path / "a.txt"
    atomic_write_text(target, "x")
    assert target.stat().st_mode & 0o777 == 0o666 & ~io._UMASK


@pytest.mark.parametrize("write", ["text", "json", "torch", "copy"])
def test_failed_replace_keeps_old_file_and_removes_temp(tmp_path, monkeypatch, write):
    target = tmp_path / "file"
    target.write_bytes(b"old content")

    def broken_replace(src, dst):
        raise OSError("disk vanished")

    monkeypatch.setattr(io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk vanished"):
        if write == "text":
            atomic_write_text(target, "new")
        elif write == "json":
            atomic_write_json(target, {"new": 1})
        elif write == "copy":
            (tmp_path / "source").write_bytes(b"new content")
            atomic_copy_file(tmp_path / "source", target)
        else:
            atomic_torch_save({"w": torch.ones(3)}, target)
    assert target.read_bytes() == b"old content"
    assert _leftovers(tmp_path) == []


def test_serialisation_error_midway_touches_nothing(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"status": "running"})

    def broken_dumps(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(io.json, "dumps", broken_dumps)
    with pytest.raises(RuntimeError, match="boom"):
        atomic_write_json(target, {"status": "completed"})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"status": "running"}
    assert _leftovers(tmp_path) == []


def test_torch_save_failing_midway_keeps_old_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    atomic_torch_save({"w": torch.zeros(2)}, target)

    def half_written(obj, handle):
        handle.write(b"PK\x03\x04 partial")
        raise OSError("no space left on device")

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(OSError, match="no space"):
        atomic_torch_save({"w": torch.ones(2)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.zeros(2))
    assert _leftovers(tmp_path) == []


def test_json_encodes_non_finite_as_null_and_converts_arrays(tmp_path):
    target = tmp_path / "r.json"
    atomic_write_json(
        target,
        {
            "nan": float("nan"),
            "inf": -math.inf,
            "f32": np.float32(0.5),
            "arr": np.array([1, 2]),
            "t": torch.tensor(2.5),
            "tuple": (1, float("inf")),
            "path": Path("/x/y"),
            3: "int key",
        },
    )
    assert json.loads(target.read_text()) == {
        "nan": None,
        "inf": None,
        "f32": 0.5,
        "arr": [1, 2],
        "t": 2.5,
        "tuple": [1, None],
        "path": "/x/y",
        "3": "int key",
    }


def test_to_jsonable_names_the_bad_key():
    with pytest.raises(TypeError, match=r"\['b'\]\[1\]"):
        to_jsonable({"a": 1, "b": [0, object()]})
    with pytest.raises(TypeError, match="set"):
        to_jsonable({"s": {1, 2}})


def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "m.jsonl"
    records = [{"step": i, "loss": 1.0 / (i + 1), "name": "é"} for i in range(5)]
    for record in records:
        append_jsonl(path, record)
    assert read_jsonl(path) == records
    assert path.read_text(encoding="utf-8").count("\n") == 5


def test_jsonl_nan_reads_back_as_none(tmp_path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"step": 1, "loss": float("nan")})
    assert read_jsonl(path) == [{"step": 1, "loss": None}]


def test_truncated_last_line_is_skipped_then_cut_by_next_append(tmp_path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"step": 1})
    append_jsonl(path, {"step": 2, "loss": 0.25})
    data = path.read_bytes()
    path.write_bytes(data[:-6])  # a crash in the middle of the second record
    assert read_jsonl(path) == [{"step": 1}]
    append_jsonl(path, {"step": 3})
    assert read_jsonl(path) == [{"step": 1}, {"step": 3}]
    assert path.read_bytes() == b'{"step":1}\n{"step":3}\n'


def test_whole_record_missing_only_its_newline_is_kept(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"step":1}\n{"step":2}')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    append_jsonl(path, {"step": 3})
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3]


def test_fragment_longer_than_a_read_chunk_is_cut(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"step":1}\n{"x":"' + b"a" * 70_000)
    append_jsonl(path, {"step": 2})
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]


def test_corrupt_middle_line_raises_with_line_number(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step":1}\n{"step":\n{"step":3}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl, line 2"):
        read_jsonl(path)
    path.write_text('{"step":1}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2: expected a JSON object"):
        read_jsonl(path)


def test_read_jsonl_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_append_rejects_non_mapping(tmp_path):
    with pytest.raises(TypeError, match="mapping"):
        append_jsonl(tmp_path / "m.jsonl", [1, 2])
    assert not os.path.exists(tmp_path / "m.jsonl")


def test_a_killed_writes_leftovers_go_with_the_next_write(tmp_path):
    import os
    import time

    from alrp_lab.utils.io import STALE_TMP_SECONDS, atomic_write_text

    target = tmp_path / "results.json"
    old = tmp_path / ".results.json.abc123.tmp"  # left by a write killed midway
    fresh = tmp_path / ".results.json.def456.tmp"  # a write that may still be under way
    other = tmp_path / ".metrics.jsonl.abc123.tmp"  # another file's: not this write's business
    for leftover in (old, fresh, other):
        leftover.write_text("partial")
    past = time.time() - STALE_TMP_SECONDS - 5
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    atomic_write_text(target, "{}")
    assert target.read_text() == "{}"
    assert not old.exists() and fresh.exists() and other.exists()
