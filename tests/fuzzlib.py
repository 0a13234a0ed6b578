"""Input generators and oracles for the wire fuzz test (tests/test_wire_fuzz.py).

Everything here is a pure function of a ``random.Random`` (and the cluster
key), so a seed replays a run byte for byte. The oracles are twins of the
node's refusal logic: they say, for each input, which ``dropped_*`` counter
the node must bump, and they refuse to let through any input the node would
*accept* - only inputs that must be refused are ever sent.

Inputs that trigger a known node bug are withheld unless FUZZ_KNOWN_BUGS=1
(see ``KNOWN_BUGS`` below); any other local surprise (the codec raising
something that is not a ``ProtocolError``) is recorded in ``Findings`` and
fails the test with its bytes.
"""

from __future__ import annotations

import hmac
import json
import os
import random
import re
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from paxosrsm.messages import (
    Accept,
    Accepted,
    AcceptedEntry,
    CatchupReply,
    CatchupRequest,
    ClientReply,
    ClientRequest,
    DecidedEntry,
    Fenced,
    Heartbeat,
    HeartbeatAck,
    Nack,
    Prepare,
    Promise,
    RecoverPrepare,
    Session,
    Snapshot,
    Status,
)
from paxosrsm.net import auth, codec
from paxosrsm.net.conn import MAX_HELLO
from paxosrsm.net.options import NodeOptions
from paxosrsm.types import Ballot, Command, Kind, ProtocolError

_DEFAULTS = NodeOptions()
MAX_DATAGRAM = _DEFAULTS.max_datagram
MAX_FRAME = _DEFAULTS.max_frame
#: The largest UDP payload over IPv4: the kernel refuses to send more, so the
#: "random length" datagrams go up to this (past MAX_DATAGRAM: the oversize check).
UDP_MAX = 65_507
MAX_KEY = 1024  # http.MAX_KEY
MAX_VALUE = 512 * 1024  # http.MAX_VALUE

#: Send the inputs of the node bugs this fuzzer found (see KNOWN_BUGS). They are
#: fixed, so they are regression inputs now and sent by default (FUZZ_KNOWN_BUGS=0
#: withholds them).
SEND_KNOWN_BUGS = os.environ.get("FUZZ_KNOWN_BUGS", "1") == "1"
#: Found by this fuzzer, fixed in the node; kept as regression inputs.
KNOWN_BUGS = {
    "codec-deep-tag": "codec.decode_obj: repr() of a ~1000-deep nested tag raises RecursionError, "
    "which escapes decode_many (on_datagram/_on_frame catch only ProtocolError)",
    "http-cas-charset": "POST /v1/cas/{key}, Content-Type charset=<unknown>: LookupError -> 500",
    "http-cas-deep-json": "POST /v1/cas/{key}, a ~1000-deep JSON array: RecursionError -> 500",
}

_UDP_TYPES = (Prepare, RecoverPrepare, Nack, Heartbeat, HeartbeatAck)
INT_EDGES = (
    0,
    1,
    -1,
    2,
    3,
    7,
    127,
    128,
    255,
    256,
    1023,
    1024,
    65535,
    65536,
    (1 << 31) - 1,
    1 << 31,
    -(1 << 31),
    (1 << 32) - 1,
    1 << 32,
    (1 << 63) - 1,
    1 << 63,
    (1 << 64) - 1,
    -(1 << 63),
    -(1 << 63) + 1,
)


@dataclass
class Findings:
    """What the generators saw locally: withheld known-bug inputs, and surprises."""

    withheld: Counter[str] = field(default_factory=Counter)
    surprises: list[str] = field(default_factory=list)
    strategies: Counter[str] = field(default_factory=Counter)


# ================================================================ real messages


def rand_ballot(rng: random.Random, node: int | None = None) -> Ballot:
    r = rng.choice((0, 1, 2, 7, 1000, rng.randrange(1 << 62)))
    return Ballot(r, rng.randrange(3) if node is None else node)


def rand_cmd(rng: random.Random) -> Command:
    return Command(
        rng.randrange(1 << 63),
        rng.randrange(1, 1 << 63),
        rng.randbytes(rng.choice((0, 1, 8, 40, 200))),
    )


def rand_value(rng: random.Random) -> tuple[Command, ...]:
    return tuple(rand_cmd(rng) for _ in range(rng.choice((0, 1, 1, 2, 5))))


def rand_pairs(rng: random.Random) -> tuple[tuple[int, int], ...]:
    return tuple((rng.randrange(3), rng.randrange(1, 1 << 20)) for _ in range(rng.randrange(3)))


def rand_slot(rng: random.Random) -> int:
    return rng.choice((0, 1, 5, 100, rng.randrange(1 << 40)))


