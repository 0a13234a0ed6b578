"""The operator's error handling, without a cluster: every failure becomes a
retry within seconds (never kopf's 60 s), and an API error is logged with the
server's own message (issue 10: a bare "403" hid which call RBAC refused)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kopf
import pytest
from kubernetes.client.rest import ApiException

from paxos_operator import handlers


def _forbidden() -> ApiException:
    e = ApiException(status=403, reason="Forbidden")
    e.body = json.dumps({"kind": "Status", "message": 'secrets "x-key" is forbidden: '
                         'cannot patch resource "secrets"'})  # fmt: skip
    return e


def test_an_api_error_is_described_with_the_servers_message() -> None:
    text = handlers.describe(_forbidden())
    assert "403" in text and "Forbidden" in text and 'cannot patch resource "secrets"' in text
    assert handlers.describe(ValueError("boom")) == "ValueError: boom"


def test_retries_back_off_from_one_to_eight_seconds() -> None:
    assert [handlers.retry_delay(r) for r in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_failed_handler_or_timer_is_retried_within_seconds() -> None:
    @handlers.retrying
    def sync_handler(**_: Any) -> None:
        raise _forbidden()

    @handlers.retrying
    async def async_timer(**_: Any) -> None:
        raise ConnectionError("API server went away")

    with pytest.raises(kopf.TemporaryError) as e:
        sync_handler(retry=2)
    assert e.value.delay == 4.0 and "cannot patch" in str(e.value)
    with pytest.raises(kopf.TemporaryError) as e2:
        asyncio.run(async_timer(retry=0))
    assert e2.value.delay == 1.0
    assert asyncio.iscoroutinefunction(async_timer)


def test_permanent_errors_and_cancellation_pass_through() -> None:
    @handlers.retrying
    def refuse(**_: Any) -> None:
        raise kopf.PermanentError("bad spec")

    @handlers.retrying
    async def cancelled(**_: Any) -> None:
        raise asyncio.CancelledError

    with pytest.raises(kopf.PermanentError):
        refuse(retry=0)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(cancelled(retry=0))
