"""Structured logs: one JSON object per line on stderr, for journald and log collectors alike.

Every record has ``time`` (RFC 3339, UTC), ``level``, ``logger`` and
``msg``; what a call passes as ``extra={"fields": {...}}`` is merged in,
and an exception adds ``error`` (its type) and ``traceback``. Python's
warnings go the same way.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
import traceback
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update({k: v for k, v in fields.items() if k not in out})
        if record.exc_info and record.exc_info[0] is not None:
            out["error"] = record.exc_info[0].__name__
            out["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(out, default=str)


def setup(level: str = "info") -> None:
    """Send every log record (and warning) to stderr as JSON lines, from ``level`` up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(level.upper())
