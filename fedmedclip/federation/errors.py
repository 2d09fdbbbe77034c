"""Errors raised by the federation code: a payload that cannot be read, and an update that is refused."""

from __future__ import annotations


class FederationError(Exception):
    """Base class of the errors below, so callers can catch both with one clause."""


class CorruptUpdate(FederationError, ValueError):  # noqa: N818 - the name is the project's vocabulary
    """An update payload is malformed: wrong magic or version, truncated, bad header, digest mismatch..."""


class UpdateRejected(FederationError, ValueError):  # noqa: N818 - as above
    """A well-formed update that must not be averaged (wrong shape, non-finite, too large...).

    ``site`` and ``tensor`` are kept as attributes so the caller can drop exactly that update and record
    why; the message names both.
    """

    def __init__(self, site: str, reason: str, tensor: str | None = None) -> None:
        self.site = site
        self.reason = reason
        self.tensor = tensor
        where = f", tensor {tensor!r}" if tensor is not None else ""
        super().__init__(f"update from site {site!r} rejected{where}: {reason}")
