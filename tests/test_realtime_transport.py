"""How frames reach sockets: deflated once, written without a thread per socket, bounded."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import time
import uuid
import zlib

import pytest

from conftest import csrf_from

# The connect snapshot: the log's contents (other pushes, such as presence, swap innerHTML too).
SNAPSHOT = 'hx-target="#messages" hx-swap="innerHTML"'


class RawSocket:
    """A WebSocket client speaking the wire protocol as a browser does (with deflate)."""

    def __init__(self, person, conversation_id=1, deflate=True, rcvbuf=None):
        page = person.get("/").text
        self.csrf = csrf_from(page)
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", person.server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET /ws/{conversation_id} HTTP/1.1", f"Host: 127.0.0.1:{person.server.port}",
                 "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13", f"Origin: {person.server.url}",
                 f"Cookie: {person.cookie_header()}"]
        if deflate:
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.head = head.decode()
        assert " 101 " in self.head.split("\r\n")[0], self.head
        # A browser keeps one inflater for the whole connection (context takeover).
        self.inflater = zlib.decompressobj(-15)
        self.compressed_frames = 0

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def frame(self) -> tuple[int, bytes]:
        """The next (opcode, payload), inflated when the frame was compressed."""
        b0, b1 = self._read(2)
        size = b1 & 0x7F
        if size == 126:
            size = int.from_bytes(self._read(2), "big")
        elif size == 127:
            size = int.from_bytes(self._read(8), "big")
        payload = self._read(size)
        if b0 & 0x40:
            self.compressed_frames += 1
            payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
        return b0 & 0x0F, payload

    def texts_until(self, needle: str, timeout=10.0) -> list[str]:
        """Read text frames until one contains needle; all of them."""
        deadline = time.monotonic() + timeout
        got = []
        while time.monotonic() < deadline:
            opcode, payload = self.frame()
            if opcode == 1:
                got.append(payload.decode())
                if needle in got[-1]:
                    return got
            elif opcode == 8:
                raise ConnectionError(f"closed {int.from_bytes(payload[:2], 'big')}")
        raise AssertionError(f"no frame with {needle!r}")

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = bytes([0x81, 0x80 | n])
        elif n < 65536:
            head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def say(self, body: str) -> None:
        self.send_text(json.dumps({"body": body, "client_id": str(uuid.uuid4()),
                                   "csrf_token": self.csrf,
                                   "headers": {"HX-Request": "true"}}))

    def close_code(self, timeout=30.0) -> int | None:
        """Read until the server's close frame; its code (None if none comes in time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            opcode, payload = self.frame()
            if opcode == 8:
                return int.from_bytes(payload[:2], "big")
        return None

    def close(self) -> None:
        self.sock.close()


def test_pushed_frames_are_deflated_and_decode_in_a_browser_like_inflater(server, people):
    """Offered permessage-deflate, frames come compressed and every one inflates."""
    alice, bob = people("alice", "bob")
    sock = RawSocket(bob)
    try:
        assert "permessage-deflate" in sock.head.lower()
        sock.texts_until(SNAPSHOT)  # the connect snapshot (compressed too)
        before = sock.compressed_frames
        sender = alice.connect()
        # Long enough that each push passes COMPRESS_MIN_BYTES.
        bodies = [f"message number {i} " + ("with some words to make it compressible " * 20).strip()
                  for i in range(5)]
        for body in bodies:
            sender.say(body)
        for body in bodies:
            sock.texts_until(body)
        assert sock.compressed_frames - before == len(bodies)  # every push, exactly
    finally:
        sock.close()


def test_short_pushes_go_plain_even_with_deflate(server, people):
    """A push under COMPRESS_MIN_BYTES is sent uncompressed: deflate would save a few
    hundred bytes and cost every reader an inflate."""
    alice, bob = people("alice", "bob")
    sock = RawSocket(bob)
    try:
        assert "permessage-deflate" in sock.head.lower()
        sock.texts_until(SNAPSHOT)  # the snapshot: long, so compressed
        before = sock.compressed_frames
        assert before >= 1
        alice.connect().say("a short line")
        sock.texts_until("a short line")
        assert sock.compressed_frames == before
    finally:
        sock.close()


