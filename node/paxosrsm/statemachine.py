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


class KVStore:
    """Default state machine: get, put, delete and compare-and-set on string keys."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

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

    def query(self, payload: bytes) -> bytes:
        body = self._parse(payload)
        if isinstance(body, str):
            return _err(body)
        if body.get("op") != "get":
            return _err("only get is a read")
        return _ok(self.data.get(str(body["key"])))

    def snapshot(self) -> bytes:
        return json.dumps(self.data, separators=(",", ":"), sort_keys=True).encode()

    def restore(self, data: bytes) -> None:
        loaded = json.loads(data) if data else {}
        if not isinstance(loaded, dict):
            raise ProtocolError("kv snapshot is not an object")
        self.data = {str(k): str(v) for k, v in loaded.items()}
