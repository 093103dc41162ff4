"""Structured logs: one JSON object per line on stderr, from every logger of every process.

`logging_config` is the one configuration: `sneakerdrop` applies it at start, hands it to
uvicorn (which applies it again in each worker it spawns), and `create_app` applies it
in the worker. uvicorn's own loggers (`uvicorn`, `uvicorn.error` for the supervisor and
the workers, `uvicorn.access`) propagate to the root's JSON handler; warnings and
uncaught exceptions are logged too, so no plain line or raw traceback reaches stderr.
A line with an exception carries it as fields: `error` ("Type: message") and `exc`
(the traceback).
"""

from __future__ import annotations

import logging
import logging.config
import sys
import threading
import time
from contextvars import ContextVar
from types import TracebackType
from typing import Any

import orjson

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

_STANDARD = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "color_message"}
_TRACEBACK = "Traceback (most recent call last):"
# Loggers that say too much at INFO.
_QUIET = ("uvicorn.access", "socketio", "engineio", "alembic.runtime.plugins")


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self.converter = time.gmtime  # timestamps in UTC, as the Z says

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "requestId": request_id_var.get(),
            "pid": record.process,
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            payload["error"] = describe(record.exc_info[1])
            payload["exc"] = self.formatException(record.exc_info)
        elif payload["msg"].startswith(_TRACEBACK):
            # A traceback logged as text (uvicorn: a failed lifespan start-up, as Starlette
            # reports it): its last line, "Type: message", is the error.
            payload["exc"] = payload["msg"]
            payload["msg"] = payload["error"] = payload["msg"].rstrip().rsplit("\n", 1)[-1]
        return orjson.dumps(payload, default=str).decode()


def describe(exc: BaseException) -> str:
    """`Type: message` (just `Type` when the message is empty): what an error line names."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def logging_config(level: str) -> dict[str, Any]:
    """The dictConfig of every process (also uvicorn's `log_config`)."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            # uvicorn's defaults give these handlers of their own: here they only propagate.
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": True},
            **{name: {"level": "WARNING"} for name in _QUIET if name != "uvicorn.access"},
        },
    }


def configure_logging(level: str) -> None:
    """Apply `logging_config` to this process."""
    logging.config.dictConfig(logging_config(level))


def log_uncaught_errors() -> None:
    """Warnings and uncaught exceptions as JSON lines too (the `sneakerdrop` process; not
    set by `create_app`, which a test runner's own hooks would lose to)."""
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(
    kind: type[BaseException], exc: BaseException, traceback: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, traceback)
        return
    logging.getLogger("sneakerdrop").critical("uncaught error", exc_info=(kind, exc, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("sneakerdrop").error(
        "uncaught error in thread %s",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
