"""The key-value state machine and the sans-I/O client."""

from __future__ import annotations

import random

from paxosrsm.client.core import Outcome
from paxosrsm.client.core import SessionClient as Client
from paxosrsm.messages import ClientReply, Status
from paxosrsm.statemachine import KVStore, decode_result, encode_op
from paxosrsm.types import Kind


def test_kv_operations() -> None:
    kv = KVStore()
    assert decode_result(kv.apply(encode_op("put", "a", "1"))) == {"ok": True, "value": None}
    assert decode_result(kv.query(encode_op("get", "a")))["value"] == "1"
    assert decode_result(kv.apply(encode_op("cas", "a", "2", "3")))["value"] is False
    assert decode_result(kv.apply(encode_op("cas", "a", "1", "3")))["value"] is True
    assert decode_result(kv.apply(encode_op("cas", "b", None, "x")))["value"] is True
    assert decode_result(kv.apply(encode_op("delete", "a")))["value"] is True
    assert decode_result(kv.apply(encode_op("delete", "a")))["value"] is False
    snap = kv.snapshot()
    other = KVStore()
    other.restore(snap)
    assert other.data == {"b": "x"}
    assert decode_result(kv.query(encode_op("put", "a", "1")))["ok"] is False


def test_client_retries_with_the_same_seq_and_follows_hints() -> None:
    c = Client(7, (0, 1, 2), random.Random(1), retry_ticks=3, give_up_ticks=20)
    seq = c.submit(Kind.WRITE, encode_op("put", "k", "v"), target=0)
    out, _ = c.take()
    assert out[0][0] == 0
    c.on_reply(ClientReply(7, seq, Status.NOT_LEADER, b"", 2), 0)
    out, _ = c.take()
    assert [(n, r.seq) for n, r in out] == [(2, seq)], "redirected with the same seq"
    for _ in range(3):
        c.tick()
    out, _ = c.take()
    assert len(out) == 1 and out[0][1].seq == seq and out[0][0] != 2, "timed out: another node"
    c.on_reply(ClientReply(7, seq - 1 if seq > 1 else seq + 5, Status.OK, b"x", 1), 1)
    assert c.busy, "an answer to another seq is ignored"
    c.on_reply(ClientReply(7, seq, Status.OK, b"done", 1), 1)
    _, done = c.take()
    assert [(d.seq, d.outcome, d.result) for d in done] == [(seq, Outcome.OK, b"done")]
    assert c.leader == 1


def test_client_gives_up_with_unknown_outcome_for_writes_only() -> None:
    c = Client(7, (0,), random.Random(1), retry_ticks=2, give_up_ticks=5)
    c.submit(Kind.WRITE, b"w")
    for _ in range(5):
        c.tick()
    _, done = c.take()
    assert done[0].outcome == Outcome.UNKNOWN
    c.submit(Kind.READ, b"r")
    for _ in range(5):
        c.tick()
    _, done = c.take()
    assert done[0].outcome == Outcome.FAILED
    assert c.seq == 2, "a new request after a give-up takes a new seq"
