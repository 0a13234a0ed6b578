"""Rotation of the cluster key, driven by the operator (issue 12).

Pure decisions, unit-tested without a cluster. The user asks by setting the
annotation ``paxosrsm.dev/rotate-key`` on the PaxosCluster to a new value
(a date, a ticket number). The operator then edits the ``<name>-key``
Secret's ``cluster.key`` in three steps, each only once every member reports
(``/v1/status``: ``keys``, ``key_primary``) that it runs the file as it now
stands (a node reloads its key file within 2 s of a change; the kubelet
updates a Secret volume within about a minute):

1. ``adding``: the new key is added second: accepted everywhere, not used;
2. ``promoting``: the new key moves first: every member sends with it;
3. ``retiring``: the old key is removed;

and marks it done. Where it stands is kept on the Secret itself (annotation
``paxosrsm.dev/key-rotation: <request>/<step>/<new id>``), and every step
is decided from the Secret and the members' answers read in that cycle,
never from the PaxosCluster's status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from paxosrsm.net import identity as ident

REQUEST = "paxosrsm.dev/rotate-key"
MARK = "paxosrsm.dev/key-rotation"


@dataclass(frozen=True)
class Action:
    text: str  # the new cluster.key
    mark: str  # the Secret's new MARK annotation
    message: str


@dataclass(frozen=True)
class Wait:
    message: str


def parse(text: str) -> list[tuple[int, str]]:
    """The key file's master keys in order (a lone token is key 0)."""
    return ident.parse_masters(text)


def render(keys: list[tuple[int, str]]) -> str:
    return "".join(f"{k} {v}\n" for k, v in keys)


def _converged(keys: list[tuple[int, str]], members: dict[str, Any], expected: int) -> str | None:
    """None when every member runs exactly this key file; else why not."""
    ids, primary = sorted(k for k, _ in keys), keys[0][0]
    up = {n: s for n, s in members.items() if s}
    if len(up) < expected:
        return f"{len(up)}/{expected} members answer"
    behind = sorted(
        n for n, s in up.items() if s.get("keys") != ids or s.get("key_primary") != primary
    )
    if behind:
        return f"waiting for {', '.join(behind)} to load keys {ids} (sending with {primary})"
    return None


def plan(
    request: str | None,
    text: str,
    mark: str | None,
    members: dict[str, Any],
    expected: int,
    new_token: str,
) -> Action | Wait | None:
    """The next step of the rotation asked for by ``request``, if any.

    ``text``/``mark``: the Secret's key file and annotation as read now;
    ``members``: pod -> its /v1/status (None: no answer), read now;
    ``new_token``: a fresh secret, used only when a rotation starts."""
    if not request or "/" in request:
        return None
    keys = parse(text)
    if mark is None or not mark.startswith(request + "/"):
        why = _converged(keys, members, expected)
        if why is not None:
            return Wait(f"key rotation {request!r} not started: {why}")
        used = {k for k, _ in keys}
        gap = next(i for i in range(1, 257) if (keys[0][0] + i) % 256 not in used)
        new_id = (keys[0][0] + gap) % 256
        msg = f"key rotation {request!r}: key {new_id} added (accepted, not used yet)"
        return Action(render([*keys, (new_id, new_token)]), f"{request}/adding/{new_id}", msg)
    _, step, nid = mark.split("/", 2)
    if step == "done":
        return None
    new_id = int(nid)
    why = _converged(keys, members, expected)
    if why is not None:
        return Wait(f"key rotation {request!r} ({step}): {why}")
    new = [kv for kv in keys if kv[0] == new_id]
    old = [kv for kv in keys if kv[0] != new_id]
    if not new:
        raise ValueError(f"key {new_id} of rotation {request!r} is gone from the Secret")
    head = f"key rotation {request!r}"
    if step == "adding":
        msg = f"{head}: every member sends with key {new_id}"
        return Action(render(new + old), f"{request}/promoting/{new_id}", msg)
    if step == "promoting":
        msg = f"{head}: old keys {[k for k, _ in old]} removed"
        return Action(render(new), f"{request}/retiring/{new_id}", msg)
    msg = f"{head} done: every member runs key {new_id} alone"
    return Action(text, f"{request}/done/{new_id}", msg)
