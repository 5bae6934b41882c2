"""Hash a password under gevent while a ticker greenlet runs; print how often it ticked.

Run by tests/test_auth.py in a fresh process, so that gevent patches before anything
else is imported.
"""

from gevent import monkey

monkey.patch_all()

import gevent  # noqa: E402

from chatapp import passwords  # noqa: E402

ticks = []


def tick():
    """Count while the event loop is free."""
    while True:
        ticks.append(1)
        gevent.sleep(0.002)


gevent.spawn(tick)
gevent.sleep(0.01)
before = len(ticks)
passwords._hashing(passwords._hasher.hash, "a password to hash")
print(len(ticks) - before)
