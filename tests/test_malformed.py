"""Malformed input is refused with a clear error and never changes the core's state."""

from __future__ import annotations

import copy

import pytest

from paxosrsm.config import ClusterConfig
from paxosrsm.messages import (
    Accept,
    Accepted,
    ClientRequest,
    Heartbeat,
    Nack,
    Prepare,
    Promise,
    RecoverPrepare,
)
from paxosrsm.node import Node
from paxosrsm.statemachine import KVStore, encode_op
from paxosrsm.types import Ballot, Command, Kind, ProtocolError

CFG = ClusterConfig(n_acceptors=3, max_batch=4)


def busy_node() -> Node:
    """A leader with some state, so that 'unchanged' means something."""
    n = Node(CFG, 0, seed=3)
    assert n.proposer is not None
    n.proposer.start_election()
    b = n.ready().messages[0].msg.ballot  # type: ignore[union-attr]
    n.step(1, Promise(b, 1, 0, (), 1))
    n.step(2, Promise(b, 2, 0, (), 1))
    n.client_request(ClientRequest(1, 1, Kind.WRITE, encode_op("put", "k", "v")))
    n.ready()
    return n


def forge(cls: type, **fields: object) -> object:
    """Build a message that skipped validation, as a buggy or hostile decoder might."""
    obj = object.__new__(cls)
    for k, v in fields.items():
        object.__setattr__(obj, k, v)
    return obj


B = Ballot(9, 1)
BAD_INPUTS: list[tuple[str, int, object, str]] = [
    ("wrong message type", 1, "hello", "unknown message type"),
    ("a dict", 1, {"type": "prepare"}, "unknown message type"),
    ("unknown sender", 77, Prepare(B, 0), "unknown node"),
    ("ballot not the sender's", 2, Prepare(B, 0), "not node 2"),
    (
        "acceptor id out of range",
        1,
        forge(
            Promise,
            ballot=Ballot(9, 0),
            acceptor=5,
            floor=0,
            entries=(),
            inc=1,
            peer_incs=(),
            from_slot=0,
            recover_inc=0,
            nonce=0,
            upto=-1,
        ),
        "out of range",
    ),
    ("promise for another node's ballot", 1, Promise(B, 1, 0, (), 1), "not ours"),
    (
        "recovery for another acceptor",
        1,
        RecoverPrepare(Ballot(3, 2), 2, 4),
        "not node 1.s",
    ),
    (
        "incarnation of an unknown acceptor",
        1,
        Accept(B, 0, (), -1, ((7, 3),)),
        "unknown acceptor 7",
    ),
    ("acceptor id of another node", 1, Accepted(B, 0, 2), "sent by node 1"),
    ("negative slot", 1, forge(Accept, ballot=B, slot=-1, value=(), commit=-1), "slot=-1"),
    (
        "oversized batch",
        1,
        Accept(B, 0, tuple(Command(1, i + 1, b"x") for i in range(5)), -1),
        "max_batch=4",
    ),
    ("slot is a bool", 1, forge(Prepare, ballot=B, from_slot=True), "must be an int"),
    ("ballot is a tuple", 1, forge(Prepare, ballot=(9, 1), from_slot=0), "must be a Ballot"),
    (
        "value holds junk",
        1,
        forge(Accept, ballot=B, slot=0, value=("x",), commit=-1),
        "not a Command",
    ),
    (
        "nack that names a lower ballot",
        1,
        forge(Nack, ballot=B, promised=Ballot(1, 1), acceptor=1),
        "higher",
    ),
    ("heartbeat with negative probe", 1, forge(Heartbeat, ballot=B, commit=0, probe=-5), "probe"),
]


@pytest.mark.parametrize(
    ("name", "src", "msg", "error"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_peer_input_is_refused_and_changes_nothing(
    name: str, src: int, msg: object, error: str
) -> None:
    n = busy_node()
    before = copy.deepcopy(n.debug_state())
    with pytest.raises(ProtocolError, match=error):
        n.step(src, msg)  # type: ignore[arg-type]
    assert n.debug_state() == before
    assert n.ready().empty()


def test_bad_client_input_is_refused_and_changes_nothing() -> None:
    n = busy_node()
    before = copy.deepcopy(n.debug_state())
    for bad in (
        "put k v",
        forge(ClientRequest, client_id=1, seq=0, kind=Kind.WRITE, payload=b""),
        forge(ClientRequest, client_id=1, seq=2, kind=7, payload=b""),
        forge(ClientRequest, client_id=-1, seq=2, kind=Kind.WRITE, payload=b""),
    ):
        with pytest.raises(ProtocolError):
            n.client_request(bad)  # type: ignore[arg-type]
    assert n.debug_state() == before


def test_constructors_validate() -> None:
    with pytest.raises(ProtocolError):
        Ballot(-1, 0)
    with pytest.raises(ProtocolError):
        Ballot(1, 5000)
    with pytest.raises(ProtocolError):
        Prepare(Ballot(1, 1), -3)
    with pytest.raises(ProtocolError):
        Command(1, 0, b"")
    with pytest.raises(ProtocolError):
        Command(1, 1, "text")  # type: ignore[arg-type]


def test_state_machine_answers_bad_commands_with_an_error_not_a_crash() -> None:
    kv = KVStore()
    for bad in (b"\xff\xfe", b"[]", b'{"op":"put","key":"k"}', b'{"op":"zap","key":"k"}', b"{}"):
        out = kv.apply(bad)
        assert out.startswith(b'{"ok":false'), out
    assert kv.data == {}
