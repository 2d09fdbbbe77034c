"""uvicorn's HTTP protocols with its own 400s in the API's JSON error format.

uvicorn answers a request it cannot parse (headers over its size limit, a negative or malformed
Content-Length, a broken request line) itself, before the app sees it, with a plain-text 400. This
subclass answers the same 400 with ``{"error": "bad_request", "message": …}`` and the same security
headers as every other response, then close the connection as uvicorn does. The request's path is not
known reliably at that point, so /v2 clients get the /v1 body too (its ``error`` field is still text).
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_MESSAGE = (
    "the request is not valid HTTP/1.1 (malformed request line, headers over the size limit, or a bad Content-Length)"
)
# h11's default; more would let a client make every connection hold more, less breaks clients with long cookies.
MAX_HEADER_BYTES = 16 * 1024


def _response() -> bytes:
    body = json.dumps({"error": "bad_request", "message": _MESSAGE}).encode()
    head = (
        "HTTP/1.1 400 Bad Request\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "x-content-type-options: nosniff\r\n"
        "cache-control: no-store\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    """httptools (llhttp) sets no limit on the size of a request's head, so this one does, twice: once more
    than ``MAX_HEADER_BYTES`` have arrived without the head being complete (so an endless head is cut early),
    and when a head that arrived in one piece turns out to be larger."""

    _head_complete = False
    _head_bytes = 0
    _ended_message = False

    def data_received(self, data: bytes) -> None:
        self._ended_message = False
        super().data_received(data)
        # Counted after parsing, and only a chunk that neither completed a head nor ended a message (whose
        # bytes are body, not head): what remains is a head still arriving.
        if self._head_complete or self._ended_message or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEADER_BYTES:
            self.logger.warning("request head over %d bytes", MAX_HEADER_BYTES)
            self.send_400_response("request head too large")

    def on_headers_complete(self) -> None:
        self._head_complete = True
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > MAX_HEADER_BYTES:
            # Raised inside a parser callback, it reaches data_received as an HttpParserError: the JSON 400.
            raise ValueError(f"request head of {size} bytes is over the limit of {MAX_HEADER_BYTES}")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_complete, self._head_bytes = False, 0  # the next request on this connection starts afresh
        self._ended_message = True

    def send_400_response(self, msg: str) -> None:
        del msg  # uvicorn's own text says nothing more than ours
        self.transport.write(_response())
        self.transport.close()


def http_protocol() -> str:
    """The protocol class for ``uvicorn.Config(http=…)`` (httptools is a declared dependency)."""
    return f"{__name__}:JsonErrorHttpToolsProtocol"
