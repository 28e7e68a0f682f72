"""WebSocket upgrade requests that arrive whole, served without Tornado's HTTP/1 connection.

An upgrade is one request on a connection that then stops being HTTP. Tornado still
builds the full keep-alive machinery for it (an ``IOStream``, an ``HTTP1Connection``,
two coroutines, a header timeout) and the handshake cost more in that machinery than in
the JWT check and the join (docs/performance.md). :func:`parse_upgrade_head` recognises
the plain case from bytes peeked off the socket, and :class:`UpgradeConnection` is the
``HTTPConnection`` its request is routed with: the application, its routing and the
``WebSocketHandler`` are Tornado's own, only the connection under them is this one.
Anything else (a partial head, a body, HTTP/1.0, a malformed line) is left to Tornado.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
from typing import Any

from tornado import httputil
from tornado.concurrent import Future

#: Bytes peeked for a request head. Browsers send ~500; a longer head goes to Tornado.
PEEK_SIZE = 8192
#: Seconds the peer has to finish its side after an error response was sent.
LINGER = 2.0


# RFC 9110/9112 field lines as Tornado's HTTPHeaders.parse accepts them (a token, a colon,
# a value of visible characters, spaces and tabs, CRLF), checked for the whole head by one
# regex instead of two per line: that parse was the costliest step of the handshake.
_FIELD_LINE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*\r\n")
_FIELD_LINES = re.compile(r"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")


def parse_upgrade_head(
    data: bytes, path_prefix: bytes = b"/"
) -> tuple[int, httputil.RequestStartLine, httputil.HTTPHeaders] | None:
    """``(length of the head, start line, headers)`` of a whole, plain WebSocket upgrade request.

    None unless ``data`` starts with a complete ``GET <path_prefix>… HTTP/1.1`` head (CRLF
    line ends) with ``Upgrade: websocket`` and no body: everything else is Tornado's to answer.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0 or not data.startswith(b"GET " + path_prefix):
        return None
    start_line, _, fields = data[: end + 2].decode("latin1").partition("\r\n")
    if not _FIELD_LINES.fullmatch(fields):
        return None  # folding, bare CR, control characters, a bad name: Tornado's to refuse
    try:
        start = httputil.parse_request_start_line(start_line)
    except httputil.HTTPInputError:
        return None
    headers = httputil.HTTPHeaders()
    for name, value in _FIELD_LINE.findall(fields):
        if name in headers:
            headers.add(name, value)
        else:
            headers[name] = value
    if start.version != "HTTP/1.1" or headers.get("Upgrade", "").lower() != "websocket":
        return None
    if "Content-Length" in headers or "Transfer-Encoding" in headers or "Expect" in headers:
        return None
    return end + 4, start, headers


def _done() -> Future[None]:
    future: Future[None] = Future()
    future.set_result(None)
    return future


class UpgradeConnection(httputil.HTTPConnection):
    """The connection of one upgrade request: its handler detaches it (101) or answers and it closes.

    A response other than the 101 carries ``Connection: close``; the socket is then
    half-closed and closed once the peer is done (or after :data:`LINGER` seconds), so a
    client that already sent more bytes still reads the response instead of a reset.
    """

    def __init__(self, sock: socket.socket, *, registered: bool) -> None:
        self.socket: socket.socket | None = sock
        #: Whether the socket has a reader on the running loop (a WebSocket takes it over in place).
        self.registered = registered
        self.context: Any = None  # the server sets Tornado's request context

    def hold(self) -> None:
        """Reader placeholder until the handler detaches or answers: bytes that arrive first
        wait in the socket (level-triggered, so stop watching; the new owner watches again)."""
        if self.registered and self.socket is not None:
            self.registered = False
            asyncio.get_running_loop().remove_reader(self.socket.fileno())

    def set_close_callback(self, callback: Any) -> None:
        # The handler detaches at once or answers at once: there is no wait in which a
        # closing peer would have to be reported to it.
        pass

    def detach(self) -> Any:
        # RequestHandler.detach() returns this; the WebSocket handler takes the socket from it.
        return self

    def take_socket(self) -> socket.socket:
        sock, self.socket = self.socket, None
        assert sock is not None, "the socket was already taken"
        return sock

    def write_headers(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        chunk: bytes | None = None,
    ) -> Future[None]:
        assert isinstance(start_line, httputil.ResponseStartLine)
        headers["Connection"] = "close"
        lines = [f"HTTP/1.1 {start_line.code} {start_line.reason}"]
        lines.extend(f"{name}: {value}" for name, value in headers.get_all())
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode("latin1") + (chunk or b""))
        return _done()

    def write(self, chunk: bytes) -> Future[None]:
        self._send(chunk)
        return _done()

    def _send(self, data: bytes) -> None:
        # What answers an upgrade request instead of a 101 is a short refusal (400, 403, 426,
        # 503), and the socket is fresh: its send buffer takes it whole.
        if self.socket is not None and data:
            with contextlib.suppress(OSError):
                self.socket.send(data)

    def finish(self) -> None:
        """The response is out: half-close, let the peer finish, then close."""
        sock, self.socket = self.socket, None
        assert sock is not None, "finished after detaching"
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            _close(sock, self.registered)
            return
        loop = asyncio.get_running_loop()

        def drain() -> None:
            try:
                more = sock.recv(PEEK_SIZE)
            except BlockingIOError:
                return
            except OSError:
                more = b""
            if not more:
                timer.cancel()
                _close(sock, True)

        loop.add_reader(sock.fileno(), drain)
        timer = loop.call_later(LINGER, _close, sock, True)

    def bad_request(self) -> None:
        """Refuse a request Tornado's parser would refuse, with Tornado's bare 400."""
        self._send(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        self.finish()

    def abort(self) -> None:
        """Close at once (the request failed before any response)."""
        sock, self.socket = self.socket, None
        if sock is not None:
            _close(sock, self.registered)


def _close(sock: socket.socket, registered: bool) -> None:
    if registered:
        asyncio.get_running_loop().remove_reader(sock.fileno())
    sock.close()
