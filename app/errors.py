"""Domain errors, each with an HTTP status and a stable `code`.

Services raise these; one handler in `app.api.problems` renders them as
RFC 9457 problem+json. Nothing below the API layer knows about HTTP beyond
the status number carried here.

    AppError
    ├── ValidationFailed          422 VALIDATION_ERROR
    ├── IdempotencyKeyReused      422 IDEMPOTENCY_KEY_REUSED
    ├── Unauthorized              401 UNAUTHORIZED
    │   ├── InvalidCredentials    401 INVALID_CREDENTIALS
    │   └── InvalidToken          401 INVALID_TOKEN
    ├── Forbidden                 403 FORBIDDEN
    │   └── NotAdmitted           403 NOT_ADMITTED
    ├── NotFound                  404 NOT_FOUND
    │   ├── DropNotFound          404 DROP_NOT_FOUND
    │   ├── HoldNotFound          404 RESERVATION_NOT_FOUND
    │   ├── NotInQueue            404 NOT_IN_QUEUE
    │   └── NotEntered            404 NOT_ENTERED
    ├── Conflict                  409
    │   ├── EmailTaken            409 EMAIL_TAKEN
    │   ├── InvalidState          409 INVALID_STATE
    │   ├── DropNotLive           409 DROP_NOT_LIVE
    │   ├── SoldOut               409 SOLD_OUT
    │   ├── LimitReached          409 LIMIT_REACHED
    │   ├── Cooldown              409 COOLDOWN (carries retry_after_seconds)
    │   ├── HoldCancelled         409 RESERVATION_CANCELLED
    │   ├── HoldPurchased         409 RESERVATION_PURCHASED
    │   ├── AccessModeMismatch    409 ACCESS_MODE_MISMATCH
    │   ├── EntriesClosed         409 ENTRIES_CLOSED
    │   └── OrderNotFixed         409 ORDER_NOT_FIXED
    ├── HoldExpired        410 RESERVATION_EXPIRED
    ├── PayloadTooLarge           413 PAYLOAD_TOO_LARGE
    ├── RateLimited               429 RATE_LIMITED (carries retry_after_seconds)
    └── ServiceUnavailable        503 SERVICE_UNAVAILABLE
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(self.detail)


class ValidationFailed(AppError):
    status, code, title = 422, "VALIDATION_ERROR", "Invalid request"


class SizeRequired(AppError):
    status, code, title = 422, "SIZE_REQUIRED", "This drop sells sizes: choose one"


class UnknownSize(AppError):
    status, code, title = 422, "UNKNOWN_SIZE", "Unknown size"


class IdempotencyKeyReused(AppError):
    status, code, title = 422, "IDEMPOTENCY_KEY_REUSED", "Idempotency key reused with another body"


class Unauthorized(AppError):
    status, code, title = 401, "UNAUTHORIZED", "Authentication required"


SIGNED_OUT = "Session was signed out"  # the detail of a 401 for a revoked session


class InvalidCredentials(Unauthorized):
    code, title = "INVALID_CREDENTIALS", "Invalid email or password"


class InvalidToken(Unauthorized):
    code, title = "INVALID_TOKEN", "Invalid or expired refresh token"


class Forbidden(AppError):
    status, code, title = 403, "FORBIDDEN", "Not allowed"


class NotAdmitted(Forbidden):
    code, title = "NOT_ADMITTED", "Not admitted to this drop"


class NotFound(AppError):
    status, code, title = 404, "NOT_FOUND", "Not found"


class DropNotFound(NotFound):
    code, title = "DROP_NOT_FOUND", "Drop not found"


class HoldNotFound(NotFound):
    code, title = "RESERVATION_NOT_FOUND", "Reservation not found"


class NotInQueue(NotFound):
    code, title = "NOT_IN_QUEUE", "You have no ticket in this drop's queue"


class NotEntered(NotFound):
    code, title = "NOT_ENTERED", "You have not entered this drop's draw"


class Conflict(AppError):
    status, code, title = 409, "CONFLICT", "Conflict"


class EmailTaken(Conflict):
    code, title = "EMAIL_TAKEN", "Email already registered"


class InvalidState(Conflict):
    code, title = "INVALID_STATE", "Not allowed in the drop's current state"


class DropNotLive(Conflict):
    code, title = "DROP_NOT_LIVE", "Drop is not live"


class SoldOut(Conflict):
    code, title = "SOLD_OUT", "Sold out"


class SizeSoldOut(Conflict):
    code, title = "SIZE_SOLD_OUT", "The sizes asked for are sold out"


class LimitReached(Conflict):
    code, title = "LIMIT_REACHED", "Per-user limit reached"


class Cooldown(Conflict):
    code, title = "COOLDOWN", "Too soon after your last hold in this drop"

    def __init__(self, retry_after_seconds: int, detail: str | None = None) -> None:
        super().__init__(
            detail or f"Your last hold in this drop ended; try again in {retry_after_seconds} s"
        )
        self.retry_after_seconds = max(1, retry_after_seconds)


class HoldCancelled(Conflict):
    code, title = "RESERVATION_CANCELLED", "Reservation was cancelled"


class HoldPurchased(Conflict):
    code, title = "RESERVATION_PURCHASED", "Reservation already purchased"


class AccessModeMismatch(Conflict):
    code, title = "ACCESS_MODE_MISMATCH", "This drop does not use that kind of access"


class EntriesClosed(Conflict):
    code, title = "ENTRIES_CLOSED", "The draw is not taking entries"


class OrderNotFixed(Conflict):
    code, title = "ORDER_NOT_FIXED", "The order is not fixed yet"


class HoldExpired(AppError):
    status, code, title = 410, "RESERVATION_EXPIRED", "Reservation expired"


class PayloadTooLarge(AppError):
    status, code, title = 413, "PAYLOAD_TOO_LARGE", "Request body too large"


class RateLimited(AppError):
    status, code, title = 429, "RATE_LIMITED", "Too many requests"

    def __init__(self, retry_after_seconds: int, detail: str | None = None) -> None:
        super().__init__(detail or f"Too many requests; retry in {retry_after_seconds} s")
        self.retry_after_seconds = max(1, retry_after_seconds)


class ServiceUnavailable(AppError):
    status, code, title = 503, "SERVICE_UNAVAILABLE", "Service temporarily unavailable"
