"""Reading the files a configuration names (the config file and its story
files) with bounds, so that no file can hang or exhaust the daemon:

- only a regular file is read: a FIFO would block the reader until a
  writer comes, a device (/dev/zero, /dev/urandom) never ends, a socket or
  a directory holds no text. The type is checked before opening (so that
  opening a device has no side effect) and again on the descriptor (so
  that a file swapped in between is caught);
- the file is opened with O_NONBLOCK, so that even a FIFO that appears
  between the two checks returns at once instead of waiting for a writer;
- at most MAX_FILE_BYTES are read; a larger file is refused, never cut;
- a file holding a secret (a TSIG secret, a DNSSEC private key) is refused
  when its mode lets anyone in but its owner (and, for a TSIG secret, its
  group): `check_secret_mode`, the one rule both follow.

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


def secret_mode_refusal(mode: int, group_may_read: bool) -> str | None:
    """Why a file holding a secret, of this st_mode, must not be used (its
    end ready for "refusing <what>: "), or None. Only its owner may write
    it; only its owner may read it, and its group too when
    `group_may_read`.

    The allowance is the one difference between the secrets route-chain
    reads. A TSIG secret is shared by design: the same key sits in the
    secondaries' configs, and on one host the file is commonly kept
    0640 root:bind (or knot) so that the name server's group reads it too;
    so its group may read it (never write it). A DNSSEC private key is the
    daemon's own: made by it, read by nobody else, and whoever reads it can
    sign for the zones; so only its owner may (0600, as the daemon makes it)."""
    if not stat.S_ISREG(mode):
        return "not a regular file"
    bad = mode & 0o077 & ~(0o040 if group_may_read else 0)
    if not bad:
        return None
    who = " and ".join(w for w, bits in (("group", 0o070), ("others", 0o007)) if bad & bits)
    fix = "g-wx,o-rwx" if group_may_read else "600"
    return f"readable or writable by {who} (mode {stat.S_IMODE(mode):04o}); chmod {fix} it"


def check_secret_mode(mode: int, source: str, what: str, group_may_read: bool) -> None:
    """ConfigError "<source>: refusing <what>: <reason>" when
    `secret_mode_refusal` refuses the file of st_mode `mode`."""
    reason = secret_mode_refusal(mode, group_may_read)
    if reason is not None:
        raise ConfigError(f"{source}: refusing {what}: {reason}")


def _check_regular(mode: int, source: str, what: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise ConfigError(f"{source}: cannot read {what}: {kind}, not a regular file")


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n} bytes"
