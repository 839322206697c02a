"""Which engine sends: the kernel's (krtp, /dev/krtp) or the user-space one.

``open_engine(backend, threads, strategy)`` returns an engine with the
interface of :class:`rtpengine.engine.Engine` and a sentence saying which
it is and why, for the daemon's log and status:

- ``"auto"``: krtpsendfile when /dev/krtp exists and the ABI handshake
  passes, else the user-space engine;
- ``"krtpsendfile"`` or ``"krtpmsend"``: that kernel call, or an error if
  the module cannot be used;
- ``"userspace"``: the user-space engine even where the module is loaded.

``strategy`` is the user-space engine's; with krtp it is the strategy of
the user-space engine the kernel engine keeps for the streams the module
does not take (titles still filling, shared sockets).
"""

from __future__ import annotations

import errno
from typing import Iterable, Union

from . import krtp
from .engine import Engine, EngineError

BACKENDS = ("auto", "userspace", *krtp.STRATEGIES)
AnyEngine = Union[Engine, krtp.KrtpEngine]


def open_engine(backend: str = "auto", threads: int = 0, strategy: str = "auto",
                refuse: Iterable[str] = (), device: str = krtp.DEVICE,
                lookahead_ns: int = 0, burst_ns: int = 0,
                pacing: str = "auto") -> tuple[AnyEngine, str]:
    """The engine to send with, and why it is that one. ``refuse``,
    ``lookahead_ns``, ``burst_ns`` and ``pacing`` (its streams' default:
    auto, engine or kernel) go to the user-space engine (kernel features
    to treat as refused, its batching; see
    :class:`rtpengine.engine.Engine`)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown engine backend {backend!r}; known: {', '.join(BACKENDS)}")
    why_not = ""
    if backend != "userspace":
        ok, why = krtp.available(device)
        if ok:
            call = "krtpsendfile" if backend == "auto" else backend
            eng = krtp.KrtpEngine(strategy=call, path=device, threads=threads,
                                  userspace_strategy=strategy, refuse=tuple(refuse),
                                  lookahead_ns=lookahead_ns, burst_ns=burst_ns)
            eng.requested_strategy = backend
            return eng, f"kernel engine {call} ({why})"
        if backend != "auto":
            raise EngineError(errno.ENODEV, f"engine backend {backend} asked for, but {why}")
        why_not = f"; krtp not used: {why}"
    eng = Engine(threads=threads, strategy=strategy, refuse=refuse,
                 lookahead_ns=lookahead_ns, burst_ns=burst_ns, pacing=pacing)
    return eng, (f"{eng.strategy} strategy (asked {strategy}), {eng.threads} thread(s), "
                 f"user space{why_not}")
