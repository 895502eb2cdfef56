"""cffi API-mode build of the C core: `pip install .` runs it through
setup.py's cffi_modules; it is never imported at run time."""

from pathlib import Path

from cffi import FFI

CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = ["reply.c", "table.c", "pace.c", "book.c", "pool.c", "serve.c", "worker.c", "dnsfast.c"]

ffibuilder = FFI()
ffibuilder.cdef((CSRC / "routechain.h").read_text() + (CSRC / "dnsfast.h").read_text())
ffibuilder.set_source(
    "routechain._core",
    "#include <stdint.h>\n#include <stddef.h>\n#include \"routechain.h\"\n#include \"dnsfast.h\"\n",
    # setuptools wants paths relative to the project root, where pip runs us.
    sources=[f"csrc/{name}" for name in SOURCES],
    include_dirs=["csrc"],
    # Every header, so that a build left in build/ recompiles each .c file
    # after a header changes (setuptools compares times with these too):
    # a struct that moved in routechain.h must never meet an object file
    # built against the old one.
    depends=sorted(f"csrc/{h.name}" for h in CSRC.glob("*.h")),
    extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror",
                        "-Wno-unused-parameter", "-D_GNU_SOURCE"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