def test_messages_that_arrive_together_all_arrive_in_order_once(server, people):
    """Frames sent in one write are handled as one batch (their pushes coalesced):
    every listener still gets each message once, in order, and the sender each ack."""
    alice, bob = people("alice", "bob")
    listener = RawSocket(bob)
    sender = RawSocket(alice)
    try:
        listener.texts_until(SNAPSHOT)
        sender.texts_until(SNAPSHOT)
        bodies = [f"together {i} {uuid.uuid4().hex}" for i in range(7)]  # two batches
        frames = [json.dumps({"body": body, "client_id": str(uuid.uuid4()),
                              "csrf_token": sender.csrf, "headers": {"HX-Request": "true"}})
                  for body in bodies]
        sender.sock.sendall(b"".join(_masked(f) for f in frames))  # one write
        got = "".join(listener.texts_until(bodies[-1]))
        positions = [got.find(body) for body in bodies]
        assert -1 not in positions and positions == sorted(positions)
        assert all(got.count(body) == 1 for body in bodies)
        acks = 0
        while acks < len(bodies):
            acks += sum('id="composer"' in t for t in sender.texts_until('id="composer"'))
        assert acks == len(bodies)
    finally:
        listener.close()
        sender.close()


def _masked(text: str) -> bytes:
    """One masked client text frame."""
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


COALESCE_SCRIPT = r"""
from gevent import monkey
monkey.patch_all()
from chatapp.realtime.client import Client, Frame, coalesced

class Sock:
    def __init__(self):
        self.writes = []
    def send(self, data, flags=0):
        self.writes.append(bytes(data))
        return len(data)
    def shutdown(self, how):
        pass

class Closer:
    def send(self, event):
        return b"\x88\x02\x03\xe8"

class WS:
    def __init__(self):
        self.sock = Sock()
        self.ws = type("Proto", (), {"connection": None, "handshake": None})()
        self.connected = True

def client():
    c = Client(WS(), 1, 1, queue_size=10, send_timeout=1, ping_interval=30)
    return c

frames = [Frame(f"<p>frame {i}</p>") for i in range(3)]
a, b = client(), client()
with coalesced():
    for f in frames:
        a.push(f)
        b.push(f)
    assert a.ws.sock.writes == [] and b.ws.sock.writes == [], "held until the block ends"
joined = b"".join(f.wire(0) for f in frames)
assert a.ws.sock.writes == [joined], a.ws.sock.writes
assert b.ws.sock.writes == [joined], b.ws.sock.writes

c = client()
for f in frames:
    c.push(f)
assert c.ws.sock.writes == [f.wire(0) for f in frames], "outside a block: written at once"

d = client()
d.ws.ws = Closer()
with coalesced():
    d.push(frames[0])
    d.close(1000)
assert d.ws.sock.writes == [frames[0].wire(0), b"\x88\x02\x03\xe8"], d.ws.sock.writes
print("ok")
"""