def rand_message(rng: random.Random, types: tuple[type, ...] | None = None) -> Any:
    """A real, valid message of a random type (through its validating constructor)."""
    acc = rng.randrange(3)
    makers: dict[type, Callable[[], Any]] = {
        Prepare: lambda: Prepare(rand_ballot(rng), rand_slot(rng)),
        RecoverPrepare: lambda: (lambda r: RecoverPrepare(Ballot(r, acc), acc, r + 1))(
            rng.randrange(1 << 30)
        ),
        Fenced: lambda: Fenced(rand_ballot(rng), acc, rng.randrange(3)),
        Promise: lambda: Promise(
            rand_ballot(rng),
            acc,
            rand_slot(rng),
            tuple(
                AcceptedEntry(rand_slot(rng), rand_ballot(rng), rand_value(rng))
                for _ in range(rng.randrange(3))
            ),
            rng.randrange(1, 1 << 20),
            rand_pairs(rng),
        ),
        Nack: lambda: (lambda b: Nack(b, Ballot(b.round + 1, b.node), acc))(rand_ballot(rng)),
        Accept: lambda: Accept(
            rand_ballot(rng),
            rand_slot(rng),
            rand_value(rng),
            rng.randrange(-1, 100),
            rand_pairs(rng),
        ),
        Accepted: lambda: Accepted(rand_ballot(rng), rand_slot(rng), acc),
        Heartbeat: lambda: Heartbeat(rand_ballot(rng), rng.randrange(-1, 100), rng.randrange(99)),
        HeartbeatAck: lambda: HeartbeatAck(
            rand_ballot(rng), rng.randrange(99), acc, rand_ballot(rng)
        ),
        CatchupRequest: lambda: CatchupRequest(rand_slot(rng)),
        CatchupReply: lambda: CatchupReply(
            None
            if rng.random() < 0.5
            else Snapshot(
                rand_slot(rng),
                rng.randbytes(rng.randrange(64)),
                tuple(
                    Session(rng.randrange(1 << 63), rng.randrange(1, 99), rng.randbytes(4))
                    for _ in range(rng.randrange(3))
                ),
            ),
            tuple(DecidedEntry(rand_slot(rng), rand_value(rng)) for _ in range(rng.randrange(3))),
            rng.randrange(-1, 100),
        ),
        ClientRequest: lambda: ClientRequest(
            rng.randrange(1 << 63),
            rng.randrange(1, 1 << 20),
            rng.choice(list(Kind)),
            json.dumps({"op": "put", "key": "k", "value": "v" * rng.randrange(50)}).encode(),
        ),
        ClientReply: lambda: ClientReply(
            rng.randrange(1 << 63),
            rng.randrange(1, 1 << 20),
            rng.choice(list(Status)),
            rng.randbytes(rng.randrange(40)),
            rng.choice((None, 0, 1, 2)),
        ),
    }
    t = rng.choice(types or tuple(makers))
    return makers[t]()


# ================================================================ malformed bodies


