"""An existing Tornado app that mounts tornado-ws under /rt.

- its own page at ``/`` and a REST handler that marks an invoice paid;
- real-time sessions at ``/rt/ws/<project>``, only for members of that project
  (a toy membership table stands in for the app's database);
- the REST handler, ``POST /projects/<project>/invoices/<id>/paid``, authenticates its
  caller with the hub's own verifier (``Authorization: Bearer <jwt>``), takes the
  organization from the verified token (never from the URL or the body), requires the
  ``service`` or ``admin`` role like the hub's own publish API, and publishes into that
  organization's project session through the same hub, so the event gets a seq, lands in
  history and reaches every member. Errors are JSON: ``{"error": {"code", "message"}}``.

Run: ``python examples/embedded_app.py`` (secret from TORNADO_WS_JWT_SECRET or a default).
"""

from __future__ import annotations

import asyncio
import http
import os
import re
from typing import Any

import tornado.web

import tornado_ws
from tornado_ws.auth import AuthError, Claims

#: (org, project) -> users allowed in its real-time session.
MEMBERS: dict[tuple[str, str], set[str]] = {
    ("acme", "project-42"): {"alice", "bob"},
    ("acme", "project-7"): {"carol"},
    ("globex", "project-42"): {"gina"},  # the same project id in another org: another session
}
PUBLISH_ROLES = frozenset({"service", "admin"})
_INVOICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def may_join(claims: Claims, session_id: str) -> bool:
    return claims.user_id in MEMBERS.get((claims.org_id, session_id), set())


class Refused(tornado.web.HTTPError):
    """An error with a stable ``code`` for the JSON body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(status, message)
        self.code = code
        self.message = message


class PageHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("<!doctype html><title>Invoices</title><h1>Invoices</h1>")


class InvoicePaidHandler(tornado.web.RequestHandler):
    """``POST /projects/<project>/invoices/<id>/paid`` → ``{"seq": N}``."""

    claims: Claims

    def initialize(self, hub: tornado_ws.Hub) -> None:
        self.hub = hub

    def prepare(self) -> None:
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self.set_header("WWW-Authenticate", "Bearer")
            raise Refused(401, "unauthorized", "missing Authorization: Bearer <jwt>")
        try:
            self.claims = self.hub.verify(token.strip())
        except AuthError as exc:
            self.set_header("WWW-Authenticate", 'Bearer error="invalid_token"')
            raise Refused(401, "unauthorized", exc.reason) from None
        if not PUBLISH_ROLES.intersection(self.claims.roles):
            raise Refused(403, "forbidden", "requires role admin or service")

    async def post(self, project: str, invoice_id: str) -> None:
        if not tornado_ws.valid_session_id(project, self.hub.config.max_session_id_length):
            raise Refused(400, "invalid_session_id", "project ids are 1-128 characters of [A-Za-z0-9._~:-]")
        if not _INVOICE_ID.fullmatch(invoice_id):
            raise Refused(400, "invalid_invoice_id", "invoice ids are 1-64 characters of [A-Za-z0-9_-]")
        org = self.claims.org_id  # the token's organization: a caller can only reach its own
        if (org, project) not in MEMBERS:
            raise Refused(404, "not_found", "no such project in your organization")
        data = {"kind": "invoice-paid", "invoice": invoice_id}
        seq = await self.hub.publish(org, project, data, user_id=self.claims.user_id, name=self.claims.name)
        self.write({"seq": seq})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, Refused):
            error = {"code": exc.code, "message": exc.message}
        else:  # Tornado's own (405...) or a bug: the status only, never an exception's text
            phrase = http.HTTPStatus(status_code).phrase
            error = {"code": phrase.lower().replace(" ", "_"), "message": phrase}
        self.finish({"error": error})


def make_app(secret: str) -> tornado.web.Application:
    hub = tornado_ws.Hub(jwt_secret=secret, authorize=may_join)
    return tornado.web.Application(
        [
            *hub.routes(prefix="/rt"),
            (r"/", PageHandler),
            (r"/projects/([^/]+)/invoices/([^/]+)/paid", InvoicePaidHandler, {"hub": hub}),
        ],
        hub=hub,
    )


async def main() -> None:
    secret = os.environ.get("TORNADO_WS_JWT_SECRET", "change-me-" + "0" * 54)
    make_app(secret).listen(8000, "127.0.0.1")
    print("listening on http://127.0.0.1:8000/ (real-time under /rt/ws/<project>)")
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
