"""gunicorn settings for a bench run that watches the worker's event loop (`--probe`).

Everything in gunicorn.conf.py, plus one greenlet per worker that asks to wake every
millisecond and writes down, to $CHATAPP_BENCH_LOOP_PROBE, each wake-up that came more
than 2 ms late: "<CLOCK_MONOTONIC seconds> <late ms>". The clock is the machine's, so the
bench can tell which phase each stall fell in. A stall of N ms here is N ms during which no
socket of that worker was served.
"""

import os

# gunicorn.conf.py finds chatapp/logs.py beside its own __file__.
_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
__file__ = os.path.join(_root, "gunicorn.conf.py")
with open(__file__) as _f:
    exec(compile(_f.read(), __file__, "exec"))

_post_worker_init = post_worker_init  # noqa: F821 - defined by gunicorn.conf.py


def post_worker_init(worker):  # noqa: F811
    _post_worker_init(worker)
    path = os.environ.get("CHATAPP_BENCH_LOOP_PROBE")
    if not path:
        return
    import time

    import gevent

    def probe():
        out = open(path, "a", buffering=1)
        while True:
            before = time.monotonic()
            gevent.sleep(0.001)
            late = (time.monotonic() - before - 0.001) * 1000
            if late > 2:
                out.write(f"{time.monotonic():.4f} {late:.1f}\n")

    gevent.spawn(probe)
