"""Counting actions against a rate: in the shared store (Redis) when it answers, else here."""

from __future__ import annotations

import logging

from limits import parse as parse_limit
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from .extensions import limiter

log = logging.getLogger(__name__)

# Counts while the shared store is unreachable: per process, but still a limit.
_local_limiter: FixedWindowRateLimiter | None = None


def hit(rate: str, *identifiers: str) -> bool:
    """Count one action against a rate such as "10/5second"; False once it goes past it."""
    global _local_limiter
    item = parse_limit(rate)
    try:
        return limiter.limiter.hit(item, *identifiers)
    except Exception as exc:  # noqa: BLE001 - Redis down must not stop people sending
        log.warning("rate-limit store unreachable, counting in this process: %s", exc)
        if _local_limiter is None:
            _local_limiter = FixedWindowRateLimiter(MemoryStorage())
        return _local_limiter.hit(item, *identifiers)
