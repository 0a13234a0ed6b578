"""Client credentials and authorisation for the HTTP API (issue 12, first part).

``--http-auth-file`` names a file of bearer tokens, one per line::

    # name     role       key prefix   token
    ops        admin      *            3b1f...   (at least 16 characters)
    billing    readwrite  billing/     9c0e...
    dashboard  read       *            77aa...

Roles: ``read`` (GET), ``readwrite`` (GET, PUT, DELETE, CAS), ``admin``
(everything). A token acts only on keys that start with its prefix (``*``:
every key). With the file, every ``/v1/kv`` and ``/v1/cas`` request needs
``Authorization: Bearer <token>``: none or an unknown one is 401, one that
does not cover the request is 403 (default deny). The status page, status,
health and metrics stay open (operational data, no keys or values). Without
the file the API is anonymous, which the node allows only on a loopback
listen address unless ``--http-anonymous true`` says so explicitly (the
node refuses to start otherwise).

Every HTTP write is logged to ``paxosrsm.access`` with who made it (the
token's name, or ``anonymous``), the method, the key and the answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

ROLES = ("read", "readwrite", "admin")
MIN_TOKEN = 16
MAX_TOKENS = 10_000
access_log = logging.getLogger("paxosrsm.access")


class AuthFileError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Grant:
    name: str
    role: str
    prefix: str  # "" = every key

    def allows(self, key: str, write: bool) -> bool:
        if write and self.role == "read":
            return False
        return key.startswith(self.prefix)


def token_digest(token: str) -> bytes:
    # surrogateescape: a header's bytes that are not UTF-8 reach us as
    # surrogates; such a token is merely wrong (it was a 500).
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def load_grants(path: str | Path) -> dict[bytes, Grant]:
    """The tokens of ``path``, by their SHA-256 (a lookup by digest does not
    leak, through timing, how much of a guessed token was right)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise AuthFileError(f"cannot read the HTTP auth file {path}: {e}") from e
    grants: dict[bytes, Grant] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 4:
            raise AuthFileError(
                f"{path}:{n}: want 'name role prefix token', got {len(parts)} fields"
            )
        name, role, prefix, token = parts
        if role not in ROLES:
            raise AuthFileError(f"{path}:{n}: role must be one of {', '.join(ROLES)}")
        if len(token) < MIN_TOKEN:
            raise AuthFileError(f"{path}:{n}: a token needs at least {MIN_TOKEN} characters")
        d = token_digest(token)
        if d in grants:
            raise AuthFileError(f"{path}:{n}: the same token twice")
        grants[d] = Grant(name, role, "" if prefix == "*" else prefix)
        if len(grants) > MAX_TOKENS:
            raise AuthFileError(f"{path}: more than {MAX_TOKENS} tokens")
    if not grants:
        raise AuthFileError(f"{path}: no tokens")
    return grants


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HttpAuth:
    """The middleware. ``path`` None: anonymous access (an explicit choice).

    The file is read at start (a bad file stops the node there, with its
    line) and again whenever it changes (checked at most every
    ``RELOAD_EVERY`` seconds, on the next request): tokens are added or
    revoked without a restart, as a Kubernetes Secret volume is updated in
    place. A changed file that does not parse keeps the tokens in force,
    and says why in the log."""

    RELOAD_EVERY = 2.0

    def __init__(
        self,
        path: str | Path | None,
        on_refuse: Callable[[str, str], None],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = Path(path) if path else None
        self.on_refuse = on_refuse
        self.clock = clock
        self.grants: dict[bytes, Grant] | None = None
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        if self.path is not None:
            self._stamp = self._stat()
            self.grants = load_grants(self.path)
            self._checked = clock()

    def _stat(self) -> tuple[int, int, int] | None:
        assert self.path is not None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def maybe_reload(self) -> None:
        if self.path is None:
            return
        now = self.clock()
        if now - self._checked < self.RELOAD_EVERY:
            return
        self._checked = now
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            grants = load_grants(self.path)
        except AuthFileError as e:
            self.on_refuse("http_auth_file_bad", f"{e}; the tokens loaded before stay in force")
            return
        self.grants = grants
        logging.getLogger("paxosrsm.node").info(
            "HTTP tokens reloaded from %s: %d tokens", self.path, len(grants)
        )

    def _grant(self, request: web.Request) -> Grant:
        """The request's token's grant; 401 without a valid one."""
        h = request.headers.get("Authorization", "")
        scheme, _, token = h.partition(" ")
        grants = self.grants or {}
        grant = grants.get(token_digest(token.strip())) if scheme.lower() == "bearer" else None
        if grant is None:
            self.on_refuse("http_unauthenticated", f"HTTP {request.remote}: no valid token")
            raise web.HTTPUnauthorized(
                text='{"error": "a bearer token is required"}\n',
                content_type="application/json",
                headers={"WWW-Authenticate": 'Bearer realm="paxosrsm"'},
            )
        return grant

    def who(self, request: web.Request, key: str, write: bool) -> str:
        """The name the request acts under; raises 401/403 when it may not."""
        self.maybe_reload()
        if self.grants is None:
            return "anonymous"
        grant = self._grant(request)
        if not grant.allows(key, write):
            self.on_refuse("http_forbidden", f"HTTP {request.remote}: {grant.name} on {key!r}")
            verb = "write" if write else "read"
            raise web.HTTPForbidden(
                text=json.dumps({"error": f"{grant.name} may not {verb} this key"}) + "\n",
                content_type="application/json",
            )
        return grant.name

    def admin(self, request: web.Request, what: str) -> str:
        """The name of an admin token's holder (or ``anonymous`` without a
        tokens file); raises 401/403 otherwise. ``what`` names the action
        in the refusal and the access log."""
        self.maybe_reload()
        if self.grants is None:
            name = "anonymous"
        else:
            grant = self._grant(request)
            if grant.role != "admin" or grant.prefix:
                self.on_refuse("http_forbidden", f"HTTP {request.remote}: {grant.name} {what}")
                raise web.HTTPForbidden(
                    text=json.dumps({"error": f"{what} needs an admin token for every key"}) + "\n",
                    content_type="application/json",
                )
            name = grant.name
        access_log.info("%s %s %s %s", name, request.remote, request.method, what)
        return name

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path == "/v1/kv" or path.startswith("/v1/watch/"):
            # A listing (of its prefix) or a watch: reads.
            key = request.query.get("prefix", "") if path == "/v1/kv" else ""
            key = key or request.match_info.get("key", "")
            self.who(request, key, False)
            return await handler(request)
        if not (path.startswith("/v1/kv/") or path.startswith("/v1/cas/")):
            return await handler(request)
        key = request.match_info.get("key", "")
        write = request.method not in ("GET", "HEAD")
        name = self.who(request, key, write)
        if not write:
            return await handler(request)
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            access_log.info(
                "%s %s %s key=%r -> %d", name, request.remote, request.method, key, status
            )