def test_pushes_in_a_coalesced_block_leave_in_one_write_per_socket():
    """Under gevent, coalesced() holds pushes and writes each socket's in one system call,
    in order; outside it a push is written at once; closing writes what is held first."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", COALESCE_SCRIPT], capture_output=True,
                          text=True, timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.stdout.strip() == "ok", done.stderr[-3000:]


def test_coalesced_is_a_no_op_outside_gevent():
    """In a thread of the development server a push is written at once."""
    from gevent.monkey import is_module_patched

    from chatapp.realtime.client import Client, Frame, coalesced

    assert not is_module_patched("socket")

    class Sock:
        writes = []

        def send(self, data, flags=0):
            self.writes.append(bytes(data))
            return len(data)

    ws = type("WS", (), {"sock": Sock(), "connected": True,
                         "ws": type("P", (), {"connection": None, "handshake": None})()})()
    client = Client(ws, 1, 1, queue_size=10, send_timeout=1, ping_interval=30)
    frame = Frame("<p>now</p>")
    with coalesced():
        client.push(frame)
        assert ws.sock.writes == [frame.wire(0)]


def test_without_deflate_frames_are_plain(server, people):
    alice, bob = people("alice", "bob")
    sock = RawSocket(bob, deflate=False)
    try:
        assert "permessage-deflate" not in sock.head.lower()
        sock.texts_until(SNAPSHOT)
        alice.connect().say("plain words " * 20)
        sock.texts_until("plain words")
        assert sock.compressed_frames == 0
    finally:
        sock.close()


# About sockets, not storage. A long send timeout: on a slow database the burst can take
# longer than the default 20 s, and the stalled line would be cut (no 1013) instead.
@pytest.mark.databases("sqlite")
def test_a_socket_that_stops_reading_is_closed_1013_and_others_get_everything(
        server_factory, tmp_path):
    """One stalled tab overflows its small backlog and is closed; the rest lose nothing."""
    from conftest import Person, frames_to_fill

    server = server_factory(CHATAPP_SEND_QUEUE_SIZE="4", CHATAPP_MESSAGE_RATE="1000/second",
                            CHATAPP_SEND_TIMEOUT="60")
    alice, bob, carol = (Person(server, n).register() for n in ("alice", "bob", "carol"))
    stalled = RawSocket(bob, deflate=False, rcvbuf=4096)
    stalled.texts_until(SNAPSHOT)
    reader = RawSocket(carol)
    reader.texts_until(SNAPSHOT)
    sender = RawSocket(alice)
    sender.texts_until(SNAPSHOT)
    try:
        noise = base64.b64encode(os.urandom(2700)).decode()  # incompressible, 3.6 KB
        # Burst until the server reports the overflow; at most what fills the stalled
        # line's buffers (read from the sockets, not assumed) and its queue.
        limit = frames_to_fill(stalled.sock, len(noise), 4)
        for i in range(limit):
            sender.say(f"burst {i} {noise}")
            sender.texts_until('id="composer"')  # the acknowledgement
            reader.texts_until(f"burst {i} ")  # an attentive tab gets every message
            if i % 20 == 0 and "overflowed its queue" in server.log():
                break
        else:
            raise AssertionError(f"{limit} messages did not overflow the stalled socket")
        for j in range(i + 1, i + 5):  # and the attentive tab still gets what follows
            sender.say(f"burst {j} {noise}")
            reader.texts_until(f"burst {j} ")
        assert stalled.close_code() == 1013
    finally:
        stalled.close()
        sender.close()
        reader.close()


def test_a_message_over_the_frame_limit_closes_1009(server_factory):
    from conftest import Person

    server = server_factory(CHATAPP_MAX_FRAME_BYTES="2048")
    alice = Person(server, "alice").register()
    sock = RawSocket(alice)
    try:
        sock.texts_until(SNAPSHOT)
        sock.send_text("x" * 5000)
        assert sock.close_code() == 1009
    finally:
        sock.close()


@pytest.mark.parametrize("deflate", [True, False])
def test_a_quiet_socket_is_pinged_and_still_works(server_factory, deflate):
    from conftest import Person

    server = server_factory(CHATAPP_PING_INTERVAL="1")
    alice = Person(server, "alice").register()
    sock = RawSocket(alice, deflate=deflate)
    try:
        sock.texts_until(SNAPSHOT)
        sock.sock.settimeout(5)
        opcode, _ = sock.frame()
        while opcode == 1:
            opcode, _ = sock.frame()
        assert opcode == 9  # ping
        sock.say("still here")
        assert re.search("still here", "".join(sock.texts_until("still here")))
    finally:
        sock.close()


def test_a_frame_is_encoded_once_for_all_its_sockets(monkeypatch):
    """Fan-out shares one encoding (and one compression) of a frame among its recipients."""
    from chatapp.realtime import frames as frames_module
    from chatapp.realtime.client import SnapshotIds
    from chatapp.realtime.frames import Frame
    from chatapp.realtime.hub import Hub

    compressions = []
    real_compressobj = zlib.compressobj

    def compressobj(*args):
        compressions.append(args)
        return real_compressobj(*args)

    monkeypatch.setattr(frames_module.zlib, "compressobj", compressobj)

    class Viewer:
        """A deflating socket of the public room that keeps what the hub pushes to it."""

        def __init__(self, user_id):
            self.user_id, self.conversation_id = user_id, 1
            self.audience = "en UTC"  # the language and time zone its pushes render in
            self.skip_ids = SnapshotIds()
            self.pushed = []

        def push(self, frame):
            frame.wire(15)  # what Client.push sends on a deflating socket
            self.pushed.append(frame)

    def unused(*_):
        raise AssertionError("a public message needs no sidebar or recount")

    read = []
    hub = Hub(on_read=lambda *args: read.append(args), render_sidebars=unused,
              recount_unread=unused)
    viewers = [Viewer(1), Viewer(2)]
    for viewer in viewers:
        hub.attach(viewer, lambda: ({}, 0))
    hub.deliver({"type": "message_created", "conversation_id": 1, "message_id": 7,
                 "author_id": 3, "member_ids": None,
                 "html": "<article>" + "hello " * 300 + "</article>"})
    assert len(viewers[0].pushed) == len(viewers[1].pushed) == 1
    assert viewers[0].pushed[0] is viewers[1].pushed[0], "one Frame for every socket"
    assert len(compressions) == 1, "compressed once for both sockets"

    frame = Frame("<p>" + "hello " * 300 + "</p>")
    assert frame.wire(15) is frame.wire(15)
    assert frame.wire(0) is frame.wire(0)
    assert frame.wire(15)[0] == 0xC1 and frame.wire(0)[0] == 0x81
    wire = frame.wire(15)
    assert wire[1] < 126  # 1,800 bytes of text deflate to a short frame
    inflated = zlib.decompressobj(-15).decompress(wire[2:] + b"\x00\x00\xff\xff")
    assert inflated.decode() == frame.text
