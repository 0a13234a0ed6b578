"""Node identities: pairwise peer keys that only the two nodes of a pair hold.

Issue 12: with one cluster key, any node could speak as any other (forge a
Promise or an Accepted "from" node 2, and so decide alone). Each node now has
its own key file, made from two secrets that no node holds:

- the cluster's *master keys* (``cluster.key``, ids and rotation as in
  ``paxosrsm.net.auth``), and
- the *identity secret* (``identity.key``), known only to whoever makes the
  node key files (the operator, or ``paxosctl local up``).

For every master key ``k`` and every pair of members ``i < j``, the pair
secret is ``HMAC(identity, "paxosrsm/v2/pair" | k | i | j)``. Node ``i``'s key
file holds the master keys and the pair secrets of its own pairs only
(``pair <k> <j> <hex>`` lines). Traffic between ``i`` and ``j`` is protected by
a key derived from both the master's peer key and the pair secret (see
``auth.Keyring``), so a node can seal for, and open from, its own pairs only:
it cannot pose as another node to a third, and what two others say to each
other stays closed to it. A master key alone (a client given ``cluster.key``)
speaks no peer traffic at all.

This module is standard library only: the operator's image imports it too.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import struct
from collections.abc import Iterable
from pathlib import Path

_PAIR = struct.Struct(">BQQ")
MIN_IDENTITY_BYTES = 16


def parse_masters(text: str) -> list[tuple[int, str]]:
    """The master keys of a ``cluster.key`` in order (a lone token is key 0).
    Client and pair lines are not master keys and are skipped."""
    rows = [ln.split("#", 1)[0].split() for ln in text.splitlines()]
    rows = [r for r in rows if r]
    if len(rows) == 1 and len(rows[0]) == 1:
        return [(0, rows[0][0])]
    out = []
    for r in rows:
        if r[0] in ("client", "pair"):
            continue
        if len(r) != 2 or not r[0].isdigit():
            raise ValueError(f"not a key line: {' '.join(r)[:20]}...")
        out.append((int(r[0]), r[1]))
    return out


def parse_identity(text: str) -> bytes:
    tok = text.split("#", 1)[0].strip()
    if len(tok) < MIN_IDENTITY_BYTES or any(c.isspace() for c in tok):
        raise ValueError(f"an identity secret is one token of at least {MIN_IDENTITY_BYTES} chars")
    return tok.encode()


def pair_secret(identity: bytes, kid: int, a: int, b: int) -> bytes:
    """The secret only nodes ``a`` and ``b`` hold, for master key ``kid``."""
    if a == b:
        raise ValueError("a pair is two different nodes")
    lo, hi = min(a, b), max(a, b)
    return hmac.digest(identity, b"paxosrsm/v2/pair" + _PAIR.pack(kid, lo, hi), hashlib.sha256)


def node_key_file(cluster_key: str, identity: bytes, me: int, members: Iterable[int]) -> str:
    """Node ``me``'s key file: the master keys (in their order: the first
    sends) and a pair secret with every other member, for every master."""
    masters = parse_masters(cluster_key)
    if not masters:
        raise ValueError("no master key")
    others = sorted({m for m in members if m != me})
    lines = [f"# node {me}: the cluster's master keys and node {me}'s pair keys; keep it secret"]
    lines += [f"{k} {v}" for k, v in masters]
    for k, _ in masters:
        lines += [f"pair {k} {j} {pair_secret(identity, k, me, j).hex()}" for j in others]
    return "\n".join(lines) + "\n"


def write_node_keys(root: Path, members: Iterable[int]) -> dict[int, Path]:
    """Without Kubernetes (``paxosctl local up``, tests): make ``root/identity.key``
    once, and ``root/keys/node-<id>.key`` for every member from it and
    ``root/cluster.key``; each file readable by its owner only."""
    ident = root / "identity.key"
    if not ident.exists():
        ident.write_text(secrets.token_hex(32) + "\n")
        ident.chmod(0o600)
    secret = parse_identity(ident.read_text())
    cluster_key = (root / "cluster.key").read_text()
    d = root / "keys"
    d.mkdir(mode=0o700, exist_ok=True)
    out = {}
    ids = sorted(set(members))
    for me in ids:
        p = d / f"node-{me}.key"
        tmp = p.with_suffix(".tmp")
        tmp.write_text(node_key_file(cluster_key, secret, me, ids))
        tmp.chmod(0o600)
        os.replace(tmp, p)
        out[me] = p
    return out


def node_key_path(root: Path, nid: int) -> Path:
    """A node's own key file where there is one, else the shared cluster key."""
    own = root / "keys" / f"node-{nid}.key"
    return own if own.exists() else root / "cluster.key"
