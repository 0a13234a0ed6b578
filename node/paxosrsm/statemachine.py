"""The deterministic state machine interface, and the default key-value store.

A replica applies decided commands in slot order. Determinism is the user's
contract: the same commands in the same order give the same results and state
on every replica.
"""

from __future__ import annotations

import json
from typing import Protocol

from .types import ProtocolError


class StateMachine(Protocol):
    def apply(self, payload: bytes) -> bytes:
        """Apply one write. Must be deterministic and must not raise on bad input:
        return an error result instead (a raise would stop every replica alike)."""

    def query(self, payload: bytes) -> bytes:
        """Answer a read without changing state."""

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...

    # Optional: ``precheck(payload) -> bytes | None``, a refusal known before
    # the log (a leader answers it at once instead of proposing; ``apply``
    # must refuse the same deterministically). The KV store uses it for the
    # NOSPACE alarm (net/quota.py).


# Key-value operations are JSON objects, e.g. {"op": "put", "key": "a", "value": "1"}.
# Results are JSON objects: {"ok": true, "value": ...} or {"ok": false, "error": "..."}.


def encode_op(op: str, key: str, *args: str | None) -> bytes:
    """Build a KV request payload (client side)."""
    body: dict[str, object] = {"op": op, "key": key}
    if op == "put":
        (body["value"],) = args
    elif op == "cas":
        body["expected"], body["new"] = args
    elif op not in ("get", "delete"):
        raise ProtocolError(f"unknown kv op {op!r}")
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


#: The error a write gets while a NOSPACE alarm is raised (etcd's wording).
NOSPACE = "NOSPACE: database space exceeded"


def encode_alarm(member: int, active: bool) -> bytes:
    """A node's storage alarm, proposed through the log like any command
    (etcd raises its NOSPACE alarm through raft the same way): while any
    member's alarm is raised, every replica refuses puts and CAS alike, and
    deletes and reads go on."""
    body = {"op": "alarm", "key": "", "member": member, "active": active}
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


#: The query that lists the raised alarms (``read_local``), for status.
ALARMS_QUERY = b'{"key":"","op":"alarms"}'


def _err(msg: str) -> bytes:
    return json.dumps({"ok": False, "error": msg}, separators=(",", ":")).encode()


# The common answers, encoded once (apply runs for every command on every replica).
_OK_NONE = b'{"ok":true,"value":null}'
_OK_TRUE = b'{"ok":true,"value":true}'
_OK_FALSE = b'{"ok":true,"value":false}'
_decode = json.JSONDecoder().decode
_encode_str = json.JSONEncoder(ensure_ascii=True).encode


def _ok(value: str | bool | None) -> bytes:
    if value is None:
        return _OK_NONE
    if value is True:
        return _OK_TRUE
    if value is False:
        return _OK_FALSE
    return b'{"ok":true,"value":' + _encode_str(value).encode() + b"}"


def decode_result(data: bytes) -> dict[str, object]:
    out = json.loads(data)
    if not isinstance(out, dict):
        raise ProtocolError("kv result is not an object")
    return out


#: A snapshot with alarms starts with this (one without is the bare JSON
#: object of the keys, as before: both load).
_SNAP_V2 = b"KV2\n"


class KVStore:
    """Default state machine: get, put, delete and compare-and-set on string
    keys, and the members' NOSPACE alarms (``encode_alarm``)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        #: Members whose storage is over its quota (raised through the log).
        self.alarms: set[int] = set()

    @staticmethod
    def _parse(payload: bytes) -> dict[str, object] | str:
        try:
            body = _decode(payload.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            return f"malformed request: {e}"
        if not isinstance(body, dict):
            return "malformed request: not an object"
        if not isinstance(body.get("key"), str):
            return "malformed request: key must be a string"
        return body

    def apply(self, payload: bytes) -> bytes:
        body = self._parse(payload)
        if isinstance(body, str):
            return _err(body)
        key = str(body["key"])
        op = body.get("op")
        if op == "alarm":
            m, active = body.get("member"), body.get("active")
            if type(m) is not int or not 0 <= m < 1 << 16 or type(active) is not bool:
                return _err("alarm needs member (int) and active (bool)")
            if active:
                self.alarms.add(m)
            else:
                self.alarms.discard(m)
            return _ok(None)
        if self.alarms and op in ("put", "cas"):
            return _err(f"{NOSPACE} (members {sorted(self.alarms)}); delete keys to free space")
        if op == "put":
            v = body.get("value")
            if not isinstance(v, str):
                return _err("put needs a string value")
            self.data[key] = v
            return _ok(None)
        if op == "delete":
            return _ok(self.data.pop(key, None) is not None)
        if op == "cas":
            exp, new = body.get("expected"), body.get("new")
            if not (exp is None or isinstance(exp, str)) or not isinstance(new, str):
                return _err("cas needs expected (string or null) and new (string)")
            if self.data.get(key) == exp:
                self.data[key] = new
                return _ok(True)
            return _ok(False)
        if op == "get":
            return _ok(self.data.get(key))
        return _err(f"unknown op {op!r}")

    def precheck(self, payload: bytes) -> bytes | None:
        """Optional for a state machine: the refusal of a write that must not
        even enter the log (a leader answers it at once), or None. Advisory:
        ``apply`` refuses the same writes deterministically."""
        if not self.alarms:
            return None
        body = self._parse(payload)
        if isinstance(body, str) or body.get("op") not in ("put", "cas"):
            return None
        return _err(f"{NOSPACE} (members {sorted(self.alarms)}); delete keys to free space")

    def query(self, payload: bytes) -> bytes:
        body = self._parse(payload)
        if isinstance(body, str):
            return _err(body)
        if body.get("op") == "alarms":
            return json.dumps({"ok": True, "value": sorted(self.alarms)}).encode()
        if body.get("op") != "get":
            return _err("only get and alarms are reads")
        return _ok(self.data.get(str(body["key"])))

    def snapshot(self) -> bytes:
        keys = json.dumps(self.data, separators=(",", ":"), sort_keys=True).encode()
        if not self.alarms:
            return keys
        return _SNAP_V2 + json.dumps(sorted(self.alarms)).encode() + b"\n" + keys

    def restore(self, data: bytes) -> None:
        alarms: list[int] = []
        if data.startswith(_SNAP_V2):
            head, _, data = data[len(_SNAP_V2) :].partition(b"\n")
            alarms = json.loads(head)
            if not isinstance(alarms, list) or not all(type(a) is int for a in alarms):
                raise ProtocolError("kv snapshot: bad alarms")
        loaded = json.loads(data) if data else {}
        if not isinstance(loaded, dict):
            raise ProtocolError("kv snapshot is not an object")
        self.data = {str(k): str(v) for k, v in loaded.items()}
        self.alarms = set(alarms)
