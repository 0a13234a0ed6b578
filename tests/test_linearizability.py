"""Tests for the WGL linearizability checker (paxosrsm.check.linearizability)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paxosrsm.check.linearizability import (
    CheckResult,
    Op,
    brute_force_linearizable,
    check_history,
    check_key,
)

# --------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------


def put(p: int, v: str, inv: int, comp: int | None, key: str = "a") -> Op:
    return Op(p, "put", key, (v,), inv, comp, None)


def get(p: int, res: str | None, inv: int, comp: int | None, key: str = "a") -> Op:
    return Op(p, "get", key, (), inv, comp, res)


def delete(p: int, res: bool | None, inv: int, comp: int | None, key: str = "a") -> Op:
    return Op(p, "delete", key, (), inv, comp, res)


def cas(
    p: int,
    exp: str | None,
    new: str,
    res: bool | None,
    inv: int,
    comp: int | None,
    key: str = "a",
) -> Op:
    return Op(p, "cas", key, (exp, new), inv, comp, res)


def assert_verdict(ops: Sequence[Op], expected: bool) -> CheckResult:
    """Check with both the WGL checker and the brute-force reference."""
    res = check_key(ops)
    assert res.ok is expected, res.explanation
    assert not res.inconclusive
    assert res.ops_checked == len(ops)
    if len(ops) <= 8:
        assert brute_force_linearizable(ops) is expected
    if not expected:
        assert res.key == "a"
        assert "'a'" in res.explanation
    return res


# --------------------------------------------------------------------------
# 1. Known-bad histories and their good variants
# --------------------------------------------------------------------------

KNOWN_CASES: list[tuple[str, list[Op], bool]] = [
    # stale read: put 1, then put 2, then a read that still returns 1
    ("stale-read", [put(1, "1", 0, 1), put(1, "2", 2, 3), get(2, "1", 4, 5)], False),
    # ...fine when the read overlaps the second put (it may precede it)
    ("stale-read-ok", [put(1, "1", 0, 1), put(1, "2", 2, 5), get(2, "1", 4, 6)], True),
    ("fresh-read-ok", [put(1, "1", 0, 1), put(1, "2", 2, 3), get(2, "2", 4, 5)], True),
    # lost write: a completed put, then absent with no delete
    ("lost-write", [put(1, "1", 0, 1), get(2, None, 2, 3)], False),
    ("lost-write-deleted-ok", [put(1, "1", 0, 1), delete(1, True, 2, 3), get(2, None, 4, 5)], True),
    ("lost-write-overlap-ok", [put(1, "1", 0, 2), get(2, None, 1, 3)], True),
    # read of a value never written
    ("never-written", [put(1, "1", 0, 1), get(2, "3", 2, 3)], False),
    ("never-written-initial", [get(1, "1", 0, 1)], False),
    ("written-ok", [put(1, "1", 0, 1), get(2, "1", 2, 3)], True),
    ("initial-absent-ok", [get(1, None, 0, 1)], True),
    # cas reporting success although the state could not match
    ("cas-bad-success", [put(1, "1", 0, 1), cas(2, "2", "3", True, 2, 3)], False),
    ("cas-bad-absent", [put(1, "1", 0, 1), cas(2, None, "3", True, 2, 3)], False),
    ("cas-bad-failure", [put(1, "1", 0, 1), cas(2, "1", "3", False, 2, 3)], False),
    (
        "cas-ok",
        [put(1, "1", 0, 1), cas(2, "1", "3", True, 2, 3), get(1, "3", 4, 5)],
        True,
    ),
    ("cas-absent-ok", [cas(2, None, "3", True, 0, 1), get(1, "3", 2, 3)], True),
    ("cas-fail-ok", [put(1, "1", 0, 1), cas(2, "2", "3", False, 2, 3), get(1, "1", 4, 5)], True),
    # cas succeeded but its write is not visible afterwards
    (
        "cas-lost",
        [put(1, "1", 0, 1), cas(2, "1", "3", True, 2, 3), get(1, "1", 4, 5)],
        False,
    ),
    # delete results
    ("delete-bad-result", [put(1, "1", 0, 1), delete(2, False, 2, 3)], False),
    ("delete-absent-bad", [delete(1, True, 0, 1)], False),
    ("delete-absent-ok", [delete(1, False, 0, 1)], True),
    # equal times are concurrent: the get may precede a put completing at 5
    ("equal-times-ok", [put(1, "1", 0, 5), get(2, None, 5, 6)], True),
    ("strictly-after-bad", [put(1, "1", 0, 4), get(2, None, 5, 6)], False),
    ("zero-length-ok", [put(1, "1", 3, 3), get(2, "1", 3, 3), get(3, None, 3, 3)], True),
]


@pytest.mark.parametrize(
    ("ops", "expected"),
    [(ops, exp) for _, ops, exp in KNOWN_CASES],
    ids=[name for name, _, _ in KNOWN_CASES],
)
def test_known_histories(ops: list[Op], expected: bool) -> None:
    assert_verdict(ops, expected)
    # order of the input must not matter
    assert check_key(list(reversed(ops))).ok is expected


def test_failure_explanation_names_ops() -> None:
    ops = [put(1, "1", 0, 1), put(1, "2", 2, 3), get(2, "1", 4, 5)]
    res = check_key(ops)
    assert not res.ok and res.key == "a"
    assert "Longest linearizable prefix found: 2 ops" in res.explanation
    assert "Op that could not be placed: p2 get('a') -> '1' [4, 5]" in res.explanation
    assert "put('a', '2')" in res.explanation


def test_empty_and_trivial() -> None:
    assert check_key([]).ok
    assert check_history([]).ok
    assert check_history([]).ops_checked == 0


# --------------------------------------------------------------------------
# 2. Unknown outcomes
# --------------------------------------------------------------------------

UNKNOWN_CASES: list[tuple[str, list[Op], bool]] = [
    ("unknown-put-observed", [put(1, "1", 0, None), get(2, "1", 10, 11)], True),
    ("unknown-put-never-observed", [put(1, "1", 0, None), get(2, None, 10, 11)], True),
    (
        "unknown-put-observed-late",
        [put(1, "1", 0, None), get(2, None, 10, 11), get(2, "1", 20, 21)],
        True,
    ),
    (
        "unknown-put-observed-then-lost",
        [put(1, "1", 0, None), get(2, "1", 10, 11), get(2, None, 12, 13)],
        False,
    ),
    # an unknown op cannot take effect before it is invoked
    ("unknown-put-before-invoke", [get(2, "1", 0, 2), put(1, "1", 5, None)], False),
    ("unknown-put-concurrent", [get(2, "1", 0, 5), put(1, "1", 5, None)], True),
    # an unknown op's result is not checked: the model decides it
    (
        "unknown-cas-applied",
        [put(1, "1", 0, 1), cas(2, "1", "2", None, 2, None), get(1, "2", 3, 4)],
        True,
    ),
    (
        "unknown-cas-not-applied",
        [put(1, "1", 0, 1), cas(2, "1", "2", None, 2, None), get(1, "1", 3, 4)],
        True,
    ),
    (
        "unknown-cas-flipflop",
        [
            put(1, "1", 0, 1),
            cas(2, "1", "2", None, 2, None),
            get(1, "2", 3, 4),
            get(1, "1", 5, 6),
        ],
        False,
    ),
    # an unknown cas that could never have matched cannot explain a read
    (
        "unknown-cas-cannot-match",
        [put(1, "1", 0, 1), cas(2, "9", "2", None, 2, None), get(1, "2", 3, 4)],
        False,
    ),
    (
        "unknown-delete",
        [put(1, "1", 0, 1), delete(2, None, 2, None), get(1, None, 3, 4)],
        True,
    ),
    (
        "unknown-delete-flipflop",
        [put(1, "1", 0, 1), delete(2, None, 2, None), get(1, None, 3, 4), get(1, "1", 5, 6)],
        False,
    ),
    # an unknown get imposes nothing, whatever its (meaningless) result
    ("unknown-get", [put(1, "1", 0, 1), get(2, "zzz", 2, None), get(1, "1", 3, 4)], True),
    ("only-unknown", [put(1, "1", 0, None), delete(2, None, 1, None)], True),
    # two unknown puts: reads may see them in either order, but not flip back
    (
        "two-unknown-puts",
        [put(1, "1", 0, None), put(2, "2", 0, None), get(3, "2", 5, 6), get(3, "1", 7, 8)],
        True,
    ),
    (
        "two-unknown-puts-flipback",
        [
            put(1, "1", 0, None),
            put(2, "2", 0, None),
            get(3, "2", 5, 6),
            get(3, "1", 7, 8),
            get(3, "2", 9, 10),
        ],
        False,
    ),
]


@pytest.mark.parametrize(
    ("ops", "expected"),
    [(ops, exp) for _, ops, exp in UNKNOWN_CASES],
    ids=[name for name, _, _ in UNKNOWN_CASES],
)
def test_unknown_outcomes(ops: list[Op], expected: bool) -> None:
    assert_verdict(ops, expected)


# Histories aimed at the search's reductions (see the module docstring); each
# verdict is also checked against the brute-force reference.
REDUCTION_CASES: list[tuple[str, list[Op], bool]] = [
    # a put of the current value is not read-only: it cannot be hoisted
    (
        "put-current-value-not-read-only",
        [
            delete(1, False, 1, 2),
            put(2, "1", 2, 3),
            delete(0, True, 3, 6),
            delete(0, True, 6, 6),
            put(2, "1", 4, 5),
        ],
        True,
    ),
    # a chain of unknown ops: put then cas produce the value read
    (
        "unknown-put-then-cas-chain",
        [put(1, "1", 0, None), cas(2, "1", "2", None, 1, None), get(3, "2", 5, 6)],
        True,
    ),
    (
        "unknown-cas-chain-needs-order",
        [cas(2, "1", "2", None, 0, None), put(1, "1", 3, None), get(3, "2", 1, 2)],
        False,
    ),
    # unwatched values: each unknown put can make the key exist once
    (
        "two-unwatched-puts-two-deletes",
        [
            put(1, "x", 0, None),
            put(2, "y", 0, None),
            delete(3, True, 5, 6),
            delete(3, True, 7, 8),
        ],
        True,
    ),
    (
        "one-unwatched-put-two-deletes",
        [put(1, "x", 0, None), delete(3, True, 5, 6), delete(3, True, 7, 8)],
        False,
    ),
    (
        "same-unwatched-value-twice",
        [
            put(1, "x", 0, None),
            put(2, "x", 0, None),
            delete(3, True, 5, 6),
            get(3, None, 7, 8),
            delete(3, True, 9, 10),
        ],
        True,
    ),
    # an unknown put cannot be observed, overwritten and observed again
    (
        "unknown-between-reads",
        [
            put(1, "1", 0, 1),
            put(2, "2", 0, None),
            get(3, "1", 2, 3),
            get(3, "2", 4, 5),
            get(3, "1", 6, 7),
        ],
        False,
    ),
    # the memo must not confuse a configuration reached by using an unknown
    # op (put, then the unknown delete so that the cas can swap) with the
    # same one reached without it (cas, then put): only the latter leaves
    # the unknown delete for the final delete to observe
    (
        "memo-respects-unknown-ops-used",
        [
            put(0, "1", 0, 6),
            delete(3, None, 2, None),
            cas(2, None, "1", True, 5, 8),
            delete(2, False, 9, 10),
        ],
        True,
    ),
    (
        "failed-cas-read-only",
        [
            put(1, "1", 0, 1),
            cas(2, "2", "3", False, 2, 9),
            put(3, "2", 3, 4),
            cas(4, "2", "3", True, 5, 6),
            get(1, "3", 10, 11),
        ],
        True,
    ),
]


@pytest.mark.parametrize(
    ("ops", "expected"),
    [(ops, exp) for _, ops, exp in REDUCTION_CASES],
    ids=[name for name, _, _ in REDUCTION_CASES],
)
def test_reduction_edge_cases(ops: list[Op], expected: bool) -> None:
    assert_verdict(ops, expected)


# --------------------------------------------------------------------------
# 3. Concurrency
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seen", ["1", "2"])
def test_overlapping_puts_either_order(seen: str) -> None:
    ops = [put(1, "1", 0, 10), put(2, "2", 1, 9), get(3, seen, 11, 12)]
    assert_verdict(ops, True)


@pytest.mark.parametrize("seen", [None, "1", "2"])
def test_read_concurrent_with_writes(seen: str | None) -> None:
    ops = [put(1, "1", 0, 10), put(2, "2", 1, 9), get(3, seen, 2, 8)]
    assert_verdict(ops, True)


def test_overlapping_puts_cannot_both_be_last() -> None:
    # two reads after both puts must agree on which put came last
    ops = [put(1, "1", 0, 10), put(2, "2", 1, 9), get(3, "1", 11, 12), get(3, "2", 13, 14)]
    assert_verdict(ops, False)


def test_concurrent_cas_only_one_wins() -> None:
    both = [
        put(1, "0", 0, 1),
        cas(2, "0", "x", True, 2, 10),
        cas(3, "0", "y", True, 3, 9),
    ]
    assert_verdict(both, False)
    one = [*both[:2], cas(3, "0", "y", False, 3, 9), get(1, "x", 11, 12)]
    assert_verdict(one, True)


def test_many_concurrent_writers_and_readers() -> None:
    writes = [put(p, str(p), 0, 100) for p in range(5)]
    reads = [get(10 + p, str(p), 1, 99) for p in range(5)]
    # every value is visible at some point: ordering w0 r0 w1 r1 ...
    assert check_key(writes + reads).ok
    # but readers strictly after all writers must agree
    late = [get(20, "1", 101, 102), get(21, "3", 103, 104)]
    assert not check_key(writes + late).ok
    assert check_key([*writes, get(20, "3", 101, 102), get(21, "3", 103, 104)]).ok


# --------------------------------------------------------------------------
# 4. Per-key split
# --------------------------------------------------------------------------


def test_violation_reported_for_its_key() -> None:
    ops = [
        put(1, "1", 0, 1, key="a"),
        put(2, "1", 0, 1, key="b"),
        put(3, "1", 0, 1, key="c"),
        get(1, "1", 2, 3, key="a"),
        put(2, "2", 2, 3, key="b"),
        get(3, None, 2, 3, key="c"),  # c: lost write
        get(1, "1", 4, 5, key="a"),
        get(2, "1", 4, 5, key="b"),  # b: stale read
        delete(3, False, 4, 5, key="c"),
    ]
    res = check_history(ops)
    assert not res.ok and not res.inconclusive
    assert res.key == "b"  # first key (in order of appearance) that fails
    assert "'b'" in res.explanation
    assert "get('b') -> '1' [4, 5]" in res.explanation

    fine = [op for op in ops if op.key != "b"]
    res = check_history(fine)
    assert res.key == "c" and not res.ok

    only_a = [op for op in ops if op.key == "a"]
    assert check_history(only_a).ok
    assert check_key([op for op in ops if op.key == "b"]).key == "b"


def test_values_on_different_keys_do_not_mix() -> None:
    # a value written to b does not make a read of it on a legal
    ops = [put(1, "1", 0, 1, key="b"), get(2, "1", 2, 3, key="a")]
    assert not brute_force_linearizable(ops)
    res = check_history(ops)
    assert not res.ok and res.key == "a"
    res = check_history([put(1, "1", 0, 1, key="a"), get(2, "1", 2, 3, key="a")])
    assert res.ok and res.key is None and res.ops_checked == 2


def test_check_key_rejects_mixed_keys() -> None:
    with pytest.raises(ValueError, match="several keys"):
        check_key([put(1, "1", 0, 1, key="a"), put(1, "1", 2, 3, key="b")])


# --------------------------------------------------------------------------
# Validation, limits
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "match"),
    [
        (Op(1, "append", "a", ("x",), 0, 1, None), "unknown operation kind"),
        (Op(1, "put", "a", (), 0, 1, None), "argument"),
        (Op(1, "put", "a", ("x", "y"), 0, 1, None), "argument"),
        (Op(1, "get", "a", ("x",), 0, 1, None), "argument"),
        (Op(1, "delete", "a", ("x",), 0, 1, True), "argument"),
        (Op(1, "cas", "a", ("x",), 0, 1, True), "argument"),
        (Op(1, "put", "a", (None,), 0, 1, None), "put value"),
        (Op(1, "put", "a", ("x",), 5, 4, None), "complete"),
        (Op(1, "get", "a", (), 5, 4, None), "complete"),
        (Op(1, "cas", "a", ("x", "y"), 0, 1, "yes"), "bool"),
        (Op(1, "delete", "a", (), 0, 1, None), "bool"),
    ],
)
def test_validation(op: Op, match: str) -> None:
    for fn in (check_key, check_history, brute_force_linearizable):
        with pytest.raises(ValueError, match=match):
            fn([put(1, "1", 0, 1), op])


def test_state_limit_is_inconclusive() -> None:
    # 12 concurrent puts and a read of a value never written: the search
    # goes through thousands of subsets of the puts before giving up.
    ops = [put(p, str(p), 0, 100) for p in range(12)] + [get(99, "nope", 101, 102)]
    res = check_key(ops, max_states=50)
    assert not res.ok and res.inconclusive
    assert "inconclusive" in res.explanation and res.key == "a"
    full = check_key(ops)
    assert not full.ok and not full.inconclusive
    hist = check_history(ops, max_states=50)
    assert hist.inconclusive and not hist.ok
    # a definite violation on another key wins over an inconclusive key
    hist = check_history([*ops, get(1, "x", 0, 1, key="z")], max_states=50)
    assert hist.key == "z" and not hist.inconclusive


# --------------------------------------------------------------------------
# 5. Randomised comparison with the brute-force reference
# --------------------------------------------------------------------------

VALUES = ("1", "2")


class Chooser(Protocol):
    def randint(self, a: int, b: int) -> int: ...


def _pick(r: Chooser, seq: Sequence[str | None]) -> str | None:
    return seq[r.randint(0, len(seq) - 1)]


def gen_small_history(
    r: Chooser,
    keys: Sequence[str] = ("a",),
    max_procs: int = 3,
    max_ops: int = 6,
    values: Sequence[str] = VALUES,
) -> list[Op]:
    """A tiny history: <= 3 processes, <= 6 ops, values {"1", "2"} by default.

    Processes issue ops one at a time over a small time range, so intervals
    overlap and touch often.  An op with unknown outcome ends its process.
    Results are either random or produced by a simulated register (then
    possibly corrupted), giving a mix of linearizable and non-linearizable
    histories.
    """
    n_procs = r.randint(1, max_procs)
    n_ops = r.randint(1, max_ops)
    clock = [r.randint(0, 3) for _ in range(n_procs)]
    alive = list(range(n_procs))
    shapes: list[tuple[int, str, str, tuple[str | None, ...], int, int | None]] = []
    for _ in range(n_ops):
        if not alive:
            break
        p = alive[r.randint(0, len(alive) - 1)]
        kind = ("get", "put", "delete", "cas")[r.randint(0, 3)]
        key = keys[r.randint(0, len(keys) - 1)]
        arg: tuple[str | None, ...]
        if kind == "put":
            arg = (_pick(r, values),)
        elif kind == "cas":
            arg = (_pick(r, (None, *values)), _pick(r, values))
        else:
            arg = ()
        invoke = clock[p] + r.randint(0, 2)
        complete: int | None = invoke + r.randint(0, 4)
        if r.randint(0, 99) < 20:
            complete = None
            alive.remove(p)
        else:
            assert complete is not None
            clock[p] = complete
        shapes.append((p, kind, key, arg, invoke, complete))

    if r.randint(0, 1) == 0:
        # random results
        ops = []
        for p, kind, key, arg, invoke, complete in shapes:
            res: str | bool | None = None
            if kind == "get":
                res = _pick(r, (None, *values))
            elif kind in ("delete", "cas"):
                res = r.randint(0, 1) == 1
            ops.append(Op(p, kind, key, arg, invoke, complete, res))
        return ops

    # results from a register with linearization points inside intervals
    points: list[tuple[int, int]] = []  # (point * 10 + jitter, index)
    for idx, (_, _, _, _, invoke, complete) in enumerate(shapes):
        if complete is None:
            if r.randint(0, 1) == 0:
                continue  # never takes effect
            hi = invoke * 10 + 60
        else:
            hi = complete * 10
        points.append((r.randint(invoke * 10, hi), idx))
    points.sort()
    results: dict[int, str | bool | None] = {}
    store: dict[str, str | None] = {}
    for _, idx in points:
        _, kind, key, arg, _, _ = shapes[idx]
        cur = store.get(key)
        if kind == "get":
            results[idx] = cur
        elif kind == "put":
            store[key] = arg[0]
            results[idx] = None
        elif kind == "delete":
            results[idx] = cur is not None
            store[key] = None
        else:
            results[idx] = cur == arg[0]
            if cur == arg[0]:
                store[key] = arg[1]
    ops = []
    for idx, (p, kind, key, arg, invoke, complete) in enumerate(shapes):
        res = results.get(idx)
        if kind in ("delete", "cas") and res is None and complete is not None:
            res = False  # unreachable: completed ops always have a point
        ops.append(Op(p, kind, key, arg, invoke, complete, res))
    if ops and r.randint(0, 99) < 40:
        # corrupt one completed result
        idx = r.randint(0, len(ops) - 1)
        op = ops[idx]
        if op.complete is not None and op.kind != "put":
            new: str | bool | None
            if op.kind == "get":
                new = _pick(r, tuple(v for v in (None, *values) if v != op.result))
            else:
                new = not op.result
            ops[idx] = Op(op.process, op.kind, op.key, op.arg, op.invoke, op.complete, new)
    return ops


def test_random_histories_match_brute_force() -> None:
    outcomes = {True: 0, False: 0}
    with_unknown = {True: 0, False: 0}
    for seed in range(2000):
        rng = random.Random(seed)
        ops = gen_small_history(rng)
        expected = brute_force_linearizable(ops)
        res = check_key(ops)
        assert not res.inconclusive
        assert res.ok == expected, (seed, ops, res.explanation)
        outcomes[expected] += 1
        if any(op.complete is None for op in ops):
            with_unknown[expected] += 1
    # a healthy mix of verdicts, also among histories with unknown outcomes
    assert outcomes[True] >= 400 and outcomes[False] >= 400, outcomes
    assert with_unknown[True] >= 100 and with_unknown[False] >= 100, with_unknown


def test_random_wider_histories_match_brute_force() -> None:
    """Up to 8 ops from 4 processes over 3 values: longer unknown-op chains."""
    outcomes = {True: 0, False: 0}
    for seed in range(3000):
        rng = random.Random(50_000 + seed)
        ops = gen_small_history(rng, max_procs=4, max_ops=8, values=("1", "2", "3"))
        expected = brute_force_linearizable(ops)
        res = check_key(ops)
        assert res.ok == expected, (seed, ops, res.explanation)
        outcomes[expected] += 1
    assert outcomes[True] >= 500 and outcomes[False] >= 500, outcomes


def test_random_multi_key_histories_match_brute_force() -> None:
    """check_history's per-key split agrees with a search over all keys at once."""
    outcomes = {True: 0, False: 0}
    for seed in range(1000):
        rng = random.Random(10_000 + seed)
        ops = gen_small_history(rng, keys=("a", "b"))
        expected = brute_force_linearizable(ops)
        res = check_history(ops)
        assert res.ok == expected, (seed, ops, res.explanation)
        if not expected:
            assert res.key is not None
            assert not brute_force_linearizable([op for op in ops if op.key == res.key])
        outcomes[expected] += 1
    assert outcomes[True] >= 200 and outcomes[False] >= 200, outcomes


