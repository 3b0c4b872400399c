"""Users' files on the server's disk, written whole or not at all: a full disk is DiskFull, never a partial file.

ENOSPC (the disk is full), EDQUOT (the quota is) and EFBIG (the file passed a size limit, such as
RLIMIT_FSIZE, which Python reports as this error because it ignores SIGXFSZ) all mean the same here:
no room, so nothing of the file is kept and the page says so in words.
"""

import contextlib
import errno
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
NOTHING_IMPORTED = "The server's disk is full; nothing was imported."
NOTHING_SAVED = "The server's disk is full; nothing was saved."
IMPORT_STOPPED = "The server's disk is full; the import stopped there."  # for a job that met it mid-way
SQLITE_FULL = 13  # "database or disk is full"
POSTGRES_DISK_FULL = "53100"
MAX_CAUSES = 10  # how deep is_no_room follows the chain of causes


class DiskFull(Exception):  # noqa: N818 - named for what happened, like FileNotFoundError
    """No room on the server's disk; nothing of the file was kept. The message is for the page."""

    def __init__(self, message: str = NOTHING_IMPORTED):
        super().__init__(message)
        self.message = message


def is_no_room(error: BaseException | None) -> bool:
    """True for a full disk met by a file write, or by the database (SQLite beside the uploads, or PostgreSQL)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen and len(seen) < MAX_CAUSES:  # `raise e from e` loops
        seen.add(id(error))
        if isinstance(error, DiskFull) or (isinstance(error, OSError) and error.errno in NO_ROOM):
            return True
        if getattr(error, "sqlite_errorcode", None) == SQLITE_FULL or getattr(error, "sqlstate", None) == \
                POSTGRES_DISK_FULL:
            return True
        error = getattr(error, "orig", None) or error.__cause__  # SQLAlchemy wraps the driver's error
    return False


@contextlib.contextmanager
def no_room_is_disk_full(message: str = NOTHING_IMPORTED) -> Iterator[None]:
    """Turn an OSError meaning "no room" raised inside into DiskFull(message); other errors pass unchanged."""
    try:
        yield
    except OSError as error:
        if error.errno in NO_ROOM:
            raise DiskFull(message) from error
        raise


def chunks_up_to(stream: BinaryIO, limit: int, too_large: Exception, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    """An upload's stream in pieces for write_new_file; raises `too_large` once it passes `limit` bytes."""
    size = 0
    while chunk := stream.read(chunk_size):
        size += len(chunk)
        if size > limit:
            raise too_large
        yield chunk


def write_new_file(path: Path, chunks: Iterable[bytes], message: str = NOTHING_IMPORTED) -> int:
    """Write chunks into a new owner-only file and onto the disk (fsync); returns its size.

    On any failure (DiskFull with `message`, or whatever the chunks raise, such as a size limit) the
    file is gone before the error leaves. fsync, because some filesystems report a full disk only
    when the data is flushed, which must happen here and not when the import job reads it.
    """
    with no_room_is_disk_full(message):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    size = 0
    try:
        with no_room_is_disk_full(message), os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return size
