"""Browser safety for the HTTP API (issue 12): no cross-site writes, no DNS
rebinding.

A web page the user visits can make the browser send requests to
``localhost:8100`` (``paxosctl local up``) or to a ``kubectl port-forward``:

* **DNS rebinding.** The page's own name is made to resolve to 127.0.0.1, so
  that to the browser the node *is* the page's origin. The ``Host`` header
  still carries the attacker's name: a request whose Host is not an IP
  literal, not a name of this cluster, and not in ``--http-allowed-hosts``
  is refused (403). ``*`` there allows every Host (behind a proxy that
  checks it).
* **Cross-site requests.** A request with an ``Origin`` that is not this
  node's own (the Origin's host and port equal to the Host header) and not
  in ``--http-cors-origins`` is refused (403), whatever its method.
* **Simple requests.** A CAS (``POST /v1/cas``) needs ``Content-Type:
  application/json`` (415 otherwise): a form or ``text/plain`` POST is what a
  page can send without a CORS preflight.
* **CORS.** A preflight (``OPTIONS`` with ``Origin`` and
  ``Access-Control-Request-Method``) from an origin in
  ``--http-cors-origins`` is answered 204 with the methods and headers
  allowed (``Authorization``, ``Content-Type``); from any other origin 403.
  Answers to an allowed origin carry ``Access-Control-Allow-Origin`` and
  ``Vary: Origin``. No origin is allowed by default.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ALLOW_METHODS = "GET, HEAD, PUT, DELETE, POST"
ALLOW_HEADERS = "Authorization, Content-Type"


def split_host(value: str) -> tuple[str, str]:
    """(host, port) of a Host header or an Origin's netloc; host lower-cased,
    IPv6 brackets removed; port "" when absent."""
    v = value.strip().lower()
    if v.startswith("["):
        host, _, rest = v[1:].partition("]")
        return host, rest[1:] if rest.startswith(":") else ""
    if v.count(":") == 1:
        host, _, port = v.partition(":")
        return host, port
    return v, ""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class BrowserGuard:
    def __init__(
        self,
        allowed_hosts: Iterable[str],
        cors_origins: Iterable[str],
        on_refuse: Callable[[str, str], None],
    ) -> None:
        hosts = {h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip()}
        self.any_host = "*" in hosts
        self.hosts = hosts - {"*"}
        self.origins = {o.strip().lower().rstrip("/") for o in cors_origins if o.strip()}
        self.on_refuse = on_refuse

    def host_ok(self, host_header: str | None) -> bool:
        if self.any_host:
            return True
        if not host_header:
            return False
        host, _ = split_host(host_header)
        host = host.rstrip(".")
        return _is_ip(host) or host in self.hosts

    def _same_origin(self, origin: str, host_header: str) -> bool:
        try:
            u = urllib.parse.urlsplit(origin)
        except ValueError:  # "http://[abc": not a URL (found by the fuzz campaign)
            return False
        if u.scheme not in ("http", "https") or not u.netloc:
            return False
        oh, op = split_host(u.netloc)
        hh, hp = split_host(host_header)
        default = "443" if u.scheme == "https" else "80"
        return oh == hh and (op or default) == (hp or default)

    def _refuse(self, reason: str, detail: str, status: int = 403) -> web.HTTPException:
        self.on_refuse(reason, detail)
        cls: type[web.HTTPException] = (
            web.HTTPUnsupportedMediaType if status == 415 else web.HTTPForbidden
        )
        return cls(text=json.dumps({"error": detail}) + "\n", content_type="application/json")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if not self.host_ok(host):
            raise self._refuse(
                "http_bad_host",
                f"Host {str(host)[:100]!r} is not a name of this cluster (DNS rebinding "
                "guard): use an IP address or a name given in --http-allowed-hosts",
            )
        origin = request.headers.get("Origin")
        allowed_origin: str | None = None
        if origin is not None:
            o = origin.strip().lower().rstrip("/")
            if o in self.origins:
                allowed_origin = origin.strip()
            elif not self._same_origin(o, host or ""):
                raise self._refuse(
                    "http_bad_origin",
                    f"cross-site request from Origin {origin[:100]!r} refused "
                    "(--http-cors-origins lists the origins allowed)",
                )
        if (
            request.method == "OPTIONS"
            and allowed_origin is not None
            and "Access-Control-Request-Method" in request.headers
        ):
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Origin": allowed_origin,
                    "Access-Control-Allow-Methods": ALLOW_METHODS,
                    "Access-Control-Allow-Headers": ALLOW_HEADERS,
                    "Access-Control-Max-Age": "600",
                    "Vary": "Origin",
                },
            )
        if (
            request.method == "POST"
            and request.path.startswith("/v1/cas/")
            and request.content_type != "application/json"
        ):
            raise self._refuse(
                "http_bad_content_type",
                "a CAS body must be sent as Content-Type: application/json",
                415,
            )
        try:
            resp = await handler(request)
        except web.HTTPException as e:
            if allowed_origin is not None:
                e.headers["Access-Control-Allow-Origin"] = allowed_origin
                e.headers["Vary"] = "Origin"
            raise
        if allowed_origin is not None:
            resp.headers["Access-Control-Allow-Origin"] = allowed_origin
            resp.headers["Vary"] = "Origin"
        return resp
