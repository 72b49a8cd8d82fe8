"""Logging, configured once when a server starts: the ``modelport`` logger and uvicorn's.

``text`` lines read ``2026-11-30 12:00:00,123 INFO    modelport: serving iris@3 (runtime onnx)``;
``json`` writes one JSON object per line (``time``, ``level``, ``logger``, ``message``), for log
collectors.

The access log (:class:`AccessLog`, on with ``--access-log``) writes one line per request, HTTP
and gRPC alike, to stdout through the ``modelport.access`` logger: in ``text``
``... access: 127.0.0.1 "POST /v2/models/iris/infer" 200 0.84ms id=9f2c... key=ab12 model=iris
version=3 protocol=v2 rows=1``; in ``json`` an object with ``request_id``, ``client``, ``key``,
``method``, ``path``, ``protocol``, ``model``, ``version``, ``status``, ``latency_ms``, ``rows``.
uvicorn's own access log stays off: it knows none of these.
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
ACCESS_TEXT = "%(asctime)s %(levelname)-7s access: %(message)s"
ACCESS_LOGGER = "modelport.access"


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
        access = getattr(record, "access", None)
        if access is not None:
            entry.update(access)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class AccessLog:
    """Writes the access-log line of one request (see the module docstring), in ``format``."""

    def __init__(self, format: str = "text") -> None:
        self.json = format == "json"
        self.logger = logging.getLogger(ACCESS_LOGGER)

    def write(
        self,
        *,
        request_id: str,
        client: str,
        key: str | None,
        method: str,
        path: str,
        protocol: str,
        model: str,
        version: int | None,
        status: int,
        seconds: float,
        rows: int,
    ) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        if self.json:
            fields = {
                "request_id": request_id,
                "client": client,
                "key": key,
                "method": method,
                "path": path,
                "protocol": protocol,
                "model": model or None,
                "version": version,
                "status": status,
                "latency_ms": round(seconds * 1000, 3),
                "rows": rows,
            }
            logger.info("access", extra={"access": fields})
            return
        logger.info(
            '%s "%s %s" %d %.2fms id=%s key=%s model=%s version=%s protocol=%s rows=%d',
            client,
            method,
            path,
            status,
            seconds * 1000,
            request_id,
            key or "-",
            model or "-",
            "-" if version is None else version,
            protocol,
            rows,
        )


def logging_config(level: str = "info", format: str = "text") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` document for uvicorn (its ``log_config``) and ``modelport``."""
    if format not in FORMATS:
        raise ValueError(f"log format {format!r}: choose {' or '.join(FORMATS)}")
    json = format == "json"
    level_name = "DEBUG" if level.lower() == "trace" else level.upper()
    formatters: dict[str, Any] = (
        {"plain": {"()": JsonFormatter}, "access": {"()": JsonFormatter}}
        if json
        else {"plain": {"format": TEXT}, "access": {"format": ACCESS_TEXT}}
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
            ACCESS_LOGGER: {"handlers": ["access"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},  # modelport's instead
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
