"""Datagram authentication (issue 12, "Identities" and "Replay").

- the MAC covers the receiver: a datagram sealed for node 1 fails at node 2,
  and a node's reply to one client fails at another;
- a sender's counter jumping by 2^27 costs the receiver no memory (the
  window is forgotten, not shifted by the jump).
"""

from __future__ import annotations

import tracemalloc

import pytest

from paxosrsm.net import auth

KEY = b"k" * 32


def test_a_datagram_for_one_node_fails_at_another() -> None:
    s = auth.Sealer(KEY, auth.ORIGIN_CLIENT, 77, 1)
    d = s.seal(b"\x90", auth.ORIGIN_NODE, 1)
    assert auth.Opener(KEY, auth.ORIGIN_NODE, 1).open(d) == (auth.ORIGIN_CLIENT, 77, b"\x90")
    with pytest.raises(auth.AuthError, match="another receiver"):
        auth.Opener(KEY, auth.ORIGIN_NODE, 2).open(d)
    # A node's datagram to a client is not valid at another client, nor at a
    # node with the same number.
    n = auth.Sealer(KEY, auth.ORIGIN_NODE, 0, 1)
    r = n.seal(b"\x90", auth.ORIGIN_CLIENT, 5)
    assert auth.Opener(KEY, auth.ORIGIN_CLIENT, 5).open(r)[1] == 0
    for origin, me in ((auth.ORIGIN_CLIENT, 6), (auth.ORIGIN_NODE, 5)):
        with pytest.raises(auth.AuthError):
            auth.Opener(KEY, origin, me).open(r)


def test_a_counter_jump_costs_no_memory() -> None:
    s = auth.Sealer(KEY, auth.ORIGIN_NODE, 3, 1)
    o = auth.Opener(KEY, auth.ORIGIN_NODE, 0)
    o.open(s.seal(b"", auth.ORIGIN_NODE, 0))
    s.counter = 1 << 27
    tracemalloc.start()
    try:
        o.open(s.seal(b"", auth.ORIGIN_NODE, 0))
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes for one datagram"
    # The window still works after the jump: a replay is refused, a
    # reordered datagram within the window is taken.
    d = s.seal(b"", auth.ORIGIN_NODE, 0)
    s.counter += 5
    late = s.seal(b"", auth.ORIGIN_NODE, 0)
    s.counter -= 3
    early = s.seal(b"", auth.ORIGIN_NODE, 0)
    o.open(d)
    o.open(late)
    o.open(early)
    with pytest.raises(auth.AuthError, match="replayed"):
        o.open(d)
