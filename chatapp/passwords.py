"""Password hashes: argon2id, computed off the event loop when the process runs gevent."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
_dummy_hash: str | None = None

# An argon2 hash takes ~100 ms of CPU (and a 64 MiB buffer). Under gevent, computing it
# on the event loop would stop every socket of the worker for that long, once per login;
# so it runs in a small pool of real threads (argon2's C code releases the GIL) while
# the loop carries on. Two threads: a login burst cannot take more than two cores' worth.
HASH_THREADS = 2
_hash_pool = None


def _hashing(fn, *args):
    """fn(*args), an argon2 call: off the event loop when this process runs gevent."""
    global _hash_pool
    from gevent import monkey

    if not monkey.is_module_patched("threading"):
        return fn(*args)
    if _hash_pool is None:  # made on first use, so in the worker, after any fork
        from gevent.threadpool import ThreadPool

        _hash_pool = ThreadPool(HASH_THREADS)
    return _hash_pool.apply(fn, args)


def hash_password(password: str) -> str:
    """An argon2id hash of the password, to store."""
    return _hashing(_hasher.hash, password)


def _matches(password_hash: str, password: str) -> bool:
    """Whether the password matches the hash; a mismatch is an answer, not an error."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def verify(password_hash: str, password: str) -> bool:
    """Tell whether the password matches the stored hash."""
    # The exception is caught inside the pool's thread: raised there, gevent's pool would
    # log a full traceback for every wrong password.
    return _hashing(_matches, password_hash, password)


def needs_rehash(password_hash: str) -> bool:
    """Tell whether a stored hash was made with older parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)


def dummy_hash() -> str:
    """A hash of no one's password: checking against it costs what a real check costs."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password("no such user")
    return _dummy_hash
