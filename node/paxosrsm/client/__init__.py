"""paxosrsm's client: one sans-I/O core and its drivers.

* ``core``: ``ClientCore``, the client role without I/O (sessions, retries,
  redirects, outcomes), and ``SessionClient``, the simulator's driver of it;
* ``aio``: ``AsyncClient``, the network driver (UDP/TCP, asyncio), and
  ``Client``, its synchronous adapter;
* ``mvcc``: ``MVCCClient``, etcd's data model (ranges, revisions, txn,
  leases, watch) over ``AsyncClient``.
"""

from .aio import (
    AsyncClient,
    Client,
    ClientError,
    KVError,
    Unavailable,
    UnknownOutcome,
    key_from,
)
from .core import ClientCore, Completion, Outcome, SessionClient
from .mvcc import MVCCClient

__all__ = [
    "AsyncClient",
    "Client",
    "ClientCore",
    "ClientError",
    "Completion",
    "KVError",
    "MVCCClient",
    "Outcome",
    "SessionClient",
    "Unavailable",
    "UnknownOutcome",
    "key_from",
]
