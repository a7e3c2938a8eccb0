"""What a path is, found without opening it: every reader of a file refuses a FIFO, socket or device before
opening it, since opening a FIFO to read waits for a writer, for ever (a detector whose head.safetensors was a
FIFO hung `detect`)."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path
from typing import BinaryIO

from stages.contracts.errors import InputError


def special_kind(path: Path) -> str | None:
    """None for a regular file, a link to one, or a path that names nothing; else what it is ("a folder",
    "a FIFO", a socket, a device, a link that loops or points nowhere), found without opening it: opening a
    FIFO to read waits for a writer, for ever."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "a link that loops or points nowhere" if path.is_symlink() else None
    if stat.S_ISREG(mode):
        return None
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "a special file"


def regular_or_absent(path: Path | str, *, what: str) -> Path:
    """`path`, unless something other than a regular file is there: then an InputError naming the path, what it
    is and `what` was expected (a missing path is left to the reader, which names the stage that writes it)."""
    path = Path(path)
    kind = special_kind(path)
    if kind:
        raise InputError(str(path), f"is {kind}, not {what}; not opened (remove it, and rerun the stage that "
                         "writes it)")
    return path


def content_digest(stream: BinaryIO) -> str:
    """A BLAKE2b digest (16 bytes, hex) of everything `stream` holds from its start, read a block at a time:
    the one content hash of imports and benchmarks (byte-identical files have the same digest)."""
    stream.seek(0)
    return hashlib.file_digest(stream, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def file_digest(path: Path | str) -> str | None:
    """`content_digest` of a regular file's bytes; None for what is not one (missing, special, unreadable): its
    reader reports that."""
    path = Path(path)
    if special_kind(path) or not path.is_file():
        return None
    try:
        with path.open("rb") as stream:
            return content_digest(stream)
    except OSError:
        return None
