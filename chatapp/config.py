"""Configuration read from the environment (documented in the README's table)."""

import os
import secrets
from datetime import timedelta
from pathlib import Path

from .database import engine_options


def _flag(name: str, default: bool = False) -> bool:
    """Read a yes/no environment variable."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    """Read an integer environment variable."""
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


REGISTRATION_MODES = ("open", "invite", "closed")


def _registration() -> str:
    """CHATAPP_REGISTRATION: open (the default), invite or closed; anything else stops start-up."""
    value = (os.environ.get("CHATAPP_REGISTRATION") or "open").strip().lower()
    if value not in REGISTRATION_MODES:
        raise ValueError(
            f"CHATAPP_REGISTRATION must be one of {', '.join(REGISTRATION_MODES)}, not {value!r}"
        )
    return value


def _secret_key(instance_path: str) -> str:
    """Return SECRET_KEY, or one generated on first run and kept in instance/."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = Path(instance_path) / "secret_key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        key = secrets.token_hex(32)
        # O_EXCL: when two workers start together, the first one's key wins.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()
        with os.fdopen(fd, "w") as f:
            f.write(key)
        return key


def _database_url(instance_path: str) -> str:
    """Return DATABASE_URL in SQLAlchemy's spelling, defaulting to SQLite in instance/."""
    url = os.environ.get("DATABASE_URL") or f"sqlite:///{Path(instance_path) / 'chatapp.sqlite3'}"
    # psycopg 3 is the PostgreSQL driver; accept the conventional spellings.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def from_environment(instance_path: str, root_path: str) -> dict:
    """Build the Flask config mapping from environment variables."""
    origins = os.environ.get("CHATAPP_ALLOWED_ORIGINS", "")
    database_url = _database_url(instance_path)
    redis_prefix = os.environ.get("CHATAPP_REDIS_PREFIX", "chatapp:")
    # How long a login lasts at most, "Keep me signed in" or not (then it ends at once).
    session_lifetime = timedelta(days=_int("CHATAPP_SESSION_DAYS", 30))
    return {
        "SECRET_KEY": _secret_key(instance_path),
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options(
            database_url, _int("CHATAPP_DB_POOL_SIZE", 10)
        ),
        "REDIS_URL": os.environ.get("REDIS_URL") or None,
        # Proxies in front that set X-Forwarded-For/-Proto (0: trust no such header).
        "TRUSTED_PROXIES": _int("CHATAPP_TRUSTED_PROXIES", 0),
        # Every Redis key and channel of this deployment starts with this.
        "REDIS_PREFIX": redis_prefix,
        "RATELIMIT_KEY_PREFIX": redis_prefix + "limits",
        # Redis down: count in memory for the while, rather than refuse every request.
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        "RATELIMIT_SWALLOW_ERRORS": True,
        "RATELIMIT_STORAGE_OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
        "UPLOAD_DIR": os.environ.get("CHATAPP_UPLOAD_DIR")
        or str(Path(root_path).parent / "uploads"),
        # Where image files live: local (UPLOAD_DIR) or s3 (docs/deployment.md).
        "STORAGE": (os.environ.get("CHATAPP_STORAGE") or "local").strip().lower(),
        # While moving between backends: the old one, read for what is not copied yet.
        "STORAGE_FALLBACK": (os.environ.get("CHATAPP_STORAGE_FALLBACK") or "").strip().lower(),
        "S3_BUCKET": os.environ.get("CHATAPP_S3_BUCKET") or None,
        "S3_ENDPOINT_URL": os.environ.get("CHATAPP_S3_ENDPOINT_URL") or None,
        "S3_REGION": os.environ.get("CHATAPP_S3_REGION") or None,
        "S3_PREFIX": os.environ.get("CHATAPP_S3_PREFIX") or "",
        "S3_TIMEOUT": float(os.environ.get("CHATAPP_S3_TIMEOUT") or 5),
        "ALLOWED_ORIGINS": [o.strip().rstrip("/") for o in origins.split(",") if o.strip()],
        "SESSION_COOKIE_SECURE": _flag("CHATAPP_SECURE_COOKIES"),
        "REMEMBER_COOKIE_SECURE": _flag("CHATAPP_SECURE_COOKIES"),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "SESSION_LIFETIME": session_lifetime,
        "PERMANENT_SESSION_LIFETIME": session_lifetime,
        "REMEMBER_COOKIE_DURATION": session_lifetime,
        "WTF_CSRF_TIME_LIMIT": None,  # tokens live as long as the session
        # Socket and message limits.
        "MAX_MESSAGE_CHARS": 4000,
        "MAX_FRAME_BYTES": _int("CHATAPP_MAX_FRAME_BYTES", 32 * 1024),
        "MESSAGE_RATE": os.environ.get("CHATAPP_MESSAGE_RATE", "10/5second"),
        "SEARCH_RATE": os.environ.get("CHATAPP_SEARCH_RATE", "60/minute"),
        # Refused frames cost a render, a push and a log line each: a socket that keeps
        # sending them (a script, not a person) is closed with 1008 past this rate.
        "REFUSAL_RATE": os.environ.get("CHATAPP_REFUSAL_RATE", "20/10second"),
        "LOGIN_RATE": os.environ.get("CHATAPP_LOGIN_RATE", "10/5minute"),
        "LOGIN_ADDRESS_RATE": os.environ.get("CHATAPP_LOGIN_ADDRESS_RATE", "100/5minute"),
        "REGISTER_RATE": os.environ.get("CHATAPP_REGISTER_RATE", "20/hour"),
        "ROOM_RATE": os.environ.get("CHATAPP_ROOM_RATE", "10/hour"),
        "SEND_QUEUE_SIZE": _int("CHATAPP_SEND_QUEUE_SIZE", 256),
        "SEND_TIMEOUT": _int("CHATAPP_SEND_TIMEOUT", 20),
        "PING_INTERVAL": _int("CHATAPP_PING_INTERVAL", 25),
        # Seconds a person stays online after their last socket closed (a reload, a
        # deploy's reconnect storm): no flicker, no event.
        "PRESENCE_GRACE": float(os.environ.get("CHATAPP_PRESENCE_GRACE") or 30),
        "MAX_SOCKETS_PER_USER": _int("CHATAPP_MAX_SOCKETS_PER_USER", 30),
        "HISTORY_PAGE_SIZE": 50,
        # Seconds after sending during which an author may edit a message (0: never).
        "EDIT_WINDOW": _int("CHATAPP_EDIT_WINDOW", 15 * 60),
        "MAX_CONTENT_LENGTH": _int("CHATAPP_MAX_UPLOAD_BYTES", 10 * 1024 * 1024),
        # Profile pictures (Settings): at most this many bytes uploaded.
        "MAX_AVATAR_BYTES": _int("CHATAPP_MAX_AVATAR_BYTES", 2 * 1024 * 1024),
        # Who may create an account: open, invite (by an admin's link) or closed.
        "REGISTRATION": _registration(),
        "MAX_IMAGE_PIXELS": _int("CHATAPP_MAX_IMAGE_PIXELS", 40_000_000),
        # Messages older than this many days are deleted by `flask prune` (0: kept forever).
        "RETENTION_DAYS": _int("CHATAPP_RETENTION_DAYS", 0),
        # Prometheus metrics at /metrics, for these addresses (comma-separated networks).
        # Bots (docs/api.md): requests per key, and their outgoing webhooks.
        "API_RATE": os.environ.get("CHATAPP_API_RATE", "60/minute"),
        "WEBHOOK_ALLOW_PRIVATE": _flag("CHATAPP_WEBHOOK_ALLOW_PRIVATE"),
        "WEBHOOK_TIMEOUT": float(os.environ.get("CHATAPP_WEBHOOK_TIMEOUT") or 5),
        "WEBHOOK_RETRIES": _int("CHATAPP_WEBHOOK_RETRIES", 3),
        "WEBHOOK_BACKOFF": float(os.environ.get("CHATAPP_WEBHOOK_BACKOFF") or 1),
        "METRICS": _flag("CHATAPP_METRICS"),
        "METRICS_ALLOW": os.environ.get("CHATAPP_METRICS_ALLOW") or "127.0.0.0/8,::1",
    }
