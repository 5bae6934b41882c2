"""Logs an operator's tools can read: one line per event, as text or JSON (CHATAPP_LOG_FORMAT).

Every line made while a request is handled carries its request id (also sent back as
X-Request-ID), the user id and the route; each request ends with one access line that
adds the status and duration. Nothing here logs a password, cookie, key or message text:
only ids, names of routes and numbers are added.

Only the standard library at import time: gunicorn.conf.py loads this module in the
gunicorn master, which must not import Flask before its workers monkey-patch.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from datetime import datetime, timezone

FORMAT_ENV = "CHATAPP_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes every LogRecord has; anything else on a record was added on purpose (extra=).
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
access_log = logging.getLogger("chatapp.access")


def log_format() -> str:
    """"json" or "text", from CHATAPP_LOG_FORMAT (text unless it says json)."""
    return "json" if os.environ.get(FORMAT_ENV, "").strip().lower() == "json" else "text"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, pid and any context fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,  # which gunicorn worker
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an odd extra value must not cost the line.
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter() -> logging.Formatter:
    """The formatter CHATAPP_LOG_FORMAT asks for."""
    return JsonFormatter() if log_format() == "json" else logging.Formatter(TEXT_FORMAT)


class RequestContext(logging.Filter):
    """Adds request id, user id and route to lines made while a request is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        from flask import g, has_request_context, request

        if has_request_context():
            record.request_id = g.get("request_id")
            # Flask-Login keeps the user it loaded here; read it, never load it for a log.
            user = g.get("_login_user")
            if getattr(user, "is_authenticated", False):
                record.user_id = user.id
            if request.url_rule is not None:
                record.route = request.url_rule.rule
        return True


def _configure_root() -> None:
    """Send every logger's lines to stderr in the chosen format (once per process)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_chatapp", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._chatapp = True
    handler.setFormatter(formatter())
    handler.addFilter(RequestContext())
    root.addHandler(handler)
    if root.level == logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    # Alembic announces each of its plugins at INFO whenever a command loads it.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    if log_format() == "json":
        # A warnings.warn() would otherwise print a multi-line, non-JSON text to stderr.
        logging.captureWarnings(True)


def _log_gevent_errors() -> None:
    """Have gevent report a failed greenlet through logging (one line), not raw to stderr.

    A thread-pool task's exception (say argon2's "password does not match", run off the
    event loop) is raised to its caller by apply(), which handles it: gevent's own report
    of it is noise, at DEBUG here.
    """
    from gevent.hub import Hub
    from gevent import threadpool

    # The pool's worker has no public name; should it go, pool errors are logged as errors.
    PoolWorker = getattr(threadpool, "_WorkerGreenlet", ())

    if getattr(Hub.print_exception, "_chatapp", False):
        return

    def print_exception(hub, context, type_, value, tb):
        in_pool = isinstance(context, tuple) and context and isinstance(context[0], PoolWorker)
        level = logging.DEBUG if in_pool else logging.ERROR
        logging.getLogger("gevent").log(
            level, "%s failed", type(context).__name__, exc_info=(type_, value, tb)
        )

    print_exception._chatapp = True
    Hub.print_exception = print_exception


def init_app(app) -> None:
    """Configure logging, give each request an id, and log one access line per request."""
    from flask import g, request

    _configure_root()
    _log_gevent_errors()

    @app.before_request
    def _start_request():
        # Always generated here: an id taken from the client could be forged or reused.
        g.request_id = uuid.uuid4().hex
        g.request_started = time.perf_counter()

    @app.after_request
    def _access_line(response):
        request_id = g.get("request_id")
        if request_id is None:  # before_request did not run (a failure before it)
            return response
        response.headers["X-Request-ID"] = request_id
        duration_ms = round((time.perf_counter() - g.request_started) * 1000, 1)
        # The path without its query string: a query may hold search words or tokens.
        access_log.info(
            "%s %s %s %.1f ms", request.method, request.path, response.status_code, duration_ms,
            extra={"method": request.method, "path": request.path,
                   "status": response.status_code, "duration_ms": duration_ms,
                   "remote_addr": request.remote_addr},
        )
        return response
