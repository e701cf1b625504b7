"""The one I/O layer: atomic writes, JSON Lines with one torn-tail policy, the run header.

Atomic: every file is written to a temporary sibling, flushed, fsynced and renamed over the target,
so a reader (or a run killed with kill -9) sees the old file or the new one, never a half. The sibling's
name (:func:`temp_path`: hidden, ending in ``.mmcl.tmp``, with the writer's host and process id) lets
:func:`remove_stale_temps` delete what a killed writer left behind, and nothing a live one is writing.
An OSError of a write (a read-only folder, a full disk) names the target file, never the sibling.

JSON Lines: :func:`append_jsonl` writes one object per line and fsyncs. :func:`read_jsonl` is the
one policy for a torn tail: a last line without its newline or that is not valid JSON (a write cut
by a kill) is dropped *and cut from the file*, so the next append starts on a fresh line; an invalid
line anywhere else is corruption and raises :class:`CorruptFileError` naming the file and line.

Run header: :func:`run_header` is the provenance every result file carries: package name and
version, UTC date, the command line (absolute paths cut to their names), and the resolved config.
It never holds absolute paths of the machine unless the caller puts them in the config.
"""

from __future__ import annotations

import csv
import datetime
import io as _io
import json
import math
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence


class CorruptFileError(ValueError):
    """A result or state file that cannot be read: one line naming the file and what is wrong."""


def _json_default(x: Any) -> Any:
    import numpy as np

    if isinstance(x, np.generic) or type(x).__name__ == "ArrayImpl":
        return np.asarray(x).tolist()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, (set, frozenset)):
        return sorted(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def to_json(obj: Any, indent: int | None = 1) -> str:
    """JSON text of obj (numpy scalars and arrays, paths and sets allowed); NaN or inf is an error."""
    return json.dumps(obj, indent=indent, default=_json_default, allow_nan=False)


TEMP_SUFFIX = ".mmcl.tmp"
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[^@/]+)" + re.escape(TEMP_SUFFIX))


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary sibling this process writes `path` through: .NAME.PID@HOST.mmcl.tmp."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}@{socket.gethostname()}{TEMP_SUFFIX}")


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete the temporary siblings in `folder` (temp_path) whose writer, a process of this host, is gone (a
    write cut by kill -9); those of live processes and of other hosts stay. Returns how many were deleted."""
    removed = 0
    host = socket.gethostname()
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        match = _TEMP_NAME.fullmatch(tmp.name)
        if not match or match["host"] != host or _alive(int(match["pid"])):
            continue
        try:
            tmp.unlink()
            removed += 1
        except FileNotFoundError:  # another process cleaned it first
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (or a pid no process can have)
        return False
    except PermissionError:  # a process of another user
        return True
    return True


def _naming(error: OSError, path: Path) -> OSError:
    """`error` as the same kind of OSError naming `path` (a failed write says which file, not its sibling)."""
    return OSError(error.errno, error.strerror or str(error), str(path))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to path through a temporary sibling (temp_path), fsync, rename; an OSError names path."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise _naming(e, path) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> None:
    """Write JSON atomically; refuses NaN and inf (a result file never holds them)."""
    atomic_write_text(path, to_json(obj, indent) + "\n")


def csv_text(rows: Iterable[dict], fieldnames: Sequence[str]) -> str:
    """CSV text with a header row; missing keys are empty cells, extra keys are an error."""
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        for v in row.values():
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"refusing to write a non-finite value {v!r} to a result CSV")
        writer.writerow(row)
    return buf.getvalue()


def atomic_write_csv(path: str | os.PathLike, rows: Iterable[dict], fieldnames: Sequence[str]) -> None:
    """Write a CSV table atomically (see csv_text)."""
    atomic_write_text(path, csv_text(rows, fieldnames))


def atomic_save_figure(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> None:
    """Save a matplotlib figure atomically; the format comes from the path's suffix."""
    path = Path(path)
    buf = _io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", **savefig_kwargs)
    atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------ JSON Lines


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON object as a line, flushed and fsynced (NaN and inf refused); an OSError names path."""
    line = to_json(record, indent=None) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:  # a cut line is the torn tail that read_jsonl drops
        raise _naming(e, Path(path)) from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a JSON Lines file ([] when absent), with the one torn-tail policy (module doc)."""
    path = Path(path)
    if not path.exists():
        return []
    if not path.is_file():
        raise CorruptFileError(f"{path} is not a file")
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail: text after the last newline (b"" when none)
    records = []
    for i, raw in enumerate(complete, 1):
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if i == len(complete) and not tail:
                tail = raw  # the last line is torn even though a newline follows it
                complete = complete[:-1]
                break
            raise CorruptFileError(f"{path}, line {i}: not a JSON object (the file is corrupt; "
                                   "move it away to start afresh)") from None
        if not isinstance(rec, dict):
            raise CorruptFileError(f"{path}, line {i}: {type(rec).__name__} where a JSON object was expected")
        records.append(rec)
    if tail:
        try:
            rec = json.loads(tail.decode("utf-8"))
            if isinstance(rec, dict):
                records.append(rec)  # complete object whose newline was lost: keep it, restore the newline
                complete = complete + [tail]
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
        atomic_write_bytes(path, b"".join(line + b"\n" for line in complete))
    return records


# ------------------------------------------------------------------ provenance


def portable_argument(arg: str) -> str:
    """A command-line argument as a result file records it: an absolute path (alone, or after 'NAME=')
    is cut to its last component, so no result names a folder of the machine that produced it."""
    name, sep, value = arg.rpartition("=")
    path = value.strip("'\"")
    if os.path.isabs(path):
        return f"{name}{sep}{Path(path).name}"
    return arg


def load_module_from_path(path: str | os.PathLike, name: str):
    """Import the Python file ``path`` as module ``name`` (for a checkout's experiment scripts, which are not
    part of the installed package); its folder goes on sys.path first so that it can import its neighbours."""
    import importlib.util

    path = Path(path)
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_header(config: Any = None, command: Sequence[str] | None = None) -> dict:
    """Provenance of a result: package, version, UTC date, command line (absolute paths cut to their
    names, see portable_argument), resolved config."""
    from . import __version__

    argv = [portable_argument(a) for a in (sys.argv if command is None else command)]
    if argv:
        argv[0] = Path(argv[0]).name
    return {"package": "mmcl-theory", "package_version": __version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(argv), "config": config}
