"""``make fuzz``: the long campaign over every target.

    python3 -m tests.fuzz.run [--inputs 1000000] [--hypothesis 300]
                              [--machine 100] [--seed 1]

Three sources, each counted: the seeded mutator (``--inputs`` in all,
shared by the targets' weights, plus the session random walk), hypothesis
over each target (``--hypothesis`` examples each), and hypothesis's state
machine over the sans-IO server (``--machine`` sequences). Prints the count
per target and source and the total; a fault prints the input and its
traceback, is saved under build/fuzz/, and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass, field

from tests.fuzz.mutate import mutate
from tests.fuzz.targets import Target, targets

WALK_WEIGHT = 2      # the session random walk's share, beside the targets' weights
WALK_STEPS = 40      # requests per walk before a fresh server
MAX_FAULTS = 5       # per target: the first few are enough to fix


@dataclass
class Result:
    """What running one target found."""

    name: str
    inputs: int = 0
    seconds: float = 0.0
    faults: list[tuple[bytes, str]] = field(default_factory=list)


def run_target(target: Target, inputs: int, seed: int) -> Result:
    """``target`` on ``inputs`` mutated seeds from ``random.Random(seed)``."""
    rng = random.Random(f"{seed}:{target.name}")
    seeds = list(target.seeds)
    result = Result(target.name)
    started = time.process_time()
    for _ in range(inputs):
        data = mutate(rng, seeds, target.max_len)
        result.inputs += 1
        try:
            target.check(data)
        except target.allowed:
            pass
        except Exception:  # noqa: BLE001 (anything else is what we look for)
            result.faults.append((data, traceback.format_exc()))
            if len(result.faults) >= MAX_FAULTS:
                break
    result.seconds = time.process_time() - started
    return result


def run_walk(requests: int, seed: int) -> Result:
    """The session random walk: at least ``requests`` requests, in walks of
    WALK_STEPS steps, each on a fresh server."""
    from tests.fuzz.server import ServerHarness
    harnesses = [ServerHarness(), ServerHarness(gated=True)]
    rng = random.Random(f"{seed}:walk")
    result = Result("session_walk")
    started = time.process_time()
    try:
        while result.inputs < requests:
            # every other walk behind the auth gate; a tick is a step too,
            # so a walk sends a few fewer requests than it has steps
            harness = harnesses[result.inputs % 2]
            result.inputs += harness.walk(rng, WALK_STEPS)
    except Exception:  # noqa: BLE001
        result.faults.append((repr(harness.server.sessions).encode(), traceback.format_exc()))
    result.seconds = time.process_time() - started
    return result


def shares(total: int, weights: dict[str, int]) -> dict[str, int]:
    """``total`` split by ``weights``; the remainder goes to the first."""
    whole = sum(weights.values())
    out = {name: total * w // whole for name, w in weights.items()}
    out[next(iter(out))] += total - sum(out.values())
    return out


def campaign(inputs: int, hypothesis_examples: int, machine_examples: int, seed: int,
             out=None) -> list[Result]:
    """Run everything; print (to ``out``, default stdout) and return the results."""
    out = out or sys.stdout
    from tests.fuzz.properties import run_hypothesis, run_machine
    # the gate logs every refusal: a million lines of noise
    logging.disable(logging.CRITICAL)
    all_targets = targets()
    split = shares(inputs, {**{t.name: t.weight for t in all_targets},
                            "session_walk": WALK_WEIGHT})
    results = []
    print(f"{'target':<18}{'source':<12}{'inputs':>10}{'faults':>8}{'cpu s':>9}", file=out)

    def report(result: Result, source: str) -> None:
        results.append(result)
        print(f"{result.name:<18}{source:<12}{result.inputs:>10}{len(result.faults):>8}"
              f"{result.seconds:>9.1f}", file=out, flush=True)

    for target in all_targets:
        report(run_target(target, split[target.name], seed), "mutator")
    report(run_walk(split["session_walk"], seed), "mutator")
    for target in all_targets:
        if hypothesis_examples:
            report(_hypothesis(target.name, lambda t=target: run_hypothesis(
                t, hypothesis_examples)), "hypothesis")
    if machine_examples:
        report(_hypothesis("session_machine", lambda: run_machine(machine_examples)),
               "hypothesis")
        report(_hypothesis("session_auth", lambda: run_machine(machine_examples, gated=True)),
               "hypothesis")
    total = sum(r.inputs for r in results)
    faults = sum(len(r.faults) for r in results)
    print(f"{'total':<30}{total:>10}{faults:>8}{sum(r.seconds for r in results):>9.1f}",
          file=out)
    return results


def _hypothesis(name: str, run) -> Result:
    result = Result(name)
    started = time.process_time()
    try:
        result.inputs = run()
    except Exception:  # noqa: BLE001 (hypothesis re-raises the shrunk fault)
        result.faults.append((b"", traceback.format_exc()))
    result.seconds = time.process_time() - started
    return result


def save_faults(results: list[Result], folder: str = "build/fuzz") -> None:
    """Print every fault and keep its input for a regression test."""
    for result in results:
        for n, (data, trace) in enumerate(result.faults):
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"{result.name}-{n}.bin")
            with open(path, "wb") as f:
                f.write(data)
            print(f"\nFAULT in {result.name} (input in {path}): {data[:300]!r}\n{trace}")


def main(argv: list[str] | None = None) -> int:
    """The command line; exit status 1 if anything was found."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=1_000_000,
                        help="mutated inputs in all (default 1000000)")
    parser.add_argument("--hypothesis", type=int, default=300,
                        help="hypothesis examples per target (default 300)")
    parser.add_argument("--machine", type=int, default=100,
                        help="state machine sequences of 30 steps (default 100)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    results = campaign(args.inputs, args.hypothesis, args.machine, args.seed)
    save_faults(results)
    return 1 if any(r.faults for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
