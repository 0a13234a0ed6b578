"""Datagram authentication (issue 12, "Identities" and "Replay").

- the MAC covers the receiver: a datagram sealed for node 1 fails at node 2,
  and a node's reply to one client fails at another;
- a sender's counter jumping by 2^27 costs the receiver no memory (the
  window is forgotten, not shifted by the jump).
"""

from __future__ import annotations

import tracemalloc

import pytest

from paxosrsm.net import auth, identity

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


def test_values_are_encrypted_and_the_header_authenticated() -> None:
    """Issue 12: values travelled in clear text over UDP."""
    secret = b"the-value-" + bytes(range(40))
    d = auth.Sealer(KEY, auth.ORIGIN_NODE, 1, 7).seal(secret, auth.ORIGIN_NODE, 0)
    assert secret not in d and b"the-value-" not in d
    assert auth.Opener(KEY, auth.ORIGIN_NODE, 0).open(d)[2] == secret
    for i in range(auth.HDR_LEN):  # every header byte is covered by the tag
        bad = bytearray(d)
        bad[i] ^= 1
        with pytest.raises(auth.AuthError):
            auth.Opener(KEY, auth.ORIGIN_NODE, 0).open(bytes(bad))


def test_a_client_credential_cannot_speak_as_a_node() -> None:
    """Clients get the client key only (``paxosctl keys client``): they talk
    to nodes, but cannot seal a node's datagram, read what nodes send each
    other, or open a node's TCP connection."""
    ring = auth.Keyring.parse(KEY.decode())
    client = auth.Keyring.parse(ring.client_lines())
    assert not client.has_peer_keys and client.key(0, auth.CLIENT) == ring.key(0, auth.CLIENT)
    node1 = auth.Opener(ring, auth.ORIGIN_NODE, 1)
    # As a client: fine.
    c = auth.Sealer(client, auth.ORIGIN_CLIENT, 99, 1)
    assert node1.open(c.seal(b"\x90", auth.ORIGIN_NODE, 1))[0] == auth.ORIGIN_CLIENT
    # As node 0: it has no peer key to seal with; one made with the client
    # key (the only key it has) fails at the node.
    fake = auth.Sealer(client, auth.ORIGIN_NODE, 0, 1)
    with pytest.raises(auth.AuthError, match="no peer key"):
        fake.seal(b"\x90", auth.ORIGIN_NODE, 1)
    forged = auth.Sealer(
        auth.Keyring({0: ring.key(0, auth.CLIENT) or b""}, {}, 0), auth.ORIGIN_NODE, 0, 1
    ).seal(b"\x90", auth.ORIGIN_NODE, 1)
    with pytest.raises(auth.AuthError):
        node1.open(forged)
    # A node's datagram to a node cannot be opened with the client key.
    real = auth.Sealer(ring, auth.ORIGIN_NODE, 0, 1).seal(b"\x90", auth.ORIGIN_NODE, 1)
    with pytest.raises(auth.AuthError):
        auth.Opener(client, auth.ORIGIN_NODE, 1).open(real)
    # TCP: a hello under the client key is found as a client one, whatever
    # origin its body claims (the connection then refuses a node origin).
    body = b"hello-body"
    mac = auth.hello_mac(client.key(0, auth.CLIENT) or b"", body)
    found = auth.hello_key(ring, body, mac, 0)
    assert found is not None and found[1] == auth.CLIENT


def test_rotation_two_keys_then_one() -> None:
    """Every key id in the ring is accepted; the first seals."""
    old, new = "o" * 32, "n" * 32
    both = auth.Keyring.parse(f"1 {new}\n0 {old}\n")
    only_old = auth.Keyring.parse(old)
    only_new = auth.Keyring.parse(f"1 {new}\n")
    o = auth.Opener(both, auth.ORIGIN_NODE, 0)
    o.open(auth.Sealer(only_old, auth.ORIGIN_NODE, 1, 1).seal(b"a", auth.ORIGIN_NODE, 0))
    o.open(auth.Sealer(both, auth.ORIGIN_NODE, 2, 1).seal(b"a", auth.ORIGIN_NODE, 0))
    o.rekey(only_new)
    with pytest.raises(auth.AuthError, match="no peer key 0"):
        o.open(auth.Sealer(only_old, auth.ORIGIN_NODE, 1, 1).seal(b"b", auth.ORIGIN_NODE, 0))
    s = auth.Sealer(only_old, auth.ORIGIN_NODE, 3, 1)
    s.rekey(both)
    assert o.open(s.seal(b"c", auth.ORIGIN_NODE, 0))[2] == b"c"
    for bad in ("", "x y z", "300 " + new, "0 short", f"0 {old}\n0 {new}", "client 0 nothex"):
        with pytest.raises(ValueError):
            auth.Keyring.parse(bad)


