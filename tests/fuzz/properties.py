"""Hypothesis over the fuzz targets and the session state machine.

``strategy_for(target)`` draws raw bytes and seeds mutated by hypothesis's
own randomness (so it can shrink a failure to a short edit of a real
request); ``ServerMachine`` sends requests in any order, with any session,
transport and range, to the sans-IO server and checks
``ServerHarness``'s invariants after every step.
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from tests.fuzz.mutate import mutate
from tests.fuzz.server import (BAD_SESSIONS, CREDENTIALS, METHODS, PEERS, RANGES, TITLES,
                               TRANSPORTS, ServerHarness)
from tests.fuzz.targets import Target

QUIET = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))


def strategy_for(target: Target) -> st.SearchStrategy[bytes]:
    """Inputs for ``target``: random bytes, or a seed with random edits."""
    seeds = list(target.seeds)
    return st.one_of(
        st.binary(max_size=min(target.max_len, 400)),
        st.builds(lambda r: mutate(r, seeds, target.max_len), st.randoms(use_true_random=False)))


def run_hypothesis(target: Target, examples: int, *, shrink: bool = True) -> int:
    """Run ``target`` on ``examples`` hypothesis inputs; the count run.
    A fault is raised as hypothesis reports it (shrunk unless ``shrink`` is off)."""
    count = 0
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])

    @settings(max_examples=examples, phases=phases, **QUIET)
    @given(strategy_for(target))
    def check(data: bytes) -> None:
        nonlocal count
        count += 1
        try:
            target.check(data)
        except target.allowed:
            pass

    check()
    return count


class ServerMachine(RuleBasedStateMachine):
    """The sans-IO RTSP server under requests in any order."""

    requests = 0    # across every run, for the campaign's count
    GATED = False   # GatedServerMachine: behind an auth gate

    def __init__(self) -> None:
        super().__init__()
        self.harness = ServerHarness(gated=self.GATED)

    @rule(method=st.sampled_from(METHODS), title=st.sampled_from(TITLES),
          track=st.sampled_from((None, 0, 1, 2)),
          session=st.one_of(st.none(), st.integers(0, 7), st.sampled_from(BAD_SESSIONS)),
          transport=st.sampled_from(TRANSPORTS), rng=st.sampled_from(RANGES),
          peer=st.sampled_from(PEERS), wait=st.sampled_from((0.0, 0.5, 20.0)),
          credential=st.sampled_from(CREDENTIALS))
    def request(self, method, title, track, session, transport, rng, peer, wait,
                credential) -> None:
        """One request; ServerHarness.answer checks the response."""
        ServerMachine.requests += 1
        self.harness.request(method, title, track, session, transport, rng, peer, wait,
                             credential if self.GATED else None)

    @rule(seconds=st.sampled_from((1.0, 30.0, 61.0)))
    def time_passes(self, seconds: float) -> None:
        """Idle sessions expire on the server's timer."""
        self.harness.tick(seconds)

    @invariant()
    def nothing_leaks(self) -> None:
        """Streams belong to live sessions or are closed."""
        self.harness.check_sessions()

    def teardown(self) -> None:
        """Closing everything closes every stream."""
        self.harness.close()


class GatedServerMachine(ServerMachine):
    """The same behind an auth gate, requests with any credentials."""

    GATED = True


def run_machine(examples: int, steps: int = 30, gated: bool = False) -> int:
    """Run the state machine for ``examples`` sequences; the requests sent."""
    before = ServerMachine.requests
    machine = GatedServerMachine if gated else ServerMachine
    run_state_machine_as_test(machine, settings=settings(
        max_examples=examples, stateful_step_count=steps, **QUIET))
    return ServerMachine.requests - before
