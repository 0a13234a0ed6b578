"""The wire codec: protocol messages to msgpack and back.

Every message is a msgpack array ``[tag, field, ...]``. Decoding rebuilds each
message through its validating constructor, so a decoded message is a valid
message; anything else raises ``CodecError`` (a ``ProtocolError``). The codec
never trusts a length, a type or a tag it did not check.
"""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped]

from ..messages import (
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
    PeerMessage,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    RecoverPrepare,
    Session,
    Snapshot,
    Status,
)
from ..types import Ballot, Command, Kind, ProtocolError, Value


class CodecError(ProtocolError):
    """Bytes that are not a valid message."""


# Tags. Peer messages 1..19, client traffic 20..29. Never reuse a number.
T_PREPARE = 1
T_RECOVER = 2
T_FENCED = 3
T_PROMISE = 4
T_NACK = 5
T_ACCEPT = 6
T_ACCEPTED = 7
T_HEARTBEAT = 8
T_HB_ACK = 9
T_CATCHUP_REQ = 10
T_CATCHUP_REP = 11
T_PREVOTE = 12
T_PREVOTE_REP = 13
T_CLIENT_REQ = 20
T_CLIENT_REP = 21

_UNPACK_LIMITS: dict[str, Any] = {
    "raw": False,
    "strict_map_key": True,
    "use_list": True,
    "max_str_len": 1 << 16,
    "max_bin_len": 256 << 20,
    "max_array_len": 1 << 20,
    "max_map_len": 0,
    "max_ext_len": 0,
}


def _b(v: Ballot) -> list[int]:
    return [v.round, v.node]


def _val(v: Value) -> list[list[Any]]:
    return [[c.client_id, c.seq, c.payload] for c in v]


def encode_obj(msg: PeerMessage | ClientRequest | ClientReply) -> list[Any]:
    """The msgpack-ready array for one message."""
    t = type(msg)
    if t is Accept:
        assert isinstance(msg, Accept)
        return [T_ACCEPT, _b(msg.ballot), msg.slot, _val(msg.value), msg.commit,
                [list(p) for p in msg.incs]]  # fmt: skip
    if t is Accepted:
        assert isinstance(msg, Accepted)
        return [T_ACCEPTED, _b(msg.ballot), msg.slot, msg.acceptor]
    if t is ClientRequest:
        assert isinstance(msg, ClientRequest)
        return [T_CLIENT_REQ, msg.client_id, msg.seq, int(msg.kind), msg.payload]
    if t is ClientReply:
        assert isinstance(msg, ClientReply)
        return [T_CLIENT_REP, msg.client_id, msg.seq, int(msg.status), msg.result, msg.leader_hint]
    if t is Heartbeat:
        assert isinstance(msg, Heartbeat)
        return [T_HEARTBEAT, _b(msg.ballot), msg.commit, msg.probe, msg.durable]
    if t is HeartbeatAck:
        assert isinstance(msg, HeartbeatAck)
        return [T_HB_ACK, _b(msg.ballot), msg.probe, msg.acceptor, _b(msg.promised)]
    if t is Prepare:
        assert isinstance(msg, Prepare)
        return [T_PREPARE, _b(msg.ballot), msg.from_slot, msg.nonce]
    if t is Promise:
        assert isinstance(msg, Promise)
        return [T_PROMISE, _b(msg.ballot), msg.acceptor, msg.floor,
                [[e.slot, _b(e.ballot), _val(e.value)] for e in msg.entries], msg.inc,
                [list(p) for p in msg.peer_incs], msg.from_slot, msg.recover_inc, msg.nonce,
                msg.upto]  # fmt: skip
    if t is Nack:
        assert isinstance(msg, Nack)
        return [T_NACK, _b(msg.ballot), _b(msg.promised), msg.acceptor]
    if t is RecoverPrepare:
        assert isinstance(msg, RecoverPrepare)
        return [T_RECOVER, _b(msg.ballot), msg.acceptor, msg.inc, msg.from_slot]
    if t is Fenced:
        assert isinstance(msg, Fenced)
        return [T_FENCED, _b(msg.ballot), msg.acceptor, msg.stale]
    if t is CatchupRequest:
        assert isinstance(msg, CatchupRequest)
        return [T_CATCHUP_REQ, msg.from_slot]
    if t is PreVote:
        assert isinstance(msg, PreVote)
        return [T_PREVOTE, _b(msg.ballot), msg.recovery]
    if t is PreVoteReply:
        assert isinstance(msg, PreVoteReply)
        return [T_PREVOTE_REP, _b(msg.ballot), msg.acceptor, msg.granted, _b(msg.promised)]
    if t is CatchupReply:
        assert isinstance(msg, CatchupReply)
        snap = msg.snapshot
        s = None
        if snap is not None:
            s = [snap.slot, snap.state, [[x.client_id, x.seq, x.result] for x in snap.sessions]]
        return [T_CATCHUP_REP, s, [[d.slot, _val(d.value)] for d in msg.entries], msg.commit]
    raise CodecError(f"cannot encode {t.__name__}")


