"""The main job for now: a Multi-Paxos cluster in the deterministic simulator.

    python -m paxosrsm.demo                 a narrated tour: writes, reads, failover
    python -m paxosrsm.demo --repl          type commands at the simulated cluster
    python -m paxosrsm.demo --nodes 5 --seed 7

The nodes run the real protocol core; the network, clock and disks are
simulated, so the same seed always tells the same story.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from .client.core import Outcome
from .config import ClusterConfig
from .sim.engine import MS, SEC, OpRecord, SimParams, Simulator

HELP = """commands:
  put KEY VALUE | get KEY | sget KEY (stale read) | del KEY | cas KEY OLD|- NEW
  crash N | restart N | pause N | resume N | isolate N | heal
  status | wait SECONDS | help | quit"""


def make_sim(nodes: int, seed: int, nack: bool) -> Simulator:
    params = SimParams(
        cfg=ClusterConfig(n_acceptors=nodes, nack=nack, snapshot_interval=50, log_retain=10),
        clients=1,
        faults=False,
        workload=False,
    )
    return Simulator(seed, params)


def status(sim: Simulator) -> str:
    lines = []
    for nid, sn in sorted(sim.nodes.items()):
        node = sn.node
        if node is None:
            lines.append(f"  node {nid}: down")
            continue
        role = "LEADER  " if node.is_leader else "follower"
        if sn.paused:
            role = "paused  "
        st = node.status()
        prom = st.promised if st.promised is not None else "-"
        snap = st.snapshot_slot if st.snapshot_slot is not None else "-"
        lines.append(
            f"  node {nid}: {role} applied through slot {node.applied:>4}  "
            f"promised ballot {prom}  snapshot@{snap}  durable records {len(sn.disk.durable)}"
        )
    return "\n".join(lines)


def show(rec: OpRecord, t0: int, sim: Simulator) -> str:
    ms = (sim.now - t0) / MS
    what = f"{rec.kind} {rec.key}" + (" " + " ".join(str(a) for a in rec.arg) if rec.arg else "")
    if rec.outcome == Outcome.OK:
        return f"  {what:<24} -> {rec.result!r:<10} ({ms:.1f} ms simulated)"
    return f"  {what:<24} -> {rec.outcome.value if rec.outcome else 'pending'} ({ms:.0f} ms)"


def run_cmd(sim: Simulator, line: str) -> str | None:
    try:
        words = shlex.split(line)
    except ValueError as e:
        return f"error: {e}"
    if not words:
        return ""
    cmd, args = words[0].lower(), words[1:]
    ids = set(sim.cfg.node_ids)

    def node_arg() -> int:
        if len(args) != 1 or not args[0].isdigit() or int(args[0]) not in ids:
            raise ValueError(f"expected one node id out of {sorted(ids)}")
        return int(args[0])

    try:
        t0 = sim.now
        if cmd in ("quit", "exit"):
            return None
        if cmd == "help":
            return HELP
        if cmd == "status":
            return status(sim)
        if cmd == "put" and len(args) == 2:
            return show(sim.call(100, "put", args[0], args[1]), t0, sim)
        if cmd == "get" and len(args) == 1:
            return show(sim.call(100, "get", args[0]), t0, sim)
        if cmd == "sget" and len(args) == 1:
            return show(sim.call(100, "get", args[0], stale=True), t0, sim)
        if cmd == "del" and len(args) == 1:
            return show(sim.call(100, "delete", args[0]), t0, sim)
        if cmd == "cas" and len(args) == 3:
            old = None if args[1] == "-" else args[1]
            return show(sim.call(100, "cas", args[0], old, args[2]), t0, sim)
        if cmd == "crash":
            sim.crash(node_arg())
            return "  crashed (un-fsynced writes lost)"
        if cmd == "restart":
            sim.restart(node_arg())
            return "  restarted from its durable records"
        if cmd == "pause":
            sim.pause(node_arg())
            return "  paused"
        if cmd == "resume":
            sim.resume(node_arg())
            return "  resumed"
        if cmd == "isolate":
            n = node_arg()
            sim.partition([n], [i for i in ids if i != n])
            return f"  node {n} cut off from the other nodes"
        if cmd == "heal":
            sim.partition()
            return "  network healed"
        if cmd == "wait" and len(args) == 1:
            sim.run_for(int(float(args[0]) * SEC))
            return status(sim)
    except ValueError as e:
        return f"error: {e}"
    return f"error: cannot parse {line.strip()!r}; type help"


def tour(sim: Simulator) -> None:
    def say(text: str) -> None:
        print(text, flush=True)

    n = len(sim.cfg.acceptor_ids)
    say(f"Starting {n} nodes (proposer + acceptor + learner each) in the simulator...")
    lead = sim.wait_for_leader()
    say(f"Node {lead} won phase 1 and leads (t={sim.now / MS:.0f} ms).\n")
    for line in ("put color blue", "get color", "cas color blue green", "cas color blue red"):
        say(f"> {line}\n{run_cmd(sim, line)}")
    say(f"\nStatus:\n{status(sim)}\n")
    if n == 1:
        say("One acceptor: nothing to fail over to. Try --nodes 3.")
        return
    say(f"Crashing the leader, node {lead}...")
    sim.crash(lead)
    t0 = sim.now
    rec = sim.call(100, "put", "color", "violet")
    new = sim.leader()
    say(show(rec, t0, sim))
    say(f"Node {new} took over; the write went through it.\n")
    say(f"> get color\n{run_cmd(sim, 'get color')}")
    say(f"\nRestarting node {lead}; it replays its log and catches up...")
    sim.restart(lead)
    sim.run_for(1 * SEC)
    say(status(sim))
    survivors = [i for i in sim.cfg.node_ids if i != new][: n // 2 + 1]
    say(f"\nCrashing a majority ({', '.join(map(str, survivors))}): no quorum, no decisions.")
    for i in survivors:
        sim.crash(i)
    t0 = sim.now
    rec = sim.call(100, "put", "color", "never", timeout_us=4 * SEC)
    say(show(rec, t0, sim) + "   <- refused to decide without a majority")
    for i in survivors:
        sim.restart(i)
    sim.run_for(2 * SEC)
    say("Majority back. Reading again:")
    t0 = sim.now
    after = sim.call(100, "get", "color")
    say(f"> get color\n{show(after, t0, sim)}")
    if after.result == "never":
        say(
            "  The 'unknown' write took effect after all: its leader kept it in flight\n"
            "  and it was chosen once a quorum returned. Unknown means exactly that."
        )
    say(f"\nFinal status:\n{status(sim)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paxosrsm.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=3, help="acceptors (odd: 1, 3, 5, 7...)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nack", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--repl", action="store_true", help="read commands from stdin")
    a = ap.parse_args(argv)
    if a.nodes < 1 or a.nodes % 2 == 0 or a.nodes > 15:
        ap.error("--nodes must be odd, between 1 and 15")
    sim = make_sim(a.nodes, a.seed, a.nack)
    if not a.repl:
        tour(sim)
        print("\nDone. `python -m paxosrsm.demo --repl` lets you drive it yourself.")
        return 0
    lead = sim.wait_for_leader()
    print(f"{a.nodes} simulated nodes; node {lead} leads. Type help.")
    while True:
        try:
            line = input("paxos> ") if sys.stdin.isatty() else sys.stdin.readline()
        except EOFError:
            break
        if not line:
            break
        out = run_cmd(sim, line)
        if out is None:
            break
        if out:
            print(out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
