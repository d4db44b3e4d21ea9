"""Who may call the server (contract §8, §9 v1.1): the token, and JSON-only POSTs.

Every ``/webhooks/...`` and ``/api/v1/...`` request carries the token, as ``X-Lakehook-Token``
or ``Authorization: Bearer``; it is compared in constant time. ``healthz``, ``readyz`` and
``metrics`` stay open. A POST must say ``Content-Type: application/json``: a browser cannot
send that cross-site without a CORS preflight (which this server never answers), so a page
on another site cannot make a visitor's browser post to lakehook.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

import cherrypy

TOKEN_HEADER = "X-Lakehook-Token"  # noqa: S105 - a header name, not a secret
BEARER = "bearer "
JSON = "application/json"


def presented_token(headers: Mapping[str, str]) -> str:
    """The token a request presents: ``X-Lakehook-Token``, else ``Authorization: Bearer``."""
    token = headers.get(TOKEN_HEADER, "")
    if token:
        return token
    authorization = headers.get("Authorization", "")
    if authorization[: len(BEARER)].lower() == BEARER:
        return authorization[len(BEARER) :].strip()
    return ""


def token_ok(headers: Mapping[str, str], expected: str) -> bool:
    """Whether the request presents ``expected`` (constant-time; an empty token never)."""
    given = presented_token(headers).encode("utf-8", "replace")
    return bool(expected) and hmac.compare_digest(given, expected.encode("utf-8"))


def is_json(headers: Mapping[str, str]) -> bool:
    """Whether the body is declared JSON (``application/json``, parameters allowed)."""
    media = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    return media == JSON


def problem(headers: Mapping[str, str], method: str, expected: str) -> tuple[int, str] | None:
    """``(status, message)`` when a request must be refused, else ``None``."""
    if not token_ok(headers, expected):
        return 401, f"missing or wrong token: send {TOKEN_HEADER} or Authorization: Bearer"
    if method == "POST" and not is_json(headers):
        return 415, f"POST bodies must be sent as Content-Type: {JSON}"
    return None


def _check(token: str) -> None:
    """The ``lakehook_auth`` tool: refuse before the handler runs."""
    request = cherrypy.request
    refused = problem(request.headers, request.method, token)
    if refused is not None:
        status, message = refused
        if status == 401:
            cherrypy.response.headers["WWW-Authenticate"] = 'Bearer realm="lakehook"'
        raise cherrypy.HTTPError(status, message)


def install() -> None:
    """Register ``tools.lakehook_auth`` (idempotent)."""
    if not hasattr(cherrypy.tools, "lakehook_auth"):
        cherrypy.tools.lakehook_auth = cherrypy.Tool("before_handler", _check, priority=10)


def config(token: str) -> dict[str, object]:
    """The mount config that turns the tool on for a whole application."""
    install()
    return {"tools.lakehook_auth.on": True, "tools.lakehook_auth.token": token}