def encode(msg: PeerMessage | ClientRequest | ClientReply) -> bytes:
    return msgpack.packb(encode_obj(msg), use_bin_type=True)  # type: ignore[no-any-return]


def encode_parts(msg: CatchupReply) -> list[bytes]:
    """``encode(msg)`` for a reply carrying a snapshot, as pieces whose
    concatenation is exactly that encoding: the snapshot's state is one of
    them, not copied (it may be most of a gigabyte, sent in fragments)."""
    snap = msg.snapshot
    if snap is None:
        return [encode(msg)]
    obj = encode_obj(msg)
    n = len(snap.state)
    if n < 1 << 8:
        bin_head = b"\xc4" + n.to_bytes(1, "big")
    elif n < 1 << 16:
        bin_head = b"\xc5" + n.to_bytes(2, "big")
    elif n < 1 << 32:
        bin_head = b"\xc6" + n.to_bytes(4, "big")
    else:
        raise CodecError(f"a snapshot of {n} bytes (msgpack bins end at 4 GiB)")
    pack = msgpack.Packer(use_bin_type=True).pack
    # [T_CATCHUP_REP, [slot, state, sessions], entries, commit]: two fixarrays.
    head = b"\x94" + pack(obj[0]) + b"\x93" + pack(snap.slot) + bin_head
    tail = pack(obj[1][2]) + pack(obj[2]) + pack(obj[3])
    return [head, snap.state, tail]


def encode_many(msgs: list[PeerMessage | ClientRequest | ClientReply]) -> bytes:
    """Several messages in one datagram or frame (a msgpack array of arrays)."""
    return msgpack.packb([encode_obj(m) for m in msgs], use_bin_type=True)  # type: ignore[no-any-return]


def pack_encoded(encoded: list[bytes]) -> bytes:
    """A batch (msgpack array) of already-encoded messages, without re-encoding."""
    n = len(encoded)
    if n < 16:
        head = bytes([0x90 | n])
    elif n < 1 << 16:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(encoded)


# ------------------------------------------------------------------ decoding


def _list(x: object, n: int | None = None, what: str = "field") -> list[Any]:
    if type(x) is not list or (n is not None and len(x) != n):
        want = f"an array of {n}" if n is not None else "an array"
        raise CodecError(f"{what} must be {want}")
    return x


def _flag(x: Any, what: str) -> bool:
    if type(x) is not bool:
        raise CodecError(f"{what} must be a bool")
    return x


def _int(x: object, what: str) -> int:
    if type(x) is not int:
        raise CodecError(f"{what} must be an integer")
    return x


def _bytes(x: object, what: str) -> bytes:
    if type(x) is not bytes:
        raise CodecError(f"{what} must be bytes")
    return x


def _ballot(x: object) -> Ballot:
    r, n = _list(x, 2, "ballot")
    return Ballot(_int(r, "ballot.round"), _int(n, "ballot.node"))


def _value(x: object) -> Value:
    out = []
    for c in _list(x, None, "value"):
        cid, seq, payload = _list(c, 3, "command")
        out.append(Command(_int(cid, "client_id"), _int(seq, "seq"), _bytes(payload, "payload")))
    return tuple(out)


def _pairs(x: object) -> tuple[tuple[int, int], ...]:
    out = []
    for p in _list(x, None, "pairs"):
        a, b = _list(p, 2, "pair")
        out.append((_int(a, "pair[0]"), _int(b, "pair[1]")))
    return tuple(out)


