"""Reading a large request body (an image upload) in pieces, letting other greenlets run.

Under gevent a greenlet runs until it waits on something. An upload arrives faster than
Werkzeug parses it, so reading its 10 MB would never wait: parsing the whole form would
hold the worker's event loop for tens of milliseconds, and every socket of the worker
with it. This middleware hands the loop back after every READ_SLICE bytes of a large body.
"""

from __future__ import annotations

LARGE = 1024 * 1024  # bodies above this size are read cooperatively
READ_SLICE = 256 * 1024


def _yield_to_others():
    import gevent

    gevent.sleep(0)


class CooperativeInput:
    """A WSGI input stream that lets other greenlets run after every READ_SLICE bytes read."""

    def __init__(self, stream, pause=_yield_to_others, every: int = READ_SLICE):
        self._stream = stream
        self._pause = pause
        self._every = every
        self._since = 0

    def _count(self, data: bytes) -> bytes:
        self._since += len(data)
        if self._since >= self._every:
            self._since = 0
            self._pause()
        return data

    def read(self, *args) -> bytes:
        return self._count(self._stream.read(*args))

    def readline(self, *args) -> bytes:
        return self._count(self._stream.readline(*args))

    def readlines(self, *args) -> list[bytes]:
        lines = self._stream.readlines(*args)
        self._count(b"".join(lines))
        return lines

    def __iter__(self):
        for chunk in self._stream:
            yield self._count(chunk)


class CooperativeBodies:
    """WSGI middleware: large request bodies are read through CooperativeInput (gevent only)."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            size = 0
        if size > LARGE and "wsgi.input" in environ:
            environ["wsgi.input"] = CooperativeInput(environ["wsgi.input"])
        return self.app(environ, start_response)


def install(app) -> None:
    """Wrap the app when gevent has patched the standard library (wsgi.py); else nothing
    needs it (the test client, `flask` commands)."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return
    if monkey.is_module_patched("socket"):
        app.wsgi_app = CooperativeBodies(app.wsgi_app)
