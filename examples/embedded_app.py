"""An existing Tornado app that mounts tornado-ws under /rt.

- its own page at ``/`` and a REST handler that marks an invoice paid;
- real-time sessions at ``/rt/ws/<project>``, only for members of that project
  (a toy membership table stands in for the app's database);
- the REST handler publishes into the project's session through the same hub,
  so the event gets a seq, lands in history and reaches every member.

Run: ``python examples/embedded_app.py`` (secret from TORNADO_WS_JWT_SECRET or a default).
"""

from __future__ import annotations

import asyncio
import os

import tornado.web

import tornado_ws
from tornado_ws.auth import Claims

#: (org, project) -> users allowed in its real-time session.
MEMBERS: dict[tuple[str, str], set[str]] = {
    ("acme", "project-42"): {"alice", "bob"},
    ("acme", "project-7"): {"carol"},
}


def may_join(claims: Claims, session_id: str) -> bool:
    return claims.user_id in MEMBERS.get((claims.org_id, session_id), set())


class PageHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("<!doctype html><title>Invoices</title><h1>Invoices</h1>")


class InvoicePaidHandler(tornado.web.RequestHandler):
    """``POST /orgs/<org>/projects/<project>/invoices/<id>/paid``."""

    def initialize(self, hub: tornado_ws.Hub) -> None:
        self.hub = hub

    async def post(self, org: str, project: str, invoice_id: str) -> None:
        seq = await self.hub.publish(org, project, {"kind": "invoice-paid", "invoice": invoice_id}, user_id="billing")
        self.write({"seq": seq})


def make_app(secret: str) -> tornado.web.Application:
    hub = tornado_ws.Hub(jwt_secret=secret, authorize=may_join)
    return tornado.web.Application(
        [
            *hub.routes(prefix="/rt"),
            (r"/", PageHandler),
            (r"/orgs/([^/]+)/projects/([^/]+)/invoices/([^/]+)/paid", InvoicePaidHandler, {"hub": hub}),
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
