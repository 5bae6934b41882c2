"""The load client: thousands of sockets that behave like browser tabs, in one asyncio loop.

Each system under test gets an adapter that logs in (when the system has accounts), opens
the socket the way a browser does (Cookie, Origin, offering permessage-deflate) and sends
what that system's page sends. Every message body carries a stamp
``bench-<phase>-<seq>-<sent ns>``; every listener looks for stamps in what it receives, so
latency, losses and duplicates are measured the same way for every system.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time
import uuid
import zlib

import aiohttp

STAMP = re.compile(r"bench-(\d+)-(\d+)-(\d+)")
CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
PASSWORD = "bench password 1"


class Adapter:
    """How a system's pages and sockets are spoken to (defaults: no accounts, JSON frames)."""

    ws_path = "/ws"
    has_accounts = False

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.host = base_url.split("//", 1)[1]

    async def login(self, http: aiohttp.ClientSession, username: str) -> dict:
        """Whatever a tab of this user needs to open its socket."""
        return {"headers": {"Origin": self.base_url}}

    def ws_path_for(self, conversation: int) -> str:
        return self.ws_path

    async def ready(self, conn: "Connection") -> None:
        """Wait until the socket is usable (the system's connect handshake, if any)."""

    def frame(self, session: dict, body: str, conversation: int) -> str:
        return json.dumps({"body": body, "conversation": conversation})

    def answer(self, text: str) -> str | None:
        """A reply the protocol requires to a received frame (Socket.IO pings)."""
        return None


class ChatappAdapter(Adapter):
    """chatapp: log in through the form, open /ws/<conversation>, send what htmx sends."""

    has_accounts = True

    async def login(self, http, username):
        async with http.get(self.base_url + "/login/") as r:
            token = CSRF.search(await r.text()).group(1)
        form = {"csrf_token": token, "username": username, "password": PASSWORD}
        async with http.post(self.base_url + "/login/", data=form) as r:
            page = await r.text()
            if r.status != 200 or str(r.url).rstrip("/") != self.base_url:
                raise RuntimeError(f"login of {username} failed: {r.status} {r.url}")
        cookie = "; ".join(f"{c.key}={c.value}" for c in http.cookie_jar)
        return {
            "csrf": CSRF.search(page).group(1),
            "headers": {"Origin": self.base_url, "Cookie": cookie},
        }

    def ws_path_for(self, conversation):
        return f"/ws/{conversation}"

    async def ready(self, conn):
        # The connect snapshot replaces the message list.
        while True:
            text = await conn.recv()
            if 'hx-target="#messages" hx-swap="innerHTML"' in text:
                return

    def frame(self, session, body, conversation):
        return json.dumps(
            {
                "body": body,
                "client_id": str(uuid.uuid4()),
                "csrf_token": session["csrf"],
                "headers": {
                    "HX-Request": "true",
                    "HX-Current-URL": self.base_url + "/",
                    "HX-Trigger": "composer",
                },
            }
        )


class SocketIOAdapter(Adapter):
    """Flask-SocketIO: Engine.IO v4 over a WebSocket, one namespace, event "message"."""

    ws_path = "/socket.io/?EIO=4&transport=websocket"

    async def ready(self, conn):
        text = await conn.recv()
        if not text.startswith("0"):
            raise RuntimeError(f"no Engine.IO open packet: {text[:80]!r}")
        conn.send_text("40")
        while not (await conn.recv()).startswith("40"):
            pass

    def frame(self, session, body, conversation):
        return "42" + json.dumps(["message", {"body": body, "conversation": conversation}])

    def answer(self, text):
        return "3" if text == "2" else None


class ChannelsAdapter(Adapter):
    ws_path = "/ws/"


ADAPTERS = {
    "chatapp": ChatappAdapter,
    "floor": Adapter,
    "floor-nagle": Adapter,
    "floor-single": Adapter,
    "channels": ChannelsAdapter,
    "socketio": SocketIOAdapter,
}


class Closed(Exception):
    """The socket closed."""


