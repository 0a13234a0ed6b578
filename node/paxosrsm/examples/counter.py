"""An example of a state machine of your own (issue 13): a replicated counter.

Run nodes with ``--state-machine paxosrsm.examples.counter:Counter``; every
node of the cluster must run the same one. The contract
(``paxosrsm.statemachine.StateMachine``):

- ``apply(payload) -> bytes`` runs each decided write, in log order, on every
  replica: deterministic (no clock, no randomness, no I/O) and never raising
  on bad input (return an error instead: a raise stops every replica alike);
- ``query(payload) -> bytes`` answers a read without changing state;
- ``snapshot() -> bytes`` / ``restore(bytes)`` move the whole state (catch-up,
  restart); the same state must give the same bytes.

Writes here: ``add <n>`` (returns the new value); reads: ``get``.
:class:`CounterClient` wraps :class:`paxosrsm.client.AsyncClient`.
"""

from __future__ import annotations

from ..client.aio import AsyncClient
from ..types import Kind

MAX_STEP = 1 << 32


class Counter:
    def __init__(self) -> None:
        self.value = 0

    def apply(self, payload: bytes) -> bytes:
        op, _, arg = payload.partition(b" ")
        if op != b"add" or not arg.lstrip(b"-").isdigit() or len(arg) > 12:
            return b"error: want 'add <n>'"
        n = int(arg)
        if abs(n) > MAX_STEP:
            return b"error: step too large"
        self.value += n
        return str(self.value).encode()

    def query(self, payload: bytes) -> bytes:
        if payload != b"get":
            return b"error: want 'get'"
        return str(self.value).encode()

    def snapshot(self) -> bytes:
        return str(self.value).encode()

    def restore(self, data: bytes) -> None:
        self.value = int(data or b"0")


class CounterError(Exception):
    pass


class CounterClient:
    """``add`` and ``get`` over the client protocol (leader redirection and
    retries are the client's; a retried ``add`` is applied once: the node's
    session table answers a retry with the stored result)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client

    async def add(self, n: int = 1) -> int:
        return self._int(await self.client.request(Kind.WRITE, f"add {n}".encode()))

    async def get(self, stale: bool = False) -> int:
        kind = Kind.STALE_READ if stale else Kind.READ
        return self._int(await self.client.request(kind, b"get"))

    @staticmethod
    def _int(out: bytes) -> int:
        if out.startswith(b"error"):
            raise CounterError(out.decode())
        return int(out)
