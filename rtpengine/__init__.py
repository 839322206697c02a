"""kvod's data path: media indexers, RTP, the C engine and its benchmarks.

``$KVOD_EXT_DIR``, when set, is searched before this folder for the
compiled cffi modules: ``make test-asan`` points it at the sanitised build
in ``build/asan`` without touching the normal modules here.
"""

import os as _os

if _os.environ.get("KVOD_EXT_DIR"):
    __path__.insert(0, _os.environ["KVOD_EXT_DIR"])
