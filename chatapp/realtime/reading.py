"""Reading a socket in its handler's greenlet: no reader thread per socket.

Messages that arrive together are handled together (Client.batches()), inside
coalesced(): what each socket is pushed meanwhile leaves in one write at the end.
"""

from __future__ import annotations

from wsproto.events import CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import LocalProtocolError

from .frames import MESSAGE_TOO_BIG, PING

# Messages from one socket handled together, at most: a burst shares its recipients'
# writes, yet cannot keep the other sockets waiting long.
BATCH_MESSAGES = 4


class InlineReader:
    """Stands in for simple-websocket's reader thread, which is never started.

    The route's handler reads the socket itself (Client.batches()), so a socket costs one
    greenlet, not two. Configured through SOCK_SERVER_OPTIONS["thread_class"].
    """

    name = "inline-reader"

    def __init__(self, target=None, **kwargs):
        pass

    def start(self) -> None:
        pass

    def join(self, timeout=None) -> None:
        pass

    def is_alive(self) -> bool:
        return False


class Reading:
    """The reading half of a Client (client.py holds the writing half)."""

    def batches(self):
        """The messages the page sends, in lists of those that arrived together, until the
        socket closes (at most BATCH_MESSAGES a list).

        Answers pings and the closing handshake on the way, and pings the page when it has
        been quiet for ping_interval (so proxies keep the connection open).
        """
        ws, conn, sock, frames = self.ws, self.ws.ws, self.ws.sock, self._frames
        limit = ws.max_message_size
        sock.settimeout(self.ping_interval)
        parts: list = []
        size = 0
        while True:  # until the connection ends: a closing writer may still be draining
            try:
                data = sock.recv(ws.receive_bytes)
            except TimeoutError:
                if self.closing:
                    if self._writer is None:
                        break  # our close went out a while ago; the peer never answered
                    continue  # keep reading (pongs) while the writer drains
                self._send(PING)
                continue
            except OSError:
                break
            if not data:
                break
            try:
                frames.receive_data(data)
                events = list(frames.events())
            except LocalProtocolError:  # data after the closing handshake
                break
            batch = []
            for event in events:
                if isinstance(event, Message):
                    parts.append(event.data)
                    size += len(event.data)
                    if limit and size > limit:
                        self.close(MESSAGE_TOO_BIG, "Message is too big")
                        return
                    if event.message_finished and not self.closing:
                        joiner = "" if isinstance(event, TextMessage) else b""
                        message, parts, size = joiner.join(parts), [], 0
                        batch.append(message)
                        if len(batch) == BATCH_MESSAGES:
                            yield batch
                            batch = []
                elif isinstance(event, Ping):
                    self._send(conn.send(event.response()))
                elif isinstance(event, CloseConnection):
                    ws.close_reason, ws.close_message = event.code, event.reason
                    try:
                        reply = conn.send(event.response())
                    except Exception:  # noqa: BLE001 - we had closed first
                        reply = b""
                    self._finish(reply)
            if batch and not self.closing:
                yield batch
        self.closing = True
        ws.connected = False
