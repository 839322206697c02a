"""What systemd sees of the daemon (``Type=notify``): a live ``STATUS=``
line, the watchdog, and the journal.

Two small sans-IO pieces (time and figures come in as arguments) and the
glue that sends what they decide:

- :class:`StatusLine` turns successive status snapshots into the line
  ``systemctl status kvod`` shows: sessions, Mb/s out, cache use, engine.
- :class:`Watchdog` says whether the data path makes progress: a pacing
  thread that stopped serving its playing streams (or an engine call that
  no longer returns) must get the daemon restarted, so ``WATCHDOG=1`` is
  sent only while the engine's rounds advance whenever a stream plays.

READY=1 and STOPPING=1 are sent by the daemon at those moments
(``appliance.daemon``); :func:`notify` is a no-op outside systemd.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger(__name__)


def under_systemd() -> bool:
    """Whether systemd started this process as a service (notify socket)."""
    return bool(os.environ.get("NOTIFY_SOCKET"))


def notify(message: str) -> None:
    """Tell systemd ``message`` (``READY=1``, ``STATUS=…``) when it listens."""
    if not under_systemd():
        return
    try:
        from systemd import daemon as sd_daemon
    except ImportError:
        return
    sd_daemon.notify(message)


def watchdog_interval() -> Optional[float]:
    """Seconds between two ``WATCHDOG=1`` (half of ``WATCHDOG_USEC``), or None
    when systemd asked for no watchdog (or asked another process)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


def journal_logging(level: int, sender=None) -> bool:
    """Send the root logger's records to the journal when systemd captures
    this process's output there (``JOURNAL_STREAM``), with each record's
    extra fields (``SESSION_ID``, ``TITLE``: ``appliance.rtsp.sessions.log_fields``)
    as journal fields; False when it did not (stderr stays). ``sender``
    replaces ``systemd.journal.send`` (tests)."""
    if not os.environ.get("JOURNAL_STREAM"):
        return False
    try:
        from systemd.journal import JournalHandler, send
    except ImportError:
        return False
    handler = JournalHandler(SYSLOG_IDENTIFIER="kvod", sender_function=sender or send)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return True


def _megabits(octets: int, seconds: float) -> float:
    return octets * 8 / seconds / 1e6 if seconds > 0 else 0.0


class StatusLine:
    """The ``STATUS=`` text from status snapshots taken now and then.

    Mb/s out is the payload bytes sent between two snapshots by the streams
    present in both (a stream that closed in between no longer counts; one
    that opened counts from its first byte)."""

    def __init__(self) -> None:
        self._octets: dict[tuple[str, str], int] = {}
        self._at: Optional[float] = None

    def line(self, snapshot: dict, cache: Optional[dict], now: float) -> str:
        """The line for ``snapshot`` (``appliance.status.daemon_status``) and
        ``cache`` (used and quota bytes), taken at ``now`` (seconds)."""
        octets: dict[tuple[str, str], int] = {}
        for session in snapshot["sessions"]:
            for track, stream in session["streams"].items():
                octets[(session["id"], track)] = stream.get("payload_octets", 0)
        sent = sum(max(value - self._octets.get(key, 0), 0) for key, value in octets.items())
        rate = _megabits(sent, now - self._at) if self._at is not None else 0.0
        self._octets, self._at = octets, now
        totals = snapshot["totals"]
        engine = snapshot["engine"]
        parts = [f"{totals['sessions']} sessions ({totals['playing']} playing)",
                 f"{rate:.1f} Mb/s out"]
        if cache is not None:
            used, quota = cache["used_bytes"], cache["quota_bytes"]
            parts.append(f"cache {_gib(used)} of {_gib(quota)} GiB" if quota
                         else f"cache {_gib(used)} GiB, no quota")
        parts.append(f"engine {engine['strategy']}")
        return ", ".join(parts)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}"


@dataclass(frozen=True)
class Progress:
    """What the watchdog looks at: the engine's rounds so far, and the
    packets sent so far by each stream that is playing."""

    rounds: int
    playing: dict[tuple[str, str], int]


class Watchdog:
    """Decides, at each tick, whether the data path is healthy."""

    def __init__(self) -> None:
        self._last: Optional[Progress] = None

    def healthy(self, now: Progress) -> bool:
        """True unless some stream played at the last tick and now, and
        neither the engine made a round nor any such stream sent a packet."""
        last, self._last = self._last, now
        if last is None:
            return True
        both = [key for key in now.playing if key in last.playing]
        if not both:
            return True
        return now.rounds > last.rounds or any(
            now.playing[key] > last.playing[key] for key in both)


def engine_progress(engine_status: dict, snapshot: dict) -> Progress:
    """The watchdog's figures from a status snapshot. Taking it reads every
    pacer's counters under the pacer's lock: a thread stuck holding it
    blocks the call, the watchdog is missed, and systemd restarts us. The
    kernel engine has no rounds of ours; its streams' packets count."""
    playing = {(session["id"], track): int(stream.get("packets_sent", 0))
               for session in snapshot["sessions"]
               for track, stream in session["streams"].items()
               if stream.get("state") == "playing"}
    return Progress(rounds=int(engine_status.get("rounds", 0)), playing=playing)


def log_to_stderr(level: int) -> None:
    """Plain lines on stderr: the daemon outside systemd."""
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
