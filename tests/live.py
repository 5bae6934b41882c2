"""Live-server helpers: a real gunicorn gevent server on a free port, and the people
(HTTP sessions and WebSocket clients) who use it. conftest.py's fixtures build on these;
tests import them through conftest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import websocket
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("CHATAPP_REQUIRE_SERVICES") == "1"
PASSWORD = "correct horse battery"
TEST_SECRET = "test-secret-key-not-for-production"


def need_service(reason: str):
    """Skip (or, when services are required, fail) a test whose service is missing."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(tmp_path: Path, database_url: str, **extra: str) -> dict:
    """Environment for an app instance whose state all lives under tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATAPP_")}
    env.pop("REDIS_URL", None)
    env.update(
        SECRET_KEY=TEST_SECRET,
        DATABASE_URL=database_url,
        CHATAPP_INSTANCE_PATH=str(tmp_path / "instance"),
        CHATAPP_UPLOAD_DIR=str(tmp_path / "uploads"),
        CHATAPP_PING_INTERVAL="5",
        # Tests register many people from one address.
        CHATAPP_REGISTER_RATE="1000/hour",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def csrf_from(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', html
    )
    assert match, "page has no CSRF token"
    return match.group(1)


def migrate_database(env: dict) -> None:
    """Run `flask db upgrade` against the database named in env."""
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "chatapp", "db", "upgrade"],
        cwd=ROOT, env=env, check=True, capture_output=True,
    )


_template: dict[str, Path] = {}


def _migrated_sqlite_template() -> Path:
    """An SQLite file migrated to the newest schema, made once per test session."""
    if "path" not in _template:
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="chatapp-template-"))
        path = folder / "template.sqlite3"
        migrate_database(base_env(folder, f"sqlite:///{path}"))
        _template["path"] = path
    return _template["path"]


class LiveServer:
    """chatapp under gunicorn's gevent worker, as in production, on a free port."""

    def __init__(self, tmp_path: Path, database_url: str, dev: bool = False, **env: str):
        self.tmp_path = tmp_path
        self.dev = dev  # `flask run` (threads) instead of gunicorn's gevent worker
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = base_env(tmp_path, database_url, **env)
        self.process: subprocess.Popen | None = None
        self.log_path = tmp_path / f"server-{self.port}.log"
        self.people: list[Person] = []  # closed when the server stops

    def migrate(self) -> None:
        url = self.env["DATABASE_URL"]
        if url.startswith("sqlite:///"):
            # Migrate one SQLite file per test session and copy it: same schema, less time.
            target = Path(url.removeprefix("sqlite:///"))
            if not target.exists():
                shutil.copyfile(_migrated_sqlite_template(), target)
            return
        migrate_database(self.env)

    def start(self) -> LiveServer:
        with open(self.log_path, "ab") as log:
            if self.dev:
                command = ["-m", "flask", "--app", "chatapp", "run", "--port", str(self.port)]
            else:
                command = ["-m", "gunicorn", "-c", "gunicorn.conf.py",
                           "--bind", f"127.0.0.1:{self.port}"]
            self.process = subprocess.Popen(
                [sys.executable, *command],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log()}")
            try:
                # The master listens at once; the worker may take seconds to boot.
                with requests.get(self.url + "/login/", timeout=(1, 15)):
                    return self
            except requests.RequestException:  # busy machine: keep waiting
                time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def stop(self, sig: int | None = None) -> None:
        for person in self.people:
            person.close()
        if self.process and self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def frames_to_fill(stalled: socket.socket, frame_bytes: int, queue_size: int) -> int:
    """How many frames of frame_bytes a server may have to push before a reader that has
    stopped reading overflows its queue: the kernel buffers on both ends, then the queue.

    The stalled side's receive buffer is read from its socket (the kernel rounds what was
    asked); the server's send buffer grows by autotuning up to tcp_wmem's maximum.
    """
    receive = stalled.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    try:
        send = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):  # no /proc: what this socket may send at most
        send = max(stalled.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF), 4 * 1024 * 1024)
    # A quarter more: frame headers, and what is in flight between the two buffers.
    return int((receive + send) / frame_bytes * 1.25) + queue_size + 10


def open_private_chats(server: LiveServer, *pairs: tuple[str, str]) -> list[int]:
    """Open the private chats of pairs of registered people through the model, as their
    first message would; their conversation ids, in order.

    Done here rather than through a page, so that tests do not depend on which request
    creates a chat.
    """
    from unittest import mock

    # Without REDIS_URL: opening a chat publishes nothing, and needs no subscriber.
    env = {k: v for k, v in server.env.items() if k != "REDIS_URL"}
    with mock.patch.dict(os.environ, env, clear=True):
        from chatapp import create_app

        app = create_app()
    from chatapp.extensions import db
    from chatapp.models import Conversation, User

    with app.app_context():
        try:
            ids = [
                Conversation.direct(User.by_username(a), User.by_username(b)).id
                for a, b in pairs
            ]
            db.session.commit()  # models only flush; the caller commits
            return ids
        finally:
            db.session.remove()
            db.engine.dispose()


