"""Counting actions against a rate: in the shared store (Redis) when it answers, else here."""

from __future__ import annotations

import logging
from functools import lru_cache

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter

from .extensions import limiter

log = logging.getLogger(__name__)

# Counts while the shared store is unreachable: per process, but still a limit.
_local_limiter: FixedWindowRateLimiter | None = None


def _local() -> FixedWindowRateLimiter:
    """This process's own counters, made on first need."""
    global _local_limiter
    if _local_limiter is None:
        _local_limiter = FixedWindowRateLimiter(MemoryStorage())
    return _local_limiter


@lru_cache(maxsize=64)
def parse_limit(rate: str):
    """The limit a rate string names, parsed once (it is checked for every message)."""
    return parse(rate)


def hit(rate: str, *identifiers: str) -> bool:
    """Count one action against a rate such as "10/5second"; False once it goes past it."""
    item = parse_limit(rate)
    try:
        return limiter.limiter.hit(item, *identifiers)
    except Exception as exc:  # noqa: BLE001 - Redis down must not stop people sending
        log.warning("rate-limit store unreachable, counting in this process: %s", exc)
        return _local().hit(item, *identifiers)


def increment(key: str, expiry: int, amount: int):
    """Add to a counter, atomically (Redis INCRBY); (store, new count). Redis down: here."""
    store = limiter.storage
    try:
        return store, store.incr(key, expiry, amount=amount)
    except Exception as exc:  # noqa: BLE001 - Redis down must not open the door, nor close it
        log.warning("rate-limit store unreachable, counting in this process: %s", exc)
        store = _local().storage
        return store, store.incr(key, expiry, amount=amount)
