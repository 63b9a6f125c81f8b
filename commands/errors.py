"""The one error tree of meshbot.

Client modules translate their library's exceptions (``ApiException``,
``httpx.HTTPError``, ``yaml.YAMLError``) into these at the point where they call
out, so the rest of the code never sees a transport error.  Exactly one handler
per front end (CLI, Slack) turns them into text for a human.
"""

from __future__ import annotations


class MeshbotError(Exception):
    """Base of every error meshbot raises on purpose; the message is for humans."""


class UserError(MeshbotError):
    """The request itself is wrong (bad argument, unknown check, invalid name)."""


class InputError(UserError):
    """A configuration file could not be read; carries ``file:line`` where known."""

    def __init__(self, reason: str, *, path: str | None = None, line: int | None = None):
        self.reason = reason
        self.path = path
        self.line = line
        super().__init__(f"{self.location}: {reason}" if self.location else reason)

    @property
    def location(self) -> str | None:
        if self.path is None:
            return None
        return f"{self.path}:{self.line}" if self.line else self.path


class ClusterError(MeshbotError):
    """The Kubernetes API (or an endpoint in the cluster) refused or failed a call."""

    def __init__(self, message: str, *, status: int | None = None, endpoint: str | None = None,
                 reason: str | None = None):
        self.status = status
        self.endpoint = endpoint
        self.reason = reason or message
        """The bare cause (``forbidden``) without the call's name, for callers that word their own text."""
        super().__init__(message)


class AccessDenied(ClusterError):
    """401/403: meshbot's identity lacks a permission; the message names it."""


class NotFound(ClusterError):
    """404: the object or the API (CRD not installed) does not exist."""


class Conflict(ClusterError):
    """409: the object changed under us or already exists."""


class TransientError(MeshbotError):
    """Timeouts, connection failures, 5xx: worth retrying later."""

    def __init__(self, message: str, *, endpoint: str | None = None, status: int | None = None,
                 reason: str | None = None):
        self.endpoint = endpoint
        self.status = status
        self.reason = reason or message
        super().__init__(message)