class _DrawChooser:
    def __init__(self, draw: Callable[[st.SearchStrategy[int]], int]) -> None:
        self._draw = draw

    def randint(self, a: int, b: int) -> int:
        return self._draw(st.integers(a, b))


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.data())
def test_hypothesis_matches_brute_force(data: st.DataObject) -> None:
    ops = gen_small_history(_DrawChooser(data.draw))
    assert check_key(ops).ok == brute_force_linearizable(ops)


# --------------------------------------------------------------------------
# 6. Larger simulated histories
# --------------------------------------------------------------------------


def simulate(seed: int, n_ops: int = 300, n_workers: int = 5, n_keys: int = 3) -> list[Op]:
    """A linearizable history from a real register and concurrent clients.

    Each op gets a linearization point inside its interval; ops with unknown
    outcome take effect at some point after their invocation, or never, and
    their client continues under a fresh process id.
    """
    rng = random.Random(seed)
    keys = [f"k{i}" for i in range(n_keys)]
    clock = [0] * n_workers
    pid = list(range(n_workers))
    next_pid = n_workers
    written: dict[str, list[str]] = {k: [] for k in keys}
    shapes: list[tuple[int, str, str, tuple[str | None, ...], int, int | None, float | None]] = []
    for n in range(n_ops):
        w = rng.randrange(n_workers)
        key = rng.choice(keys)
        kind = rng.choices(["get", "put", "delete", "cas"], weights=[4, 3, 1, 2])[0]
        arg: tuple[str | None, ...] = ()
        if kind == "put":
            arg = (f"v{n}",)
            written[key].append(f"v{n}")
        elif kind == "cas":
            recent: list[str | None] = [None, *written[key][-3:]]
            arg = (rng.choice(recent), f"v{n}")
            written[key].append(f"v{n}")
        invoke = clock[w] + rng.randint(0, 30)
        complete: int | None = invoke + rng.randint(1, 60)
        assert complete is not None
        point: float | None = rng.uniform(invoke, complete)
        if kind != "get" and rng.random() < 0.08:
            if rng.random() < 0.5:
                point = None  # never takes effect
            else:
                assert point is not None
                point += rng.uniform(0, 300)  # may land long after the timeout
            shapes.append((pid[w], kind, key, arg, invoke, None, point))
            pid[w] = next_pid
            next_pid += 1
        else:
            shapes.append((pid[w], kind, key, arg, invoke, complete, point))
        clock[w] = complete
    order = sorted((pt, i) for i, (*_, pt) in enumerate(shapes) if pt is not None)
    store: dict[str, str | None] = {}
    results: dict[int, str | bool | None] = {}
    for _, i in order:
        _, kind, key, arg, *_ = shapes[i]
        cur = store.get(key)
        if kind == "get":
            results[i] = cur
        elif kind == "put":
            store[key] = arg[0]
            results[i] = None
        elif kind == "delete":
            results[i] = cur is not None
            store[key] = None
        else:
            results[i] = cur == arg[0]
            if cur == arg[0]:
                store[key] = arg[1]
    return [
        Op(p, kind, key, arg, invoke, complete, results.get(i) if complete is not None else None)
        for i, (p, kind, key, arg, invoke, complete, _) in enumerate(shapes)
    ]


