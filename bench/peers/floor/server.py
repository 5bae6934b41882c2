"""The floor: gevent + simple-websocket pushing one pre-encoded frame to every socket.

No database, no templates, no accounts: what the fastest possible Python fan-out on this
stack costs. Each message is escaped into a fragment, framed once, and written to every
open socket with sendall() from the receiving greenlet.

Messages that arrived together are written together, as chatapp does (Client.batches()
and coalesced()): when the sender's frames wait in its buffer, up to BATCH_MESSAGES of
them are taken at once and every socket gets all their frames in one sendall(). A message
that arrives alone is written at once. With --single each message is written on its own
(the floor before chatapp batched, kept for comparison: `--systems floor-single`).

Sockets get TCP_NODELAY, as gunicorn gives chatapp's and Flask-SocketIO's: each frame
leaves at once. With --nagle they keep Nagle's algorithm (gevent's WSGIServer default),
which lets the kernel merge small writes to a socket with unacknowledged data: cheaper
writes at high rates, but a frame can wait for the peer's delayed ACK.
"""

from gevent import monkey

monkey.patch_all()

import html  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402
from simple_websocket import ConnectionClosed, Server  # noqa: E402

sockets = set()
NODELAY = "--nagle" not in sys.argv
# chatapp's chatapp/realtime/reading.py: at most this many messages share a write.
BATCH_MESSAGES = 1 if "--single" in sys.argv else 4


def frame(text: str) -> bytes:
    """One unmasked, uncompressed text frame."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        header = bytes([0x81, n])
    elif n < 65536:
        header = bytes([0x81, 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x81, 127]) + n.to_bytes(8, "big")
    return header + payload


def app(environ, start_response):
    if environ.get("PATH_INFO") != "/ws":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]
    ws = Server.accept(environ)
    if NODELAY:
        ws.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sockets.add(ws)
    try:
        while True:
            raw = ws.receive()
            if raw is None:
                continue
            batch = [raw]
            # Messages already waiting behind it (simple-websocket's reader queued them):
            # taken now, they share each socket's write.
            while ws.input_buffer and len(batch) < BATCH_MESSAGES:
                batch.append(ws.input_buffer.pop(0))
            data = b"".join(frame(f'<article class="message"><p class="body">'
                                  f'{html.escape(json.loads(r)["body"])}</p></article>')
                            for r in batch)
            for other in list(sockets):
                try:
                    other.sock.sendall(data)
                except OSError:
                    sockets.discard(other)
    except ConnectionClosed:
        pass
    finally:
        sockets.discard(ws)
    return []


if __name__ == "__main__":
    WSGIServer(("127.0.0.1", int(sys.argv[1])), app, log=None, backlog=4096).serve_forever()
