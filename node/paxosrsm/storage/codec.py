"""Binary encoding of what storage keeps: slot values and snapshots.

Fixed-width little-endian integers and length-prefixed bytes. Decoding is
strict: a short buffer, a length past the end or trailing bytes raise
``CodecError``. Every stored blob also carries a CRC32 (checked by storage), so
a flipped bit is detected before any byte is decoded.
"""

from __future__ import annotations

import struct
import zlib

from ..messages import Session, Snapshot
from ..types import Ballot, Command, ProtocolError, Value

_U32 = struct.Struct("<I")
_CMD = struct.Struct("<QQI")
_SESS = struct.Struct("<QQI")
_BALLOT = struct.Struct("<QH")


class CodecError(ValueError):
    pass


def crc32(*parts: bytes | memoryview) -> int:
    c = 0
    for p in parts:
        c = zlib.crc32(p, c)
    return c


def encode_value(value: Value) -> bytes:
    out = [_U32.pack(len(value))]
    for c in value:
        out.append(_CMD.pack(c.client_id, c.seq, len(c.payload)))
        out.append(c.payload)
    return b"".join(out)


def decode_value(data: bytes) -> Value:
    try:
        (n,) = _U32.unpack_from(data, 0)
        pos = 4
        cmds = []
        for _ in range(n):
            cid, seq, ln = _CMD.unpack_from(data, pos)
            pos += _CMD.size
            if pos + ln > len(data):
                raise CodecError("command payload runs past the end")
            cmds.append(Command(cid, seq, data[pos : pos + ln]))
            pos += ln
    except (struct.error, ProtocolError) as e:
        raise CodecError(f"bad value encoding: {e}") from e
    if pos != len(data):
        raise CodecError(f"{len(data) - pos} trailing bytes after a value")
    return tuple(cmds)


def encode_ballot(b: Ballot) -> bytes:
    return _BALLOT.pack(b.round, b.node)


def decode_ballot(data: bytes) -> Ballot:
    try:
        r, n = _BALLOT.unpack(data)
        return Ballot(r, n)
    except (struct.error, ProtocolError) as e:
        raise CodecError(f"bad ballot encoding: {e}") from e


_SNAP_HEAD = struct.Struct("<QQI")  # slot, state length, session count


def encode_snapshot(s: Snapshot) -> bytes:
    return b"".join(encode_snapshot_parts(s))


def encode_snapshot_parts(s: Snapshot) -> list[bytes]:
    """``encode_snapshot`` as pieces to write in order (the state is not
    copied: it may be most of a gigabyte)."""
    out = [_SNAP_HEAD.pack(s.slot, len(s.state), len(s.sessions)), s.state]
    for x in s.sessions:
        out.append(_SESS.pack(x.client_id, x.seq, len(x.result)))
        out.append(x.result)
    return out


def decode_snapshot(data: bytes | memoryview) -> Snapshot:
    try:
        slot, ln, n = _SNAP_HEAD.unpack_from(data, 0)
        pos = _SNAP_HEAD.size
        if pos + ln > len(data):
            raise CodecError("snapshot state runs past the end")
        state = bytes(data[pos : pos + ln])
        pos += ln
        sessions = []
        for _ in range(n):
            cid, seq, rl = _SESS.unpack_from(data, pos)
            pos += _SESS.size
            if pos + rl > len(data):
                raise CodecError("session result runs past the end")
            sessions.append(Session(cid, seq, bytes(data[pos : pos + rl])))
            pos += rl
    except (struct.error, ProtocolError) as e:
        raise CodecError(f"bad snapshot encoding: {e}") from e
    if pos != len(data):
        raise CodecError(f"{len(data) - pos} trailing bytes after a snapshot")
    return Snapshot(slot, state, tuple(sessions))
