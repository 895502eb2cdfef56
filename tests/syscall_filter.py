"""The unit's SystemCallFilter=, for running the daemon without systemd.

systemd compiles `SystemCallFilter=@system-service` followed by
`SystemCallFilter=~@privileged @resources` into a seccomp allow list: the
first group's system calls less the other two's, anything else failing
with SystemCallErrorNumber= (EPERM). This module builds the same list,
naming the groups' members with `systemd-analyze syscall-filter` (so it
follows systemd's own definitions) and numbering them from the kernel
headers, and installs it as a classic-BPF seccomp filter:

    python syscall_filter.py NR,NR,... PROGRAM ARGS...

installs the filter (no-new-privileges must already be set, e.g. by
`setpriv --no-new-privs`) and executes PROGRAM under it. x86-64 only, as
`SystemCallArchitectures=native` is here; another architecture is killed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
import subprocess
import sys

UNISTD = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
AUDIT_ARCH_X86_64 = 0xC000003E

# linux/filter.h, linux/seccomp.h
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
OFFSET_NR, OFFSET_ARCH = 0, 4


def group(name: str, analyze: str = "systemd-analyze") -> set[str]:
    """The system calls of a group such as `@system-service`, nested groups
    expanded."""
    out = subprocess.run([analyze, "syscall-filter", name], check=True,
                         capture_output=True, text=True, timeout=60).stdout
    calls: set[str] = set()
    for line in out.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line == name:
            continue
        calls |= group(line, analyze) if line.startswith("@") else {line}
    return calls


def numbers(names: set[str], header: str = UNISTD) -> set[int]:
    """x86-64 numbers of the names this kernel header knows."""
    table = {m.group(1): int(m.group(2)) for m in
             re.finditer(r"#define __NR_(\w+)\s+(\d+)", open(header).read())}
    return {table[n] for n in names if n in table}


def unit_allow_list(analyze: str = "systemd-analyze") -> set[int]:
    """route-chain.service's SystemCallFilter= lines, as numbers."""
    allowed = group("@system-service", analyze)
    allowed -= group("@privileged", analyze) | group("@resources", analyze)
    return numbers(allowed)


def program(allowed: set[int], errno_value: int = errno.EPERM) -> bytes:
    """Classic BPF: kill a foreign architecture, allow each listed number,
    fail the rest with `errno_value`. Two instructions per number keep
    every jump short."""
    def insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    code = [insn(BPF_LD_W_ABS, OFFSET_ARCH),
            insn(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
            insn(BPF_RET_K, SECCOMP_RET_KILL_PROCESS),
            insn(BPF_LD_W_ABS, OFFSET_NR)]
    for nr in sorted(allowed):
        code += [insn(BPF_JEQ_K, nr, 0, 1), insn(BPF_RET_K, SECCOMP_RET_ALLOW)]
    code.append(insn(BPF_RET_K, SECCOMP_RET_ERRNO | errno_value))
    return b"".join(code)


def install(allowed: set[int]) -> None:
    code = program(allowed)

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    prog = SockFprog(len(code) // 8, code)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"PR_SET_SECCOMP: {os.strerror(err)}")


if __name__ == "__main__":
    install({int(n) for n in sys.argv[1].split(",")})
    os.execv(sys.argv[2], sys.argv[2:])