def rand_obj(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack-able value (no maps or exts: those have their own strategies)."""
    r = rng.randrange(10 if depth < 3 else 8)
    if r == 0:
        return None
    if r == 1:
        return rng.random() < 0.5
    if r in (2, 3):
        return rng.choice(INT_EDGES) if rng.random() < 0.6 else rng.randrange(-(1 << 63), 1 << 64)
    if r == 4:
        return rng.choice((0.0, -1.5, 1e300, float("inf"), float("nan"), 2.0**63))
    if r == 5:
        return "".join(chr(rng.randrange(32, 0x3000)) for _ in range(rng.randrange(12)))
    if r == 6:
        return rng.randbytes(rng.randrange(20))
    if r == 7:
        return rng.choice(("hello", "", "welcome", "\x00", "1"))
    return [rand_obj(rng, depth + 1) for _ in range(rng.randrange(5))]


def _lists_in(obj: Any, out: list[list[Any]]) -> list[list[Any]]:
    if type(obj) is list:
        out.append(obj)
        for x in obj:
            _lists_in(x, out)
    return out


def _copy(obj: Any) -> Any:
    return [_copy(x) for x in obj] if type(obj) is list else obj


def mutate_tree(rng: random.Random, tree: Any) -> Any:
    """One to three structural edits of a decoded message (arrays of arrays)."""
    tree = _copy(tree)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        lists = _lists_in(tree, [])
        if not lists:
            break
        lst = rng.choice(lists)
        op = rng.randrange(7)
        if not lst or op == 0:
            lst.insert(rng.randrange(len(lst) + 1), rand_obj(rng))
            continue
        i = rng.randrange(len(lst))
        if op == 1:
            lst[i] = rand_obj(rng)
        elif op == 2:
            del lst[i]
        elif op == 3:
            lst[i] = [lst[i]]
        elif op == 4:  # a scalar of another type, or an out-of-range int
            x = lst[i]
            if type(x) is int:
                lst[i] = rng.choice((str(x), float(x), x == 1, rng.choice(INT_EDGES)))
            elif type(x) is bytes:
                lst[i] = rng.choice((x.decode("latin-1"), list(x), None))
            else:
                lst[i] = rng.choice(INT_EDGES)
        elif op == 5:
            lst[i] = rng.choice(INT_EDGES)
        else:
            lst.append(_copy(lst[i]))
    return tree


def _packb(obj: Any, bin_type: bool = True) -> bytes:
    return msgpack.packb(obj, use_bin_type=bin_type)  # type: ignore[no-any-return]


def _deep(depth: int, leaf: bytes = b"\xc0") -> bytes:
    return b"\x91" * depth + leaf


def _array_head(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _str_raw(b: bytes) -> bytes:
    return (bytes([0xA0 | len(b)]) if len(b) < 32 else b"\xd9" + bytes([len(b)])) + b


_OVERSIZED: list[bytes] = []


def _oversized_batches() -> list[bytes]:
    """Accepts of 10 001.. commands: costly to build and check, so built once."""
    if not _OVERSIZED:
        for n in (10_001, 10_500, 10_999):
            o = [codec.T_ACCEPT, [1, 0], 0, [[1, 1, b""]] * n, -1, []]
            _OVERSIZED.append(_packb([o]))
            assert classify_body(_OVERSIZED[-1]) == "refused"
    return _OVERSIZED


def _body_strategies(rng: random.Random, max_len: int) -> dict[str, Callable[[], bytes]]:
    def msgs() -> list[Any]:
        return [rand_message(rng) for _ in range(rng.choice((1, 1, 2, 3)))]

    def objs() -> list[Any]:
        return [codec.encode_obj(m) for m in msgs()]

    def one_bad(f: Callable[[list[Any]], Any]) -> bytes:
        batch = objs()
        i = rng.randrange(len(batch))
        batch[i] = f(batch[i])
        return _packb(batch)

    def set_tag(o: list[Any]) -> list[Any]:
        o[0] = rng.choice(
            (*INT_EDGES, 12, 13, 19, 22, 29, 99, "1", 1.0, True, None, b"\x01", [1], [])
        )
        return o

    def arity(o: list[Any]) -> list[Any]:
        if rng.random() < 0.5 and len(o) > 1:
            del o[rng.randrange(1, len(o))]
        else:
            o.insert(rng.randrange(1, len(o) + 1), rand_obj(rng))
        return o

    def out_of_range(o: list[Any]) -> list[Any]:
        ints = [(lst, i) for lst in _lists_in(o, []) for i, x in enumerate(lst) if type(x) is int]
        for lst, i in rng.sample(ints, min(len(ints), rng.choice((1, 1, 2)))):
            if lst is o and i == 0:
                continue  # the tag has its own strategy
            lst[i] = rng.choice((-1, -2, -(1 << 63), 1 << 63, (1 << 64) - 1, 1024, 1 << 40))
        return o

    def deep() -> bytes:
        depth = rng.choice((50, 500, 900, 990, 1000, 1010, 1020, 1023, 1024, 1100, 5000))
        where = rng.randrange(4)
        if where == 0:  # the whole body
            return _deep(depth)
        if where == 1:  # the tag of a message
            return b"\x91\x91" + _deep(depth)
        if where == 2:  # a field of a real message
            o = codec.encode_obj(rand_message(rng))
            o[-1] = "@@DEEP@@"
            enc = _packb([o])
            mark = _packb("@@DEEP@@")
            return enc.replace(mark, _deep(depth, rng.choice((b"\xc0", b"\x00", b"\xa1x"))))
        return b"\x92" + _packb(objs()[0]) + _deep(depth)

    def huge_array() -> bytes:
        k = rng.randrange(6)
        if k == 0:  # claims more elements than the unpacker allows
            return b"\xdd" + rng.randrange((1 << 20) + 1, 1 << 32).to_bytes(4, "big")
        if k == 1:  # claims more elements than are present
            n = rng.randrange(20, 1 << 20)
            return _array_head(n) + _packb(objs()[0])
        if k == 2:  # a long batch of non-messages
            n = rng.randrange(100, max(101, min(max_len - 10, 1 << 16)))
            return _array_head(n) + rng.choice((b"\xc0", b"\x00", b"\x90")) * n
        if k == 3 and rng.random() < 0.2:  # an oversized batch: ~30 ms for the node to refuse
            return rng.choice(_oversized_batches())
        if k == 4:  # a value holding a long list of junk
            o = codec.encode_obj(rand_message(rng, (Accept,)))
            o[3] = [None] * rng.randrange(100, 5000)
            return _packb([o])
        return _array_head(rng.randrange(1 << 16, 1 << 20)) + b"\x90" * rng.randrange(1, 50)

    def with_map() -> bytes:
        o = objs()
        lst = rng.choice(_lists_in(o, []))
        lst.insert(rng.randrange(len(lst) + 1), {"a": 1} if rng.random() < 0.5 else {})
        return _packb(o)

    def with_ext() -> bytes:
        o = objs()
        lst = rng.choice(_lists_in(o, []))
        lst.insert(rng.randrange(len(lst) + 1), "@@X@@")
        code = rng.choice((-1, -128, 0, 1, 127, rng.randrange(256)))  # -1: a timestamp
        ext = b"\xd6" + (code & 0xFF).to_bytes(1, "big") + rng.randbytes(4)
        return _packb(o).replace(_packb("@@X@@"), ext)

    def bad_utf8() -> bytes:
        o = objs()
        mark = _packb("@@S@@")
        lst = rng.choice(_lists_in(o, []))
        lst.insert(rng.randrange(len(lst) + 1), "@@S@@")
        bad = rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"a\x80b", b"\xf4\x90\x80\x80"))
        return _packb(o).replace(mark, _str_raw(bad))

    def bin_as_str() -> bytes:
        return _packb(objs(), bin_type=False)

    return {
        "random_bytes": lambda: rng.randbytes(rng.randrange(1, 300)),
        "truncated": lambda: (lambda b: b[: rng.randrange(len(b))])(_packb(objs())),
        "trailing": lambda: _packb(objs()) + rng.randbytes(rng.randrange(1, 20)),
        "not_a_batch": lambda: _packb(
            rng.choice((rand_obj(rng), codec.encode_obj(rand_message(rng))))
        ),
        "bad_tag": lambda: one_bad(set_tag),
        "bad_arity": lambda: one_bad(arity),
        "bad_field": lambda: one_bad(lambda o: mutate_tree(rng, o)),
        "out_of_range": lambda: one_bad(out_of_range),
        "deep_nesting": deep,
        "huge_array": huge_array,
        "map": with_map,
        "ext": with_ext,
        "bad_utf8": bad_utf8,
        "bin_as_str": bin_as_str,
        "long_str": lambda: _packb(["x" * ((1 << 16) + rng.randrange(1, 100))]),
    }


def classify_body(body: bytes) -> str:
    """``refused`` (the node must drop it as malformed), ``accepted``, or the
    name of the exception other than ProtocolError the codec let escape."""
    try:
        codec.decode_many(body)
    except ProtocolError:
        return "refused"
    except Exception as e:
        return type(e).__name__
    return "accepted"


def malformed_body(rng: random.Random, max_len: int, findings: Findings) -> tuple[str, bytes]:
    """A body that is refused by ``codec.decode_many`` (checked here, locally)."""
    strategies = _body_strategies(rng, max_len)
    names = sorted(strategies)
    while True:
        name = rng.choice(names)
        body = strategies[name]()
        if len(body) > max_len:
            continue
        verdict = "refused" if body in _OVERSIZED else classify_body(body)
        if verdict == "refused":
            findings.strategies[f"body:{name}"] += 1
            return name, body
        if verdict == "accepted":
            continue
        if verdict == "RecursionError" and name == "deep_nesting":
            findings.withheld["codec-deep-tag"] += 1
            if SEND_KNOWN_BUGS:
                return name, body
            continue
        findings.surprises.append(
            f"codec.decode_many raised {verdict} (not a ProtocolError) on body "
            f"{body[:200].hex()}{'...' if len(body) > 200 else ''} ({len(body)} bytes, "
            f"strategy {name})"
        )


# ================================================================ datagrams


class DatagramOracle:
    """What one node must do with each datagram sent to it, in order.

    A twin of ``NodeServer.on_datagram``'s refusal path with its own
    ``auth.Opener`` fed the same datagrams in the same order (loopback UDP
    from one socket is not reordered), so replay verdicts match exactly.
    Returns the ``dropped_*`` counter the node must bump; raises if the
    datagram would be *accepted* into the core (the fuzzer never sends those).
    """

    def __init__(self, key: bytes, n_nodes: int, node_id: int) -> None:
        self.opener = auth.Opener(key, auth.ORIGIN_NODE, node_id)
        self.n_nodes = n_nodes

    def expect(self, data: bytes, body_refused: bool = False) -> str:
        """``body_refused``: the body is known to be refused by the codec (a
        ``malformed_body``, checked there), so it need not be decoded again."""
        if len(data) > MAX_DATAGRAM:
            return "dropped_oversized_datagram"
        try:
            origin, sender, body = self.opener.open(data)
        except auth.AuthError as e:
            if isinstance(e, auth.ReplayError):
                return "dropped_replayed"
            return "dropped_stale" if isinstance(e, auth.StaleError) else "dropped_unauthenticated"
        if origin == auth.ORIGIN_NODE and sender < self.n_nodes:
            # It would take over the replay window of a real node: its datagrams
            # would then be refused as replays.
            raise AssertionError(f"fuzzer bug: would send as node {sender}: {data[:80].hex()}")
        if body_refused:
            return "dropped_malformed"
        try:
            msgs = codec.decode_many(body)
        except Exception:  # (only FUZZ_KNOWN_BUGS sends bodies that raise other than CodecError)
            return "dropped_malformed"
        if len(msgs) == 1:
            if origin == auth.ORIGIN_CLIENT and not isinstance(msgs[0], ClientRequest):
                return "dropped_malformed"
            if origin == auth.ORIGIN_NODE and not isinstance(msgs[0], _UDP_TYPES):
                return "dropped_wrong_channel"
        raise AssertionError(f"fuzzer bug: would send an acceptable datagram {data[:80].hex()}")


def random_datagram(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.35:
        n = rng.randrange(0, 64)
    elif r < 0.70:
        n = rng.randrange(64, 1500)
    elif r < 0.90:
        n = rng.randrange(1500, 16_000)
    else:
        n = rng.randrange(16_000, UDP_MAX + 1)
    data = rng.randbytes(n)
    if rng.random() < 0.3 and n >= 4:  # past the magic check, to the MAC check
        data = b"PX" + bytes([auth.VERSION, rng.randrange(2)]) + data[4:]
    return data


#: version, origin, key id, sender, epoch, counter, sent_ms (auth's datagram header)
_HDR_FIELDS = ((2, 1), (3, 1), (4, 1), (5, 8), (13, 8), (21, 8), (29, 8))


def mutate_datagram(rng: random.Random, d: bytes, other: bytes) -> bytes:
    """A sealed datagram changed so that its MAC (or header) no longer holds."""
    while True:
        out = bytearray(d)
        op = rng.randrange(9)
        if op == 0:  # bit flips anywhere
            for _ in range(rng.choice((1, 1, 2, 8))):
                i = rng.randrange(len(out))
                out[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncation
            out = out[: rng.randrange(len(out))]
        elif op == 2:  # extension
            out += rng.randbytes(rng.choice((1, 31, 32, 33, 1000, rng.randrange(1, 60_000))))
        elif op == 3:  # a header field changed
            off, n = rng.choice(_HDR_FIELDS)
            v = rng.choice((0, 1, 2, (1 << (8 * n)) - 1, rng.randrange(1 << (8 * n))))
            out[off : off + n] = v.to_bytes(n, "big")
        elif op == 4:  # a zeroed or random tag
            out[-auth.TAG_LEN :] = rng.choice((bytes(16), rng.randbytes(16)))
        elif op == 5:  # another datagram's tag
            out[-auth.TAG_LEN :] = other[-auth.TAG_LEN :]
        elif op == 6:  # another datagram's header
            out[: auth.HDR_LEN] = other[: auth.HDR_LEN]
        elif op == 7:  # the head cut off (the MAC is still at the end)
            out = out[rng.randrange(1, len(out)) :]
        else:  # the magic
            out[0:2] = rng.choice((b"XP", b"px", b"\x00\x00"))
        data = bytes(out)
        if data != d:
            return data


def wrong_key(rng: random.Random, key: bytes) -> bytes:
    """Another key. (Not ``key + b"\\0"``: HMAC zero-pads short keys, so that one is the same.)"""
    while True:
        k = rng.randrange(5)
        if k == 0:
            wk = rng.randbytes(len(key))
        elif k == 1:  # one bit away
            b = bytearray(key)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            wk = bytes(b)
        elif k == 2:
            wk = key[:-1]
        elif k == 3:
            wk = key + rng.randbytes(1)
        else:
            wk = b""
        if hmac.digest(wk, b"probe", "sha256") != hmac.digest(key, b"probe", "sha256"):
            return wk


# ================================================================ TCP


def hello_body(origin: Any, sender: Any, kind: Any, ballot: Any, nonce: Any) -> bytes:
    return _packb(["hello", 1, origin, sender, kind, ballot, nonce])


def hello_verdict(body: bytes, me: int, n_nodes: int = 3, n_acceptors: int = 3) -> str:
    """What the server side of a connection (FramedConn._handshake + NodeServer._on_hello)
    does with a hello whose MAC is right: ``accepted``, ``refused``, or the name of an
    exception it would let escape."""
    try:
        h = msgpack.unpackb(body, raw=False, max_bin_len=64, max_str_len=64)
        if type(h) is not list or not h or h[0] != "hello" or type(h[-1]) is not bytes:
            return "refused"
        if len(h[-1]) != 16:
            return "refused"
        h = h[:-1]
        if len(h) != 6 or h[1] != 1 or type(h[3]) is not int:
            return "refused"
        origin, sender, kind, b = h[2], h[3], h[4], h[5]
        if origin == auth.ORIGIN_CLIENT and kind == "client":
            return "accepted"
        if origin != auth.ORIGIN_NODE or not 0 <= sender < n_nodes or sender == me:
            return "refused"
        if kind == "peer":
            return "accepted"
        if kind == "session" and type(b) is list and len(b) == 2:
            if sender >= n_acceptors:
                return "refused"
            try:
                ballot = Ballot(b[0], b[1])
            except ProtocolError:
                return "refused"
            return "accepted" if ballot.node == me else "refused"
        return "refused"
    except (ValueError, TypeError, msgpack.ExtraData):
        return "refused"
    except Exception as e:
        return type(e).__name__


def bad_hello_body(rng: random.Random, me: int, findings: Findings) -> bytes:
    """A hello body the server must refuse although its MAC is right."""
    while True:
        nonce = rng.randbytes(16)
        good = ["hello", 1, rng.randrange(2), rng.randrange(4), "client", None, nonce]
        k = rng.randrange(8)
        if k == 0:
            body = _packb(mutate_tree(rng, good))
        elif k == 1:
            body = _packb(rand_obj(rng))
        elif k == 2:
            body = rng.randbytes(rng.randrange(64))
        elif k == 3:
            body = _packb(good) + rng.randbytes(rng.randrange(1, 8))
        elif k == 4:  # a node hello that is not allowed: self, unknown node, bad kind/ballot
            sender = rng.choice((me, 3, 1023, -1, 1 << 63))
            kind = rng.choice(("peer", "session", "client", "bogus", "", None, 1))
            b = rng.choice(([1, me], [1, (me + 1) % 3], [-1, me], [1 << 63, me], [1], None, "x"))
            body = hello_body(auth.ORIGIN_NODE, sender, kind, b, nonce)
        elif k == 5:  # a right-looking hello with a nonce of the wrong size or type
            n = rng.choice((b"", rng.randbytes(15), rng.randbytes(17), "x" * 16, 16, None))
            body = hello_body(auth.ORIGIN_CLIENT, 1, "client", None, n)
        elif k == 6:  # strings and binaries past the handshake's 64-byte limit
            body = hello_body(auth.ORIGIN_CLIENT, 1, "client" + "x" * 64, None, nonce)
        else:  # a version, origin or field count that is not the protocol's
            g = list(good)
            i = rng.choice((1, 2))
            g[i] = rng.choice((0, 2, 255, "1", None, 1.5))
            if rng.random() < 0.3:
                g.insert(5, None)
            body = _packb(g)
        if len(body) + auth.MAC_LEN > MAX_HELLO:
            continue
        verdict = hello_verdict(body, me)
        if verdict == "refused":
            findings.strategies[f"hello:{k}"] += 1
            return body
        if verdict != "accepted":
            findings.surprises.append(
                f"a hello body with a valid MAC raised {verdict} in the handshake: {body.hex()}"
            )


def class_key(ring: auth.Keyring, origin: int) -> bytes:
    """The key a hello from ``origin`` is made with (key 0: the cluster key)."""
    k = ring.key(0, auth.class_of(origin, auth.ORIGIN_NODE))
    assert k is not None
    return k


def hello_class_key(ring: auth.Keyring, body: bytes) -> bytes:
    """The key of the class the hello body claims (client when unreadable)."""
    try:
        h = msgpack.unpackb(body, raw=False)
        origin = h[2] if type(h) is list and len(h) > 2 else auth.ORIGIN_CLIENT
    except Exception:
        origin = auth.ORIGIN_CLIENT
    return class_key(ring, origin if origin == auth.ORIGIN_NODE else auth.ORIGIN_CLIENT)


def hello_mac_wrong(rng: random.Random, key: bytes, body: bytes) -> bytes:
    k = rng.randrange(5)
    if k == 0:
        return rng.randbytes(auth.MAC_LEN)
    if k == 1:
        return auth.hello_mac(wrong_key(rng, key), body)
    if k == 2:
        return auth.welcome_mac(key, body[-16:], body)
    if k == 3:
        return hmac.digest(key, body, "sha256")  # no b"hello" domain separation
    m = bytearray(auth.hello_mac(key, body))
    m[rng.randrange(len(m))] ^= 1 << rng.randrange(8)
    return bytes(m)


# ================================================================ HTTP

#: What a request routed to a write handler may get: refused before any write
#: (never 2xx, 409 - a CAS that ran - or 503 - a write that was tried).
WRITE_REFUSED = (400, 403, 404, 405, 413, 414, 415, 431)
_WRITE_RE = re.compile(rb"(put|delete|post)[ \t]+[^\s]*?/(kv|cas)/")
_SAFE_HEADERS = (
    b"X-Fuzz",
    b"User-Agent",
    b"Accept",
    b"Accept-Language",
    b"Cookie",
    b"Referer",
    b"X-Forwarded-For",
    b"Authorization",
    b"Cache-Control",
    b"If-None-Match",
    b"Origin",
)
#: CAS bodies are decoded by aiohttp with the Content-Type's charset (utf-8 when
#: absent); the oracle assumes utf-8, so only these (or none) go with a CAS.
_CAS_CTYPES = (
    None,
    b"application/json",
    b"text/plain",
    b"application/json; charset=utf-8",
    b"application/octet-stream",
    b"multipart/form-data; boundary=x",
)


def could_write(raw: bytes) -> bool:
    """Conservatively: might this request reach a PUT/DELETE/POST handler of /v1/kv or /v1/cas?
    (Any write method followed by a path naming kv or cas, anywhere in the bytes - a
    pipelined second request too - also once or twice percent-decoded.)"""
    variants = [raw]
    if b"%" in raw:
        once = urllib.parse.unquote_to_bytes(raw)
        variants.append(once)
        if b"%" in once:
            variants.append(urllib.parse.unquote_to_bytes(once))
    for v in map(bytes.lower, variants):
        for m in (b"put", b"delete", b"post"):
            i = v.find(m)
            while i >= 0:
                if _WRITE_RE.match(v, i, i + 20_000):
                    return True
                i = v.find(m, i + 1)
    return False


def cas_body_valid(body: bytes) -> bool:
    """Would kv_cas accept this body (and so write)? It decodes it as utf-8 (the
    charset of every Content-Type the fuzzer sends with a CAS), then JSON."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return False
    if not isinstance(obj, dict):
        return False
    exp, new = obj.get("expected"), obj.get("new")
    return (exp is None or isinstance(exp, str)) and isinstance(new, str)


@dataclass
class HttpCase:
    kind: str
    raw: bytes
    #: For a request routed to a write handler: the statuses it may get (never 2xx).
    allowed: tuple[int, ...] | None = None

    @property
    def head(self) -> bool:
        """A HEAD request: its answer has a Content-Length but no body."""
        return self.raw.startswith(b"HEAD ")


_PRINTABLE = bytes(32 + i % 95 for i in range(256))
_HIGH = bytes(0x80 | i for i in range(256))


def _printable(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n).translate(_PRINTABLE)


def _high(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n).translate(_HIGH)


def _pct(b: bytes) -> bytes:
    return urllib.parse.quote_from_bytes(b, safe="").encode()


_ALPHABET = [chr(c) for c in range(32, 127)] + [chr(c) for c in range(0xA0, 0x3000, 29)]


def _rand_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(_ALPHABET, k=n))