class Connection(asyncio.Protocol):
    """A minimal client WebSocket (RFC 6455 + permessage-deflate) on a raw transport.

    Thousands of these share one core with the measuring, so frames are parsed by hand:
    aiohttp's client costs several times more per received frame, and a client that
    saturates first would measure itself, not the server.
    """

    def __init__(self, path: str, host: str, headers: dict):
        self.request = self._handshake(path, host, headers)
        self.transport = None
        self.buf = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.inflater = None
        self.reset_inflater = False
        self.wbits = 15
        self.partial = None  # (compressed, [payloads]) of a fragmented message
        self.queue: list[str] | None = []  # texts before the tab takes over
        self.wake: asyncio.Future | None = None
        self.on_text = None
        self.closed: str | None = None

    @staticmethod
    def _handshake(path, host, headers) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                 "Sec-WebSocket-Version: 13",
                 # What browsers offer.
                 "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
                 "User-Agent: Mozilla/5.0 (chatapp-bench)"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc):
        if self.closed is None:
            self.closed = f"lost {exc!r}" if exc else "lost"
        if not self.upgraded.done():
            self.upgraded.set_exception(Closed(self.closed))
        self._wake()

    def _wake(self):
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)

    def data_received(self, data):
        # Fast path: a whole small unfragmented text frame and nothing else.
        if not self.buf and self.on_text is not None and len(data) >= 2:
            b0, size = data[0], data[1] & 0x7F
            off = 2 if size < 126 else 4
            if size == 126:
                size = int.from_bytes(data[2:4], "big")
            if b0 in (0x81, 0xC1) and size != 127 and len(data) == off + size:
                payload = data[off:]
                if b0 == 0xC1:
                    if self.reset_inflater:
                        self.inflater = zlib.decompressobj(-self.wbits)
                    payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
                self.on_text(payload.decode())
                return
        buf = self.buf
        buf += data
        if not self.upgraded.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            if " 101 " not in head[0] + " ":
                self.upgraded.set_exception(Closed(head[0]))
                self.transport.close()
                return
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-extensions" and \
                        "permessage-deflate" in value:
                    self.reset_inflater = "server_no_context_takeover" in value
                    m = re.search(r"server_max_window_bits=(\d+)", value)
                    self.wbits = int(m.group(1)) if m else 15
                    self.inflater = zlib.decompressobj(-self.wbits)
            self.upgraded.set_result(None)
        while True:
            n = len(buf)
            if n < 2:
                return
            b0, b1 = buf[0], buf[1]
            size, off = b1 & 0x7F, 2
            if size == 126:
                if n < 4:
                    return
                size, off = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                if n < 10:
                    return
                size, off = int.from_bytes(buf[2:10], "big"), 10
            if n < off + size:
                return
            payload = bytes(buf[off: off + size])
            del buf[: off + size]
            opcode = b0 & 0x0F
            if opcode in (1, 2, 0):
                if opcode:
                    self.partial = (bool(b0 & 0x40), [payload])
                else:
                    self.partial[1].append(payload)
                if b0 & 0x80:
                    compressed, parts = self.partial
                    self.partial = None
                    data = b"".join(parts)
                    if compressed:
                        if self.reset_inflater:
                            self.inflater = zlib.decompressobj(-self.wbits)
                        data = self.inflater.decompress(data + b"\x00\x00\xff\xff")
                    self._text(data.decode())
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.closed = f"close {code}"
                self._send(8, payload[:2])
                self.transport.close()
                return
            elif opcode == 9:
                self._send(10, payload)

    def _text(self, text: str) -> None:
        if self.on_text is not None:
            self.on_text(text)
        else:
            self.queue.append(text)
            self._wake()

    async def recv(self, timeout: float = 60) -> str:
        """The next text (only before a tab takes the socket over)."""
        while not self.queue:
            if self.closed:
                raise Closed(self.closed)
            self.wake = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.wake, timeout)
        return self.queue.pop(0)

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport.is_closing():
            return
        n = len(payload)
        if n < 126:
            head = bytes([0x80 | opcode, 0x80 | n])
        elif n < 65536:
            head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        masked = (int.from_bytes(payload, "big") ^ (int.from_bytes((mask * (n // 4 + 1))[:n], "big"))).to_bytes(n, "big") if n else b""
        self.transport.write(head + mask + masked)

    def send_text(self, text: str) -> None:
        self._send(1, text.encode())

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send(8, (1000).to_bytes(2, "big"))
            self.transport.close()


async def connect(host: str, port: int, path: str, headers: dict) -> Connection:
    """Open a socket and complete the upgrade."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(
        lambda: Connection(path, f"{host}:{port}", headers), host, port)
    await asyncio.wait_for(conn.upgraded, 60)
    return conn


class Recorder:
    """Latencies, deliveries and duplicates of the phase being measured."""

    def __init__(self):
        self.phase = -1
        self.latencies: list[int] = []
        self.deliveries = 0
        self.duplicates = 0
        self.last_delivery = 0.0
        self.first_send = 0.0
        self.errors: list[str] = []
        self.last_any = 0  # monotonic ns of the last stamp received, of any phase

    def start(self, phase: int) -> None:
        self.phase = phase
        self.latencies = []
        self.deliveries = 0
        self.duplicates = 0
        self.last_delivery = 0.0


class Tab:
    """One open socket of one user, reading everything pushed to it."""

    __slots__ = ("conn", "session", "conversation", "seen", "listener", "client")

    def __init__(self, client, conn, session, conversation, listener=True):
        self.client = client
        self.conn = conn
        self.session = session
        self.conversation = conversation
        self.seen: set[int] = set()
        self.listener = listener
        for text in conn.queue:
            self._text(text)
        conn.queue = None
        conn.on_text = self._text

    @property
    def closed(self) -> str | None:
        return self.conn.closed

    def _text(self, text: str) -> None:
        reply = self.client.adapter.answer(text)
        if reply is not None:
            self.conn.send_text(reply)
            return
        if not self.listener:
            return
        rec = self.client.recorder
        now = time.monotonic_ns()
        for phase, seq, sent in STAMP.findall(text):
            rec.last_any = now
            phase = int(phase)
            key = (phase << 40) | int(seq)
            if key in self.seen:
                if phase == rec.phase:
                    rec.duplicates += 1
                continue
            self.seen.add(key)
            if phase == rec.phase:
                rec.deliveries += 1
                rec.latencies.append(now - int(sent))
                rec.last_delivery = now

    def pause(self) -> None:
        """Stop reading (the socket's buffers fill up, as with a frozen tab)."""
        self.conn.transport.pause_reading()

    async def send(self, body: str) -> None:
        self.conn.send_text(self.client.adapter.frame(self.session, body, self.conversation))


class LoadClient:
    """Users, their tabs, and the senders of one run against one server."""

    def __init__(self, kind: str, base_url: str, connect_concurrency: int = 64):
        self.kind = kind
        self.adapter = ADAPTERS[kind](base_url)
        self.host, port = base_url.split("//", 1)[1].split(":")
        self.port = int(port)
        self.recorder = Recorder()
        self.sessions: dict[str, dict] = {}
        self.https: dict[str, aiohttp.ClientSession] = {}
        self.tabs: list[Tab] = []
        self.sem = asyncio.Semaphore(connect_concurrency)
        self.connect_errors = 0
        self.phase = 0

    async def login(self, usernames: list[str]) -> float:
        """Log each user in (over HTTP, with CSRF, when the system has accounts); seconds."""
        t0 = time.monotonic()

        async def one(name):
            async with self.sem:
                http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
                self.https[name] = http
                self.sessions[name] = await self.adapter.login(http, name)

        await asyncio.gather(*(one(n) for n in usernames if n not in self.sessions))
        return time.monotonic() - t0

    async def open_tab(self, username: str, conversation: int = 1, listener=True) -> Tab | None:
        """Open one socket as a browser tab does; None (counted) if it fails."""
        session = self.sessions[username]
        async with self.sem:
            try:
                conn = await connect(self.host, self.port,
                                     self.adapter.ws_path_for(conversation), session["headers"])
                await self.adapter.ready(conn)
            except Exception as exc:  # noqa: BLE001
                self.connect_errors += 1
                if len(self.recorder.errors) < 5:
                    self.recorder.errors.append(f"connect: {exc!r}")
                return None
        tab = Tab(self, conn, session, conversation, listener)
        self.tabs.append(tab)
        return tab

    async def open_tabs(self, plan: list[tuple[str, int]]) -> tuple[list[Tab], float]:
        """Open many tabs concurrently: (username, conversation) each; tabs and seconds."""
        t0 = time.monotonic()
        tabs = await asyncio.gather(*(self.open_tab(u, c) for u, c in plan))
        return [t for t in tabs if t is not None], time.monotonic() - t0

    async def send_stream(self, sender: Tab, rate: float, count: int, phase: int,
                          seq0: int = 0) -> float:
        """Send count stamped messages at rate per second; return the achieved rate."""
        t0 = time.monotonic()
        for i in range(count):
            due = t0 + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await sender.send(f"bench-{phase}-{seq0 + i}-{time.monotonic_ns()}")
        elapsed = time.monotonic() - t0
        return count / elapsed if elapsed > 0 else float("inf")

    async def close(self) -> None:
        for tab in self.tabs:
            tab.conn.close()
        await asyncio.sleep(0.5)
        for http in self.https.values():
            await http.close()