def test_datagrams_from_before_a_restart_are_refused() -> None:
    """The receiver's windows are new after a restart; the send time is not."""
    import time

    s = auth.Sealer(KEY, auth.ORIGIN_NODE, 1, 1)
    captured = s.seal(b"x", auth.ORIGIN_NODE, 0)
    time.sleep(0.01)
    restarted = auth.Opener(KEY, auth.ORIGIN_NODE, 0, not_before_ms=time.time_ns() // 1_000_000)
    with pytest.raises(auth.StaleError):
        restarted.open(captured)
    assert restarted.open(s.seal(b"y", auth.ORIGIN_NODE, 0))[2] == b"y"


def _node_rings(n: int, cluster_key: str = "1 " + "m" * 32 + "\n") -> list[auth.Keyring]:
    ident = b"i" * 32
    return [
        auth.Keyring.parse(identity.node_key_file(cluster_key, ident, me, range(n)))
        for me in range(n)
    ]


def test_each_node_has_its_own_identity() -> None:
    """Issue 12, "Each node needs its own identity": node 1, holding its own
    key file, cannot pose as node 2 to node 0, nor read what 0 and 2 say to
    each other; the master key alone (a client given cluster.key) speaks no
    peer traffic. Each node talks to every other under its pair key."""
    rings = _node_rings(3)
    assert all(r.identity for r in rings)
    for a in range(3):
        for b in range(3):
            if a != b:
                d = auth.Sealer(rings[a], auth.ORIGIN_NODE, a, 1).seal(b"hi", auth.ORIGIN_NODE, b)
                assert auth.Opener(rings[b], auth.ORIGIN_NODE, b).open(d) == (0, a, b"hi")
    # Node 1 claims to be node 2 (sender 2 in the header, its own keys: it
    # seals with its (1, 0) pair key): node 0 opens with the (2, 0) one.
    forged = auth.Sealer(rings[1], auth.ORIGIN_NODE, 2, 1).seal(b"promise", auth.ORIGIN_NODE, 0)
    with pytest.raises(auth.AuthError, match="bad tag"):
        auth.Opener(rings[0], auth.ORIGIN_NODE, 0).open(forged)
    # What 0 sends 2 does not open at node 1 even if addressed to it.
    d02 = auth.Sealer(rings[0], auth.ORIGIN_NODE, 0, 1).seal(b"v", auth.ORIGIN_NODE, 2)
    o1 = auth.Opener(rings[1], auth.ORIGIN_NODE, 2)  # node 1 posing as receiver 2
    with pytest.raises(auth.AuthError):
        o1.open(d02)
    # The master key alone speaks no peer traffic to an identity-mode node.
    master = auth.Keyring.parse("1 " + "m" * 32)
    d = auth.Sealer(master, auth.ORIGIN_NODE, 2, 1).seal(b"x", auth.ORIGIN_NODE, 0)
    with pytest.raises(auth.AuthError):
        auth.Opener(rings[0], auth.ORIGIN_NODE, 0).open(d)
    # ... but clients still talk to nodes with it.
    c = auth.Sealer(master, auth.ORIGIN_CLIENT, 9, 1).seal(b"get", auth.ORIGIN_NODE, 0)
    assert auth.Opener(rings[0], auth.ORIGIN_NODE, 0).open(c)[0] == auth.ORIGIN_CLIENT
    # TCP: node 1's hello claiming sender 2 is not accepted by node 0.
    body = b"hello-as-2"
    mac = auth.hello_mac(rings[1].key(1, auth.PEER, 0) or b"", body)
    assert auth.hello_key(rings[0], body, mac, 2) is None
    assert auth.hello_key(rings[0], body, mac, 1) == (rings[0].key(1, auth.PEER, 1), auth.PEER)


def test_node_key_files_rotate_with_the_master_keys() -> None:
    """Two master keys: a pair key for each, the first sends; a node whose
    file has the new key second still opens what one sending with it seals."""
    old, new = "o" * 32, "n" * 32
    both = _node_rings(3, f"1 {new}\n0 {old}\n")
    old_only = _node_rings(3, f"0 {old}\n")
    d = auth.Sealer(both[0], auth.ORIGIN_NODE, 0, 1).seal(b"x", auth.ORIGIN_NODE, 1)
    with pytest.raises(auth.AuthError, match="no peer key 1"):
        auth.Opener(old_only[1], auth.ORIGIN_NODE, 1).open(d)
    assert auth.Opener(both[1], auth.ORIGIN_NODE, 1).open(d)[2] == b"x"
    d = auth.Sealer(old_only[0], auth.ORIGIN_NODE, 0, 1).seal(b"y", auth.ORIGIN_NODE, 1)
    assert auth.Opener(both[1], auth.ORIGIN_NODE, 1).open(d)[2] == b"y"


def test_key_file_bounds_and_errors() -> None:
    with pytest.raises(ValueError, match="pair <key id>"):
        auth.Keyring.parse("0 " + "m" * 32 + "\npair 0 x 00")
    with pytest.raises(ValueError, match="not a master key"):
        auth.Keyring.parse("0 " + "m" * 32 + "\npair 3 1 " + "ab" * 32)
    with pytest.raises(ValueError, match="twice"):
        auth.Keyring.parse("0 " + "m" * 32 + ("\npair 0 1 " + "ab" * 32) * 2)
    many = "0 " + "m" * 32 + "".join(f"\npair 0 {j} " + "ab" * 32 for j in range(4097))
    with pytest.raises(ValueError, match="more than 4096"):
        auth.Keyring.parse(many)
    with pytest.raises(ValueError):
        identity.parse_identity("short")


def test_the_access_log_names_the_op_and_key_never_the_value() -> None:
    from paxosrsm.net.accesslog import AccessLog, describe
    from paxosrsm.statemachine import encode_op

    assert describe(encode_op("put", "a/b", "v" * 1000)) == "put key='a/b'"
    assert describe(encode_op("cas", "k", 'x"key":"evil"', "n")) == "cas key='k'"
    assert describe(encode_op("delete", 'k"\\q')) == "delete key='k\"\\\\q'"
    assert describe(b"\x93\x01\x02") == "3 bytes"  # another state machine's
    assert describe(b'{"op":"put","key":"' + b"z" * 5000).startswith("put key='zzz")
    a = AccessLog()
    for i in range(20_005):
        a.write("udp x", i, 1, b"{}")
    assert len(a.pending) == 20_000 and a.dropped == 5
    a.flush(0)
    assert a.pending == []
