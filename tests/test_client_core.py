"""The sans-I/O client core (``paxosrsm.client.core.ClientCore``) alone, as
transcripts: each line is an input (submit, a reply, a timer) and what the
core then sends and completes. The network client and the simulator only
carry these decisions out, so these are the client's rules."""

from __future__ import annotations

import random

import pytest

from paxosrsm.client.core import ClientCore, Outcome, Send
from paxosrsm.messages import ClientReply, Status
from paxosrsm.types import Kind


def core(nodes: int = 3) -> ClientCore:
    return ClientCore(nodes, random.Random(7), retry=1.0, backoff=2.0, max_retry=3.0)


def sent(c: ClientCore) -> list[tuple[int, int, bool, bool]]:
    out, _ = c.take()
    return [(s.target, s.req.seq, s.stream, s.refresh) for s in out]


def test_redirects_follow_hints_then_silence_moves_on_with_backoff() -> None:
    c = core()
    key = c.submit(Kind.WRITE, b"w", now=0.0, deadline=20.0, target=0)
    assert sent(c) == [(0, 1, False, False)]
    assert c.due(key) == 1.0
    c.on_reply(ClientReply(key[0], 1, Status.NOT_LEADER, b"", 2), now=0.1, src=0)
    assert sent(c) == [(2, 1, False, False)], "followed the hint at once, same seq"
    assert c.leader == 2
    c.on_timer(key, now=2.0)  # early (second attempt: 2 s after the redirect)
    assert sent(c) == []
    c.on_timer(key, now=2.1)  # silence from 2
    out = sent(c)
    assert out[0] == (2, 1, False, True), "the silent node is looked up again"
    assert out[1][0] in (0, 1) and out[1][1] == 1 and c.leader is None
    assert c.due(key) == pytest.approx(5.1), "backoff 1, 2, 4 s, at most 3 s"
    c.on_timer(key, now=3.0)  # early: nothing
    assert sent(c) == []
    c.on_reply(ClientReply(key[0], 1, Status.OK, b"done", 1), now=4.5, src=1)
    out, done = c.take()
    assert out == [] and [(d.outcome, d.result, d.node) for d in done] == [(Outcome.OK, b"done", 1)]
    assert c.leader == 1 and c.due(key) is None


def test_no_useful_hint_waits_for_the_timer_instead_of_spinning() -> None:
    c = core()
    key = c.submit(Kind.READ, b"r", now=0.0, deadline=20.0, target=1)
    sent(c)
    for hint in (None, 1):  # none, or the node itself
        c.on_reply(ClientReply(key[0], 1, Status.NOT_LEADER, b"", hint), now=0.2, src=1)
        assert sent(c) == [], "no resend on an answer without a useful hint"
    c.on_timer(key, now=1.0)
    out = sent(c)
    assert len(out) == 1 and out[0][0] != 1 and not out[0][3], "another node; no lookup"


def test_redirects_are_bounded() -> None:
    c = core()
    key = c.submit(Kind.WRITE, b"w", now=0.0, deadline=20.0, target=0)
    sent(c)
    hops = 0
    for _ in range(20):
        src = hops % 3
        c.on_reply(ClientReply(key[0], 1, Status.NOT_LEADER, b"", (src + 1) % 3), 0.1, src)
        if sent(c):
            hops += 1
        else:
            break
    assert hops == 6, "at most 2 x nodes redirects for one request"


def test_deadline_gives_unknown_for_writes_failed_for_reads() -> None:
    c = core()
    w = c.submit(Kind.WRITE, b"w", now=0.0, deadline=2.5)
    r = c.submit(Kind.READ, b"r", now=0.0, deadline=2.5)
    assert w[0] != r[0], "two requests in flight: two sessions"
    for t in (1.0, 2.5):
        c.on_timer(w, t)
        c.on_timer(r, t)
    _, done = c.take()
    assert sorted((d.kind.name, d.outcome) for d in done) == [
        ("READ", Outcome.FAILED),
        ("WRITE", Outcome.UNKNOWN),
    ]
    # The sessions are reused, each with its next seq: a late duplicate of
    # the abandoned write is refused by the replicas' session table.
    again = c.submit(Kind.WRITE, b"w2", now=3.0, deadline=5.0)
    assert again[0] in (w[0], r[0]) and again[1] == 2


def test_too_large_goes_again_as_a_stream_and_stale_session_is_unknown() -> None:
    c = core()
    key = c.submit(Kind.READ, b"big", now=0.0, deadline=9.0, target=0)
    sent(c)
    c.on_reply(ClientReply(key[0], 1, Status.TOO_LARGE, b"", None), now=0.1, src=0)
    assert sent(c) == [(0, 1, True, False)]
    k2 = c.submit(Kind.WRITE, b"w", now=0.0, deadline=9.0)
    sent(c)
    c.on_reply(ClientReply(k2[0], k2[1], Status.STALE_SESSION, b"", None), now=0.2, src=0)
    _, done = c.take()
    assert [d.outcome for d in done] == [Outcome.UNKNOWN]


def test_answers_to_other_requests_and_busy_change_nothing() -> None:
    c = core()
    key = c.submit(Kind.WRITE, b"w", now=0.0, deadline=9.0, target=0)
    sent(c)
    c.on_reply(ClientReply(key[0], 99, Status.OK, b"x", None), now=0.1, src=0)
    c.on_reply(ClientReply(key[0] ^ 1, 1, Status.OK, b"x", None), now=0.1, src=0)
    c.on_reply(ClientReply(key[0], 1, Status.BUSY, b"", None), now=0.1, src=0)
    out, done = c.take()
    assert out == [] and done == [] and key in c.pending


def test_abandon_a_write_in_flight_is_unknown() -> None:
    c = core()
    key = c.submit(Kind.WRITE, b"w", now=0.0, deadline=9.0)
    sent(c)
    c.abandon(key, "closed")
    _, done = c.take()
    assert [(d.outcome, d.reason) for d in done] == [(Outcome.UNKNOWN, "closed")]
    assert not c.pending


def test_stale_reads_go_anywhere_and_do_not_move_the_leader() -> None:
    c = core()
    c.leader = 2
    targets = set()
    for _ in range(30):
        key = c.submit(Kind.STALE_READ, b"s", now=0.0, deadline=9.0)
        (s,) = c.take()[0]
        assert isinstance(s, Send)
        targets.add(s.target)
        c.on_reply(ClientReply(key[0], key[1], Status.OK, b"v", 0), now=0.0, src=s.target)
        c.take()
    assert targets == {0, 1, 2} and c.leader == 2


def test_a_session_carries_one_request() -> None:
    c = core()
    c.submit(Kind.WRITE, b"w", now=0.0, deadline=9.0, client_id=5)
    with pytest.raises(Exception, match="outstanding"):
        c.submit(Kind.WRITE, b"w", now=0.0, deadline=9.0, client_id=5)
