"""Who may call the server: API key, Host allow-list, browser origins.

The middleware refuses, before any route runs:

* a ``Host`` header that is not an allowed name (400): a web page that rebinds its own DNS name
  to 127.0.0.1 reaches the server with that name as ``Host``;
* a request carrying an ``Origin`` that is neither the server itself nor an allowed CORS origin
  (403): browsers send one with every cross-origin POST, including "simple" multipart posts that
  skip the CORS preflight and would otherwise reach the model (and CORS preflights themselves);
* with an API key set, any route but ``/healthz`` without ``Authorization: Bearer <key>`` (401),
  compared in constant time.

CORS answers (``Access-Control-Allow-Origin``) come from Starlette's CORSMiddleware, added only
when origins are configured.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mmedge.serve._middleware import App, Receive, Scope, Send, send_error

__all__ = ["LOOPBACK_NAMES", "OPEN_PATHS", "Access", "AccessGuard", "host_name", "is_loopback"]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
OPEN_PATHS = frozenset({"/healthz"})  # answered without the API key: load balancers probe it


@dataclass(frozen=True)
class Access:
    """Access control of one server; the defaults suit a server on loopback."""

    api_key: str | None = field(default=None, repr=False)  # when set, required as "Authorization: Bearer <key>"
    allowed_hosts: tuple[str, ...] = LOOPBACK_NAMES  # Host header names answered; "*" answers any
    cors_origins: tuple[str, ...] = ()  # browser origins (scheme://host[:port]) allowed to call; none by default

    def problems(self) -> list[str]:
        out = []
        if self.api_key is not None and len(self.api_key) < 16:
            out.append(
                "the API key must be at least 16 characters (e.g. python -c 'import secrets; print(secrets.token_urlsafe())')"
            )
        bad = [o for o in self.cors_origins if o != "*" and _origin(o) != o.lower().rstrip("/")]
        if bad:
            out.append(f"CORS origins must look like https://example.com[:port], found {bad}")
        return out


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server reachable from this machine only."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a ``Host`` header: without the port, IPv6 brackets or a trailing dot, lowercase."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return name.rstrip(".")


def _origin(value: str) -> str:
    """``scheme://host[:port]`` of an Origin header, lowercase; '' when it is not one (e.g. "null")."""
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        return ""
    return f"{parts.scheme}://{parts.netloc}".lower()


class AccessGuard:
    """Refuse requests with a foreign Host (400), a foreign Origin (403) or without the API key (401)."""

    def __init__(self, app: App, access: Access) -> None:
        self.app = app
        self.access = access
        self.hosts = {host_name(h) for h in access.allowed_hosts}
        self.origins = {_origin(o) for o in access.cors_origins if o != "*"}
        self.any_origin = "*" in access.cors_origins
        self.key = access.api_key.encode() if access.api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        problem = self._problem(scope, headers)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, detail = problem
        extra = [(b"www-authenticate", b'Bearer realm="mmedge"')] if status == 401 else []
        await send_error(send, status, detail, extra)

    def _problem(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        host = headers.get(b"host", b"").decode("latin-1")
        if "*" not in self.hosts and host_name(host) not in self.hosts:
            shown = host[:100] or "(none)"
            return 400, f"Host {shown!r} is not served here; allow it with --allowed-host (Access.allowed_hosts)"
        origin = headers.get(b"origin")
        if origin is not None:
            text = origin.decode("latin-1")
            same = _origin(text) in (f"http://{host.lower()}", f"https://{host.lower()}")
            if not (same or self.any_origin or _origin(text) in self.origins):
                return 403, (
                    f"cross-origin request from {text[:100]!r} refused; allow that origin with --cors-origin "
                    "(Access.cors_origins)"
                )
        if self.key is None or scope.get("path") in OPEN_PATHS:
            return None
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return 401, "this server needs an API key: send the header 'Authorization: Bearer <key>'"
        if not hmac.compare_digest(token.strip(), self.key):
            return 401, "the API key is not valid"
        return None
