"""A hand-driven network for scripted message orders (from the review of 2026-11-27)."""

from __future__ import annotations

from paxosrsm.config import ClusterConfig
from paxosrsm.messages import *
from paxosrsm.node import Node
from paxosrsm.records import DurableState
from paxosrsm.types import Kind


class Net:
    def __init__(self, n, **kw):
        self.cfg = ClusterConfig(n_acceptors=n, **kw)
        self.disk = {i: [] for i in self.cfg.node_ids}
        self.nodes = {i: Node(self.cfg, i, seed=i) for i in self.cfg.node_ids}
        self.pool = []  # envelopes in flight
        self.replies = []
        for i in self.nodes:
            self.flush(i)

    def flush(self, i):
        rd = self.nodes[i].ready()
        self.disk[i].extend(rd.records)
        self.pool.extend(rd.messages)
        self.replies.extend(rd.replies)

    def take(self, pred):
        got = [e for e in self.pool if pred(e)]
        self.pool = [e for e in self.pool if not pred(e)]
        return got

    def deliver(self, pred, drop_rest=False):
        n = 0
        while True:
            got = self.take(pred)
            if not got:
                return n
            for e in got:
                if e.dst in self.nodes:
                    self.nodes[e.dst].step(e.src, e.msg)
                    self.flush(e.dst)
                    n += 1

    def wipe(self, i):
        self.disk[i] = []
        self.nodes[i] = Node(self.cfg, i, DurableState(), seed=100 + i, initial_state="existing")
        self.flush(i)

    def elect(self, i, voters):
        p = self.nodes[i].proposer
        p.start_election()
        self.flush(i)
        b = p.ballot
        self.deliver(lambda e: isinstance(e.msg, Prepare) and e.msg.ballot == b and e.dst in voters)
        self.deliver(lambda e: isinstance(e.msg, Promise) and e.msg.ballot == b)
        assert self.nodes[i].is_leader, (i, b)
        return b

    def client(self, i, cid, seq, payload, kind=Kind.WRITE):
        self.nodes[i].client_request(ClientRequest(cid, seq, kind, payload))
        self.flush(i)


def K(key, v):
    import json

    return json.dumps({"op": "put", "key": key, "value": v}).encode()


def G(key):
    import json

    return json.dumps({"op": "get", "key": key}).encode()
