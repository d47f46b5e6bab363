"""CSRF tokens for the dashboard's actions: a signed token in a cookie and in the page.

A page carries its token and sends it back in the ``X-CSRF-Token`` header of
every action (and in the websocket's URL); the request passes only if that
token equals the cookie's and bears this dashboard's signature. Another site
can make a browser send the cookie, but cannot read the page, so it cannot
send the header; the signature stops a cookie planted from a sibling domain.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["COOKIE", "HEADER", "CsrfGuard"]

COOKIE = "quiv_csrf"
HEADER = "x-csrf-token"


class CsrfGuard:
    """Issues and checks tokens with a key of its own (new on every process start)."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._sign(nonce)}"

    def genuine(self, token: str | None) -> bool:
        if not token or token.count(".") != 1:
            return False
        nonce, signature = token.split(".")
        return hmac.compare_digest(signature, self._sign(nonce))

    def matches(self, sent: str | None, cookie: str | None) -> bool:
        """True if ``sent`` is a token of ours and the same as the cookie's."""
        if sent is None or cookie is None:
            return False
        return self.genuine(sent) and hmac.compare_digest(sent.encode(), cookie.encode())
