"""The operator's key rotation planner (operator/paxos_operator/rotation.py)."""

from __future__ import annotations

from typing import Any

import pytest

from paxos_operator import rotation as r
from paxosrsm.net import auth


def _members(text: str, n: int = 3, lag: int | None = None) -> dict[str, Any]:
    ring = auth.Keyring.parse(text)
    st = {"keys": sorted(ring.masters), "key_primary": ring.primary}
    out: dict[str, Any] = {f"m-{i}": dict(st) for i in range(n)}
    if lag is not None:
        out[f"m-{lag}"] = {"keys": [0], "key_primary": 0}
    return out


def test_a_rotation_runs_its_three_steps_only_as_members_follow() -> None:
    text, mark = "T" * 44 + "\n", None  # a lone token: key 0, as the operator first makes it
    assert r.plan(None, text, mark, _members(text), 3, "N" * 64) is None
    seen = []
    for _ in range(10):
        step = r.plan("2026-12", text, mark, _members(text), 3, "N" * 64)
        if step is None:
            break
        assert isinstance(step, r.Action)
        # The next step waits while a member still runs the file before it.
        if "done" not in step.mark:
            waiting = r.plan("2026-12", step.text, step.mark, _members(text, lag=None), 3, "x")
            if step.text != text:
                assert isinstance(waiting, r.Wait), (step, waiting)
            assert isinstance(r.plan("2026-12", step.text, step.mark, {}, 3, "x"), r.Wait)
        seen.append(step.mark.split("/")[1])
        text, mark = step.text, step.mark
        auth.Keyring.parse(text)  # every file it writes is one the nodes load
    assert seen == ["adding", "promoting", "retiring", "done"]
    assert r.parse(text) == [(1, "N" * 64)]
    # Done: nothing more, until another request.
    assert r.plan("2026-12", text, mark, _members(text), 3, "x") is None
    again = r.plan("2027-01", text, mark, _members(text), 3, "M" * 64)
    assert isinstance(again, r.Action) and r.parse(again.text) == [(1, "N" * 64), (2, "M" * 64)]


def test_a_member_that_does_not_answer_holds_the_rotation() -> None:
    text = "0 " + "a" * 32 + "\n"
    members = _members(text)
    members["m-2"] = None
    assert isinstance(r.plan("x", text, None, members, 3, "n" * 64), r.Wait)
    assert isinstance(r.plan("x", text, None, _members(text, n=2), 3, "n" * 64), r.Wait)


def test_a_key_removed_by_hand_stops_the_rotation() -> None:
    with pytest.raises(ValueError):
        r.plan("x", "0 " + "a" * 32 + "\n", "x/adding/1", _members("0 " + "a" * 32), 3, "n")