def decode_obj(o: object) -> PeerMessage | ClientRequest | ClientReply:
    """Build one message from its decoded msgpack array."""
    a = _list(o, None, "message")
    if not a:
        raise CodecError("empty message")
    tag = a[0]
    n = len(a)
    try:
        if tag == T_ACCEPT and n == 6:
            return Accept(_ballot(a[1]), _int(a[2], "slot"), _value(a[3]), _int(a[4], "commit"),
                          _pairs(a[5]))  # fmt: skip
        if tag == T_ACCEPTED and n == 4:
            return Accepted(_ballot(a[1]), _int(a[2], "slot"), _int(a[3], "acceptor"))
        if tag == T_CLIENT_REQ and n == 5:
            kind = _int(a[3], "kind")
            if kind not in Kind._value2member_map_:
                raise CodecError(f"unknown request kind {kind}")
            return ClientRequest(_int(a[1], "client_id"), _int(a[2], "seq"), Kind(kind),
                                 _bytes(a[4], "payload"))  # fmt: skip
        if tag == T_CLIENT_REP and n == 6:
            st = _int(a[3], "status")
            if st not in Status._value2member_map_:
                raise CodecError(f"unknown reply status {st}")
            hint = None if a[5] is None else _int(a[5], "leader_hint")
            return ClientReply(_int(a[1], "client_id"), _int(a[2], "seq"), Status(st),
                               _bytes(a[4], "result"), hint)  # fmt: skip
        if tag == T_HEARTBEAT and n == 5:
            return Heartbeat(
                _ballot(a[1]), _int(a[2], "commit"), _int(a[3], "probe"), _int(a[4], "durable")
            )
        if tag == T_HB_ACK and n == 5:
            return HeartbeatAck(_ballot(a[1]), _int(a[2], "probe"), _int(a[3], "acceptor"),
                                _ballot(a[4]))  # fmt: skip
        if tag == T_PREPARE and n == 4:
            return Prepare(_ballot(a[1]), _int(a[2], "from_slot"), _int(a[3], "nonce"))
        if tag == T_PROMISE and n == 11:
            entries = []
            for e in _list(a[4], None, "entries"):
                s, b, v = _list(e, 3, "entry")
                entries.append(AcceptedEntry(_int(s, "slot"), _ballot(b), _value(v)))
            return Promise(_ballot(a[1]), _int(a[2], "acceptor"), _int(a[3], "floor"),
                           tuple(entries), _int(a[5], "inc"), _pairs(a[6]),
                           _int(a[7], "from_slot"), _int(a[8], "recover_inc"),
                           _int(a[9], "nonce"), _int(a[10], "upto"))  # fmt: skip
        if tag == T_NACK and n == 4:
            return Nack(_ballot(a[1]), _ballot(a[2]), _int(a[3], "acceptor"))
        if tag == T_RECOVER and n == 5:
            return RecoverPrepare(_ballot(a[1]), _int(a[2], "acceptor"), _int(a[3], "inc"),
                                  _int(a[4], "from_slot"))  # fmt: skip
        if tag == T_FENCED and n == 4:
            return Fenced(_ballot(a[1]), _int(a[2], "acceptor"), _int(a[3], "stale"))
        if tag == T_CATCHUP_REQ and n == 2:
            return CatchupRequest(_int(a[1], "from_slot"))
        if tag == T_PREVOTE and n == 3:
            return PreVote(_ballot(a[1]), _flag(a[2], "recovery"))
        if tag == T_PREVOTE_REP and n == 5:
            return PreVoteReply(_ballot(a[1]), _int(a[2], "acceptor"), _flag(a[3], "granted"),
                                _ballot(a[4]))  # fmt: skip
        if tag == T_CATCHUP_REP and n == 4:
            snap = None
            if a[1] is not None:
                ss, state, sess = _list(a[1], 3, "snapshot")
                sessions = []
                for x in _list(sess, None, "sessions"):
                    c, q, r = _list(x, 3, "session")
                    sessions.append(Session(_int(c, "client_id"), _int(q, "seq"),
                                            _bytes(r, "result")))  # fmt: skip
                snap = Snapshot(_int(ss, "snapshot.slot"), _bytes(state, "state"),
                                tuple(sessions))  # fmt: skip
            decided = []
            for d in _list(a[2], None, "entries"):
                s, v = _list(d, 2, "entry")
                decided.append(DecidedEntry(_int(s, "slot"), _value(v)))
            return CatchupReply(snap, tuple(decided), _int(a[3], "commit"))
    except CodecError:
        raise
    except ProtocolError as e:
        raise CodecError(str(e)) from e
    except (TypeError, ValueError) as e:  # wrong arity in an unpacking, etc.
        raise CodecError(f"malformed message: {e}") from e
    shown = tag if type(tag) is int else type(tag).__name__  # never repr nested input
    raise CodecError(f"unknown message tag {shown} with {n - 1} fields")


#: A message reassembled from fragments (a catch-up snapshot, runtime
#: ``_reassemble``): its one bin field may be as large as the transfer.
_UNPACK_BIG: dict[str, Any] = {**_UNPACK_LIMITS, "max_bin_len": (1 << 32) - 1}


def unpack(data: bytes | memoryview, big: bool = False) -> object:
    try:
        return msgpack.unpackb(data, **(_UNPACK_BIG if big else _UNPACK_LIMITS))
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError,
            msgpack.StackError) as e:  # fmt: skip
        raise CodecError(f"not msgpack: {e}") from e
    except RecursionError as e:
        raise CodecError("msgpack nested too deep") from e


def decode(data: bytes) -> PeerMessage | ClientRequest | ClientReply:
    try:
        return decode_obj(unpack(data))
    except RecursionError as e:
        raise CodecError("message nested too deep") from e


def decode_many(
    data: bytes | memoryview, big: bool = False
) -> list[PeerMessage | ClientRequest | ClientReply]:
    """The messages of one datagram or frame. All or nothing: one bad message
    refuses the whole batch (it came from one sender, who is confused).
    ``big``: a message reassembled from fragments (bins up to 4 GiB)."""
    o = unpack(data, big)
    try:
        return [decode_obj(m) for m in _list(o, None, "batch")]
    except RecursionError as e:
        raise CodecError("message nested too deep") from e
