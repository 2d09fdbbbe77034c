"""Refusals the aggregator's layers raise; the transport maps each to one gRPC status code, in one place."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service refuses. ``code`` names the ``grpc.StatusCode`` member it maps to."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthenticated(ServiceError):  # noqa: N818 - named after its gRPC status code
    """No credential, or one the service does not know (or that was revoked)."""

    code = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):  # noqa: N818 - named after its gRPC status code
    """A known caller acting outside its rights: a site on Admin, or on another site's slot."""

    code = "PERMISSION_DENIED"


class InvalidArgument(ServiceError):  # noqa: N818 - named after its gRPC status code
    """The request itself is malformed: corrupt payload, wrong shapes, non-finite values, too large."""

    code = "INVALID_ARGUMENT"


class FailedPrecondition(ServiceError):  # noqa: N818 - named after its gRPC status code
    """Well-formed but not possible in the current state: closed round, stale base, protocol mismatch."""

    code = "FAILED_PRECONDITION"


class NotFound(ServiceError):  # noqa: N818 - named after its gRPC status code
    code = "NOT_FOUND"


class AlreadyExists(ServiceError):  # noqa: N818 - named after its gRPC status code
    code = "ALREADY_EXISTS"


class Unavailable(ServiceError):  # noqa: N818 - named after its gRPC status code
    """This process cannot serve now (a standby, a leader that lost its lease, a busy database): clients retry."""

    code = "UNAVAILABLE"


class ResourceExhausted(ServiceError):  # noqa: N818 - named after its gRPC status code
    """A per-site limit is full; ``retry_after_s`` tells the client when trying again makes sense."""

    code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
