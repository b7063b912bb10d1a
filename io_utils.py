"""Atomic file writes: a file either keeps its old content or gets the complete new one.

Every writer here first writes a temporary file in the same folder as the destination (so
that the final rename stays on one file system and is atomic), flushes it to disk and only
then renames it over the destination. An interrupted or failed write leaves the destination
untouched and removes its temporary file; a reader never sees half a file.

Temporary names are ``{stem}.partial-{random}{suffix}`` beside the destination, so a file
left by a killed process is recognisable and keeps its extension (``np.save`` and friends
look at it).
"""

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "fsync_dir",
    "fsync_file",
    "partial_paths",
]


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk; the rename that follows must not overtake it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where directories can't be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def partial_paths(path: str | os.PathLike) -> list[Path]:
    """Temporary files that ``atomic_path(path)`` may have left behind after a hard kill."""
    path = Path(path)
    return sorted(path.parent.glob(f"{path.stem}.partial-*{path.suffix}"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``.

    The body of the ``with`` block must create the file at the yielded path. If the block
    raises (including KeyboardInterrupt), the temporary file is deleted and ``path`` is left
    as it was. Missing parent folders of ``path`` are created.

    Example::

        with atomic_path("out.npy") as tmp:
            np.save(tmp, array)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.partial-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp} was not written; {path} is left unchanged")
        if fsync:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> None:
    """Write ``obj`` as JSON (indent 2 unless given, trailing newline) to ``path`` atomically.

    Extra keyword arguments go to ``json.dumps`` (for example ``sort_keys=True``).
    """
    dumps_kwargs.setdefault("indent", 2)
    atomic_write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")
