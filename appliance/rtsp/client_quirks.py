"""What particular RTSP clients need beyond the RFCs, keyed on User-Agent.

Kept in one table so each quirk is explicit, named and tested, and a
client that does not match gets standard behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClientQuirks:
    """Behaviour to switch on for one client."""

    # ffmpeg/libavformat (User-Agent "Lavf…") does not flush its MPEG-TS
    # demuxer at RTCP BYE, so it loses the last video frame unless the
    # stream ends with packets that close the open PES.
    flush_pes_at_end: bool = False


NO_QUIRKS = ClientQuirks()

# User-Agent prefix -> quirks
QUIRKS_BY_AGENT_PREFIX: tuple[tuple[str, ClientQuirks], ...] = (
    ("Lavf", ClientQuirks(flush_pes_at_end=True)),
)


def quirks_for(user_agent: str | None) -> ClientQuirks:
    """The quirks of the client that sent ``user_agent``."""
    if user_agent:
        for prefix, quirks in QUIRKS_BY_AGENT_PREFIX:
            if user_agent.startswith(prefix):
                return quirks
    return NO_QUIRKS
