"""cffi build script (out-of-line, API mode) for the rtpengine C modules.

Two raw modules, each exporting only ``ffi`` and ``lib``:
``rtpengine._kvod_engine`` (pacing threads and send strategies) and
``rtpengine._kvod_index`` (the media indexers' per-packet scans). The cdef
is read from the C headers themselves, between the markers
``KVOD_CDEF_BEGIN`` and ``KVOD_CDEF_END``, so the C and its Python view
cannot drift apart.

    /usr/bin/python3 -m rtpengine.csrc.build [-v] [MODULE ...]

``KVOD_EXTRA_CFLAGS`` adds flags (the ASan/UBSan build uses it), and
``KVOD_BUILD_DEST`` installs the modules in another folder instead of
beside this file (``make test-asan`` builds into ``build/asan``, which
``KVOD_EXT_DIR`` then puts first on the package's path), so a sanitised
build never replaces the normal one.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys
import tempfile

from cffi import FFI

CSRC = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.dirname(CSRC)
ROOT = os.path.dirname(PACKAGE)
UAPI = os.path.join(ROOT, "kernel", "uapi")

# module -> (headers whose marked parts form the cdef, in order; sources)
# (libraries beyond pthread are in LIBRARIES)
MODULES = {
    "_kvod_index": (["kvod_types.h", "ts_index.h", "mp4_index.h"],
                    ["ts_index.c", "mp4_index.c"]),
    "_kvod_engine": (["kvod_types.h", "engine.h", "guard.h"],
                     ["engine.c", "pacer.c", "batch.c", "send.c", "uring.c",
                      "filemap.c", "guard.c", "tcp.c"]),
}

# liburing (Debian: liburing-dev) for the uring_gso strategy
LIBRARIES = {"_kvod_engine": ["uring"]}

STRICT_CFLAGS = ["-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Werror",
                 "-D_GNU_SOURCE", "-fvisibility=hidden"]

_MARKED = re.compile(r"/\* KVOD_CDEF_BEGIN \*/(.*?)/\* KVOD_CDEF_END \*/", re.S)


def read_cdef(headers: list[str]) -> str:
    """The concatenated marked sections of ``headers``."""
    parts = []
    for name in headers:
        with open(os.path.join(CSRC, name)) as f:
            text = f.read()
        found = _MARKED.findall(text)
        if not found:
            raise SystemExit(f"{name}: no KVOD_CDEF_BEGIN/END section")
        parts.extend(found)
    # cffi's parser does not know the visibility macro.
    return re.sub(r"\bKVOD_API\b", "", "\n".join(parts))


def make_ffi(module: str, extra_cflags: list[str] | None = None) -> FFI:
    """An FFI set up to compile ``module`` (``extra_cflags`` e.g. for ASan)."""
    headers, sources = MODULES[module]
    ffi = FFI()
    ffi.cdef(read_cdef(headers))
    includes = "".join(f'#include "{h}"\n' for h in headers)
    flags = STRICT_CFLAGS + (extra_cflags or [])
    ffi.set_source(
        f"rtpengine.{module}", includes,
        sources=[os.path.join(CSRC, s) for s in sources],
        include_dirs=[CSRC, UAPI],
        extra_compile_args=flags,
        extra_link_args=[f for f in flags if f.startswith("-fsanitize")],
        libraries=["pthread"] + LIBRARIES.get(module, []),
    )
    return ffi


def build(module: str, verbose: bool = False) -> str:
    """Compile ``module`` and install it beside this file (or in
    ``$KVOD_BUILD_DEST``); returns its path."""
    extra = os.environ.get("KVOD_EXTRA_CFLAGS", "").split()
    dest_dir = os.path.abspath(os.environ.get("KVOD_BUILD_DEST") or PACKAGE)
    os.makedirs(dest_dir, exist_ok=True)
    ffi = make_ffi(module, extra)
    os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
    # a private build folder, so parallel builds cannot trample each other
    with tempfile.TemporaryDirectory(dir=os.path.join(ROOT, "build")) as tmpdir:
        built = ffi.compile(tmpdir=tmpdir, verbose=verbose)
        for old in glob.glob(os.path.join(dest_dir, f"{module}.*.so")):
            os.unlink(old)
        # copy, then rename: a running process keeps its mapping of the old file
        dest = os.path.join(dest_dir, os.path.basename(built))
        shutil.copyfile(built, dest + ".tmp")
        os.replace(dest + ".tmp", dest)
    return dest


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    names = [a for a in argv if not a.startswith("-")] or list(MODULES)
    for name in names:
        if name not in MODULES:
            print(f"unknown module {name!r}; known: {', '.join(MODULES)}", file=sys.stderr)
            return 2
        build(name, verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
