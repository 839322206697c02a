"""The RTSP session state machine (RFC 2326 appendix A.1), in one table.

Anything not in the table is an error: the server answers 455 Method Not
Valid in This State. Methods that need no session (OPTIONS, DESCRIBE) and
keep-alives (GET_PARAMETER, SET_PARAMETER, OPTIONS with a Session header)
do not change state and are not listed.
"""

from __future__ import annotations

import enum


class SessionState(enum.Enum):
    """Where an RTSP session is: set up, playing, or gone."""

    READY = "ready"        # SETUP done, not playing (never played, or paused)
    PLAYING = "playing"
    CLOSED = "closed"      # torn down or timed out


# (state, method) -> next state
TRANSITIONS: dict[tuple[SessionState, str], SessionState] = {
    (SessionState.READY, "SETUP"): SessionState.READY,
    (SessionState.READY, "PLAY"): SessionState.PLAYING,
    (SessionState.READY, "TEARDOWN"): SessionState.CLOSED,
    # Not in RFC 2326's table, but live555 and MediaMTX accept it and some
    # clients pause a session that is already paused: answer 200, no change.
    (SessionState.READY, "PAUSE"): SessionState.READY,
    (SessionState.PLAYING, "SETUP"): SessionState.PLAYING,
    (SessionState.PLAYING, "PLAY"): SessionState.PLAYING,
    (SessionState.PLAYING, "PAUSE"): SessionState.READY,
    (SessionState.PLAYING, "TEARDOWN"): SessionState.CLOSED,
}


class InvalidTransition(Exception):
    """``method`` is not allowed in ``state`` (answer 455)."""

    def __init__(self, state: SessionState, method: str):
        super().__init__(f"{method} is not valid in state {state.value}")
        self.state = state
        self.method = method


def next_state(state: SessionState, method: str) -> SessionState:
    """The state after ``method`` in ``state``; raises InvalidTransition."""
    try:
        return TRANSITIONS[(state, method)]
    except KeyError:
        raise InvalidTransition(state, method) from None
