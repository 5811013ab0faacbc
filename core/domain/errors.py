"""Domain errors. Each carries a stable ``code`` and the HTTP status the API maps it to."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "error"
    http_status = 400

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []


class NotFound(DomainError):
    """Unknown id, or an id that belongs to another tenant (indistinguishable on purpose)."""

    code, http_status = "not_found", 404


class Conflict(DomainError):
    """The entity is not in a state that allows the request."""

    code, http_status = "conflict", 409


class StaleWrite(Conflict):
    """A conditional write lost: someone changed the item first. Re-read and decide again."""

    code = "stale_write"


class IllegalTransition(Conflict):
    code = "illegal_transition"


class InvalidInput(DomainError):
    code, http_status = "invalid_input", 422


class AddressSuppressed(InvalidInput):
    """The address is on the tenant's suppression list: nothing is sent to it."""

    code = "address_suppressed"


class PayloadTooLarge(DomainError):
    code, http_status = "payload_too_large", 413


class Unauthorized(DomainError):
    code, http_status = "unauthorized", 401


class Forbidden(DomainError):
    code, http_status = "forbidden", 403


class Fenced(DomainError):
    """This controller lost its lease: a newer epoch owns the work. Stop acting."""

    code, http_status = "fenced", 409


class TemporaryError(DomainError):
    """Retry later (throttling, a dependency down); ``delay`` is a hint in seconds."""

    code, http_status = "temporarily_unavailable", 503

    def __init__(self, message: str, delay: float = 1.0):
        super().__init__(message)
        self.delay = delay


class MessageRefused(DomainError):
    """A permanent, per-message refusal (e.g. SES rejected the address). Not retried."""

    code, http_status = "message_refused", 422


class SendInDoubt(DomainError):
    """SES may or may not have accepted the message (timeout, connection error, 5xx, unknown
    error). Never retried blindly: the Send-evidence policy decides."""

    code, http_status = "send_in_doubt", 503


class SendingHeld(DomainError):
    """SES refused the call for a reason about the account or its configuration, not about
    the message: every further send would fail the same way. ``scope`` is ``tenant`` when it
    is about the tenant's identity or from address, else ``platform``."""

    code, http_status = "sending_held", 503

    def __init__(self, message: str, *, ses_code: str, scope: str):
        super().__init__(message)
        self.ses_code = ses_code
        self.scope = scope
