"""GET /up: whether this worker can reach its database (and Redis), for load balancers.

Answered in front of Flask (a WSGI wrapper), so a probe every few seconds costs no
session, no user lookup, no template and sets no cookie.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from sqlalchemy import text

log = logging.getLogger(__name__)

PATH = "/up"
TIMEOUT = 3.0  # seconds a probe may wait on a service before calling it down


def _timeout():
    """A gevent timeout under gevent (a hung service must not hang the probe), else nothing."""
    from contextlib import nullcontext

    from gevent import Timeout, monkey

    if monkey.is_module_patched("socket"):
        return Timeout(TIMEOUT, TimeoutError(f"no answer within {TIMEOUT:g} s"))
    return nullcontext()


class Health:
    """Checks the services a worker needs, and answers /up with the result."""

    def __init__(self, app, wsgi_app):
        from .extensions import db

        self.wsgi_app = wsgi_app
        with app.app_context():
            self.engine = db.engine
        self.redis = None
        if app.config.get("REDIS_URL"):
            import redis

            self.redis = redis.Redis.from_url(
                app.config["REDIS_URL"], socket_connect_timeout=1, socket_timeout=2
            )

    def check_database(self) -> None:
        """Read the schema's version: the database answers and holds chatapp's tables."""
        if self.engine.dialect.name == "sqlite":
            # A fresh connection each time, opened read-write without creating: a pooled
            # one keeps working on a file that was deleted, moved or replaced under it,
            # which is exactly when the worker is writing into nothing. SQLite opens in
            # microseconds.
            path = self.engine.url.database
            conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=TIMEOUT)
            try:
                conn.execute("SELECT version_num FROM alembic_version").fetchall()
            finally:
                conn.close()
            return
        with self.engine.connect() as conn:  # pooled, pre-pinged
            conn.execute(text("SELECT version_num FROM alembic_version")).fetchall()

    def check_redis(self) -> None:
        """Ping Redis."""
        self.redis.ping()

    def failures(self) -> list[str]:
        """The parts that failed, each with why ("database: unable to open database file")."""
        checks = [("database", self.check_database)]
        if self.redis is not None:
            checks.append(("redis", self.check_redis))
        failed = []
        for name, check in checks:
            try:
                with _timeout():
                    check()
            except Exception as exc:  # noqa: BLE001 - any failure means "down"
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                failed.append(f"{name}: {reason}")
        return failed

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return self.wsgi_app(environ, start_response)
        started = time.monotonic()
        failed = self.failures()
        if failed:
            # The log says why; the public answer names only the parts (no hosts or ports).
            log.warning("health check failed in %.0f ms: %s",
                        (time.monotonic() - started) * 1000, "; ".join(failed))
            parts = (f.split(":", 1)[0] for f in failed)
            status, body = "503 Service Unavailable", "".join(f"{p} unreachable\n" for p in parts)
        else:
            status, body = "200 OK", "ok\n"
        data = body.encode()
        start_response(status, [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ])
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [data]


def init_app(app) -> None:
    """Answer /up in front of the application (and of any proxy-header middleware)."""
    app.wsgi_app = Health(app, app.wsgi_app)
