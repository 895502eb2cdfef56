"""Reading the files a configuration names (the config file and its story
files) with bounds, so that no file can hang or exhaust the daemon:

- only a regular file is read: a FIFO would block the reader until a
  writer comes, a device (/dev/zero, /dev/urandom) never ends, a socket or
  a directory holds no text. The type is checked before opening (so that
  opening a device has no side effect) and again on the descriptor (so
  that a file swapped in between is caught);
- the file is opened with O_NONBLOCK, so that even a FIFO that appears
  between the two checks returns at once instead of waiting for a writer;
- at most MAX_FILE_BYTES are read; a larger file is refused, never cut.

Errors are ConfigError naming the file as the user wrote it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import ConfigError

MAX_FILE_BYTES = 1 << 20  # 1 MiB: a 255-line story or a few thousand chains fit many times

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"))


def read_bytes(path: Path, source: str, what: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The content of the regular file at `path`; `source` names it in
    messages and `what` says what it is ("config", "story")."""
    try:
        _check_regular(os.stat(path).st_mode, source, what)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise ConfigError(f"{source}: cannot read {what}: {e.strerror}") from None
    try:
        _check_regular(os.fstat(fd).st_mode, source, what)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise ConfigError(f"{source}: cannot read {what}: {e.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise ConfigError(f"{source}: {what} file is larger than {_size(limit)}: "
                          f"route-chain reads at most {_size(limit)}")
    return b"".join(chunks)


def _check_regular(mode: int, source: str, what: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise ConfigError(f"{source}: cannot read {what}: {kind}, not a regular file")


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n} bytes"
