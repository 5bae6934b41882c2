"""One connected socket: frames encoded once for every viewer, written without waiting.

What a socket costs decides how many one worker holds, so each costs as little as we can:

- Its handler greenlet is also its reader (simple-websocket's own reader thread is
  replaced by InlineReader), and no writer greenlet exists while the peer keeps up: a
  push writes straight to the kernel's buffer without blocking. Only when that buffer is
  full does a writer start, draining a bounded backlog and ending when it is empty.
- A pushed Frame carries its wire bytes, built once per frame for all its recipients.
- Messages that arrive together are handled together (Client.batches()), inside
  coalesced(): what each socket is pushed meanwhile leaves in one write at the end. At
  light load a message arrives alone and is written at once, as before; when the server
  falls behind, several arrive per read and each recipient costs one system call for
  all of them, so the cost per delivery falls as the load rises.
- permessage-deflate: each frame is compressed once for every socket (frames.py).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from array import array
from bisect import bisect_left
from contextlib import contextmanager

from wsproto.events import CloseConnection

from .frames import TRY_AGAIN_LATER, Frame, negotiated_window_bits
from .reading import Reading

DEFAULT_AUDIENCE = "en UTC"  # chatapp.i18n's defaults, as an audience key

log = logging.getLogger(__name__)

try:  # gevent sockets take a per-call timeout; 0.0 means "never wait"
    from gevent.monkey import get_original, is_module_patched
    from gevent.socket import socket as _gevent_socket
except ImportError:  # pragma: no cover - gevent is a dependency
    _gevent_socket = ()

    def is_module_patched(_name):
        return False

    def get_original(_module, name):
        return getattr(threading, name)


def _new_lock():
    """A socket's lock: the interpreter's own, not gevent's.

    Nothing done while holding it can switch greenlets (a non-blocking write, list
    bookkeeping), so under gevent it is never waited for, and gevent's lock, written in
    Python, cost ~1 µs on every delivery; the native one is a C call (and 64 bytes less
    per socket). Under real threads (the development server) it is a real lock.
    """
    return get_original("_thread", "allocate_lock")()


def _nonblocking_send(sock):
    """sock's send() that never waits: it writes what the kernel takes, or raises
    BlockingIOError when it takes nothing."""
    if isinstance(sock, _gevent_socket):
        # A gevent socket wraps a native one that is always in non-blocking mode; its
        # timeout lives in the wrapper. Calling the native send() skips that layer.
        return sock._sock.send
    return lambda data, _send=sock.send: _send(data, socket.MSG_DONTWAIT)


# The sockets pushed to inside coalesced(), per greenlet (threading.local is greenlet-local
# under gevent), and how many such blocks are open in the process: while none is, a push
# does not look further.
_local = threading.local()
_holds = 0


@contextmanager
def coalesced():
    """Hold this greenlet's pushes until the block ends, then write each socket's at once.

    Frames for one socket keep their order and leave in a single write. Only under
    gevent: in a thread of the development server a push is written at once, since
    another thread could then push to the same socket while its frames are held.
    """
    global _holds
    if getattr(_local, "outbox", None) is not None or not is_module_patched("socket"):
        yield  # nested, or not under gevent
        return
    outbox = _local.outbox = []
    _holds += 1
    try:
        yield
    finally:
        _holds -= 1
        _local.outbox = None
        for client in outbox:
            client._flush_held()


class SnapshotIds:
    """The ids of the messages a connect snapshot showed, kept compactly.

    Every socket holds one for its whole life: a sorted array of 50 ids takes ~0.5 KB
    where a set of them took ~4 KB. Newer messages are told apart by one comparison.
    """

    __slots__ = ("_ids", "newest", "oldest")

    def __init__(self, ids=()):
        self._ids = array("q", sorted(ids))
        self.newest = self._ids[-1] if self._ids else 0
        # Changes to messages older than this are not sent: the page never loaded them
        # through the socket (0: the snapshot was empty, so every message is newer).
        self.oldest = self._ids[0] if self._ids else 0

    def __contains__(self, message_id) -> bool:
        if message_id > self.newest:
            return False
        i = bisect_left(self._ids, message_id)
        return i < len(self._ids) and self._ids[i] == message_id

    def __len__(self) -> int:
        return len(self._ids)


class Client(Reading):
    """A socket of one user, viewing one conversation.

    simple-websocket is not safe for concurrent sends, and its own send() may write a frame
    partially on a slow socket; so every byte for this socket goes through push(). A push
    writes at once if nothing is waiting and the kernel takes the whole frame; otherwise
    the rest joins a bounded backlog that one writer drains with complete writes.
    Publishers never block: a full backlog means the client is not keeping up, and it is
    closed with 1013 (try again later); htmx reconnects and the connect snapshot catches
    it up.
    """

    def __init__(self, ws, user_id: int, conversation_id: int, *, queue_size: int,
                 send_timeout: float, ping_interval: float, title: str = "",
                 audience: str = DEFAULT_AUDIENCE):
        self.ws = ws
        self.title = title  # the page's name, for the "(N) ..." document title
        # "language time-zone" of the page's person, taken at connect (i18n.audience()):
        # pushes are rendered once per audience present, and this socket gets its own.
        self.audience = audience
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.queue_size = queue_size
        self.send_timeout = send_timeout
        self.ping_interval = ping_interval
        self.closing = False
        self.window_bits = negotiated_window_bits(ws)
        # Messages already in the connect snapshot; their events are not sent again.
        self.skip_ids = SnapshotIds()
        # The composer that acknowledges this socket's messages, once it has sent one
        # (posting.Acknowledgements, made by ws.py).
        self.acknowledgements = None
        self.csrf = None  # the CSRF token its frames carry, once checked (ws.py)
        # After the upgrade only the frame layer is used: let the HTTP handshake's state go.
        self._frames = ws.ws.connection
        if self._frames is not None:
            ws.ws.handshake = None
        self._write_now = _nonblocking_send(ws.sock)
        self._held: list | None = None  # frames held by coalesced(), oldest first
        self._backlog: list = []  # bytes or memoryviews waiting for the writer, oldest first
        self._writer: threading.Thread | None = None
        self._lock = _new_lock()

    # -- writing -----------------------------------------------------------------------------

    def push(self, frame: Frame | str) -> None:
        """Send a frame without blocking; close the socket with 1013 if its backlog is full."""
        if type(frame) is not Frame:
            frame = Frame(frame)
        data = frame.wire(self.window_bits)
        held = self._held
        if held is not None:
            # Frames already wait for the end of a coalesced() block (this greenlet's or
            # another's): this one joins them, so the socket's frames keep their order.
            held.append(data)
        elif _holds and (outbox := getattr(_local, "outbox", None)) is not None:
            self._held = [data]
            outbox.append(self)
        else:
            self._send(data)

    def _flush_held(self) -> None:
        """Write the frames coalesced() held for this socket: one write for all of them."""
        held, self._held = self._held, None
        if not held:
            return  # already written (the socket closed meanwhile)
        if len(held) > 1 and self._writer is None:
            self._send(b"".join(held))
        else:  # a writer is draining: its backlog counts frames one by one
            for data in held:
                self._send(data)

    def _send(self, data, last: bool = False) -> None:
        """Write now if nothing is waiting, else queue; last: end the socket after data.

        This is the path of every delivery, so it is kept to one call into the kernel
        (a gevent socket's own send() would add a layer of Python to each).
        """
        start_writer = overflow = False
        lost = None
        with self._lock:
            if self.closing and not last:
                return
            if self._writer is None:
                try:
                    sent = self._write_now(data)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    lost = exc  # logged below, outside the lock
                    self._lost()
                    sent = len(data)
                if sent == len(data):
                    if last and lost is None:
                        self._shutdown()
                    if lost is None:
                        return
                else:
                    self._backlog.append(memoryview(data)[sent:])
                    self._writer = start_writer = True
            elif last or len(self._backlog) < self.queue_size:
                self._backlog.append(data)
            else:
                overflow = True
        if lost is not None:
            self._log_lost(lost)
            return
        if start_writer:
            self._writer = threading.Thread(target=self._drain, daemon=True,
                                            name=f"ws-writer-{self.user_id}")
            self._writer.start()
        if overflow:
            log.warning("socket of user %s overflowed its queue; closing with 1013", self.user_id)
            self.close(TRY_AGAIN_LATER, "Too slow; reconnect to catch up")

    def _drain(self) -> None:
        """Write the backlog out, each item whole; end when it is empty (or the socket is)."""
        try:
            while True:
                with self._lock:
                    if not self._backlog:
                        self._writer = None
                        if self.closing:
                            self._shutdown()
                        return
                    item = self._backlog.pop(0)
                self._write(item)
        except Exception as exc:  # noqa: BLE001 - any failure ends this socket only
            with self._lock:
                self._writer = None
                self._lost()
            self._log_lost(exc)

    def _write(self, data) -> None:
        """Write all of data, or raise TimeoutError if the peer does not read in time."""
        view = memoryview(data)
        deadline = time.monotonic() + self.send_timeout
        poller = None
        while True:
            try:
                view = view[self._write_now(view):]
            except BlockingIOError:
                pass
            if not view:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("peer is not reading")
            if poller is None:
                poller = select.poll()  # gevent's cooperative poll once monkey-patched
                poller.register(self.ws.sock.fileno(), select.POLLOUT)
            poller.poll(remaining * 1000)

    def _log_lost(self, exc) -> None:
        # Outside the lock: a log handler may switch greenlets (see _new_lock).
        log.info("socket of user %s ended: %r", self.user_id, exc)

    def _lost(self) -> None:
        self.closing = True
        self._backlog.clear()
        self._shutdown(socket.SHUT_RDWR)  # nothing more to say or hear

    def _shutdown(self, how: int = socket.SHUT_WR) -> None:
        """End the connection: by default only our side (FIN after what is queued).

        The reader goes on until the peer answers with its own close, so nothing the peer
        sends in the meantime (a pong, its closing frame) is left unread, which would
        make the kernel reset the connection and drop our closing frame.
        """
        self.closing = True
        self.ws.connected = False
        try:
            self.ws.sock.shutdown(how)
        except OSError:
            pass

    def _finish(self, frame: bytes) -> None:
        """Drop whatever waits (a frame being written is finished), send frame, then end.

        Frames held by coalesced() are not waiting on a slow peer: they go first, as
        they would have without it.
        """
        self._flush_held()
        with self._lock:
            self.closing = True
            self._backlog.clear()
        self._send(frame, last=True)

    def close(self, code: int, reason: str = "") -> None:
        """Drop whatever is waiting and close the socket with this code."""
        if self.closing:
            return
        self.close_code = code  # who closed first, and why: for the log and metrics
        try:
            frame = self.ws.ws.send(CloseConnection(code, reason))
        except Exception:  # noqa: BLE001 - the connection had already closed
            frame = b""
        self._finish(frame)

    def join(self) -> None:
        """Wait until whatever is being written is out (or its send timeout has passed)."""
        writer = self._writer
        if isinstance(writer, threading.Thread):
            writer.join(self.send_timeout + 1)

    @property
    def connected(self) -> bool:
        return self.ws.connected and not self.closing
