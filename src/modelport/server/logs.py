"""Logging, configured once when a server starts: the ``modelport`` logger and uvicorn's.

``text`` lines read ``2026-11-30 12:00:00,123 INFO    modelport: serving iris@3 (runtime onnx)``;
``json`` writes one JSON object per line (``time``, ``level``, ``logger``, ``message``, and for
access lines ``client``, ``method``, ``path``, ``status``), for log collectors.
"""

from __future__ import annotations

import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

import orjson

FORMATS = ("text", "json")
LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
TEXT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
ACCESS_TEXT = '%(asctime)s %(levelname)-7s access: %(client_addr)s "%(request_line)s" %(status_code)s'


class ShortNames(logging.Filter):
    """uvicorn logs its server lines as ``uvicorn.error``, errors or not: show them as ``uvicorn``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.error":
            record.name = "uvicorn"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record; uvicorn's access records are split into fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, path, version, status = args
            entry.update(client=client, method=method, path=path, http_version=version, status=status)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(level: str = "info", format: str = "text", *, access_log: bool = False) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` document for uvicorn (its ``log_config``) and ``modelport``."""
    if format not in FORMATS:
        raise ValueError(f"log format {format!r}: choose {' or '.join(FORMATS)}")
    json = format == "json"
    level_name = "DEBUG" if level.lower() == "trace" else level.upper()
    formatters: dict[str, Any] = (
        {"plain": {"()": JsonFormatter}, "access": {"()": JsonFormatter}}
        if json
        else {
            "plain": {"format": TEXT},
            "access": {"()": "uvicorn.logging.AccessFormatter", "fmt": ACCESS_TEXT, "use_colors": False},
        }
    )
    handlers = {
        "plain": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stderr",
            "filters": ["short_names"],
        },
        "access": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": formatters,
        "filters": {"short_names": {"()": ShortNames}},
        "handlers": handlers,
        "loggers": {
            "modelport": {"handlers": ["plain"], "level": level_name, "propagate": False},
            "uvicorn": {"handlers": ["plain"], "level": level_name, "propagate": False},
            "uvicorn.error": {"level": level_name},
            "uvicorn.access": {
                "handlers": ["access"] if access_log else [],
                "level": "INFO" if access_log else "WARNING",
                "propagate": False,
            },
        },
    }


def configure_modelport(level: str = "info", format: str = "text") -> None:
    """Give the ``modelport`` logger a handler unless it has one (uvicorn configured by someone else,
    e.g. ``uvicorn --factory modelport.app:create_app``); uvicorn's own loggers are left as they are."""
    logger = logging.getLogger("modelport")
    if logger.handlers:
        return
    document = logging_config(level, format)
    document["loggers"] = {"modelport": document["loggers"]["modelport"]}
    document["handlers"] = {"plain": document["handlers"]["plain"]}
    document["formatters"] = {"plain": document["formatters"]["plain"]}
    document["filters"] = dict(document["filters"])
    logging.config.dictConfig(document)
