"""One connected socket: a bounded queue and the only greenlet that writes to it."""

from __future__ import annotations

import logging
import queue
import select
import threading
import time

from wsproto.events import CloseConnection, Ping, TextMessage

log = logging.getLogger(__name__)

# Close codes (RFC 6455 and the IANA registry).
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
SERVICE_RESTART = 1012
TRY_AGAIN_LATER = 1013


class _Close:
    """A queue item telling the writer to close the socket."""

    def __init__(self, code: int, reason: str):
        self.code, self.reason = code, reason


class Client:
    """A socket of one user, viewing one conversation.

    simple-websocket is not safe for concurrent sends, and its own send() may write
    a frame partially on a slow socket. So everything for this socket goes through a
    bounded queue that one writer drains with complete writes. Publishers never
    block: a full queue means the client is not keeping up, and it is closed with
    1013 (try again later); htmx reconnects and the connect snapshot catches it up.
    """

    def __init__(self, ws, user_id: int, conversation_id: int, *, queue_size: int,
                 send_timeout: float, ping_interval: float, title: str = ""):
        self.ws = ws
        self.title = title  # the page's name, for the "(N) ..." document title
        self.user_id = user_id
        self.conversation_id = conversation_id
        self.send_timeout = send_timeout
        self.ping_interval = ping_interval
        self.queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.closing = False
        # Messages already in the connect snapshot; their events are not sent again.
        self.skip_ids: set[int] = set()
        self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                        name=f"ws-writer-{user_id}")

    def start(self) -> None:
        """Start the writer."""
        self._writer.start()

    def push(self, text: str) -> None:
        """Queue a frame without blocking; close the socket with 1013 if the queue is full."""
        if self.closing:
            return
        try:
            self.queue.put_nowait(text)
        except queue.Full:
            log.warning("socket of user %s overflowed its queue; closing with 1013", self.user_id)
            self.close(TRY_AGAIN_LATER, "Too slow; reconnect to catch up")

    def close(self, code: int, reason: str = "") -> None:
        """Drop whatever is queued and close the socket with this code."""
        if self.closing:
            return
        self.closing = True
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.queue.put_nowait(_Close(code, reason))

    @property
    def connected(self) -> bool:
        return self.ws.connected and not self.closing

    def _write(self, data: bytes) -> None:
        """Write all of data, or raise TimeoutError if the peer does not read in time."""
        sock = self.ws.sock
        view = memoryview(data)
        deadline = time.monotonic() + self.send_timeout
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("peer is not reading")
            _, writable, _ = select.select([], [sock], [], remaining)
            if writable:
                sent = sock.send(view)
                view = view[sent:]

    def _write_loop(self) -> None:
        """Drain the queue onto the socket; ping when idle; close when told to."""
        conn = self.ws.ws  # the wsproto connection
        try:
            while self.ws.connected:
                try:
                    item = self.queue.get(timeout=self.ping_interval)
                except queue.Empty:
                    self._write(conn.send(Ping()))
                    continue
                if isinstance(item, _Close):
                    self._write(conn.send(CloseConnection(item.code, item.reason)))
                    break
                self._write(conn.send(TextMessage(data=item)))
        except Exception as exc:  # noqa: BLE001 - any failure ends this socket only
            log.info("socket of user %s ended: %r", self.user_id, exc)
        finally:
            self.closing = True
            self.ws.connected = False
            self.ws.event.set()  # wake the handler blocked in receive()
            # Give the reader a moment to see the peer's close reply, then cut the line.
            self.ws.thread.join(timeout=2)
            try:
                self.ws.sock.shutdown(2)
            except OSError:
                pass
