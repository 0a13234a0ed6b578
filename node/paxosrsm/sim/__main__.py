"""Command line for the simulator.

python -m paxosrsm.sim run --seed 42 [-v]       replay one seed, with a trace
python -m paxosrsm.sim sweep --seeds 10000 --jobs 2 [--start 0] [--until-failure]

A sweep reports the simulated time it covered (the sum over its seeds, each
run to its end), so coverage compares with other projects' simulators.
With --until-failure it runs the seeds in order and stops at the first
failure, reporting how many seeds and how much simulated time it took.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import traceback

from .engine import SimulationFailure, run_seed


def _one(args: tuple[int, bool]) -> tuple[int, str | None, str, int]:
    """(seed, failure or None, summary, simulated microseconds)."""
    seed, wipe = args
    try:
        r = run_seed(seed, wipe=wipe)
        return seed, None, r.summary(), r.end_us
    except SimulationFailure as e:
        return seed, str(e), "", e.sim_us
    except Exception:  # a crash of the core is a failure of the seed, not of the sweep
        return seed, f"seed={seed} crashed:\n{traceback.format_exc()}", "", 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paxosrsm.sim", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run one seed")
    r.add_argument("--seed", type=int, required=True)
    r.add_argument("-v", "--verbose", action="store_true")
    r.add_argument("--no-wipe", action="store_true", help="leave out the disk-wipe fault")
    s = sub.add_parser("sweep", help="run many seeds")
    s.add_argument("--seeds", type=int, default=500)
    s.add_argument("--start", type=int, default=0)
    s.add_argument("--jobs", type=int, default=2)
    s.add_argument("--no-wipe", action="store_true", help="leave out the disk-wipe fault")
    s.add_argument("--until-failure", action="store_true", help="stop at the first failing seed")
    a = ap.parse_args(argv)
    if a.cmd == "run":
        try:
            res = run_seed(a.seed, verbose=a.verbose, wipe=not a.no_wipe)
        except SimulationFailure as e:
            print(e, file=sys.stderr)
            return 1
        print(res.summary())
        return 0
    if a.seeds < 1 or a.jobs < 1:
        ap.error("--seeds and --jobs must be positive")
    t0 = time.monotonic()
    failures: list[str] = []
    done = 0
    sim_us = 0
    seeds = [(i, not a.no_wipe) for i in range(a.start, a.start + a.seeds)]
    with multiprocessing.Pool(a.jobs) as pool:
        results = (
            pool.imap(_one, seeds, chunksize=2)
            if a.until_failure
            else pool.imap_unordered(_one, seeds, chunksize=8)
        )
        for seed, err, _summary, us in results:
            done += 1
            sim_us += us
            if err is not None:
                failures.append(err)
                print(err, file=sys.stderr, flush=True)
                if a.until_failure:
                    print(
                        f"first failure: seed {seed}, after {done} seeds and "
                        f"{sim_us / 1e6:.0f} s ({sim_us / 3.6e9:.2f} h) of simulated time",
                        flush=True,
                    )
                    pool.terminate()
                    break
            if done % 500 == 0:
                print(f"{done}/{a.seeds} seeds, {len(failures)} failed", flush=True)
    dt = time.monotonic() - t0
    print(
        f"sweep: {done} seeds from {a.start}: {done - len(failures)} passed, "
        f"{len(failures)} failed in {dt:.0f}s; simulated time {sim_us / 1e6:.0f} s "
        f"({sim_us / 3.6e9:.2f} h)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
