"""Who may call the API and the dashboard, and as which owner.

- The API takes ``Authorization: Bearer <token>``, compared in constant time.
- The dashboard logs in with the same token once (a form) and then carries an
  HttpOnly, SameSite=Strict session cookie: a random nonce signed with a key
  derived from the token, so rotating the token ends every session.
- Every form POST carries a CSRF token bound to the session, and every unsafe
  request from another site (``Sec-Fetch-Site``, ``Origin``) is refused.
- Owner scoping: a request is scoped to the owner a host function names
  (``owner_of``) or that the reverse proxy's header names (``owner_header``);
  without either it sees every owner.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import attrs
from aiohttp import web

from calsync.web.problems import ProblemError

__all__ = ["Access", "OwnerOf", "access_middleware"]

OwnerOf = Callable[[web.Request], str | None]
"""Return the owner a request acts for (None: every owner); raise to refuse it."""

SESSION_COOKIE = "calsync_session"
SESSION: contextvars.ContextVar[str] = contextvars.ContextVar("calsync_session")
"""The nonce of the session a dashboard request is served under."""
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_OWNER = 200
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _derived(token: str | None) -> bytes:
    if token is None:
        return secrets.token_bytes(32)  # open server: sessions last the process
    return hashlib.sha256(b"calsync-web-session\x00" + token.encode()).digest()


@attrs.frozen
class Access:
    """The server's credentials and how it tells a request's owner."""

    token: str | None = attrs.field(default=None, repr=False)
    owner_header: str | None = None
    owner_of: OwnerOf | None = None
    key: bytes = attrs.field(
        default=attrs.Factory(lambda self: _derived(self.token), takes_self=True),
        repr=False,
    )

    @property
    def open(self) -> bool:
        """Whether no token is required (only ever on a loopback bind)."""
        return self.token is None

    def bearer_ok(self, request: web.Request) -> bool:
        """Whether the request carries the bearer token (constant-time compare)."""
        if self.token is None:
            return True
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.strip().encode(), self.token.encode())

    def token_ok(self, presented: str) -> bool:
        """Whether a token typed into the login form is the server's."""
        if self.token is None:
            return True
        return hmac.compare_digest(presented.encode(), self.token.encode())

    def _sign(self, purpose: str, nonce: str) -> str:
        message = f"{purpose}\x00{nonce}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def new_session(self) -> str:
        """Return a new session cookie value: a nonce and its signature."""
        nonce = secrets.token_urlsafe(24)
        return f"{nonce}.{self._sign('session', nonce)}"

    def session(self, request: web.Request) -> str | None:
        """Return the nonce of the request's valid session cookie, or None."""
        nonce, _, signature = request.cookies.get(SESSION_COOKIE, "").partition(".")
        if not nonce or not hmac.compare_digest(
            signature.encode(), self._sign("session", nonce).encode()
        ):
            return None
        return nonce

    def csrf_token(self, nonce: str) -> str:
        """Return the CSRF token the forms of a session carry."""
        return self._sign("csrf", nonce)

    def csrf_ok(self, nonce: str, presented: str) -> bool:
        """Whether a form's CSRF token belongs to its session."""
        return hmac.compare_digest(presented.encode(), self.csrf_token(nonce).encode())

    def owner(self, request: web.Request) -> str | None:
        """Return the owner the request is scoped to; None: every owner."""
        if self.owner_of is not None:
            return self.owner_of(request)
        if self.owner_header is None or self.owner_header not in request.headers:
            return None
        owner = request.headers[self.owner_header].strip()
        if not owner or len(owner) > _MAX_OWNER:
            raise ProblemError(400, f"the {self.owner_header} header names no owner")
        return owner


def _cross_site(request: web.Request) -> bool:
    """Whether an unsafe request comes from another site (a forged form or fetch)."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    return origin == "null" or urlsplit(origin).netloc != request.host


def _is_api(request: web.Request) -> bool:
    name = request.match_info.route.name
    return name is not None and name.startswith("api.")


def _is_public(request: web.Request) -> bool:
    """Whether a route needs no credentials: the document, the login, a host's own."""
    name = request.match_info.route.name or ""
    if name in ("ui.login", "ui.login_form"):
        return True
    return not name.startswith(("api.", "ui."))


def access_middleware(access: Access) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Return the middleware that enforces `Access` on every route but the public."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in _SAFE and _cross_site(request):
            raise ProblemError(403, "a request from another site was refused")
        if _is_public(request):
            return await handler(request)
        if _is_api(request):
            if not access.bearer_ok(request):
                raise ProblemError(
                    401,
                    "this API needs the header Authorization: Bearer <token> "
                    "([http] token)",
                    headers={"WWW-Authenticate": 'Bearer realm="calsync"'},
                )
            return await handler(request)
        return await _dashboard(access, request, handler)

    return middleware


async def _dashboard(
    access: Access, request: web.Request, handler: Handler
) -> web.StreamResponse:
    """Let a dashboard request through with a session; open servers issue one."""
    nonce = access.session(request)
    if nonce is None and not access.open:
        if request.method in _SAFE:
            login = request.app.router["ui.login_form"].url_for()
            raise web.HTTPSeeOther(login)
        raise ProblemError(401, "log in first: the session has ended")
    fresh = None
    if nonce is None:
        fresh = access.new_session()
        nonce = fresh.partition(".")[0]
    if request.method not in _SAFE:
        form = await request.post()
        presented = form.get("csrf")
        if not isinstance(presented, str) or not access.csrf_ok(nonce, presented):
            raise ProblemError(403, "the form is stale: reload the page and try again")
    SESSION.set(nonce)
    response = await handler(request)
    if fresh is not None:
        set_session_cookie(request, response, fresh)
    return response


def set_session_cookie(
    request: web.Request, response: web.StreamResponse, value: str
) -> None:
    """Set the session cookie: HttpOnly, SameSite=Strict, for this app's path only."""
    response.set_cookie(
        SESSION_COOKIE,
        value,
        path=app_path(request),
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )


def app_path(request: web.Request) -> str:
    """Return the path this app is mounted at, with a final slash (``/calsync/``)."""
    return str(request.app.router["ui.index"].url_for())
