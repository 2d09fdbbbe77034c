"""Streaming multipart/form-data for the predict route: file parts as ``Upload``s, with the limits enforced
while the body arrives.

Starlette's form parser reads the whole body before anyone can count its parts, and a body cut in the middle
of a part simply loses that part (the client then hears "no image in the request"). Here the parser from
``python-multipart`` is fed chunk by chunk: the (max_images + 1)-th file part is a 413 at once, without reading
the rest, and a body that ends before the closing boundary is a 400 that says so. Parts that are not files
(no ``filename``) are skipped without keeping their data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from inference_api.decoding import Upload
from inference_api.errors import BadRequestError, TooManyImagesError

_MAX_PART_HEADERS = 16
_MAX_PART_HEADER_BYTES = 8 * 1024


class _Parts:
    """The parser's callbacks: collects file parts and counts them as their headers end."""

    def __init__(self, max_files: int) -> None:
        self.max_files = max_files
        self.uploads: list[Upload] = []
        self._field = bytearray()
        self._value = bytearray()
        self._disposition = b""
        self._filename: str | None = None
        self._is_file = False
        self._data: list[bytes] = []

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._disposition, self._filename, self._is_file, self._data = b"", None, False, []

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._field).strip().lower() == b"content-disposition":
            self._disposition = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"filename" not in options:
            return  # a plain form field: nothing we use
        self._is_file = True
        self._filename = options[b"filename"].decode("utf-8", errors="replace")
        if len(self.uploads) >= self.max_files:
            raise TooManyImagesError(f"more than {self.max_files} images in one request; the limit is {self.max_files}")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self._data.append(data[start:end])

    def on_part_end(self) -> None:
        if self._is_file:
            self.uploads.append(Upload(self._filename, b"".join(self._data)))
        self._data = []


async def read_uploads(content_type: str, chunks: AsyncIterator[bytes], max_files: int) -> list[Upload]:
    """The file parts of a multipart/form-data body, or a 400/413 ``ApiError`` as soon as one is due.

    The body's total size is bounded by the request-size middleware, which raises from ``receive``."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequestError("the multipart/form-data Content-Type has no boundary parameter")
    parts = _Parts(max_files)
    try:
        parser = MultipartParser(
            boundary,
            parts.callbacks(),  # type: ignore[arg-type]
            max_header_count=_MAX_PART_HEADERS,
            max_header_size=_MAX_PART_HEADER_BYTES,
        )
        async for chunk in chunks:
            if chunk:
                parser.write(chunk)
    except MultipartParseError as error:
        raise BadRequestError(f"malformed multipart body: {error}") from error
    except ValueError as error:  # python-multipart raises it for a bad boundary
        raise BadRequestError(f"malformed multipart body: {error}") from error
    if parser.state != MultipartState.END:
        raise BadRequestError(
            "the multipart body ends before its closing boundary (in the middle of a part, or empty): "
            "the upload was cut short"
        )
    return parts.uploads