def open_private_chat(server: LiveServer, first: str, second: str) -> int:
    """The id of the private chat of two registered people, opened through the model."""
    return open_private_chats(server, (first, second))[0]


MESSAGE_ID = re.compile(r'<article id="message-(\d+)"')


class Socket:
    """A WebSocket client that speaks like htmx's hx-ws and records what it receives."""

    def __init__(self, person: Person, ws: websocket.WebSocket, csrf_token: str):
        self.person = person
        self.ws = ws
        self.csrf_token = csrf_token
        self.frames: list[str] = []

    def send_json(self, payload) -> None:
        self.ws.send(payload if isinstance(payload, str) else json.dumps(payload))

    def say(self, body: str, client_id: str | None = None, **extra) -> str:
        """Send what the composer sends; return its client id."""
        client_id = client_id or str(uuid.uuid4())
        self.send_json(
            {"body": body, "client_id": client_id, "csrf_token": self.csrf_token,
             "headers": {"HX-Request": "true"}, **extra}
        )
        return client_id

    def recv(self, timeout: float = 5.0) -> str | None:
        """The next frame, or None if none comes in time."""
        self.ws.settimeout(timeout)
        try:
            frame = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return None
        self.frames.append(frame)
        return frame

    def wait_for(self, needle, timeout: float = 5.0) -> str:
        """Read frames until one contains needle (a string or a predicate)."""
        test = needle if callable(needle) else (lambda f: needle in f)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no frame with {needle!r}; got {self.frames[-5:]!r}")
            frame = self.recv(remaining)
            if frame is not None and test(frame):
                return frame

    def drain(self, quiet: float = 0.5) -> list[str]:
        """Read until nothing arrives for `quiet` seconds; return what came."""
        got = []
        while (frame := self.recv(quiet)) is not None:
            got.append(frame)
        return got

    def message_ids(self) -> list[int]:
        """Message ids as the page would hold them: snapshots replace, pushes append."""
        ids: list[int] = []
        for frame in self.frames:
            if 'hx-target="#messages" hx-swap="innerHTML"' in frame:
                ids = []
            ids.extend(int(i) for i in MESSAGE_ID.findall(frame))
        return ids

    def close_code(self, timeout: float = 10.0) -> int | None:
        """Read until the server's close frame arrives; return its status code."""
        self.ws.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # recv_frame(), not recv_data(): the latter answers a close frame itself, and
            # that answer can meet a reset from a server already gone, losing the code.
            try:
                frame = self.ws.recv_frame()
            except websocket.WebSocketConnectionClosedException:
                return None
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                data = frame.data
                return int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            if frame.opcode == websocket.ABNF.OPCODE_TEXT:
                self.frames.append(frame.data.decode())
        raise AssertionError("the server did not close the socket")

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001
            pass
        finally:
            self.ws.shutdown()  # close() leaves the socket open once the peer has closed


class Person:
    """Someone using chatapp over real HTTP and WebSocket connections."""

    def __init__(self, server: LiveServer, username: str, password: str = PASSWORD):
        self.server = server
        self.username = username
        self.password = password
        self.http = requests.Session()
        # A browser retries an idempotent request whose kept-alive connection the server
        # closed at the same moment (gunicorn drops idle ones after 2 s); so does this.
        retry = Retry(total=2, connect=2, read=2, status=0, allowed_methods={"GET", "HEAD"},
                      raise_on_status=False, respect_retry_after_header=False)
        self.http.mount("http://", HTTPAdapter(max_retries=retry))
        self.sockets: list[Socket] = []
        server.people.append(self)

    def register(self) -> Person:
        token = csrf_from(self.http.get(self.server.url + "/register/").text)
        r = self.http.post(
            self.server.url + "/register/",
            data={"csrf_token": token, "username": self.username,
                  "password": self.password, "confirm": self.password},
        )
        assert r.status_code == 200 and r.url == self.server.url + "/", r.text[:500]
        return self

    def login(self) -> requests.Response:
        token = csrf_from(self.http.get(self.server.url + "/login/").text)
        return self.http.post(
            self.server.url + "/login/",
            data={"csrf_token": token, "username": self.username, "password": self.password},
        )

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.http.get(self.server.url + path, **kwargs)

    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.http.cookies)

    def connect(self, conversation_id: int = 1, origin: str | None = None,
                page: str | None = None, **options) -> Socket:
        """Open a page's socket the way the browser does (cookie and Origin)."""
        html = self.get(page or ("/" if conversation_id == 1 else f"/c/{conversation_id}")).text
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{self.server.port}/ws/{conversation_id}",
            header=[f"Cookie: {self.cookie_header()}"],
            origin=origin or self.server.url,
            timeout=10,
            **options,
        )
        sock = Socket(self, ws, csrf_from(html))
        self.sockets.append(sock)
        sock.wait_for('hx-target="#messages" hx-swap="innerHTML"')  # the connect snapshot
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.http.close()
