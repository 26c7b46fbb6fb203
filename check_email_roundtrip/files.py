"""The files the plugin keeps: private, written atomically, never through a link.

Every file the plugin creates (state, token cache, locks) is mode 0600 in a
directory it creates 0700; the one exception is the Prometheus textfile
(0644, in a directory it never creates: see ``textfile.py``).  A file is
written by writing a new file in the same directory and renaming it into
place: a reader sees the old content or the new, never half; a crash leaves
the old one; and a symbolic link at the path is replaced, never followed, so
a link planted (or mistyped) towards another file cannot make us overwrite
that file.  Reads open with O_NOFOLLOW and O_NONBLOCK and accept regular
files only, up to a size limit: a FIFO or /dev/zero cannot stall or swamp a
run.  Locks wait inside the run's budget.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

from .deadline import Deadline

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing (see record.py)
if TYPE_CHECKING:
    from typing import Any

LOCK_POLL = 0.01  # seconds between attempts to take a busy lock


class NotARegularFile(OSError):
    pass


def read_private(path: str, limit: int, follow_links: bool = False) -> bytes | None:
    """The file's bytes (at most ``limit``), or None when it does not exist.
    OSError (with strerror) when it is a link (unless ``follow_links``: a
    secret an admin keeps elsewhere), not a regular file, or too big."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotARegularFile(errno.ELOOP, "is a symbolic link", path) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(errno.EINVAL, "is not a regular file", path)
        if info.st_size > limit:
            raise NotARegularFile(errno.EFBIG, f"is larger than {limit} bytes", path)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise NotARegularFile(errno.EFBIG, f"is larger than {limit} bytes", path)
        return b"".join(chunks)
    finally:
        os.close(fd)


def make_private_dir(directory: str) -> None:
    os.makedirs(directory or ".", mode=0o700, exist_ok=True)


def write_private(
    path: str,
    data: bytes,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
    make_directory: bool = True,
) -> None:
    """Replace ``path`` atomically with ``data`` (a new file renamed into
    place); ``make_directory``: create a missing directory (0700) first."""
    import tempfile  # only when writing: a run that fails early never needs it

    directory = os.path.dirname(path) or "."
    if make_directory:
        make_private_dir(directory)
    fd, temporary = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *owner)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(temporary, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


class FileLock:
    """An exclusive flock on a private lock file, waited for inside the budget."""

    def __init__(self, path: str, deadline: Deadline):
        self.path, self.deadline = path, deadline
        self.fd = -1

    def __enter__(self) -> FileLock:
        make_private_dir(os.path.dirname(self.path) or ".")
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        ends = self.deadline.step_ends()  # a step's time; after -t, the grace
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                left = ends - time.monotonic()
                if left <= 0:
                    os.close(self.fd)
                    self.fd = -1
                    raise TimeoutError(errno.EAGAIN, "its lock is held by another run") from None
                time.sleep(min(LOCK_POLL, left))

    def __exit__(self, *exc: Any) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing releases the lock
            self.fd = -1
