"""Linearizability checker for key-value store histories.

Algorithm
---------
A history is a set of operations, each with an invocation time and (if the
client learned the outcome) a completion time and a result.  It is
*linearizable* (Herlihy & Wing 1990) if every operation can be given a single
instant -- its linearization point -- inside its real-time interval such that
running the operations one at a time, in the order of those points, on the
sequential model yields exactly the observed results.

The search is the one of Wing & Gong ("Testing and verifying concurrent
objects", J. Parallel Distrib. Comput. 17, 1993) with the memoisation of Lowe
("Testing for linearizability", Concurrency and Computation: Practice and
Experience 29(4), 2017) -- the "WGL" algorithm that Knossos and Porcupine
also implement:

* Every operation contributes a *call* event at its invocation time and a
  *return* event at its completion time.  The events are sorted by time into
  a doubly linked list; at equal times calls come before returns, so an
  operation completing at ``t`` and one invoked at ``t`` are concurrent.
* Walking the list from its head, every call met before the first return
  belongs to a minimal operation: nothing that must precede it is pending.
  The search tries to linearize such an operation next: it applies it to the
  model and, if the model agrees with the recorded result, *lifts* the call
  and its return out of the list, pushes an undo record and starts again
  from the head.
* Meeting a return means its operation is not linearized yet although every
  later operation must come after it: a dead end.  The search backtracks --
  pops the undo record, *unlifts* (relinks) the operation, restores the model
  state and tries the next candidate.
* Lowe's memoisation: the set of linearized operations (a Python ``int``
  used as a bitset) and the model state determine the rest of the search, so
  every such configuration is cached and a candidate leading to a cached one
  is not explored again.  This bounds the work by the number of reachable
  configurations instead of the factorial of plain Wing & Gong.

The search is iterative (an explicit stack), so long histories do not hit
Python's recursion limit.  ``max_states`` bounds the number of configurations
explored; beyond it the answer is *inconclusive* rather than a verdict.

P-compositionality: a key-value store is a product of independent registers,
and linearizability is local (Herlihy & Wing): a history is linearizable iff
the sub-history of every key is.  :func:`check_history` therefore checks each
key on its own, which keeps bitsets small and turns one search over a product
of state spaces into several small ones.

Operations with an unknown outcome
----------------------------------
A client that timed out or crashed does not know whether its request took
effect: the operation may have been linearized at any instant after its
invocation -- even long after the client gave up -- or never.  So its
completion time is +infinity (its return event would be the last one) and its
result is not checked: the model decides it, so an unknown ``cas`` swaps
exactly when the register holds the expected value at its linearization
point.  "Never took effect" needs no special case: the search succeeds as
soon as every *completed* operation is linearized, and unknown operations
still pending then are simply dropped (equivalently, linearized after
everything else, where their results constrain nothing).  An unknown ``get``
neither changes the state nor has a result to check, so it is removed before
the search.  Unknown operations have no return event to lift, so they are
kept in a side list ordered by invocation; one is a candidate once invoked no
later than the first return left in the event list.

Unknown operations are what makes this search expensive: each stays a
candidate for the rest of the history, so naively the configurations multiply
by the subsets of them used.  Reductions keep this in check, each preserving
the verdict (any linearization can be rewritten into one the search tries):

* Watched values.  Only the results of completed gets and the expected values
  of cas operations can tell two values apart.  A value no remaining
  operation watches is replaced by one token in the memo key, so histories
  with unique values do not make every write a distinct state.
* Unknown operations as a multiset.  The memo key holds, instead of which
  unknown operations were used, the multiset of their effects on the
  canonical model: two configurations with the same completed set, state and
  multiset have interchangeable futures.  A configuration is also skipped if
  one with the same key and a sub-multiset (so at least the same unknown
  operations left) was explored: it has every option this one has.
* Lazy runs.  Unknown operations are tried only after the completed
  candidates, and only as a "run" just before a completed candidate that is
  inconsistent at the start of the run: a run before an op consistent without
  it can be dropped or moved after that op.  In a run, a put or delete can
  only come first (it overwrites what precedes it) and an operation that does
  not change the canonical state is useless.
* Read-only operations.  A completed candidate that never changes the state
  where consistent (a get, a failed cas or delete) can be moved to the front
  of any linearization, so when one is consistent it is the only candidate
  tried.

The randomised tests compare the checker against the exhaustive
:func:`brute_force_linearizable`, which has none of these reductions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CheckResult",
    "Op",
    "brute_force_linearizable",
    "check_history",
    "check_key",
]

_ARITY: dict[str, int] = {"get": 0, "put": 1, "delete": 0, "cas": 2}

# Operation kinds as small ints for the inner loop.
_GET, _PUT, _DELETE, _CAS = 0, 1, 2, 3
_KIND_CODE: dict[str, int] = {"get": _GET, "put": _PUT, "delete": _DELETE, "cas": _CAS}

# Stages of the enumeration of a configuration's candidates.
_FRESH, _FORCED = -1, 2

# An unknown op's effect on the canonical model: (kind, cas expected, new value).
_Effect = tuple[int, str | None, str | None]

# How many operations of a linearizable prefix an explanation lists.
_EXPLAIN_TAIL = 10


@dataclass(frozen=True, slots=True)
class Op:
    """One client operation on the key-value store.

    ``arg`` is ``(value,)`` for put, ``()`` for get and delete and
    ``(expected_or_None, new_value)`` for cas.  ``complete is None`` means the
    outcome is unknown (timeout, crash); ``result`` is then ignored.
    Otherwise ``result`` is the value (or None when absent) for get, None for
    put, whether the key existed for delete and whether it swapped for cas.
    """

    process: int
    kind: str
    key: str
    arg: tuple[str | None, ...]
    invoke: int
    complete: int | None
    result: str | bool | None


@dataclass(frozen=True, slots=True)
class CheckResult:
    """Verdict of a check.  ``ok=False, inconclusive=True`` means the search
    gave up (``max_states`` exceeded) without finding a violation."""

    ok: bool
    key: str | None
    explanation: str
    ops_checked: int
    inconclusive: bool = False


# --------------------------------------------------------------------------
# Validation and formatting
# --------------------------------------------------------------------------


def _validate(op: Op) -> None:
    arity = _ARITY.get(op.kind)
    if arity is None:
        raise ValueError(f"unknown operation kind {op.kind!r} in {op!r}")
    if not isinstance(op.arg, tuple) or len(op.arg) != arity:
        raise ValueError(f"{op.kind} takes {arity} argument(s), got arg={op.arg!r} in {op!r}")
    if op.kind == "put" and not isinstance(op.arg[0], str):
        raise ValueError(f"put value must be a str, got {op.arg[0]!r} in {op!r}")
    if op.kind == "cas":
        if op.arg[0] is not None and not isinstance(op.arg[0], str):
            raise ValueError(f"cas expected value must be a str or None in {op!r}")
        if not isinstance(op.arg[1], str):
            raise ValueError(f"cas new value must be a str, got {op.arg[1]!r} in {op!r}")
    if op.complete is not None:
        if op.complete < op.invoke:
            raise ValueError(
                f"operation completes before it is invoked "
                f"(complete={op.complete} < invoke={op.invoke}) in {op!r}"
            )
        res = op.result
        if op.kind == "get" and not (res is None or isinstance(res, str)):
            raise ValueError(f"get result must be a str or None, got {res!r} in {op!r}")
        if op.kind == "put" and res is not None:
            raise ValueError(f"put result must be None, got {res!r} in {op!r}")
        if op.kind in ("delete", "cas") and not isinstance(res, bool):
            raise ValueError(f"{op.kind} result must be a bool, got {res!r} in {op!r}")


def _fmt_op(op: Op) -> str:
    args = ", ".join(repr(a) for a in (op.key, *op.arg))
    if op.complete is None:
        return f"p{op.process} {op.kind}({args}) -> ? [{op.invoke}, ?)"
    return f"p{op.process} {op.kind}({args}) -> {op.result!r} [{op.invoke}, {op.complete}]"


# --------------------------------------------------------------------------
# Sequential model of one register
# --------------------------------------------------------------------------


def _apply(op: Op, state: str | None) -> tuple[bool, str | None]:
    """Apply ``op`` to the register; return (result consistent?, new state).

    The result is only checked for completed operations.
    """
    known = op.complete is not None
    kind = op.kind
    if kind == "get":
        return (not known or op.result == state), state
    if kind == "put":
        return True, op.arg[0]
    if kind == "delete":
        return (not known or op.result == (state is not None)), None
    swapped = state == op.arg[0]
    if known and op.result != swapped:
        return False, state
    return True, (op.arg[1] if swapped else state)


# --------------------------------------------------------------------------
# WGL search
# --------------------------------------------------------------------------


def check_key(ops: Sequence[Op], *, max_states: int = 2_000_000) -> CheckResult:
    """Check the history of a single key (all ``ops`` must share one key)."""
    for op in ops:
        _validate(op)
    if not ops:
        return CheckResult(True, None, "empty history", 0)
    key = ops[0].key
    for op in ops:
        if op.key != key:
            raise ValueError(
                f"check_key got ops for several keys ({key!r} and {op.key!r}); use check_history"
            )
    return _check_register(key, ops, max_states)


def _check_register(key: str, all_ops: Sequence[Op], max_states: int) -> CheckResult:
    n_input = len(all_ops)
    # An unknown get neither changes the state nor has a result to check.
    ops = [op for op in all_ops if not (op.kind == "get" and op.complete is None)]
    n = len(ops)
    known = [op.complete is not None for op in ops]
    n_completed = sum(known)
    if n_completed == 0:
        return CheckResult(
            True, None, f"key {key!r}: no completed operations to linearize", n_input
        )

    code = [_KIND_CODE[op.kind] for op in ops]
    new_val = [op.arg[-1] if op.arg else None for op in ops]  # put value / cas new value
    expected = [op.arg[0] if op.kind == "cas" else None for op in ops]
    result = [op.result for op in ops]

    # Completed ops that leave the state unchanged wherever their result is
    # consistent: gets, failed cas and deletes, and cas(v, v) that swapped.
    read_only = [
        known[i]
        and (
            code[i] == _GET
            or (code[i] in (_CAS, _DELETE) and result[i] is False)
            or (code[i] == _CAS and expected[i] == new_val[i])
        )
        for i in range(n)
    ]

    def apply(i: int, s: str | None) -> tuple[bool, str | None]:
        """Op i on state s: (consistent with its result?, new state)."""
        k = code[i]
        if k == _GET:
            return (not known[i] or result[i] == s), s
        if k == _PUT:
            return True, new_val[i]
        if k == _DELETE:
            return (not known[i] or result[i] == (s is not None)), None
        swapped = s == expected[i]
        return (not known[i] or result[i] == swapped), (new_val[i] if swapped else s)

    # Watched values: watchers[v] counts the ops that may still look at value
    # v -- the completed gets returning v and completed cas expecting v not
    # linearized yet, and every unknown cas expecting v.  An unwatched value
    # is replaced by `token` in memo keys.  releases[i]: the value op i stops
    # watching once linearized.
    watchers: dict[str, int] = {}
    releases: list[str | None] = [None] * n
    for i in range(n):
        watched = result[i] if code[i] == _GET else expected[i] if code[i] == _CAS else None
        if isinstance(watched, str):
            watchers[watched] = watchers.get(watched, 0) + 1
            if known[i]:
                releases[i] = watched
    values = {v for op in ops for v in (*op.arg, op.result) if isinstance(v, str)}
    token = "<unwatched>"
    while token in values:
        token += "'"

    def canon(value: str | None) -> str | None:
        return value if value is None or watchers.get(value) else token

    def effect(u: int) -> _Effect:
        return (code[u], expected[u], canon(new_val[u]))

    def watch(i: int, delta: int) -> bool:
        """Op i stops (-1) or starts again (+1) watching its value; whether
        that changed the set of watched values (so canonical effects)."""
        v = releases[i]
        if v is None:
            return False
        watchers[v] += delta
        return watchers[v] == (0 if delta < 0 else 1)

    # Completed ops: numbered for the bitset, and a doubly linked list of
    # call and return events.  Index 0 is the list head; the k-th completed
    # op has call event 2k+1 and return event 2k+2.  Sorted by time, calls
    # before returns at equal times (equal times are concurrent).
    done = [i for i in range(n) if known[i]]
    bit = [0] * n
    n_ev = 2 * len(done) + 1
    ev_op = [-1] * n_ev
    is_call = [False] * n_ev
    events: list[tuple[int, int, int]] = []
    for k, i in enumerate(done):
        bit[i] = 1 << k
        call, ret = 2 * k + 1, 2 * k + 2
        ev_op[call] = ev_op[ret] = i
        is_call[call] = True
        complete = ops[i].complete
        assert complete is not None
        events += [(ops[i].invoke, 0, call), (complete, 1, ret)]
    events.sort()
    nxt = [-1] * n_ev
    prv = [-1] * n_ev
    last = 0
    for _, _, ev in events:
        nxt[last] = ev
        prv[ev] = last
        last = ev

    def lift(e: int) -> None:
        """Unlink call event e, then its return e + 1."""
        nxt[prv[e]] = nxt[e]
        prv[nxt[e]] = prv[e]  # a call is never last: its return follows
        r = e + 1
        nxt[prv[r]] = nxt[r]
        if nxt[r] != -1:
            prv[nxt[r]] = prv[r]

    def unlift(e: int) -> None:
        """Relink return event e + 1, then call event e."""
        r = e + 1
        nxt[prv[r]] = r
        if nxt[r] != -1:
            prv[nxt[r]] = r
        nxt[prv[e]] = e
        prv[nxt[e]] = e

    # Unknown ops: their return is at +infinity, after every other event, so
    # they are kept aside, by invocation time.  One is a candidate once
    # invoked no later than the first return still in the list.
    unknown = sorted((i for i in range(n) if not known[i]), key=lambda i: ops[i].invoke)
    used_flag = [False] * n
    used_ops: list[int] = []  # the unknown ops linearized, in order
    used: dict[_Effect, int] = {}  # the multiset of their canonical effects
    cas_expecting: dict[str | None, list[int]] = {}
    for u in unknown:
        if code[u] == _CAS:
            cas_expecting.setdefault(expected[u], []).append(u)

    def recount() -> dict[_Effect, int]:
        counts: dict[_Effect, int] = {}
        for u in used_ops:
            eff = effect(u)
            counts[eff] = counts.get(eff, 0) + 1
        return counts

    def useful(s: str | None, targets: list[int], horizon: int) -> bool:
        """Whether a run of unknown ops may stop or go on in state s: some
        target is consistent in s, or an unused unknown cas expects s."""
        if any(apply(c, s)[0] for c in targets):
            return True
        return any(not used_flag[u] and ops[u].invoke <= horizon for u in cas_expecting.get(s, ()))

    # Memo: (completed bitset, canonical state, in a run?, canonical state at
    # the start of the run) -> the minimal multisets of unknown-op effects
    # used by the configurations explored with that key.
    cache: dict[tuple[int, str | None, bool, str | None], list[dict[_Effect, int]]] = {}
    n_states = 0
    c_bits = 0
    state: str | None = None
    # Whether the last ops linearized are unknown ones, and the state before them.
    in_run, run = False, None
    remaining = n_completed
    best: list[int] = []  # deepest linearization seen, as op indices
    # Where the current configuration's enumeration of candidates stands:
    # phase 0 walks the event list (entry), phase 1 the unknown ops (pos),
    # with the completed ops the run must enable, its time horizon and the
    # effects already tried.
    phase, entry, pos = _FRESH, nxt[0], 0
    targets: list[int] = []
    horizon = 0
    tried: frozenset[_Effect] = frozenset()
    # Undo records: the op linearized and everything above, as before it.
    Frame = tuple[
        int, int, int, int, str | None, bool, str | None, list[int], int, frozenset[_Effect]
    ]
    stack: list[Frame] = []

    while True:
        # ---- pick the next candidate op i of the current configuration ----
        i = -1
        if phase == _FRESH:
            # Partial-order reduction: a consistent completed candidate that
            # never changes the state (see `read_only`) can be moved to the
            # front of any linearization from here, so it is the only one
            # tried.
            phase, entry = 0, nxt[0]
            e = entry
            while is_call[e]:
                c = ev_op[e]
                if read_only[c] and not (in_run and apply(c, run)[0]):
                    ok, new_state = apply(c, state)
                    if ok:
                        i, entry, phase = c, e, _FORCED
                        break
                e = nxt[e]
        if phase == 0:
            while is_call[entry]:
                c = ev_op[entry]
                # A run of unknown ops must enable the completed op ending it.
                if not (in_run and apply(c, run)[0]):
                    ok, new_state = apply(c, state)
                    if ok:
                        i = c
                        break
                entry = nxt[entry]
            else:
                # First return reached: go on with the unknown ops if some
                # completed candidate is inconsistent (or in a run, was at
                # its start): only then can an unknown op help.
                ref = run if in_run else state
                targets = []
                e = nxt[0]
                while is_call[e]:
                    if not apply(ev_op[e], ref)[0]:
                        targets.append(ev_op[e])
                    e = nxt[e]
                if targets and unknown:
                    complete = ops[ev_op[entry]].complete
                    assert complete is not None
                    phase, pos, horizon, tried = 1, 0, complete, frozenset()
        if phase == 1:
            while pos < len(unknown) and ops[unknown[pos]].invoke <= horizon:
                u = unknown[pos]
                # Only the first op of a run may be a put or delete: any op
                # before it would be overwritten.
                if not used_flag[u] and not (in_run and code[u] != _CAS):
                    new_state = apply(u, state)[1]
                    eff = effect(u)
                    if (
                        canon(new_state) != canon(state)
                        and eff not in tried
                        and useful(new_state, targets, horizon)
                    ):
                        i = u
                        break
                pos += 1

        if i == -1:
            # ---- no candidate left: backtrack ----
            if not stack:
                return CheckResult(False, key, _explain_failure(key, ops, best), n_input)
            i, phase, entry, pos, state, in_run, run, targets, horizon, tried = stack.pop()
            if known[i]:
                c_bits ^= bit[i]
                remaining += 1
                if watch(i, +1) and used:
                    used = recount()
                unlift(entry)
                entry = nxt[entry]
            else:
                eff = effect(i)
                used_ops.pop()
                used_flag[i] = False
                used[eff] -= 1
                if not used[eff]:
                    del used[eff]
                tried = tried | {eff}
                pos += 1
            continue

        # ---- tentatively linearize op i and look the configuration up ----
        if known[i]:
            c_bits |= bit[i]
            if watch(i, -1) and used:
                used = recount()
            new_in_run, new_run = False, None
        else:
            eff = effect(i)
            used[eff] = used.get(eff, 0) + 1
            new_in_run, new_run = True, (run if in_run else state)
        config = (c_bits, canon(new_state), new_in_run, canon(new_run))
        explored = cache.get(config)
        if explored is None:
            cache[config] = [dict(used)]
        elif any(all(used.get(e, 0) >= c for e, c in m.items()) for m in explored):
            # Covered by an explored configuration that had at least these
            # unknown ops left: undo, try the next candidate.
            if known[i]:
                c_bits ^= bit[i]
                if watch(i, +1) and used:
                    used = recount()
                entry = nxt[entry]
            else:
                used[eff] -= 1
                if not used[eff]:
                    del used[eff]
                tried = tried | {eff}
                pos += 1
            continue
        else:
            explored[:] = [m for m in explored if any(m.get(e, 0) < c for e, c in used.items())]
            explored.append(dict(used))
        n_states += 1
        if n_states > max_states:
            return CheckResult(
                False,
                key,
                f"key {key!r}: inconclusive, the search exceeded max_states={max_states} "
                f"after linearizing at most {len(best)} of {n} ops",
                n_input,
                inconclusive=True,
            )

        stack.append((i, phase, entry, pos, state, in_run, run, targets, horizon, tried))
        state, in_run, run = new_state, new_in_run, new_run
        if known[i]:
            lift(entry)
            remaining -= 1
            if remaining == 0:
                return CheckResult(
                    True,
                    None,
                    f"key {key!r}: linearizable ({n_input} ops, {n_states} states explored)",
                    n_input,
                )
        else:
            used_flag[i] = True
            used_ops.append(i)
        if len(stack) > len(best):
            best = [frame[0] for frame in stack]
        phase = _FRESH


def _explain_failure(key: str, ops: list[Op], best: list[int]) -> str:
    state: str | None = None
    for i in best:
        state = _apply(ops[i], state)[1]
    placed = set(best)
    pending = [i for i in range(len(ops)) if i not in placed]
    # The completed op whose return the deepest attempt could not get past.
    blocked = min(
        (i for i in pending if ops[i].complete is not None),
        key=lambda i: (ops[i].complete, ops[i].invoke, i),
    )
    deadline = ops[blocked].complete
    assert deadline is not None
    candidates = [i for i in pending if ops[i].invoke <= deadline]
    lines = [
        f"key {key!r} is not linearizable ({len(ops)} ops considered).",
        f"Longest linearizable prefix found: {len(best)} ops, ending in state {state!r}:",
    ]
    if len(best) > _EXPLAIN_TAIL:
        lines.append(f"  ... {len(best) - _EXPLAIN_TAIL} earlier ops")
    lines.extend(f"  {_fmt_op(ops[i])}" for i in best[-_EXPLAIN_TAIL:])
    if not best:
        lines.append("  (none)")
    lines.append(f"Op that could not be placed: {_fmt_op(ops[blocked])}")
    others = [i for i in candidates if i != blocked]
    if others:
        lines.append("Other ops that could have gone next (none leads to a linearization):")
        lines.extend(f"  {_fmt_op(ops[i])}" for i in others[:_EXPLAIN_TAIL])
        if len(others) > _EXPLAIN_TAIL:
            lines.append(f"  ... and {len(others) - _EXPLAIN_TAIL} more")
    return "\n".join(lines)


def check_history(ops: Sequence[Op], *, max_states: int = 2_000_000) -> CheckResult:
    """Check a multi-key history, one key at a time (P-compositionality).

    Keys are checked in order of first appearance.  The first key with a
    definite violation is reported; if none is found but some key's search was
    cut off by ``max_states``, the result is inconclusive.
    """
    for op in ops:
        _validate(op)
    by_key: dict[str, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    checked = 0
    inconclusive: CheckResult | None = None
    for key, key_ops in by_key.items():
        res = _check_register(key, key_ops, max_states)
        checked += res.ops_checked
        if res.ok:
            continue
        if not res.inconclusive:
            return CheckResult(False, key, res.explanation, checked)
        if inconclusive is None:
            inconclusive = res
    if inconclusive is not None:
        return CheckResult(
            False, inconclusive.key, inconclusive.explanation, checked, inconclusive=True
        )
    return CheckResult(True, None, f"linearizable: {len(by_key)} key(s), {checked} ops", checked)


# --------------------------------------------------------------------------
# Reference implementation
# --------------------------------------------------------------------------

_BRUTE_FORCE_LIMIT = 12


def brute_force_linearizable(ops: Sequence[Op]) -> bool:
    """Exhaustive reference check, for tiny histories only.

    Straight from the definition: try every order of every subset of the
    operations that contains all completed ones (unknown-outcome operations
    may be left out: they never took effect), keep those respecting real
    time (a completed op precedes everything invoked strictly after its
    completion) and run each on a model holding every key at once.  Orders
    are built one operation at a time and a prefix is abandoned as soon as it
    breaks real time or a result, so this is an exhaustive enumeration of
    permutations with prefix pruning.  It has its own copy of the model and
    no memoisation, per-key split or event list, so it shares nothing with
    the WGL search above.
    """
    for op in ops:
        _validate(op)
    if len(ops) > _BRUTE_FORCE_LIMIT:
        raise ValueError(
            f"brute_force_linearizable is for tiny histories (<= {_BRUTE_FORCE_LIMIT} ops), "
            f"got {len(ops)}"
        )
    ops = list(ops)

    def extend(remaining: list[Op], store: dict[str, str | None]) -> bool:
        if all(op.complete is None for op in remaining):
            return True
        for idx, op in enumerate(remaining):
            rest = remaining[:idx] + remaining[idx + 1 :]
            # Every op still unplaced must not have completed before op began.
            if any(o.complete is not None and o.complete < op.invoke for o in rest):
                continue
            cur = store.get(op.key)
            after = cur
            if op.kind == "get":
                observed: str | bool | None = cur
            elif op.kind == "put":
                observed, after = None, op.arg[0]
            elif op.kind == "delete":
                observed, after = cur is not None, None
            else:  # cas
                expected, new = op.arg
                observed = cur == expected
                if observed:
                    after = new
            if op.complete is not None and observed != op.result:
                continue
            if extend(rest, {**store, op.key: after}):
                return True
        return False

    return extend(ops, {})