def rand_key_segment(rng: random.Random, *, long: bool | None = None) -> bytes:
    """A path segment for {key}: over-long (> MAX_KEY bytes) when ``long``."""
    if long is None:
        long = rng.random() < 0.15
    if long:
        n = rng.choice((MAX_KEY + 1, MAX_KEY + 2, 2000, 4000, 7000))
        k = rng.randrange(3)
        if k == 0:
            return b"k" * n
        if k == 1:  # multi-byte characters, percent-encoded: > MAX_KEY bytes once decoded
            return _pct(("\u00e9" * (n // 2 + 1)).encode())
        return _pct(rng.randbytes(n // 3 + 1)) + b"k" * (MAX_KEY + 1)
    k = rng.randrange(8)
    if k == 0:
        return rng.choice((b"k1", b"fuzz-2", b"fuzz-3", b"fuzz-1", b"nosuchkey", b"."))
    if k == 1:
        return _pct(_rand_text(rng, rng.randrange(1, 20)).encode())
    if k == 2:  # invalid UTF-8 escapes, NULs, encoded slashes
        return rng.choice((b"%FF", b"%ED%A0%80", b"%C3%28", b"%00", b"a%2Fb", b"%2e%2e", b"%"))
    if k == 3:
        return _pct(rng.randbytes(rng.randrange(1, 30)))
    if k == 4:
        return b"%zz" + bytes(rng.choice(b"abc%+;,=") for _ in range(rng.randrange(8)))
    if k == 5:
        return b"k" * rng.choice((1, 1023, 1024))
    if k == 6:
        return bytes(rng.choice(b"abcdefxyz0123456789-_.~!$&'()*+,;=:@") for _ in range(12))
    return _pct(_rand_text(rng, rng.choice((300, 500))).encode())


def rand_query(rng: random.Random, names: tuple[str, ...] = ("stale", "cluster")) -> bytes:
    if rng.random() < 0.3:
        return b""
    parts = []
    for _ in range(rng.choice((1, 1, 2, 5))):
        name = rng.choice((*names, "x", "", "stale[]", "%FF", "a" * 300)).encode()
        val = rng.choice(
            (
                b"true",
                b"false",
                b"1",
                b"0",
                b"TRUE",
                b"yes",
                b"",
                b"%FF",
                b"%ED%A0%80",
                b"%00",
                b"tr%75e",
                _pct(rng.randbytes(6)),
                b"x" * 2000,
            )
        )
        parts.append(name + (b"=" + val if rng.random() < 0.9 else b""))
    return b"?" + rng.choice((b"&", b";", b"&&")).join(parts)


def rand_headers(rng: random.Random, safe: bool) -> list[tuple[bytes, bytes]]:
    out = []
    for _ in range(rng.choice((0, 0, 1, 2, 4, 20))):
        name = rng.choice(_SAFE_HEADERS)
        k = rng.randrange(6)
        if k == 0:
            val = b""
        elif k == 1:
            val = _printable(rng, rng.randrange(1, 60))
        elif k == 2:
            val = _rand_text(rng, rng.randrange(1, 30)).encode()
        elif k == 3:
            val = _high(rng, rng.randrange(1, 30))
        elif k == 4:
            val = b"v" * rng.choice((100, 4000, 8000))
        else:
            val = b"\t padded \t"
        out.append((name, val))
    if not safe and rng.random() < 0.5:
        weird = rng.choice(
            (
                (b"Content-Type", b"application/json; charset=utf-8"),
                (b"Accept-Encoding", b"gzip, br, zstd, *"),
                (b"Expect", b"bogus"),
                (b"Range", b"bytes=9999999-1"),
                (b"Upgrade", b"websocket"),
                (b"Connection", b"Upgrade, keep-alive"),
                (b"X-\xff\xfe", b"v"),
                (b"Bad Name", b"v"),
                (b"X-Nul", b"a\x00b"),
                (b"X-Many-Colons", b":::::"),
                (b"Host", b""),
                (b"Host", b"a" * 5000),
                (b"If-Modified-Since", b"not a date"),
            )
        )
        out.append(weird)
    return out


def build_request(
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    version: bytes = b"HTTP/1.1",
    close: bool = True,
    length: bool = True,
) -> bytes:
    lines = [method + b" " + target + b" " + version, b"Host: 127.0.0.1"]
    if close:
        lines.append(b"Connection: close")
    if length and (body or method in (b"POST", b"PUT")):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines += [n + b": " + v for n, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _invalid_cas_body(rng: random.Random) -> bytes:
    while True:
        k = rng.randrange(9)
        if k == 0:
            body = rng.randbytes(rng.randrange(0, 200))
        elif k == 1:
            body = json.dumps({"expected": None, "new": "x" * rng.randrange(10)}).encode()
            body = body[: rng.randrange(len(body))]
        elif k == 2:
            body = rng.choice(
                (
                    b"[]",
                    b'"x"',
                    b"1",
                    b"null",
                    b"true",
                    b"NaN",
                    b"-Infinity",
                    b"[{}]",
                    b"1e999999",
                    b'"\\ud800"',
                )
            )
        elif k == 3:
            new = rng.choice((1, None, [], {}, True, 1.5, ["x"]))
            exp = rng.choice((None, "a", 5, [], {}, False))
            obj: dict[str, Any] = {"expected": exp, "new": new}
            if rng.random() < 0.3:
                obj.pop("new")
            body = json.dumps(obj).encode()
        elif k == 4:  # a valid object, but not UTF-8
            body = json.dumps({"expected": None, "new": "\u00e9t\u00e9"}, ensure_ascii=False)
            body = body.encode(rng.choice(("latin-1", "utf-16", "utf-32", "cp1252")))
        elif k == 5:  # nested, but not as deep as the known RecursionError
            d = rng.choice((10, 100, 500, 900))
            body = b"[" * d + b"]" * d if rng.random() < 0.5 else b'{"a":' * d + b"1" + b"}" * d
        elif k == 6:
            body = b'{"expected": null, "new": "x"}' + rng.choice((b"x", b"}", b",", b"\x00"))
        elif k == 7:
            body = b'{"new": "x", "new": 5}'
        else:
            body = b'{"expected": "' + _high(rng, 5) + b'"}'
        if not cas_body_valid(body):
            return body


def http_case(rng: random.Random, findings: Findings) -> HttpCase:
    while True:
        case = _http_case(rng)
        if case.allowed is None and could_write(case.raw):
            findings.strategies["http:filtered_write"] += 1
            continue
        findings.strategies[f"http:{case.kind}"] += 1
        return case


def _http_case(rng: random.Random) -> HttpCase:
    r = rng.random()
    # ---- reads and other routes, with random everything
    if r < 0.22:
        method = rng.choice((b"GET", b"GET", b"HEAD"))
        q = rand_query(rng, ("stale",))
        if rng.random() < 0.8:  # mostly stale reads: a linearizable one costs a round trip
            q = (q + b"&" if q else b"?") + b"stale=" + rng.choice((b"true", b"1", b"x", b"%FF"))
        target = b"/v1/kv/" + rand_key_segment(rng) + q
        return HttpCase(
            "kv_get",
            build_request(method, target, rand_headers(rng, False)),
        )
    if r < 0.32:
        path = rng.choice(
            (b"/v1/status", b"/healthz", b"/readyz", b"/metrics", b"/", b"/v1/status")
        )
        q = rand_query(rng, ("cluster",))
        if (b"cluster=" in q) and rng.random() < 0.9:
            q = b"?cluster=no"  # a cluster status fans out to every peer: keep them rare
        method = rng.choice((b"GET", b"HEAD"))
        return HttpCase(
            "routes",
            build_request(method, path + q, rand_headers(rng, False)),
        )
    if r < 0.42:  # methods a route does not have (405), and unknown ones
        method = rng.choice(
            (b"PATCH", b"OPTIONS", b"TRACE", b"FOO", b"GET", b"PROPFIND", b"M-SEARCH", b"QUERY")
        )
        path = rng.choice((b"/v1/kv/k1", b"/v1/cas/k1", b"/v1/status", b"/healthz", b"/metrics"))
        body = rng.randbytes(rng.randrange(0, 100)) if rng.random() < 0.3 else b""
        return HttpCase("method", build_request(method, path, rand_headers(rng, False), body))
    if r < 0.52:  # unrouted or odd paths
        method = rng.choice((b"GET", b"HEAD", b"PUT", b"POST", b"DELETE"))
        k = rng.randrange(7)
        if k == 0:
            path = b"/" + _pct(rng.randbytes(rng.randrange(1, 40)))
        elif k == 1:
            path = b"/" + b"/".join(
                rng.choice((b"..", b".", b"", b"v1", b"%2e%2e", b"etc"))
                for _ in range(rng.randrange(1, 8))
            )
        elif k == 2:
            path = b"/" + b"x" * rng.choice((1000, 5000, 8100, 9000))
        elif k == 3:
            path = rng.choice(
                (
                    b"*",
                    b"http://127.0.0.1/healthz",
                    b"//healthz",
                    b"/v1",
                    b"/v1/",
                    b"/v1/status/",
                    b"/static/../../etc/passwd",
                )
            )
        elif k == 4:
            path = b"/v1/" + _pct(_rand_text(rng, 10).encode())
        elif k == 5:
            path = b"/%" + rng.choice((b"", b"z", b"zz", b"0", b"ff", b"FF%FE"))
        else:
            path = b"/v1/kv" if method == b"GET" else b"/v1/status"
        method = rng.choice((b"GET", b"HEAD")) if b"kv" in path or b"cas" in path else method
        return HttpCase("path", build_request(method, path, rand_headers(rng, False)))
    if r < 0.64:
        return HttpCase("garbage", _garbage_request(rng))
    # ---- requests routed to a write handler: only ones that must be refused
    if r < 0.74:
        key = rand_key_segment(rng)
        long = len(urllib.parse.unquote_to_bytes(key)) > MAX_KEY
        if long:
            body = rng.randbytes(rng.randrange(50)) if rng.random() < 0.5 else b"value"
        else:
            key = rand_key_segment(rng, long=True) if rng.random() < 0.3 else key
            long = len(urllib.parse.unquote_to_bytes(key)) > MAX_KEY
            body = rng.choice((b"\xff", b"a\x80", b"\xed\xa0\x80", b"\xc3(", rng.randbytes(40)))
            try:
                body.decode("utf-8")
                body = b"\xff" + body
            except UnicodeDecodeError:
                pass
        return HttpCase(
            "put_invalid",
            build_request(b"PUT", b"/v1/kv/" + key, rand_headers(rng, True), body),
            allowed=WRITE_REFUSED,
        )
    if r < 0.745:  # value too large for the route (413) or for the store (400)
        n = rng.choice((MAX_VALUE + 1, MAX_VALUE + 4096, MAX_VALUE + 5000, 600_000))
        return HttpCase(
            "put_large",
            build_request(b"PUT", b"/v1/kv/big", rand_headers(rng, True), b"v" * n),
            allowed=(400, 403, 413),  # 403: a foreign Origin (net/browser.py)
        )
    if r < 0.78:
        key = rand_key_segment(rng, long=True)
        return HttpCase(
            "delete_invalid",
            build_request(b"DELETE", b"/v1/kv/" + key, rand_headers(rng, True)),
            allowed=WRITE_REFUSED,
        )
    if r < 0.93:
        key = rand_key_segment(rng, long=False)
        while len(urllib.parse.unquote_to_bytes(key)) > MAX_KEY or b"/" in key:
            key = rand_key_segment(rng, long=False)
        headers = rand_headers(rng, True)
        # Mostly JSON (anything else is 415 before the body is read: net/browser.py).
        ctype = b"application/json" if rng.random() < 0.7 else rng.choice(_CAS_CTYPES)
        if ctype is not None:
            headers.append((b"Content-Type", ctype))
        body = _invalid_cas_body(rng)
        if SEND_KNOWN_BUGS and rng.random() < 0.05:
            body, headers = _cas_known_bug(rng, headers)
        return HttpCase(
            "cas_invalid",
            build_request(b"POST", b"/v1/cas/" + key, headers, body),
            allowed=WRITE_REFUSED,
        )
    if r < 0.95:
        key = rand_key_segment(rng, long=True)
        body = json.dumps({"expected": None, "new": "x"}).encode()
        return HttpCase(
            "cas_long_key",
            build_request(b"POST", b"/v1/cas/" + key, rand_headers(rng, True), body),
            allowed=WRITE_REFUSED,
        )
    # ---- write methods on routes that do not have them
    method, path = rng.choice(
        (
            (b"POST", b"/v1/kv/k1"),
            (b"PUT", b"/v1/cas/k1"),
            (b"DELETE", b"/v1/cas/k1"),
            (b"PATCH", b"/v1/kv/k1"),
        )
    )
    body = json.dumps({"expected": None, "new": "x"}).encode()
    return HttpCase(
        "write_405",
        build_request(method, path, rand_headers(rng, True), body),
        allowed=(400, 403, 405, 415, 431),
    )


def _cas_known_bug(
    rng: random.Random, headers: list[tuple[bytes, bytes]]
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    headers = [h for h in headers if h[0] != b"Content-Type"]
    if rng.random() < 0.5:
        headers.append((b"Content-Type", b"application/json; charset=bogus"))
        return b'{"new": 5}', headers
    return b"[" * 100_000, headers


def _garbage_request(rng: random.Random) -> bytes:
    method = rng.choice((b"GET", b"HEAD", b"OPTIONS"))
    path = rng.choice((b"/healthz", b"/v1/status", b"/", b"/metrics", b"/v1/kv/k1?stale=true"))
    k = rng.randrange(14)
    if k == 0:
        return rng.randbytes(rng.randrange(1, 2000))
    if k == 1:
        return _printable(rng, rng.randrange(1, 200)) + b"\r\n\r\n"
    if k == 2:
        version = rng.choice(
            (
                b"HTTP/9.9",
                b"HTTP/1.2",
                b"HTTP/2.0",
                b"HTTP/0.9",
                b"HTTP/1",
                b"http/1.1",
                b"HTTP/1.1x",
                b"",
                b"HTTP/1.0",
            )
        )
        return build_request(method, path, [], version=version)
    if k == 3:  # whitespace and control characters in the request line
        return method + rng.choice((b"  ", b"\t", b" \x00 ", b" ")) + path + b" HTTP/1.1\r\n\r\n"
    if k == 4:  # a header without a colon, a space before the colon, an obs-fold
        bad = rng.choice(
            (
                b"NoColon",
                b"Name : v",
                b"X-A: v\r\n folded",
                b": novalue",
                b"X-A: v\rX-B: w",
                b"X\x7fA: v",
            )
        )
        return build_request(method, path, []).replace(b"\r\n\r\n", b"\r\n" + bad + b"\r\n\r\n")
    if k == 5:  # a header line past the parser's 8190-byte limit
        return build_request(method, path, [(b"X-Big", b"b" * rng.choice((8190, 9000, 60_000)))])
    if k == 6:  # too many headers
        return build_request(
            method, path, [(b"X-%d" % i, b"v") for i in range(rng.choice((101, 200, 500)))]
        )
    if k == 7:  # Content-Length that is not a length
        cl = rng.choice((b"-1", b"abc", b"1 2", b"0x10", b"+5", b"99999999999999999999999", b""))
        return build_request(method, path, [(b"Content-Length", cl)], length=False)
    if k == 8:  # two different Content-Lengths
        return build_request(
            b"GET",
            path,
            [(b"Content-Length", b"0"), (b"Content-Length", b"5")],
            b"abcde",
            length=False,
        )
    if k == 9:  # a broken chunked body
        chunks = rng.choice(
            (
                b"zz\r\nab\r\n0\r\n\r\n",
                b"5\r\nab\r\n0\r\n\r\n",
                b"-1\r\n\r\n",
                b"ffffffffffffffffffff\r\n",
                b"0\r\nX: \x00\r\n\r\n",
            )
        )
        return build_request(
            b"GET", path, [(b"Transfer-Encoding", b"chunked")], chunks, length=False
        )
    if k == 10:  # Transfer-Encoding with Content-Length (smuggling shape), or unknown codings
        te = rng.choice((b"chunked", b"gzip, chunked", b"chunked, gzip", b"identity", b"xchunked"))
        return build_request(
            b"GET",
            path,
            [(b"Transfer-Encoding", te), (b"Content-Length", b"3")],
            b"0\r\n\r\n",
            length=False,
        )
    if k == 11:  # bare LF line endings, or none at all
        return build_request(method, path, []).replace(b"\r\n", rng.choice((b"\n", b"\r", b"")))
    if k == 12:  # a body on a GET with a Content-Encoding the server cannot decode
        enc = rng.choice((b"gzip", b"deflate", b"br", b"zstd", b"x-bogus"))
        return build_request(b"GET", path, [(b"Content-Encoding", enc)], rng.randbytes(50))
    # a valid request followed by garbage on the same connection
    return build_request(method, path, [], close=False) + rng.randbytes(rng.randrange(1, 300))
