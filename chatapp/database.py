"""Database engine settings that SQLAlchemy cannot express in a URL."""

from __future__ import annotations

import logging
import sys

from sqlalchemy import event

log = logging.getLogger(__name__)


def engine_options(url: str, pool_size: int) -> dict:
    """Pool settings for SQLAlchemy's create_engine, by database."""
    # A database error in the log must not carry its statement's values (message text).
    options = {"hide_parameters": True}
    if not url.startswith("postgresql"):
        return options
    # Sessions give their connection back after each frame (ws.py rolls back), so a
    # worker holding thousands of sockets needs only a few connections at a time.
    return {
        **options,
        "pool_pre_ping": True,  # a restarted PostgreSQL costs one retry, not an error page
        "pool_size": pool_size,
        "max_overflow": pool_size * 2,
        "pool_timeout": 10,
        "pool_recycle": 1800,
    }


def configure_engine(engine) -> None:
    """SQLite: WAL and a busy timeout. PostgreSQL: make sure psycopg waits cooperatively."""
    if engine.dialect.name == "postgresql":
        make_psycopg_green()
        return
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def make_psycopg_green() -> bool:
    """Under gevent, have psycopg 3 wait on the gevent hub rather than block the process.

    psycopg (3.1.14+) picks its wait function when it is imported: if gevent has
    already patched `select`, it waits through the patched poll()/selectors and every
    query yields to other greenlets. If psycopg was imported first, it keeps its C
    wait, which blocks the whole worker (every socket) for the length of each query.
    That happens only when something imports psycopg before the monkey-patch; put the
    pure-Python waits back in that case. Returns whether a repair was needed.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("select"):
        return False
    import selectors

    from psycopg import waiting

    if waiting.wait is not getattr(waiting, "wait_c", None):
        return False
    log.warning("psycopg was imported before gevent patched select; using cooperative waits")
    waiting.wait = waiting.wait_poll
    waiting._ready = waiting._ready_poll
    waiting.DefaultSelector = selectors.DefaultSelector
    return True


def like_literal(text: str) -> str:
    """Escape LIKE's wildcards (with backslash) so the text matches only itself.

    NUL characters are dropped: no name or message holds one, and PostgreSQL refuses them.
    """
    return text.replace("\x00", "").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
