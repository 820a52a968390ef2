"""Crash-safe file writes and a JSON-lines log that survives a crash mid-write.

Whole-file writes go to a temporary file in the destination's folder, are flushed and fsynced,
then renamed over the destination with :func:`os.replace`: a reader (or a run resumed after a
crash) sees either the old file or the new one, never half of one. The temporary file lives in
the same folder because a rename is only atomic within one filesystem.

JSON policy: every file written here is strict JSON (RFC 8259), readable by any parser. NaN and
+/-inf have no JSON spelling, so they are written as ``null`` and read back as ``None``, which
the report prints as a missing value. NumPy scalars and arrays and torch tensors are written
through ``.tolist()``; :class:`pathlib.Path` as a string.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from alrp_lab.errors import ResultsError, ResultsNotFoundError

log = logging.getLogger(__name__)

__all__ = [
    "append_jsonl",
    "atomic_copy_file",
    "atomic_torch_save",
    "atomic_write_json",
    "atomic_write_text",
    "read_jsonl",
    "to_jsonable",
]


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once at import, before any threads write.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def to_jsonable(obj: Any, where: str = "value") -> Any:
    """Return ``obj`` as plain JSON types, with non-finite floats turned into ``None``.

    Mappings become dicts with string keys (int keys are written as their decimal string, as
    :func:`json.dumps` would), tuples and lists become lists, anything with ``.tolist()``
    (NumPy scalars and arrays, torch tensors of any shape) is converted through it.
    Raises :class:`TypeError` naming the offending key for anything else.
    """
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"cannot write key {key!r} of {where} as JSON: keys must be str")
            out[str(key)] = to_jsonable(value, f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(item, f"{where}[{i}]") for i, item in enumerate(obj)]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return to_jsonable(obj.tolist(), where)
    # OmegaConf's ListConfig and other sequences; sets are refused: their order is arbitrary.
    if isinstance(obj, Sequence) and not isinstance(obj, (bytes, bytearray)):
        return [to_jsonable(item, f"{where}[{i}]") for i, item in enumerate(obj)]
    raise TypeError(
        f"cannot write {type(obj).__name__} at {where} as JSON: "
        "convert it to a number, string, list or dict first"
    )


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable across a power cut; not possible on every OS, hence
    # best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write`` on a temporary file next to ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o666 & ~_UMASK
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _remove_stale_temporaries(path)
    _fsync_dir(path.parent)


# A temporary file this old is no write in progress: its writer was killed mid-write.
STALE_TMP_SECONDS = 60.0


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary files an interrupted earlier write of ``path`` left behind."""
    now = time.time()
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if now - leftover.stat().st_mtime > STALE_TMP_SECONDS:
                leftover.unlink()
        except FileNotFoundError:  # another writer's, already gone
            pass


def atomic_write_text(path: str | os.PathLike[str], text: str, *, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (all of it or, after a crash, the old file)."""
    data = text.encode(encoding)
    _atomic_write(Path(path), lambda handle: handle.write(data))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as strict JSON to ``path`` atomically (see the module's JSON policy).

    The object is serialised before any file is touched, so an unserialisable value raises
    :class:`TypeError` and leaves both the old file and the folder as they were.
    """
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False)
    atomic_write_text(path, text + "\n")


def atomic_copy_file(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Copy ``source``'s bytes to ``path`` atomically (all of them or, after a crash, the old
    file)."""
    with open(source, "rb") as src:
        _atomic_write(Path(path), lambda handle: shutil.copyfileobj(src, handle))


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """:func:`torch.save` ``obj`` to ``path`` atomically; the old file stays until it is done."""
    import torch  # here, not at the top: readers of results files should not pay for torch

    _atomic_write(Path(path), lambda handle: torch.save(obj, handle))


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False


def _repair_tail(handle: IO[bytes], path: Path) -> None:
    """Make the file end with a newline before a new record is appended.

    A crash mid-append leaves a last line without its newline. If that line is a whole JSON
    object (the crash fell between the object and its newline) the newline is added; otherwise
    the fragment is cut off, since appending after it would corrupt the next record too.
    """
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return
    handle.seek(size - 1)
    if handle.read(1) == b"\n":
        return
    start = size
    chunk = 1 << 16
    while start > 0:
        lo = max(0, start - chunk)
        handle.seek(lo)
        newline = handle.read(start - lo).rfind(b"\n")
        if newline >= 0:
            start = lo + newline + 1
            break
        start = lo
    handle.seek(start)
    fragment = handle.read(size - start)
    if _is_json_object(fragment):
        handle.write(b"\n")
        return
    log.warning("%s: dropping a partial last record (%d bytes) left by a crash", path, size - start)
    handle.truncate(start)


def append_jsonl(path: str | os.PathLike[str], record: Mapping[str, Any]) -> None:
    """Append ``record`` as one line of JSON to ``path`` and fsync it.

    The line goes out in a single write and is flushed and fsynced before returning, so a crash
    loses at most the record being written; :func:`read_jsonl` skips such a partial last line
    and the next append cuts it off. Non-finite floats are written as ``null``.
    """
    if not isinstance(record, Mapping):
        raise TypeError(f"a JSON-lines record must be a mapping, got {type(record).__name__}")
    path = Path(path)
    line = json.dumps(
        to_jsonable(record, "record"), allow_nan=False, ensure_ascii=False, separators=(",", ":")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        _repair_tail(handle, path)
        handle.write(line.encode("utf-8") + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read every record of a JSON-lines file written by :func:`append_jsonl`.

    A last line without a newline that does not parse is the trace of a crash mid-write and is
    skipped. Any other line that is not a JSON object raises
    :class:`~alrp_lab.errors.ResultsError` (a :class:`ValueError`) naming the file and line; a
    missing file raises :class:`~alrp_lab.errors.ResultsNotFoundError` (a
    :class:`FileNotFoundError`).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ResultsNotFoundError(f"{path} does not exist: check the run folder's path") from None
    *complete, tail = data.split(b"\n")
    records: list[dict[str, Any]] = []
    for number, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError as err:
            raise ResultsError(
                f"{path}, line {number}: not valid JSON ({err}); the file was edited or "
                "damaged: repair or delete that line"
            ) from None
        if not isinstance(record, dict):
            raise ResultsError(
                f"{path}, line {number}: expected a JSON object, got {type(record).__name__}; "
                "the file was edited or damaged: repair or delete that line"
            )
        records.append(record)
    if tail.strip():
        if _is_json_object(tail):
            records.append(json.loads(tail))
        else:
            log.warning("%s: skipping a partial last line left by a crash", path)
    return records
