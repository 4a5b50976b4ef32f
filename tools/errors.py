"""The one exception hierarchy of labelpilot.

Every error a user can cause carries a message that says *what* went wrong, *where* (file, line, field
when known) and *how to fix it*. Exceptions become user-facing text only at the edges (CLI, agent tool
adapters, UI); the code in between raises these types and never prints.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path


class LabelpilotError(Exception):
    """Base class of every error labelpilot raises on purpose."""

    #: Process exit code the CLI uses for this error.
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def user_message(self) -> str:
        """Return the message a person reads: what, where and how to fix it."""
        if self.hint:
            return f"{self.message}\nHint: {self.hint}"
        return self.message

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-safe description for `--json` output and tool messages."""
        return {"error": type(self).__name__, "message": self.message, "hint": self.hint}


class ConfigError(LabelpilotError):
    """Settings or environment variables are missing or invalid."""


class NotFoundError(LabelpilotError):
    """A project, task, version, run or file that was asked for does not exist."""


class ConflictError(LabelpilotError):
    """The request conflicts with existing data (a duplicate name, a changed task under the same id)."""


class InputFileError(LabelpilotError):
    """A file given to labelpilot cannot be read as the data it should hold.

    `path`, `line` (1-based, counting the header line of delimited files) and `field` say where.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        where = self.path
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}", hint=hint)

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-safe description including the location."""
        data = super().to_dict()
        data.update({"path": self.path, "line": self.line, "field": self.field})
        return data


class LabelSpecError(LabelpilotError):
    """A label schema (class list or Label Studio config) is invalid or unsupported."""


class LabelValueError(LabelpilotError):
    """A label value does not fit the project's label schema."""


class StorageError(LabelpilotError):
    """The database cannot be opened, is of an unknown schema version, or an upgrade failed."""


class ErrorKind(str, Enum):
    """Why one model call (and so one task) failed; stored with the prediction as data."""

    rate_limited = "rate_limited"  # 429 after every retry
    server_error = "server_error"  # 5xx after every retry
    timeout = "timeout"
    connection = "connection"
    bad_request = "bad_request"  # other 4xx: not retried
    auth = "auth"  # 401/403: not retried, stops a job
    invalid_output = "invalid_output"  # the reply broke the schema even after one repair attempt
    unplaceable_spans = "unplaceable_spans"  # spans whose text is not in the source
    cancelled = "cancelled"


#: Kinds worth retrying with backoff.
RETRYABLE_KINDS = frozenset(
    {ErrorKind.rate_limited, ErrorKind.server_error, ErrorKind.timeout, ErrorKind.connection}
)


class ModelCallError(LabelpilotError):
    """A call to the model failed; `kind` says why, `retry_after` (seconds) is the server's hint if any."""

    def __init__(
        self,
        message: str,
        *,
        kind: ErrorKind,
        retry_after: float | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind
        self.retry_after = retry_after
        self.status_code = status_code
        self.headers = headers or {}
        #: Tokens (input, output, cached) the failed call consumed anyway, e.g. an unusable reply and its
        #: repair: they are billed, so they are counted.
        self.spent: tuple[int, int, int] = (0, 0, 0)

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed if tried again later."""
        return self.kind in RETRYABLE_KINDS

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-safe description including the kind."""
        data = super().to_dict()
        data.update({"kind": self.kind.value, "status_code": self.status_code})
        return data