@pytest.mark.parametrize("seed", range(5))
def test_large_simulated_history(seed: int) -> None:
    ops = simulate(seed)
    assert len(ops) == 300
    assert sum(op.complete is None for op in ops) >= 2, "the history has unknown outcomes"
    reads = [i for i, op in enumerate(ops) if op.kind == "get" and op.result is not None]
    assert reads

    start = time.perf_counter()
    res = check_history(ops)
    elapsed = time.perf_counter() - start
    assert res.ok, res.explanation
    assert res.ops_checked == 300
    assert elapsed < 5.0, elapsed

    # one read of a value never written makes it fail, on the right key
    rng = random.Random(seed)
    i = rng.choice(reads)
    bad = ops[i]
    mutated = list(ops)
    mutated[i] = Op(bad.process, "get", bad.key, (), bad.invoke, bad.complete, "never-written")
    start = time.perf_counter()
    res = check_history(mutated)
    elapsed = time.perf_counter() - start
    assert not res.ok and not res.inconclusive
    assert res.key == bad.key
    assert "'never-written'" in res.explanation
    assert elapsed < 10.0, elapsed


def test_long_sequential_history_no_recursion_limit() -> None:
    # 5000 ops on one key, strictly sequential: deep search, no recursion
    ops: list[Op] = []
    for n in range(2500):
        ops.append(put(n % 3, f"v{n}", 4 * n, 4 * n + 1))
        ops.append(get(n % 3, f"v{n}", 4 * n + 2, 4 * n + 3))
    assert check_key(ops).ok
    ops[-1] = get(0, "v0", ops[-1].invoke, ops[-1].complete)
    res = check_key(ops)
    assert not res.ok
    assert "Longest linearizable prefix found: 4999 ops" in res.explanation


@pytest.mark.parametrize("seed", range(3))
def test_busy_single_key_history(seed: int) -> None:
    # 300 ops on one key from 10 clients, more of them with unknown outcome.
    ops = simulate(100 + seed, n_ops=300, n_workers=10, n_keys=1)
    rng = random.Random(seed)
    ops = [
        Op(op.process, op.kind, op.key, op.arg, op.invoke, None, None)
        if op.kind != "get" and rng.random() < 0.1
        else op
        for op in ops
    ]
    assert sum(op.complete is None for op in ops) >= 10
    start = time.perf_counter()
    assert check_key(ops).ok
    reads = [i for i, op in enumerate(ops) if op.kind == "get" and op.complete is not None]
    for i in rng.sample(reads, 3):
        bad = ops[i]
        mutated = list(ops)
        mutated[i] = Op(bad.process, "get", bad.key, (), bad.invoke, bad.complete, "nope")
        res = check_key(mutated)
        assert not res.ok and not res.inconclusive
    assert time.perf_counter() - start < 20.0
